package orchestrator

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// Restore kinds.
const (
	KindVApp    = "vapp"    // a whole vApp
	KindPartial = "partial" // some members back into the running vApp
	KindVM      = "vm"      // one VM
	KindVMs     = "vms"     // several VMs from one export, each on its own (no vApp of the session's)
	KindTest    = "test"    // a test clone: new names, isolated network
)

// Request is what an operator asks for.
type Request struct {
	Kind  string   `json:"kind"`
	App   string   `json:"app,omitempty"`   // vapp, partial, test of an app
	VMs   []string `json:"vms,omitempty"`   // vm, vms, partial: which VMs
	Point string   `json:"point,omitempty"` // vm: a given restore point (default latest)
	// Points gives vms a restore point per VM (by repository name; a VM
	// not named gets its latest).
	Points     map[string]string `json:"points,omitempty"`
	Before     time.Time         `json:"before,omitzero"` // latest point at or before (zero: latest)
	Target     string            `json:"target"`          // cluster, resource pool or vApp inventory path
	NetworkMap map[string]string `json:"network_map,omitempty"`
	// Test clones get Suffix on every name, NICs on IsolatedNetwork and
	// fresh MAC addresses.
	Test            bool   `json:"test,omitempty"`
	Suffix          string `json:"suffix,omitempty"`
	IsolatedNetwork string `json:"isolated_network,omitempty"`
	MigrateTo       string `json:"migrate_to,omitempty"` // datastore to Storage-vMotion to after boot
	// Apart lists sets of VM names that must run on different hosts.
	Apart [][]string `json:"apart,omitempty"`
	// ReadyTimeout bounds the wait for each startup group.
	ReadyTimeout time.Duration `json:"-"` // JSON: ready_timeout_s

	// Server is the NFS server name hosts mount (same on every host).
	Server string   `json:"server"`
	Allow  []string `json:"allow,omitempty"` // host addresses admitted to the session
}

// Plan is a Request resolved against the catalog and the inventory: which
// VM runs where, in which order, on which networks. It is computed without
// calling the hypervisor and stored with the session, so a resumed session
// carries out the same plan.
type Plan struct {
	Request   Request     `json:"request"`
	App       *AppSpec    `json:"app,omitempty"` // the vApp to create or reuse
	AppPath   string      `json:"app_path,omitempty"`
	VMs       []PlannedVM `json:"vms"`
	Groups    [][]string  `json:"groups"` // inventory names, in startup order
	Hosts     []string    `json:"hosts"`  // hosts that mount the datastore
	Datastore string      `json:"datastore"`
	// NotChecked names what a plan made without the hypervisor could not
	// check ("target", "networks", ...).
	NotChecked []string `json:"not_checked,omitempty"`
}

// PlannedVM is one VM of a plan.
type PlannedVM struct {
	Name       string     `json:"name"`   // inventory name (with the test suffix)
	Source     string     `json:"source"` // VM name in the repository
	Point      string     `json:"point"`
	Host       string     `json:"host"`
	Group      int        `json:"group"`
	StartDelay int        `json:"start_delay_s,omitempty"`
	Ready      ReadyCheck `json:"ready"`
	Spec       VMSpec     `json:"spec"`
	// Folder is the VM's folder in the session export ("web01-test").
	Folder string `json:"folder"`
}

// ErrPlan marks a request that cannot be planned; the message says why.
var ErrPlan = errors.New("cannot plan")

// planNotFound is a plan that names something that does not exist: it is
// both ErrPlan and ErrNotFound.
type planNotFound struct{ msg string }

func (e *planNotFound) Error() string   { return ErrPlan.Error() + ": " + e.msg }
func (e *planNotFound) Is(t error) bool { return t == ErrPlan || t == ErrNotFound }

func notFound(format string, args ...any) error {
	return &planNotFound{fmt.Sprintf(format, args...)}
}

// Inputs are what planning reads: the restore points of the VMs involved,
// the app manifest (for app kinds), the candidate hosts.
type Inputs struct {
	Points map[string]*repo.RestorePoint // by VM name
	App    *repo.App
	Hosts  []Host
}

// MakePlan resolves req. It does no I/O.
func MakePlan(req Request, in Inputs) (*Plan, error) {
	if req.Server == "" {
		return nil, fmt.Errorf("%w: no NFS server name for the hosts to mount", ErrPlan)
	}
	if req.Test && req.Suffix == "" {
		req.Suffix = "-test"
	}
	if req.Test && req.IsolatedNetwork == "" {
		return nil, fmt.Errorf("%w: a test clone needs an isolated network (--isolated-network)", ErrPlan)
	}
	if req.ReadyTimeout == 0 {
		req.ReadyTimeout = 10 * time.Minute
	}
	members, err := membersFor(req, in)
	if err != nil {
		return nil, err
	}
	p := &Plan{Request: req}
	for _, m := range members {
		pt := in.Points[m.VM]
		if pt == nil {
			why := ""
			if !req.Before.IsZero() {
				why = " at or before " + req.Before.Format(time.RFC3339)
			}
			return nil, notFound("vm %s has no restore point%s (`rekindle list points --vm %s` lists them)", m.VM, why, m.VM)
		}
		name := m.VM + req.Suffix
		if err := repo.ValidName(name); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrPlan, err)
		}
		spec, err := vmSpec(pt, req, name)
		if err != nil {
			return nil, err
		}
		p.VMs = append(p.VMs, PlannedVM{Name: name, Source: m.VM, Point: pt.ID, Group: m.Group,
			StartDelay: m.StartDelay, Ready: ReadyCheck{Heartbeat: m.WaitForGuest}, Spec: spec, Folder: name})
	}
	if err := placeVMs(p, req, in.Hosts); err != nil {
		return nil, err
	}
	p.Groups = groups(p.VMs)
	if in.App != nil && req.Kind != KindVM && req.Kind != KindVMs {
		name := in.App.Name + req.Suffix
		spec := &AppSpec{Name: name, Parent: req.Target, Resources: Resources{
			CPUShares: in.App.Resources.CPUSharesLevel, CPUReservationMHz: in.App.Resources.CPUReservationMHz,
			CPULimitMHz: in.App.Resources.CPULimitMHz, MemReservationMB: in.App.Resources.MemReservationMB,
			MemLimitMB: in.App.Resources.MemLimitMB}}
		for _, vm := range p.VMs {
			spec.Members = append(spec.Members, AppMember{VM: vm.Name, Group: vm.Group, StartDelay: vm.StartDelay,
				WaitForGuest: vm.Ready.Heartbeat})
		}
		p.App = spec
	}
	return p, nil
}

// membersFor lists the VMs to restore with their startup settings.
func membersFor(req Request, in Inputs) ([]repo.AppMember, error) {
	switch req.Kind {
	case KindVApp, KindTest:
		if in.App == nil {
			if req.Kind == KindTest && len(req.VMs) > 0 {
				break
			}
			return nil, notFound("app %q is not in the catalog (define it with `rekindle app define`, or back a VM up with `--app %s`)", req.App, req.App)
		}
		return in.App.Members, nil
	case KindPartial:
		if in.App == nil {
			return nil, notFound("app %q is not in the catalog", req.App)
		}
		if len(req.VMs) == 0 {
			return nil, fmt.Errorf("%w: name the failed members to restore (--member)", ErrPlan)
		}
		var out []repo.AppMember
		for _, vm := range req.VMs {
			i := slices.IndexFunc(in.App.Members, func(m repo.AppMember) bool { return m.VM == vm })
			if i < 0 {
				return nil, fmt.Errorf("%w: %s is not a member of app %s", ErrPlan, vm, in.App.Name)
			}
			out = append(out, in.App.Members[i])
		}
		return out, nil
	case KindVM:
		if len(req.VMs) != 1 {
			return nil, fmt.Errorf("%w: a single-VM restore names exactly one VM", ErrPlan)
		}
	case KindVMs:
		if len(req.VMs) == 0 {
			return nil, fmt.Errorf("%w: a restore of several VMs names at least one", ErrPlan)
		}
	default:
		return nil, fmt.Errorf("%w: unknown restore kind %q", ErrPlan, req.Kind)
	}
	var out []repo.AppMember
	for _, vm := range req.VMs {
		out = append(out, repo.AppMember{VM: vm, Group: 1})
	}
	return out, nil
}

// vmSpec is the hardware a restored VM gets, from its backup record: disks
// in the session folder, NICs on mapped (or isolated) networks.
func vmSpec(pt *repo.RestorePoint, req Request, folder string) (VMSpec, error) {
	spec := VMSpec{NumCPU: pt.VM.NumCPU, MemoryMB: pt.VM.MemoryMB}
	for _, d := range pt.Disks {
		spec.Disks = append(spec.Disks, DiskSpec{Controller: d.Controller, Adapter: d.Adapter,
			File: folder + "/" + d.Name + ".vmdk", SizeBytes: d.Size})
	}
	for _, n := range pt.NICs {
		nic := NICSpec{Key: n.Key, Network: n.Network, Type: n.Type, MAC: n.MAC}
		if to, ok := req.NetworkMap[n.Network]; ok {
			nic.Network = to
		}
		if req.Test {
			// A clone must not clash with the original on the wire.
			nic.Network, nic.MAC = req.IsolatedNetwork, ""
		}
		if nic.Network == "" {
			return spec, fmt.Errorf("%w: vm %s nic %s has no network: map one with --network-map", ErrPlan, pt.VM.Name, n.Key)
		}
		spec.NICs = append(spec.NICs, nic)
	}
	return spec, nil
}

// placeVMs puts each VM on the usable host with the most memory left, so
// VMs spread out; VMs named together in req.Apart land on different hosts.
func placeVMs(p *Plan, req Request, hosts []Host) error {
	type cand struct {
		Host
		free int64
		vms  []string
	}
	var cands []*cand
	var refused []string
	for _, h := range hosts {
		switch {
		case !h.Connected:
			refused = append(refused, h.Name+" (not connected)")
		case h.Maintenance:
			refused = append(refused, h.Name+" (in maintenance)")
		default:
			cands = append(cands, &cand{Host: h, free: h.MemFreeMB})
		}
	}
	if len(cands) == 0 {
		msg := "no hosts under " + req.Target
		if len(refused) > 0 {
			msg = "no usable host: " + strings.Join(refused, ", ")
		}
		return fmt.Errorf("%w: %s", ErrPlan, msg)
	}
	apartOf := map[string][]string{}
	for _, set := range req.Apart {
		for _, vm := range set {
			apartOf[vm] = append(apartOf[vm], set...)
		}
	}
	// Biggest VMs first, so they get the roomiest hosts.
	order := make([]int, len(p.VMs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(p.VMs[b].Spec.MemoryMB, p.VMs[a].Spec.MemoryMB) })
	for _, i := range order {
		vm := &p.VMs[i]
		var best *cand
		for _, c := range cands {
			if int64(vm.Spec.MemoryMB) > c.free {
				continue
			}
			clash := slices.ContainsFunc(c.vms, func(other string) bool {
				return other != vm.Source && slices.Contains(apartOf[vm.Source], other)
			})
			if clash {
				continue
			}
			if best == nil || c.free > best.free {
				best = c
			}
		}
		if best == nil {
			return fmt.Errorf("%w: no host has room for %s (%d MB) apart from %v", ErrPlan, vm.Name, vm.Spec.MemoryMB, apartOf[vm.Source])
		}
		best.free -= int64(vm.Spec.MemoryMB)
		best.vms = append(best.vms, vm.Source)
		vm.Host = best.Name
	}
	for _, c := range cands {
		if len(c.vms) > 0 {
			p.Hosts = append(p.Hosts, c.Name)
		}
	}
	slices.Sort(p.Hosts)
	return nil
}

func groups(vms []PlannedVM) [][]string {
	byGroup := map[int][]string{}
	var keys []int
	for _, v := range vms {
		if _, ok := byGroup[v.Group]; !ok {
			keys = append(keys, v.Group)
		}
		byGroup[v.Group] = append(byGroup[v.Group], v.Name)
	}
	slices.Sort(keys)
	out := make([][]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, byGroup[k])
	}
	return out
}

// VM returns the planned VM named name.
func (p *Plan) VM(name string) *PlannedVM {
	for i := range p.VMs {
		if p.VMs[i].Name == name {
			return &p.VMs[i]
		}
	}
	return nil
}
