package site

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/simlab"
	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
)

// appSite builds a primary with one datacenter, one cluster and apps vApps
// of perApp VMs each; vApp i gets priority prio(i) and its VMs start in
// reverse name order (VMn first). It returns the vApp member names by vApp.
func appSite(tb testing.TB, ctx context.Context, apps, perApp int, prio func(i int) int) (*simulator.Model, *govmomi.Client, map[string][]string) {
	tb.Helper()
	return appSiteWaiting(tb, ctx, apps, perApp, prio, false)
}

// appSiteWaiting is appSite where, with wait set, every startup group
// waits for its guest (VMware Tools running) before the next one starts.
func appSiteWaiting(tb testing.TB, ctx context.Context, apps, perApp int, prio func(i int) int, wait bool) (*simulator.Model, *govmomi.Client, map[string][]string) {
	tb.Helper()
	model := simulator.VPX()
	model.Datacenter, model.Host, model.Cluster, model.Pool, model.App, model.Machine, model.Portgroup = 1, 0, 1, 0, apps, perApp, 1
	if err := model.Create(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(model.Remove)
	vcsimext.Extend(model.Map(), vcsimext.Options{})
	srv := model.Service.NewServer()
	tb.Cleanup(srv.Close)
	gc, err := govmomi.NewClient(ctx, srv.URL, true)
	if err != nil {
		tb.Fatal(err)
	}
	c := gc.Client
	fi := find.NewFinder(c)
	dc, err := fi.Datacenter(ctx, "DC0")
	if err != nil {
		tb.Fatal(err)
	}
	fi.SetDatacenter(dc)
	members := map[string][]string{}
	for i := range apps {
		name := fmt.Sprintf("DC0_C0_APP%d", i)
		ref, err := findRef(ctx, c, "VirtualApp", name)
		if err != nil {
			tb.Fatal(err)
		}
		spec := types.VAppConfigSpec{Annotation: fmt.Sprintf("rekindle-priority: %d", prio(i))}
		for j := range perApp {
			vmName := fmt.Sprintf("%s_VM%d", name, j)
			vm, err := fi.VirtualMachine(ctx, vmName)
			if err != nil {
				tb.Fatal(err)
			}
			r := vm.Reference()
			spec.EntityConfig = append(spec.EntityConfig, types.VAppEntityConfigInfo{Key: &r, StartOrder: int32(perApp - j), StartAction: "powerOn",
				WaitingForGuest: types.NewBool(wait)})
			members[name] = append(members[name], vmName)
		}
		if err := object.NewVirtualApp(c, ref).UpdateConfig(ctx, spec); err != nil {
			tb.Fatal(err)
		}
	}
	return model, gc, members
}

func findRef(ctx context.Context, c *vim25.Client, kind, name string) (types.ManagedObjectReference, error) {
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{kind}, true)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	defer v.Destroy(ctx)
	refs, err := v.Find(ctx, []string{kind}, property.Match{"name": name})
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	if len(refs) != 1 {
		return types.ManagedObjectReference{}, fmt.Errorf("%s %s: %d found", kind, name, len(refs))
	}
	return refs[0], nil
}

// barrierDriver holds the first power-on of each vApp in hold until every
// vApp in hold has reached its first power-on: recovered one after another,
// the first vApp waits for the others in vain, and the power-on fails.
type barrierDriver struct {
	orchestrator.Driver
	c    *vim25.Client
	hold map[string]bool // vApp names
	wait time.Duration

	mu      sync.Mutex
	arrived map[string]bool
	all     chan struct{}
}

func (d *barrierDriver) PowerOn(ctx context.Context, ref orchestrator.VMRef) error {
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(d.c).RetrieveOne(ctx, types.ManagedObjectReference{Type: "VirtualMachine", Value: string(ref)}, []string{"name"}, &vm); err != nil {
		return err
	}
	app := vm.Name[:strings.LastIndex(vm.Name, "_VM")]
	d.mu.Lock()
	first := d.hold[app] && !d.arrived[app]
	if first {
		d.arrived[app] = true
		if len(d.arrived) == len(d.hold) {
			close(d.all)
		}
	}
	d.mu.Unlock()
	if first {
		select {
		case <-d.all:
		case <-time.After(d.wait):
			return fmt.Errorf("vApp %s: the other vApps of its priority did not reach power-on within %s: not recovered in parallel", app, d.wait)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return d.Driver.PowerOn(ctx, ref)
}

func (d *barrierDriver) SetStartOrder(ctx context.Context, appPath string, members []orchestrator.AppMember) error {
	return d.Driver.(*simlab.SimHosts).SetStartOrder(ctx, appPath, members)
}

// newRecoveryLab starts a recovery site (its own vCenter simulator, hosts and
// rekindle server) for the test, in the folder it returns.
func newRecoveryLab(tb testing.TB, ctx context.Context) (*simlab.Lab, string) {
	tb.Helper()
	dir, err := os.MkdirTemp("", "recover")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	lab, err := simlab.New(ctx, simlab.Options{Dir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(lab.Close)
	return lab, dir
}

// recoverLab protects the primary's vApp VMs into a new recovery lab and
// plans their recovery with a Recoverer over driver wrap(lab.Hosts); it
// returns how long the protect cycle took too.
func recoverLab(tb testing.TB, ctx context.Context, pc *vim25.Client, members map[string][]string,
	wrap func(*simlab.Lab) orchestrator.Driver) (*simlab.Lab, *Recoverer, *RecoveryPlan, time.Duration) {
	tb.Helper()
	lab, dir := newRecoveryLab(tb, ctx)
	var protected []string
	for _, ms := range members {
		protected = append(protected, ms...)
	}
	inv, err := Extract(ctx, pc, ExtractOptions{Site: "hq"})
	if err != nil {
		tb.Fatal(err)
	}
	nics := map[string][]NIC{}
	for _, dc := range inv.Datacenters {
		for _, vm := range dc.VMs {
			nics[vm.Name] = vm.NICs
		}
	}
	start := time.Now()
	if _, err := Protect(ctx, pc, lab.Repo, labImporter{lab: lab, dir: filepath.Join(dir, "gen"), nics: nics},
		ProtectOptions{ExtractOptions: ExtractOptions{Site: "hq"}, VMs: protected}); err != nil {
		tb.Fatal(err)
	}
	took := time.Since(start)
	pkg, err := Load(lab.Repo, "latest")
	if err != nil {
		tb.Fatal(err)
	}
	o := *lab.Orchestrator
	o.Driver = wrap(lab)
	rec := &Recoverer{Client: lab.Driver.Client(), Orchestrator: &o, Datacenter: "/DC0", Customize: true}
	host, _, _ := net.SplitHostPort(lab.Service.NFSAddr().String())
	plan, err := rec.Plan(ctx, []*Package{pkg}, Mapping{Site: "hq"}, RecoveryOptions{Cluster: simlab.Target, Server: host})
	if err != nil {
		tb.Fatal(err)
	}
	return lab, rec, plan, took
}

// powerOnTimes reads every VmPoweredOnEvent of the recovery vCenter: VM
// name to (event key, time), first power-on only.
func powerOnTimes(t *testing.T, ctx context.Context, c *vim25.Client) map[string]types.Event {
	t.Helper()
	evs, err := event.NewManager(c).QueryEvents(ctx, types.EventFilterSpec{Type: []string{"VmPoweredOnEvent"}, MaxCount: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]types.Event{}
	for _, e := range evs {
		on, ok := e.(*types.VmPoweredOnEvent)
		if !ok || on.Vm == nil {
			continue
		}
		ev := on.GetEvent()
		if old, ok := out[ev.Vm.Name]; !ok || ev.Key < old.Key {
			out[ev.Vm.Name] = *ev
		}
	}
	return out
}

// TestRecoverPriorities: vApps of one priority recover in parallel (their
// power-ons overlap in the recovery vCenter's events), each in its startup
// order, and a priority starts only when the one before is all powered on.
func TestRecoverPriorities(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// APP0, APP1: priority 1; APP2, APP3: priority 2.
	_, pc, members := appSite(t, ctx, 4, 2, func(i int) int { return 1 + i/2 })
	_, rec, plan, _ := recoverLab(t, ctx, pc.Client, members, func(lab *simlab.Lab) orchestrator.Driver {
		return &barrierDriver{Driver: lab.Hosts, c: lab.Driver.Client(), wait: time.Minute,
			hold: map[string]bool{"DC0_C0_APP0": true, "DC0_C0_APP1": true}, arrived: map[string]bool{}, all: make(chan struct{})}
	})
	rec.Parallel = 4
	id, err := rec.Create(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}

	evs := powerOnTimes(t, ctx, rec.Client)
	type span struct{ first, last types.Event }
	spans := map[string]span{}
	for app, ms := range members {
		var s span
		for i, vm := range slices.Backward(ms) { // startup order: VMn first
			e, ok := evs[vm]
			if !ok {
				t.Fatalf("%s: no power-on event (events %v)", vm, evs)
			}
			if i < len(ms)-1 && e.Key <= s.last.Key {
				t.Errorf("vApp %s: %s powered on before %s: not in startup order", app, vm, s.last.Vm.Name)
			}
			if i == len(ms)-1 {
				s.first = e
			}
			s.last = e
		}
		spans[app] = s
		t.Logf("%s (priority %d): %s .. %s", app, plan.vm(ms[0]).Priority, s.first.CreatedTime.Format("15:04:05.000000"), s.last.CreatedTime.Format("15:04:05.000000"))
	}
	overlap := func(a, b span) bool { return a.first.Key < b.last.Key && b.first.Key < a.last.Key }
	if a, b := spans["DC0_C0_APP0"], spans["DC0_C0_APP1"]; !overlap(a, b) {
		t.Errorf("priority 1 vApps did not power on in parallel: APP0 %d..%d, APP1 %d..%d (event keys)", a.first.Key, a.last.Key, b.first.Key, b.last.Key)
	}
	for _, hi := range []string{"DC0_C0_APP2", "DC0_C0_APP3"} {
		for _, lo := range []string{"DC0_C0_APP0", "DC0_C0_APP1"} {
			if h, l := spans[hi], spans[lo]; h.first.Key <= l.last.Key || h.first.CreatedTime.Before(l.last.CreatedTime) {
				t.Errorf("%s (priority 2) powered on at %s, before %s (priority 1) was done at %s", hi,
					h.first.CreatedTime.Format(time.RFC3339Nano), lo, l.last.CreatedTime.Format(time.RFC3339Nano))
			}
		}
	}
}
