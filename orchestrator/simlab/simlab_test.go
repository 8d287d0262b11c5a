package simlab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

func newLab(t *testing.T) *Lab {
	t.Helper()
	l, err := New(context.Background(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if _, err := l.ImportShop(context.Background(), 2<<20, vmgen.FillMixed); err != nil {
		t.Fatal(err)
	}
	return l
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// inventory is what a restore may add to vCenter: VMs, vApps, datastores.
type inventory struct{ VMs, VApps, Datastores []string }

func (l *Lab) inventory(t *testing.T) inventory {
	t.Helper()
	ctx := ctxT(t)
	c := l.Driver.Client()
	list := func(kind string) []string {
		v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{kind}, true)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Destroy(ctx)
		var objs []mo.ManagedEntity
		if err := v.Retrieve(ctx, []string{kind}, []string{"name"}, &objs); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range objs {
			names = append(names, o.Name)
		}
		sort.Strings(names)
		return names
	}
	return inventory{VMs: list("VirtualMachine"), VApps: list("VirtualApp"), Datastores: list("Datastore")}
}

func (inv inventory) equal(o inventory) bool {
	return slices.Equal(inv.VMs, o.VMs) && slices.Equal(inv.VApps, o.VApps) && slices.Equal(inv.Datastores, o.Datastores)
}

// powerOnOrder reads the order VMs were powered on from vCenter's events.
func (l *Lab) powerOnOrder(t *testing.T, names []string) []string {
	t.Helper()
	evs, err := VMEvents(ctxT(t), l.Driver.Client())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.What == EventPoweredOn && slices.Contains(names, e.VM) {
			out = append(out, e.VM)
		}
	}
	return out
}

func (l *Lab) vm(t *testing.T, name string) mo.VirtualMachine {
	t.Helper()
	ctx := ctxT(t)
	f := find.NewFinder(l.Driver.Client(), true)
	o, err := f.VirtualMachine(ctx, "/DC0/vm/"+name)
	if err != nil {
		// VMs in a vApp live under the vApp in the inventory.
		list, _ := f.VirtualMachineList(ctx, "/DC0/vm/...")
		for _, v := range list {
			if v.Name() == name {
				o, err = v, nil
			}
		}
		if err != nil {
			t.Fatalf("vm %s: %v", name, err)
		}
	}
	var m mo.VirtualMachine
	if err := property.DefaultCollector(l.Driver.Client()).RetrieveOne(ctx, o.Reference(),
		[]string{"name", "runtime.powerState", "config.hardware.device", "datastore", "parentVApp", "resourcePool"}, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func nics(m mo.VirtualMachine) []types.BaseVirtualEthernetCard {
	var out []types.BaseVirtualEthernetCard
	for _, d := range m.Config.Hardware.Device {
		if n, ok := d.(types.BaseVirtualEthernetCard); ok {
			out = append(out, n)
		}
	}
	return out
}

func disks(m mo.VirtualMachine) int {
	n := 0
	for _, d := range m.Config.Hardware.Device {
		if _, ok := d.(*types.VirtualDisk); ok {
			n++
		}
	}
	return n
}

func TestWholeVAppRestoreAndMigrate(t *testing.T) {
	l := newLab(t)
	ctx := ctxT(t)
	before := l.inventory(t)
	id, err := l.Orchestrator.Start(ctx, l.Request(orchestrator.KindVApp))
	if err != nil {
		t.Fatal(err)
	}
	if got := l.powerOnOrder(t, []string{"db01", "app01", "web01"}); !slices.Equal(got, []string{"db01", "app01", "web01"}) {
		t.Fatalf("power-on order from vCenter's events: %v", got)
	}
	for i, name := range []string{"db01", "app01", "web01"} {
		m := l.vm(t, name)
		if m.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || m.ResourcePool == nil || m.ResourcePool.Type != "VirtualApp" {
			t.Fatalf("%s: %s, pool %v", name, m.Runtime.PowerState, m.ResourcePool)
		}
		ns := nics(m)
		if disks(m) != 1 || len(ns) != 1 {
			t.Fatalf("%s: %d disks, %d NICs after reconcile", name, disks(m), len(ns))
		}
		if mac := ns[0].GetVirtualEthernetCard().MacAddress; mac != "00:50:56:01:00:0"+string(rune('1'+i)) {
			t.Fatalf("%s: MAC %s, not the backed-up one", name, mac)
		}
	}
	inv := l.inventory(t)
	if !slices.Contains(inv.VApps, "shop") || !slices.Contains(inv.Datastores, id) {
		t.Fatalf("after restore: %+v", inv)
	}
	s, _ := l.Catalog.Session(ctx, id)
	if s.State != catalog.SessionRunning || len(s.Steps) != 5 {
		t.Fatalf("session %+v", s)
	}

	if err := l.Orchestrator.Migrate(ctx, id, "LocalDS_0"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"db01", "app01", "web01"} {
		m := l.vm(t, name)
		if len(m.Datastore) != 1 || m.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			t.Fatalf("%s after migrate: %+v", name, m.Datastore)
		}
	}
	inv = l.inventory(t)
	if slices.Contains(inv.Datastores, id) {
		t.Fatalf("export still mounted after migrate: %v", inv.Datastores)
	}
	if _, ok := l.Service.Overlay(id); ok {
		t.Fatal("session overlay kept after cleanup")
	}
	if _, err := os.Stat(filepath.Join(l.Repo.Dir, "state", "sessions", id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("session folder kept after cleanup")
	}
	s, _ = l.Catalog.Session(ctx, id)
	if s.State != catalog.SessionDone {
		t.Fatalf("session state %s after migrate", s.State)
	}
	if len(inv.VMs) != len(before.VMs)+3 {
		t.Fatalf("VMs before %v after %v", before.VMs, inv.VMs)
	}
}

func TestPartialRestoreIntoRunningVApp(t *testing.T) {
	l := newLab(t)
	ctx := ctxT(t)
	if _, err := l.Orchestrator.Start(ctx, l.Request(orchestrator.KindVApp)); err != nil {
		t.Fatal(err)
	}
	db, web := l.vm(t, "db01"), l.vm(t, "web01")
	// app01 fails: it is gone from vCenter.
	ref, err := l.Driver.FindVM(ctx, "app01")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Driver.PowerOff(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if err := l.Driver.Unregister(ctx, ref); err != nil {
		t.Fatal(err)
	}
	req := l.Request(orchestrator.KindPartial)
	req.VMs = []string{"app01"}
	id, err := l.Orchestrator.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	app := l.vm(t, "app01")
	if app.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || app.ResourcePool == nil || *app.ResourcePool != *db.ResourcePool {
		t.Fatalf("app01 not back in the running vApp: %v vs %v", app.ResourcePool, db.ResourcePool)
	}
	// The healthy members were not touched.
	if l.vm(t, "db01").Self != db.Self || l.vm(t, "web01").Self != web.Self {
		t.Fatal("healthy members were re-registered")
	}
	if n := l.inventory(t).VApps; len(n) != 1 {
		t.Fatalf("vApps: %v", n)
	}
	// Stopping the partial session removes app01 but never the vApp it joined.
	if err := l.Orchestrator.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	inv := l.inventory(t)
	if slices.Contains(inv.VMs, "app01") || !slices.Contains(inv.VApps, "shop") || !slices.Contains(inv.VMs, "db01") {
		t.Fatalf("after stopping the partial restore: %+v", inv)
	}
}

func TestTestCloneIsolationAndCleanup(t *testing.T) {
	l := newLab(t)
	ctx := ctxT(t)
	if _, err := l.Orchestrator.Start(ctx, l.Request(orchestrator.KindVApp)); err != nil {
		t.Fatal(err)
	}
	before := l.inventory(t)
	req := l.Request(orchestrator.KindTest)
	req.Test, req.IsolatedNetwork = true, "DC0_DVPG0"
	id, err := l.Orchestrator.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"db01", "app01", "web01"} {
		orig, clone := l.vm(t, name), l.vm(t, name+"-test")
		on, cn := nics(orig)[0].GetVirtualEthernetCard(), nics(clone)[0].GetVirtualEthernetCard()
		if on.MacAddress == cn.MacAddress {
			t.Fatalf("%s clone shares the MAC %s", name, cn.MacAddress)
		}
		if _, ok := cn.Backing.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo); !ok {
			t.Fatalf("%s clone NIC not on the isolated port group: %T", name, cn.Backing)
		}
		if clone.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			t.Fatalf("%s clone is %s", name, clone.Runtime.PowerState)
		}
	}
	if !slices.Contains(l.inventory(t).VApps, "shop-test") {
		t.Fatal("clone vApp missing")
	}
	if err := l.Orchestrator.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if after := l.inventory(t); !after.equal(before) {
		t.Fatalf("test clone left traces:\nbefore %+v\nafter  %+v", before, after)
	}
	s, _ := l.Catalog.Session(ctx, id)
	if s.State != catalog.SessionStopped {
		t.Fatalf("clone session %s", s.State)
	}
}

// TestFaultAtEachStep injects a vCenter fault into the call each step
// makes: the step fails with vCenter's message, then resume finishes the
// job without duplicates, or stop leaves vCenter as it was.
func TestFaultAtEachStep(t *testing.T) {
	for _, tc := range []struct{ step, method, objType string }{
		{orchestrator.StepExpose, "CreateNasDatastore", "HostDatastoreSystem"},
		{orchestrator.StepApp, "CreateVApp", "*"},
		{orchestrator.StepRegister, "RegisterVM_Task", "*"},
		{orchestrator.StepReconcile, "ReconfigVM_Task", "VirtualMachine"},
		{orchestrator.StepBoot, "PowerOnVM_Task", "VirtualMachine"},
	} {
		for _, then := range []string{"resume", "stop"} {
			t.Run(tc.step+"/"+then, func(t *testing.T) {
				l := newLab(t)
				ctx := ctxT(t)
				before := l.inventory(t)
				msg := "injected fault in " + tc.method
				l.Model.Service.AddFaultRule(&simulator.FaultInjectionRule{MethodName: tc.method, ObjectType: tc.objType,
					ObjectName: "*", Probability: 1, FaultType: simulator.FaultTypeGeneric, Message: msg, Enabled: true})
				id, err := l.Orchestrator.Start(ctx, l.Request(orchestrator.KindVApp))
				if err == nil || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), "step "+tc.step) {
					t.Fatalf("start with a fault in %s: %v", tc.method, err)
				}
				s, _ := l.Catalog.Session(ctx, id)
				if s.State != catalog.SessionFailed {
					t.Fatalf("session state %s after a fault", s.State)
				}
				l.Model.Service.ClearFaultRules()
				switch then {
				case "resume":
					if err := l.Orchestrator.Resume(ctx, id); err != nil {
						t.Fatal(err)
					}
					inv := l.inventory(t)
					if len(inv.VMs) != len(before.VMs)+3 || len(inv.VApps) != 1 || len(inv.Datastores) != len(before.Datastores)+1 {
						t.Fatalf("after resume, duplicates or gaps: %+v", inv)
					}
					if got := l.powerOnOrder(t, []string{"db01", "app01", "web01"}); !slices.Equal(got, []string{"db01", "app01", "web01"}) {
						t.Fatalf("power-on order after resume: %v", got)
					}
				case "stop":
					if err := l.Orchestrator.Stop(ctx, id); err != nil {
						t.Fatal(err)
					}
					if after := l.inventory(t); !after.equal(before) {
						t.Fatalf("stop left traces:\nbefore %+v\nafter  %+v", before, after)
					}
					if _, ok := l.Service.Overlay(id); ok {
						t.Fatal("overlay kept after stop")
					}
				}
			})
		}
	}
}

// TestNeverAdoptsSomeoneElsesVM restores db01 while the db01 of an earlier
// restore still runs in the vApp: the second restore must refuse to take it
// over, and stopping the second session must leave it running.
func TestNeverAdoptsSomeoneElsesVM(t *testing.T) {
	l := newLab(t)
	ctx := ctxT(t)
	if _, err := l.Orchestrator.Start(ctx, l.Request(orchestrator.KindVApp)); err != nil {
		t.Fatal(err)
	}
	orig := l.vm(t, "db01")
	req := l.Request(orchestrator.KindPartial)
	req.VMs = []string{"db01"}
	id, err := l.Orchestrator.Start(ctx, req)
	if err == nil || !strings.Contains(err.Error(), "already runs from") || !strings.Contains(err.Error(), "not this restore's") {
		t.Fatalf("second restore of a running db01: %v", err)
	}
	if err := l.Orchestrator.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	now := l.vm(t, "db01")
	if now.Self != orig.Self || now.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("stopping the second session touched the original db01: %s", now.Runtime.PowerState)
	}
}

// The lab's catalog owns the lab's repository (owner.json names it), as
// rekindle's commands leave a repository: another catalog is refused.
func TestLabCatalogOwnsRepository(t *testing.T) {
	ctx := context.Background()
	l, err := New(ctx, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	o, err := l.Repo.CatalogOwner()
	if err != nil || o == nil || o.CatalogID != l.Catalog.ID() {
		t.Fatalf("repository owner %+v (%v), want the lab's catalog %s", o, err, l.Catalog.ID())
	}
	other, err := catalog.Open(ctx, filepath.Join(t.TempDir(), "other.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Claim(ctx, l.Repo, false); !errors.Is(err, catalog.ErrOtherCatalog) || !strings.Contains(err.Error(), l.Catalog.Path()) {
		t.Fatalf("another catalog's claim: %v, want refused naming %s", err, l.Catalog.Path())
	}
}
