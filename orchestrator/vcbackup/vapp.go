package vcbackup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// AppResult is what a vApp backup did: the app definition it recorded and
// each member's Result.
type AppResult struct {
	App *repo.App `json:"app"`
	// AppSaved says whether App was saved as the repository's definition:
	// not when a member has no restore point (AppNote says why and what
	// the repository keeps instead).
	AppSaved bool     `json:"app_saved"`
	AppNote  string   `json:"app_note,omitempty"`
	Members  []Result `json:"members"`
}

// Failed counts the members whose backup failed.
func (a *AppResult) Failed() int {
	n := 0
	for _, m := range a.Members {
		if m.Err != nil {
			n++
		}
	}
	return n
}

// BackupVApp backs up every member of the vApp named name and records the
// vApp — members, startup order groups, delays, wait-for-guest, start and
// stop actions, networks, resource settings — as the repository's app
// definition, so `restore vapp` needs no `app define`. The definition is
// saved after the members' points, also when a member failed this run but
// has an earlier point (restore vapp then uses that one; its Result says
// so). A definition never names a member without a restore point: when a
// member has none, the definition is not saved, the previous one (if any)
// stays, and AppNote, the member's notes and the error say so.
func BackupVApp(ctx context.Context, cfg Config, name string) (*AppResult, error) {
	cfg.defaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if err := repo.ValidName(name); err != nil {
		return nil, fmt.Errorf("vApp %w", err)
	}
	lock, err := cfg.Repo.Lock(ctx, repo.LockShared, "backup of vApp "+name+" from vCenter")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	b, err := newBackuper(ctx, cfg)
	if err != nil {
		return nil, err
	}
	refs, err := b.byName(ctx, "VirtualApp", name)
	if err != nil {
		return nil, err
	}
	switch len(refs) {
	case 0:
		return nil, fmt.Errorf("vCenter has no vApp named %q in datacenter %s", name, b.dc.Name())
	case 1:
	default:
		return nil, fmt.Errorf("vCenter has %d vApps named %q", len(refs), name)
	}
	var va mo.VirtualApp
	if err := property.DefaultCollector(b.c).RetrieveOne(ctx, refs[0], []string{"name", "vm", "vAppConfig", "config"}, &va); err != nil {
		return nil, fmt.Errorf("vApp %s: %w", name, err)
	}
	var vms []mo.VirtualMachine
	if len(va.Vm) > 0 {
		if err := property.DefaultCollector(b.c).Retrieve(ctx, uniq(va.Vm), []string{"name"}, &vms); err != nil {
			return nil, fmt.Errorf("vApp %s: members: %w", name, err)
		}
	}
	if len(vms) == 0 {
		return nil, fmt.Errorf("vApp %s has no member VMs", name)
	}
	app := appDefinition(&va, vms, cfg.Now())
	// The members are backed up as the vApp's own VMs, not found by name:
	// another VM of the datacenter may have a member's name (a copy of the
	// vApp).
	targets := make([]string, len(app.Members))
	members := make([]types.ManagedObjectReference, len(app.Members))
	for i, m := range app.Members {
		targets[i] = m.VM
		if k := slices.IndexFunc(vms, func(vm mo.VirtualMachine) bool { return vm.Name == m.VM }); k >= 0 {
			members[i] = vms[k].Self
		}
	}
	out := &AppResult{App: app, Members: b.many(ctx, targets, members, name)}
	for _, r := range out.Members {
		if r.Point == nil {
			continue
		}
		for _, n := range r.Point.NICs {
			if n.Network != "" && !slices.Contains(app.Networks, n.Network) {
				app.Networks = append(app.Networks, n.Network)
			}
		}
	}
	slices.Sort(app.Networks)
	var pointless []string
	for i := range out.Members {
		m := &out.Members[i]
		if m.Point != nil {
			continue
		}
		if earlier, err := cfg.Repo.LatestPoint(m.VM); err == nil {
			m.Notes = append(m.Notes, fmt.Sprintf("vApp %s's definition names this VM: `restore vapp` uses its earlier point %s", name, earlier.ID))
			continue
		}
		pointless = append(pointless, m.VM)
		m.Notes = append(m.Notes, fmt.Sprintf("vApp %s's definition is not saved: this VM has no restore point", name))
	}
	if len(pointless) == 0 {
		if err := cfg.Repo.SaveApp(app); err != nil {
			return out, err
		}
		out.AppSaved = true
		if cfg.Catalog != nil {
			if err := cfg.Catalog.IndexApp(ctx, app); err != nil {
				return out, fmt.Errorf("app %s is stored, but the catalog could not record it: %w (run `rekindle catalog rebuild`)", app.Name, err)
			}
		}
	} else {
		out.AppNote = fmt.Sprintf("app definition of vApp %s not saved: %s %s no restore point", name, strings.Join(pointless, ", "),
			map[bool]string{true: "has", false: "have"}[len(pointless) == 1])
		switch prev, err := cfg.Repo.App(name); {
		case err == nil:
			out.AppNote += fmt.Sprintf("; the previous definition (of %s, %d members) stays", prev.Updated.UTC().Format(time.RFC3339), len(prev.Members))
		case errors.Is(err, repo.ErrNotFound):
			out.AppNote += fmt.Sprintf("; the repository has no definition of it yet, so `restore vapp %s` cannot run: back up the vApp again once its members back up", name)
		default:
			out.AppNote += fmt.Sprintf("; the previous definition does not read: %v", err)
		}
	}
	if n := out.Failed(); n > 0 {
		err := fmt.Errorf("vApp %s: %d of %d members failed: %w", name, n, len(out.Members), errors.Join(memberErrs(out.Members)...))
		if out.AppNote != "" {
			err = fmt.Errorf("%w; %s", err, out.AppNote)
		}
		return out, err
	}
	return out, nil
}

func memberErrs(rs []Result) []error {
	var out []error
	for _, r := range rs {
		if r.Err != nil {
			out = append(out, r.Err)
		}
	}
	return out
}

func uniq(refs []types.ManagedObjectReference) []types.ManagedObjectReference {
	var out []types.ManagedObjectReference
	for _, r := range refs {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// appDefinition turns a vApp's configuration into an app manifest. Startup
// groups are vCenter's start orders, renumbered 1, 2, ... in order; a
// member vCenter gives no order starts in the last group.
func appDefinition(va *mo.VirtualApp, vms []mo.VirtualMachine, now time.Time) *repo.App {
	byRef := map[types.ManagedObjectReference]types.VAppEntityConfigInfo{}
	if va.VAppConfig != nil {
		for _, ec := range va.VAppConfig.EntityConfig {
			if ec.Key != nil {
				byRef[*ec.Key] = ec
			}
		}
	}
	var orders []int32
	for _, vm := range vms {
		if ec, ok := byRef[vm.Self]; ok && ec.StartOrder > 0 && !slices.Contains(orders, ec.StartOrder) {
			orders = append(orders, ec.StartOrder)
		}
	}
	slices.Sort(orders)
	app := &repo.App{Format: repo.ManifestFormat, Name: va.Name, Updated: now.UTC().Truncate(time.Second)}
	for _, vm := range vms {
		m := repo.AppMember{VM: vm.Name, Group: len(orders) + 1}
		if len(orders) == 0 {
			m.Group = 1
		}
		if ec, ok := byRef[vm.Self]; ok {
			if i := slices.Index(orders, ec.StartOrder); i >= 0 {
				m.Group = i + 1
			}
			m.StartDelay = max(int(ec.StartDelay), 0)
			m.StopDelay = max(int(ec.StopDelay), 0)
			m.WaitForGuest = ec.WaitingForGuest != nil && *ec.WaitingForGuest
			m.StartAction, m.StopAction = ec.StartAction, ec.StopAction
		}
		app.Members = append(app.Members, m)
	}
	slices.SortStableFunc(app.Members, func(a, b repo.AppMember) int { return a.Group - b.Group })
	{
		c := va.Config
		if a := c.CpuAllocation; a.Shares != nil {
			app.Resources.CPUSharesLevel = string(a.Shares.Level)
		}
		if a := c.CpuAllocation; a.Reservation != nil {
			app.Resources.CPUReservationMHz = *a.Reservation
		}
		if a := c.CpuAllocation; a.Limit != nil && *a.Limit > 0 {
			app.Resources.CPULimitMHz = *a.Limit
		}
		if a := c.MemoryAllocation; a.Reservation != nil {
			app.Resources.MemReservationMB = *a.Reservation
		}
		if a := c.MemoryAllocation; a.Limit != nil && *a.Limit > 0 {
			app.Resources.MemLimitMB = *a.Limit
		}
	}
	if app.Resources.CPUSharesLevel == string(types.SharesLevelCustom) {
		app.Resources.CPUSharesLevel = ""
	}
	return app
}
