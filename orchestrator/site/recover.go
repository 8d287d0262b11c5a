package site

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"golang.org/x/sync/errgroup"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/storeapi"
)

// Recovery steps, in order; between vapps and startorder come one
// "vapp:<vApp path>" step per vApp (its protected members) and one
// "vm:<name>" step per standalone VM, each running one restore session.
const (
	StepNetworks   = "networks"
	StepPools      = "pools"
	StepFolders    = "folders"
	StepVApps      = "vapps"
	StepVAppPrefix = "vapp:"
	StepVMPrefix   = "vm:"
	StepStartOrder = "startorder"
)

// Recoverer recreates a site on a recovery vCenter and recovers its VMs
// through restore sessions.
type Recoverer struct {
	Client *vim25.Client // the recovery vCenter
	// Orchestrator runs the restore sessions; its Driver is on Client's
	// vCenter and datacenter.
	Orchestrator *orchestrator.Orchestrator
	Datacenter   string // recovery datacenter inventory path, "/DC0"
	// Customize, when false, skips guest customization (a guest without
	// tools cannot take it).
	Customize bool
	// Parallel bounds how many vApps (or standalone VMs) of one priority
	// are recovered at once; 0 means DefaultParallel.
	Parallel int
	// ReadyTimeout bounds the wait for a vApp member whose guest the next
	// startup group waits for (default 10 minutes).
	ReadyTimeout time.Duration

	planMu sync.Mutex // the plan's Sessions, written by parallel VM steps
	evMu   sync.Mutex // Orchestrator.Events is called from one goroutine at a time
}

// DefaultParallel is how many vApps of one priority recover at once.
const DefaultParallel = 8

func (r *Recoverer) cat() *catalog.Catalog { return r.Orchestrator.Catalog }

// Inventory reads what MakeRecoveryPlan needs from the recovery vCenter.
func (r *Recoverer) Inventory(ctx context.Context) (Inventory, error) {
	inv := Inventory{Datacenter: r.Datacenter, Clusters: map[string][]string{}, Networks: map[string]int{},
		Switches: map[string]bool{}, Pools: map[string]bool{}, Folders: map[string]bool{}, VMs: map[string]bool{}}
	fi := find.NewFinder(r.Client)
	dc, err := fi.Datacenter(ctx, r.Datacenter)
	if err != nil {
		return inv, fmt.Errorf("recovery datacenter %s: %w", r.Datacenter, err)
	}
	fi.SetDatacenter(dc)
	clusters, err := fi.ClusterComputeResourceList(ctx, "*")
	if err != nil && !isNotFound(err) {
		return inv, err
	}
	for _, c := range clusters {
		hs, err := c.Hosts(ctx)
		if err != nil {
			return inv, err
		}
		var names []string
		for _, h := range hs {
			names = append(names, h.Name())
		}
		slices.Sort(names)
		inv.Clusters[c.InventoryPath] = names
	}
	m := view.NewManager(r.Client)
	v, err := m.CreateContainerView(ctx, dc.Reference(), []string{"Network", "DistributedVirtualSwitch", "ResourcePool", "Folder", "VirtualMachine", "HostSystem"}, true)
	if err != nil {
		return inv, err
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	var nets []mo.Network
	if err := v.Retrieve(ctx, []string{"Network"}, []string{"name"}, &nets); err != nil {
		return inv, err
	}
	for _, n := range nets {
		inv.Networks[n.Name] = -1
	}
	var pgs []mo.DistributedVirtualPortgroup
	if err := v.Retrieve(ctx, []string{"DistributedVirtualPortgroup"}, []string{"name", "config.defaultPortConfig"}, &pgs); err != nil {
		return inv, err
	}
	for _, pg := range pgs {
		inv.Networks[pg.Name] = dvpgVLAN(pg)
	}
	var hosts []mo.HostSystem
	if err := v.Retrieve(ctx, []string{"HostSystem"}, []string{"config.network.portgroup"}, &hosts); err == nil {
		for _, h := range hosts {
			if h.Config == nil || h.Config.Network == nil {
				continue
			}
			for _, pg := range h.Config.Network.Portgroup {
				inv.Networks[pg.Spec.Name] = int(pg.Spec.VlanId)
			}
		}
	}
	var sws []mo.DistributedVirtualSwitch
	if err := v.Retrieve(ctx, []string{"DistributedVirtualSwitch"}, []string{"name"}, &sws); err != nil {
		return inv, err
	}
	for _, s := range sws {
		inv.Switches[s.Name] = true
	}
	for c := range inv.Clusters {
		list, err := fi.ResourcePoolList(ctx, c+"/Resources/...")
		if err != nil && !isNotFound(err) {
			return inv, err
		}
		for _, p := range list {
			inv.Pools[p.InventoryPath] = true
		}
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return inv, err
	}
	root := folders.VmFolder.InventoryPath
	fl, err := fi.FolderList(ctx, root+"/...")
	if err != nil && !isNotFound(err) {
		return inv, err
	}
	for _, f := range fl {
		if rel := strings.TrimPrefix(f.InventoryPath, root+"/"); rel != f.InventoryPath {
			inv.Folders[rel] = true
		}
	}
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name"}, &vms); err != nil {
		return inv, err
	}
	for _, vm := range vms {
		inv.VMs[vm.Name] = true
	}
	return inv, nil
}

func dvpgVLAN(pg mo.DistributedVirtualPortgroup) int {
	if s, ok := pg.Config.DefaultPortConfig.(*types.VMwareDVSPortSetting); ok && s.Vlan != nil {
		if v, ok := s.Vlan.(*types.VmwareDistributedVirtualSwitchVlanIdSpec); ok {
			return int(v.VlanId)
		}
	}
	return 0
}

func isNotFound(err error) bool {
	var nf *find.NotFoundError
	return errors.As(err, &nf)
}

// Plan makes the recovery plan of pkgs against the recovery vCenter.
func (r *Recoverer) Plan(ctx context.Context, pkgs []*Package, m Mapping, opt RecoveryOptions) (*RecoveryPlan, error) {
	inv, err := r.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	return MakeRecoveryPlan(pkgs, inv, m, opt)
}

// Create records a recovery session for plan p (kind site in the catalog),
// with its steps pending; Resume runs them.
func (r *Recoverer) Create(ctx context.Context, p *RecoveryPlan) (string, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	id := storeapi.NewSessionID()
	s := &catalog.Session{ID: id, Kind: catalog.KindSite, State: catalog.SessionPlanned, Target: p.Datacenter,
		Hypervisor: "vsphere", Request: b}
	for _, st := range p.steps() {
		s.Steps = append(s.Steps, catalog.Step{Name: st})
	}
	if err := r.cat().CreateSession(ctx, s); err != nil {
		return "", err
	}
	return id, nil
}

func (p *RecoveryPlan) steps() []string {
	s := []string{StepNetworks, StepPools, StepFolders, StepVApps}
	for _, u := range p.units() {
		s = append(s, u.step)
	}
	return append(s, StepStartOrder)
}

// A recoveryUnit is what one restore session recovers: a vApp's protected
// members, in startup order, from one export and one datastore per host;
// or one standalone VM.
type recoveryUnit struct {
	step string   // the recovery session's step that runs it
	key  string   // its restore session in RecoveryPlan.Sessions
	app  string   // the vApp's path ("" for a standalone VM)
	vms  []string // recovery names, in startup order
}

// units lists the plan's restore sessions in power-on order. A plan
// recorded before SessionsPer existed has one session per VM (vApp
// members too): a resume or stop goes on with those.
func (p *RecoveryPlan) units() []recoveryUnit {
	var us []recoveryUnit
	index := map[string]int{}  // vApp path -> its unit
	for _, vm := range p.VMs { // sorted by priority, vApp name, startup group
		app := ""
		if vm.VApp != "" {
			app = vm.Target
		}
		if app == "" || p.SessionsPer != SessionsPerVApp {
			us = append(us, recoveryUnit{step: StepVMPrefix + vm.Name, key: vm.Name, app: app, vms: []string{vm.Name}})
			continue
		}
		if i, ok := index[app]; ok {
			us[i].vms = append(us[i].vms, vm.Name)
			continue
		}
		index[app] = len(us)
		us = append(us, recoveryUnit{step: StepVAppPrefix + app, key: StepVAppPrefix + app, app: app, vms: []string{vm.Name}})
	}
	return us
}

// LoadRecovery returns recovery session id and its plan.
func (r *Recoverer) LoadRecovery(ctx context.Context, id string) (*catalog.Session, *RecoveryPlan, error) {
	s, err := r.cat().Session(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if s.Kind != catalog.KindSite {
		return nil, nil, fmt.Errorf("session %s is a %s restore, not a site recovery: use `rekindle sessions`", id, s.Kind)
	}
	var p RecoveryPlan
	if err := json.Unmarshal(s.Request, &p); err != nil {
		return nil, nil, fmt.Errorf("session %s: recovery plan: %w", id, err)
	}
	return s, &p, nil
}

// Resume runs every step of recovery session id that is not done, in
// order. Every step finds what an earlier attempt made, so a step that was
// running when rekindle died runs again without duplicates.
func (r *Recoverer) Resume(ctx context.Context, id string) error {
	// One memo of the driver's lookups (hosts, pools, networks) for every
	// restore session of the recovery.
	ctx = orchestrator.WithMemo(ctx)
	s, p, err := r.LoadRecovery(ctx, id)
	if err != nil {
		return err
	}
	switch s.State {
	case catalog.SessionStopped, catalog.SessionStopping:
		return fmt.Errorf("recovery %s was stopped: start a new one", id)
	case catalog.SessionDone:
		return nil
	}
	done := map[string]bool{}
	for _, st := range s.Steps {
		done[st.Name] = st.State == catalog.StepDone
	}
	if err := r.cat().SetSessionState(ctx, id, catalog.SessionRunning, ""); err != nil {
		return err
	}
	fail := func(err error) error {
		r.cat().SetSessionState(context.WithoutCancel(ctx), id, catalog.SessionFailed, err.Error())
		return err
	}
	vmsDone := false
	for _, name := range p.steps() {
		if strings.HasPrefix(name, StepVMPrefix) || strings.HasPrefix(name, StepVAppPrefix) {
			if !vmsDone {
				vmsDone = true
				if err := r.recoverVMs(ctx, id, p, done); err != nil {
					return fail(err)
				}
			}
			continue
		}
		if done[name] {
			continue
		}
		if err := r.step(ctx, id, name, func(ctx context.Context) (any, error) { return r.do(ctx, id, p, name) }); err != nil {
			return fail(err)
		}
	}
	return r.cat().SetSessionState(ctx, id, catalog.SessionDone, "")
}

// recoverVMs runs the restore sessions that are not done, priority by
// priority: a priority starts when every VM of the one before is recovered
// and powered on. Within a priority, the vApps (and standalone VMs) recover
// in parallel, at most Parallel at once; a vApp's members power on in its
// startup order (recoveryDriver.PowerOn). A failure lets the other vApps of
// its priority finish and starts no later priority.
func (r *Recoverer) recoverVMs(ctx context.Context, id string, p *RecoveryPlan, done map[string]bool) error {
	limit := r.Parallel
	if limit <= 0 {
		limit = DefaultParallel
	}
	units := p.units()
	for i := 0; i < len(units); {
		prio := p.vm(units[i].vms[0]).Priority
		j := i
		var jobs [][]recoveryUnit // per vApp (or standalone VM), in order
		jobOf := map[string]int{}
		for ; j < len(units) && p.vm(units[j].vms[0]).Priority == prio; j++ {
			u := units[j]
			if done[u.step] {
				continue
			}
			if u.app != "" {
				// A plan of one session per VM: a vApp's sessions run one
				// after another.
				if k, ok := jobOf[u.app]; ok {
					jobs[k] = append(jobs[k], u)
					continue
				}
				jobOf[u.app] = len(jobs)
			}
			jobs = append(jobs, []recoveryUnit{u})
		}
		var g errgroup.Group
		g.SetLimit(limit)
		for _, job := range jobs {
			g.Go(func() error {
				for _, u := range job {
					if err := r.step(ctx, id, u.step, func(ctx context.Context) (any, error) { return r.recoverUnit(ctx, id, p, u) }); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		i = j
	}
	return nil
}

func (r *Recoverer) step(ctx context.Context, id, name string, fn func(context.Context) (any, error)) error {
	if _, err := r.cat().StartStep(ctx, id, name); err != nil {
		return err
	}
	start := time.Now()
	r.emit(orchestrator.Event{Session: id, Step: name, Phase: "start"})
	detail, err := fn(ctx)
	rctx := context.WithoutCancel(ctx)
	d := time.Since(start)
	if err != nil {
		err = fmt.Errorf("recovery %s: step %s: %w", id, name, err)
		r.cat().EndStep(rctx, id, name, catalog.StepFailed, detail, err.Error())
		r.emit(orchestrator.Event{Session: id, Step: name, Phase: "failed", Duration: d, Err: err.Error()})
		return err
	}
	r.emit(orchestrator.Event{Session: id, Step: name, Phase: "done", Duration: d})
	return r.cat().EndStep(rctx, id, name, catalog.StepDone, detail, "")
}

func (r *Recoverer) emit(e orchestrator.Event) {
	if r.Orchestrator.Events != nil {
		r.evMu.Lock()
		defer r.evMu.Unlock()
		r.Orchestrator.Events(e)
	}
}

func (r *Recoverer) finder(ctx context.Context) (*find.Finder, *object.Datacenter, error) {
	fi := find.NewFinder(r.Client)
	dc, err := fi.Datacenter(ctx, r.Datacenter)
	if err != nil {
		return nil, nil, err
	}
	fi.SetDatacenter(dc)
	return fi, dc, nil
}

func (r *Recoverer) do(ctx context.Context, id string, p *RecoveryPlan, step string) (any, error) {
	fi, dc, err := r.finder(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case step == StepNetworks:
		return nil, r.makeNetworks(ctx, fi, dc, p)
	case step == StepPools:
		for _, pl := range p.Pools {
			if err := r.ensurePool(ctx, fi, pl); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case step == StepFolders:
		folders, err := dc.Folders(ctx)
		if err != nil {
			return nil, err
		}
		for _, f := range p.Folders {
			if err := ensureFolder(ctx, fi, folders.VmFolder, f.Path); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case step == StepVApps:
		for _, a := range p.VApps {
			_, err := r.Orchestrator.Driver.EnsureApp(ctx, orchestrator.AppSpec{Name: a.Name, Parent: a.Parent, Resources: orchestrator.Resources{
				CPUShares: a.CPU.Shares, CPUReservationMHz: a.CPU.Reservation, CPULimitMHz: a.CPU.Limit,
				MemReservationMB: a.Mem.Reservation, MemLimitMB: a.Mem.Limit}})
			if err != nil {
				return nil, fmt.Errorf("vApp %s: %w", a.Path, err)
			}
		}
		return nil, nil
	case step == StepStartOrder:
		so, ok := r.Orchestrator.Driver.(interface {
			SetStartOrder(ctx context.Context, appPath string, members []orchestrator.AppMember) error
		})
		if !ok {
			return nil, nil
		}
		for _, a := range p.VApps {
			var ms []orchestrator.AppMember
			for _, m := range a.Members {
				if p.vm(m.VM) == nil {
					continue // not protected: not recovered
				}
				ms = append(ms, orchestrator.AppMember{VM: m.VM, Group: m.Group, StartDelay: m.StartDelay, WaitForGuest: m.WaitForGuest, StopAction: m.StopAction})
			}
			if err := so.SetStartOrder(ctx, a.Path, ms); err != nil {
				return nil, fmt.Errorf("vApp %s startup order: %w", a.Path, err)
			}
		}
		return nil, nil
	}
	return nil, fmt.Errorf("unknown step %q", step)
}

func (p *RecoveryPlan) vm(name string) *RecoverVM {
	for i := range p.VMs {
		if p.VMs[i].Name == name {
			return &p.VMs[i]
		}
	}
	return nil
}

// recoverUnit runs unit u's restore session, creating it first (recorded
// in the plan before it runs, so a resume finds it). The session powers
// its VMs on one after another in startup order; recoveryDriver.PowerOn
// holds each until its vApp's earlier startup groups are up.
func (r *Recoverer) recoverUnit(ctx context.Context, id string, p *RecoveryPlan, u recoveryUnit) (any, error) {
	o := *r.Orchestrator
	o.Driver = &recoveryDriver{Driver: r.Orchestrator.Driver, r: r, plan: p}
	if o.Events != nil {
		o.Events = r.emit // vApps recover in parallel: one event at a time
	}
	r.planMu.Lock()
	sid := p.Sessions[u.key]
	r.planMu.Unlock()
	if sid == "" {
		req, err := p.request(u)
		if err != nil {
			return nil, err
		}
		if sid, err = o.Create(ctx, req); err != nil {
			return nil, fmt.Errorf("restore session for %s: %w", strings.Join(u.vms, ", "), err)
		}
		r.planMu.Lock()
		if p.Sessions == nil {
			p.Sessions = map[string]string{}
		}
		p.Sessions[u.key] = sid
		b, _ := json.Marshal(p)
		err = r.cat().SetSessionRequest(ctx, id, b)
		r.planMu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	if err := o.Resume(ctx, sid); err != nil {
		return map[string]string{"session": sid}, err
	}
	return map[string]string{"session": sid}, nil
}

// request is the restore request of unit u: its VMs, each from its own
// restore point, in startup order, every one in startup group 1 with no
// readiness check of the session's own (the recovery's driver keeps the
// vApp's order).
func (p *RecoveryPlan) request(u recoveryUnit) (orchestrator.Request, error) {
	first := p.vm(u.vms[0])
	req := orchestrator.Request{Kind: orchestrator.KindVMs, Target: first.Target, Points: map[string]string{},
		NetworkMap: map[string]string{}, Suffix: strings.TrimPrefix(first.Name, first.Source), Server: p.Server,
		ReadyTimeout: 2 * time.Minute}
	for _, name := range u.vms {
		vm := p.vm(name)
		if vm == nil {
			return req, fmt.Errorf("VM %s is not in the plan", name)
		}
		req.VMs = append(req.VMs, vm.Source)
		req.Points[vm.Source] = vm.Point
		for from, to := range vm.NetMap {
			req.NetworkMap[from] = to // one datacenter's mapping: members agree
		}
	}
	return req, nil
}

// recoveryDriver is the restore driver with what a site recovery adds: a
// standalone VM goes into its recovered folder, and before a VM powers on,
// its vApp's earlier startup groups come up and its guest is customized to
// keep its static addresses.
type recoveryDriver struct {
	orchestrator.Driver
	r    *Recoverer
	plan *RecoveryPlan

	mu    sync.Mutex
	refs  map[string]orchestrator.VMRef // VMs this session registered, by name
	ready map[string]bool               // members seen up (their guest heartbeat), by name
}

func (d *recoveryDriver) RegisterVM(ctx context.Context, p orchestrator.Placement) (orchestrator.VMRef, error) {
	if vm := d.plan.vm(p.Name); vm != nil && vm.VApp == "" {
		p.Folder = vm.Folder
	}
	ref, err := d.Driver.RegisterVM(ctx, p)
	if err == nil {
		d.mu.Lock()
		if d.refs == nil {
			d.refs = map[string]orchestrator.VMRef{}
		}
		d.refs[p.Name] = ref
		d.mu.Unlock()
	}
	return ref, err
}

// findVM is the VM this session registered as name, or the one vCenter
// finds by that name (a resume past the register step).
func (d *recoveryDriver) findVM(ctx context.Context, name string) (orchestrator.VMRef, error) {
	d.mu.Lock()
	ref, ok := d.refs[name]
	d.mu.Unlock()
	if ok {
		return ref, nil
	}
	return d.Driver.FindVM(ctx, name)
}

func (d *recoveryDriver) PowerOn(ctx context.Context, ref orchestrator.VMRef) error {
	obj := object.NewVirtualMachine(d.r.Client, types.ManagedObjectReference{Type: "VirtualMachine", Value: string(ref)})
	var mvm mo.VirtualMachine
	if err := obj.Properties(ctx, obj.Reference(), []string{"name", "runtime.powerState"}, &mvm); err != nil {
		return err
	}
	if mvm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
		return d.Driver.PowerOn(ctx, ref)
	}
	vm := d.plan.vm(mvm.Name)
	if vm == nil {
		return fmt.Errorf("power on %s: not a VM of this recovery's plan", mvm.Name)
	}
	if err := d.waitEarlierGroups(ctx, *vm); err != nil {
		return err
	}
	if d.r.Customize {
		if spec, ok := CustomizationSpec(*vm); ok {
			task, err := obj.Customize(ctx, spec)
			if err == nil {
				err = task.Wait(ctx)
			}
			if err != nil && !fault.Is(err, &types.CustomizationPending{}) {
				return fmt.Errorf("customize %s (keep its addresses): %w", vm.Name, err)
			}
		}
	}
	return d.Driver.PowerOn(ctx, ref)
}

// waitEarlierGroups holds a vApp member's power-on until the vApp's earlier
// startup groups are up, as vCenter's own vApp power-on does: every member
// of an earlier group that waits for its guest shows a running guest with a
// green heartbeat, then the start delay of the group just before passes.
func (d *recoveryDriver) waitEarlierGroups(ctx context.Context, vm RecoverVM) error {
	if vm.VApp == "" {
		return nil
	}
	i := slices.IndexFunc(d.plan.VApps, func(a PlannedVApp) bool { return a.Path == vm.Target })
	if i < 0 {
		return nil
	}
	timeout := cmp.Or(d.r.ReadyTimeout, 10*time.Minute)
	prev, delay := 0, 0
	for _, m := range d.plan.VApps[i].Members {
		if m.Group >= vm.Group || d.plan.vm(m.VM) == nil {
			continue // a later group, or not protected (not recovered)
		}
		if m.Group > prev {
			prev, delay = m.Group, 0
		}
		if m.Group == prev {
			delay = max(delay, m.StartDelay)
		}
		d.mu.Lock()
		up := d.ready[m.VM]
		d.mu.Unlock()
		if !m.WaitForGuest || up {
			continue // no wait, or seen up for an earlier group's sake
		}
		ref, err := d.findVM(ctx, m.VM)
		if err != nil {
			return fmt.Errorf("startup group %d of %s waits for %s: %w", vm.Group, vm.VApp, m.VM, err)
		}
		wctx, cancel := context.WithTimeout(ctx, timeout)
		err = d.Driver.WaitReady(wctx, ref, orchestrator.ReadyCheck{Heartbeat: true})
		cancel()
		if err != nil {
			return fmt.Errorf("startup group %d of %s: %s (group %d) not up within %s (waited for its guest heartbeat): %w",
				vm.Group, vm.VApp, m.VM, m.Group, timeout, err)
		}
		d.mu.Lock()
		if d.ready == nil {
			d.ready = map[string]bool{}
		}
		d.ready[m.VM] = true
		d.mu.Unlock()
	}
	if delay > 0 {
		select {
		case <-time.After(time.Duration(delay) * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// CustomizationSpec is the guest customization that gives a recovered VM
// its primary addresses: one adapter mapping per NIC, fixed for static
// NICs, DHCP otherwise. ok is false when no NIC is static (nothing to keep).
func CustomizationSpec(vm RecoverVM) (types.CustomizationSpec, bool) {
	spec := types.CustomizationSpec{
		Identity:         &types.CustomizationLinuxPrep{HostName: &types.CustomizationFixedName{Name: hostName(vm.Source)}, Domain: "local"},
		GlobalIPSettings: types.CustomizationGlobalIPSettings{},
	}
	static := false
	for _, n := range vm.NICs {
		ad := types.CustomizationAdapterMapping{MacAddress: n.MAC, Adapter: types.CustomizationIPSettings{Ip: &types.CustomizationDhcpIpGenerator{}}}
		if n.Addressing == AddrStatic && len(n.Addresses) > 0 {
			if pfx, err := netip.ParsePrefix(n.Addresses[0]); err == nil && pfx.Addr().Is4() {
				static = true
				ad.Adapter.Ip = &types.CustomizationFixedIp{IpAddress: pfx.Addr().String()}
				ad.Adapter.SubnetMask = mask4(pfx.Bits())
				if n.Gateway != "" {
					ad.Adapter.Gateway = []string{n.Gateway}
				}
			}
		}
		spec.NicSettingMap = append(spec.NicSettingMap, ad)
	}
	return spec, static
}

func hostName(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b)
}

func mask4(bits int) string {
	var m uint32 = ^uint32(0) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}

// makeNetworks creates the planned distributed switches and every network
// that does not exist yet: standard port groups on each planned host (an
// isolated vSwitch for test recoveries), distributed port groups with their
// VLAN.
func (r *Recoverer) makeNetworks(ctx context.Context, fi *find.Finder, dc *object.Datacenter, p *RecoveryPlan) error {
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	for _, s := range p.Switches {
		if _, err := fi.Network(ctx, s.Name); err == nil {
			continue
		}
		spec := types.DVSCreateSpec{ConfigSpec: &types.VMwareDVSConfigSpec{DVSConfigSpec: types.DVSConfigSpec{Name: s.Name}}}
		for _, hn := range s.Hosts {
			h, err := fi.HostSystem(ctx, hn)
			if err != nil {
				return err
			}
			spec.ConfigSpec.GetDVSConfigSpec().Host = append(spec.ConfigSpec.GetDVSConfigSpec().Host,
				types.DistributedVirtualSwitchHostMemberConfigSpec{Operation: "add", Host: h.Reference()})
		}
		task, err := folders.NetworkFolder.CreateDVS(ctx, spec)
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil && !fault.Is(err, &types.DuplicateName{}) {
			return fmt.Errorf("create distributed switch %s: %w", s.Name, err)
		}
	}
	for _, n := range p.Networks {
		if n.Exists {
			continue
		}
		switch n.Kind {
		case NetStandard:
			for _, hn := range n.Hosts {
				if err := ensureHostPortGroup(ctx, fi, hn, n); err != nil {
					return err
				}
			}
		case NetDistributed:
			if _, err := fi.Network(ctx, n.Name); err == nil {
				continue
			}
			sw, err := fi.Network(ctx, n.Switch)
			if err != nil {
				return fmt.Errorf("network %s: distributed switch %s: %w", n.Name, n.Switch, err)
			}
			dvs, ok := sw.(*object.DistributedVirtualSwitch)
			if !ok {
				return fmt.Errorf("network %s: %s is not a distributed switch", n.Name, n.Switch)
			}
			task, err := dvs.AddPortgroup(ctx, []types.DVPortgroupConfigSpec{{Name: n.Name, Type: "earlyBinding", NumPorts: 8,
				DefaultPortConfig: &types.VMwareDVSPortSetting{Vlan: &types.VmwareDistributedVirtualSwitchVlanIdSpec{VlanId: int32(n.VLAN)}}}})
			if err == nil {
				err = task.Wait(ctx)
			}
			if err != nil && !fault.Is(err, &types.DuplicateName{}) {
				return fmt.Errorf("create distributed port group %s: %w", n.Name, err)
			}
		}
	}
	return nil
}

func ensureHostPortGroup(ctx context.Context, fi *find.Finder, hostName string, n PlannedNet) error {
	h, err := fi.HostSystem(ctx, hostName)
	if err != nil {
		return fmt.Errorf("network %s: host %s: %w", n.Name, hostName, err)
	}
	ns, err := h.ConfigManager().NetworkSystem(ctx)
	if err != nil {
		return err
	}
	var hns mo.HostNetworkSystem
	if err := ns.Properties(ctx, ns.Reference(), []string{"networkInfo"}, &hns); err != nil {
		return err
	}
	var hs mo.HostSystem
	if err := h.Properties(ctx, h.Reference(), []string{"config.network.portgroup"}, &hs); err != nil {
		return err
	}
	if hs.Config != nil && hs.Config.Network != nil &&
		slices.ContainsFunc(hs.Config.Network.Portgroup, func(pg types.HostPortGroup) bool { return pg.Spec.Name == n.Name }) {
		return nil
	}
	if hns.NetworkInfo != nil {
		if slices.ContainsFunc(hns.NetworkInfo.Portgroup, func(pg types.HostPortGroup) bool { return pg.Spec.Name == n.Name }) {
			return nil
		}
		if !slices.ContainsFunc(hns.NetworkInfo.Vswitch, func(v types.HostVirtualSwitch) bool { return v.Name == n.Switch }) {
			if n.Switch != IsolatedSwitch {
				return fmt.Errorf("network %s: host %s has no vSwitch %s", n.Name, hostName, n.Switch)
			}
			// No uplinks: nothing on it reaches the physical network.
			if err := ns.AddVirtualSwitch(ctx, n.Switch, &types.HostVirtualSwitchSpec{NumPorts: 128}); err != nil && !fault.Is(err, &types.AlreadyExists{}) {
				return fmt.Errorf("isolated vSwitch on %s: %w", hostName, err)
			}
		}
	}
	err = ns.AddPortGroup(ctx, types.HostPortGroupSpec{Name: n.Name, VlanId: int32(n.VLAN), VswitchName: n.Switch, Policy: types.HostNetworkPolicy{}})
	if err != nil && !fault.Is(err, &types.AlreadyExists{}) {
		return fmt.Errorf("port group %s (VLAN %d) on host %s: %w", n.Name, n.VLAN, hostName, err)
	}
	return nil
}

func (r *Recoverer) ensurePool(ctx context.Context, fi *find.Finder, pl PlannedPool) error {
	if _, err := fi.ResourcePool(ctx, pl.Path); err == nil {
		return nil
	}
	parentPath, name := path.Split(pl.Path)
	parent, err := fi.ResourcePool(ctx, strings.TrimSuffix(parentPath, "/"))
	if err != nil {
		return fmt.Errorf("pool %s: parent: %w", pl.Path, err)
	}
	_, err = parent.Create(ctx, name, types.ResourceConfigSpec{CpuAllocation: allocation(pl.CPU), MemoryAllocation: allocation(pl.Mem)})
	if err != nil && !fault.Is(err, &types.DuplicateName{}) {
		return fmt.Errorf("create pool %s: %w", pl.Path, err)
	}
	return nil
}

func allocation(a Allocation) types.ResourceAllocationInfo {
	level := types.SharesLevel(a.Shares)
	if level == "" {
		level = types.SharesLevelNormal
	}
	exp := a.Expandable
	return types.ResourceAllocationInfo{Reservation: &a.Reservation, Limit: &a.Limit, ExpandableReservation: &exp,
		Shares: &types.SharesInfo{Level: level, Shares: a.ShareValue}}
}

func ensureFolder(ctx context.Context, fi *find.Finder, root *object.Folder, rel string) error {
	if _, err := fi.Folder(ctx, root.InventoryPath+"/"+rel); err == nil {
		return nil
	}
	parentRel, name := path.Split(rel)
	parent := root
	if parentRel != "" {
		f, err := fi.Folder(ctx, root.InventoryPath+"/"+strings.TrimSuffix(parentRel, "/"))
		if err != nil {
			return fmt.Errorf("folder %s: parent: %w", rel, err)
		}
		parent = f
	}
	if _, err := parent.CreateFolder(ctx, name); err != nil && !fault.Is(err, &types.DuplicateName{}) {
		return fmt.Errorf("create folder %s: %w", rel, err)
	}
	return nil
}

// Stop undoes recovery session id: it stops every restore session the
// recovery ran (VMs off, unregistered, exports withdrawn), then removes the
// vApps, pools, folders, networks and switches the plan created, newest
// first. What existed before the recovery is never touched. Idempotent.
func (r *Recoverer) Stop(ctx context.Context, id string) error {
	ctx = orchestrator.WithMemo(ctx)
	_, p, err := r.LoadRecovery(ctx, id)
	if err != nil {
		return err
	}
	if err := r.cat().SetSessionState(ctx, id, catalog.SessionStopping, ""); err != nil {
		return err
	}
	err = r.step(ctx, id, "stop", func(ctx context.Context) (any, error) { return nil, r.undo(ctx, p) })
	if err != nil {
		r.cat().SetSessionState(context.WithoutCancel(ctx), id, catalog.SessionFailed, err.Error())
		return err
	}
	return r.cat().SetSessionState(ctx, id, catalog.SessionStopped, "")
}

func (r *Recoverer) undo(ctx context.Context, p *RecoveryPlan) error {
	var errs []error
	for _, u := range slices.Backward(p.units()) {
		sid := p.Sessions[u.key]
		if sid == "" {
			continue
		}
		s, err := r.cat().Session(ctx, sid)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if s.State == catalog.SessionStopped {
			continue
		}
		if err := r.Orchestrator.Stop(ctx, sid); err != nil {
			errs = append(errs, fmt.Errorf("stop %s (session %s): %w", strings.Join(u.vms, ", "), sid, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...) // the rest would be in use
	}
	fi, dc, err := r.finder(ctx)
	if err != nil {
		return err
	}
	for _, a := range slices.Backward(p.VApps) {
		if !a.Exists {
			if err := r.Orchestrator.Driver.DestroyApp(ctx, a.Path); err != nil {
				errs = append(errs, fmt.Errorf("remove vApp %s: %w", a.Path, err))
			}
		}
	}
	for _, pl := range slices.Backward(p.Pools) {
		if pl.Exists {
			continue
		}
		if err := destroyIfThere(ctx, func() (destroyer, error) { return fi.ResourcePool(ctx, pl.Path) }); err != nil {
			errs = append(errs, fmt.Errorf("remove pool %s: %w", pl.Path, err))
		}
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	for _, f := range slices.Backward(p.Folders) {
		if f.Exists {
			continue
		}
		if err := destroyIfThere(ctx, func() (destroyer, error) { return fi.Folder(ctx, folders.VmFolder.InventoryPath+"/"+f.Path) }); err != nil {
			errs = append(errs, fmt.Errorf("remove folder %s: %w", f.Path, err))
		}
	}
	isolated := map[string]bool{}
	for _, n := range slices.Backward(p.Networks) {
		if n.Exists {
			continue
		}
		switch n.Kind {
		case NetStandard:
			for _, hn := range n.Hosts {
				h, err := fi.HostSystem(ctx, hn)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				ns, err := h.ConfigManager().NetworkSystem(ctx)
				if err == nil {
					err = ns.RemovePortGroup(ctx, n.Name)
				}
				if err != nil && !fault.Is(err, &types.NotFound{}) {
					errs = append(errs, fmt.Errorf("remove port group %s from %s: %w", n.Name, hn, err))
				}
				if n.Switch == IsolatedSwitch {
					isolated[hn] = true
				}
			}
		case NetDistributed:
			if err := destroyIfThere(ctx, func() (destroyer, error) {
				n, err := fi.Network(ctx, n.Name)
				if err != nil {
					return nil, err
				}
				d, _ := n.(destroyer)
				return d, nil
			}); err != nil {
				errs = append(errs, fmt.Errorf("remove distributed port group %s: %w", n.Name, err))
			}
		}
	}
	for hn := range isolated {
		if !r.isolatedSwitchUnused(ctx, fi, hn) {
			continue
		}
		h, err := fi.HostSystem(ctx, hn)
		if err == nil {
			var ns *object.HostNetworkSystem
			if ns, err = h.ConfigManager().NetworkSystem(ctx); err == nil {
				err = ns.RemoveVirtualSwitch(ctx, IsolatedSwitch)
			}
		}
		if err != nil && !fault.Is(err, &types.NotFound{}) {
			errs = append(errs, fmt.Errorf("remove isolated vSwitch from %s: %w", hn, err))
		}
	}
	for _, s := range slices.Backward(p.Switches) {
		if err := destroyIfThere(ctx, func() (destroyer, error) {
			n, err := fi.Network(ctx, s.Name)
			if err != nil {
				return nil, err
			}
			d, _ := n.(destroyer)
			return d, nil
		}); err != nil {
			errs = append(errs, fmt.Errorf("remove distributed switch %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// isolatedSwitchUnused says whether the isolated vSwitch on host has no
// port groups left (another test recovery may still use it), as the
// host's network system reports it.
func (r *Recoverer) isolatedSwitchUnused(ctx context.Context, fi *find.Finder, hostName string) bool {
	h, err := fi.HostSystem(ctx, hostName)
	if err != nil {
		return false
	}
	ns, err := h.ConfigManager().NetworkSystem(ctx)
	if err != nil {
		return false
	}
	var hns mo.HostNetworkSystem
	if err := ns.Properties(ctx, ns.Reference(), []string{"networkInfo.vswitch"}, &hns); err != nil || hns.NetworkInfo == nil {
		return false
	}
	for _, v := range hns.NetworkInfo.Vswitch {
		if v.Name == IsolatedSwitch {
			return len(v.Portgroup) == 0
		}
	}
	return false
}

type destroyer interface {
	Destroy(ctx context.Context) (*object.Task, error)
}

func destroyIfThere(ctx context.Context, get func() (destroyer, error)) error {
	d, err := get()
	if isNotFound(err) || (err == nil && d == nil) {
		return nil
	}
	if err != nil {
		return err
	}
	task, err := d.Destroy(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil && fault.Is(err, &types.ManagedObjectNotFound{}) {
		return nil
	}
	return err
}
