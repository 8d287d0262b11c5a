package vcsimext_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
)

// run runs f against a VPX model extended with a NAS root.
func run(t *testing.T, f func(ctx context.Context, c *vim25.Client, finder *find.Finder)) {
	t.Helper()
	runIn(t, t.TempDir(), f)
}

// runIn is run with the NAS root the test names.
func runIn(t *testing.T, nasRoot string, f func(ctx context.Context, c *vim25.Client, finder *find.Finder)) {
	t.Helper()
	model := simulator.VPX()
	model.Machine = 0
	if err := model.Create(); err != nil {
		t.Fatal(err)
	}
	vcsimext.Extend(model.Map(), vcsimext.Options{NASRoot: nasRoot})
	simulator.Test(func(ctx context.Context, c *vim25.Client) {
		finder := find.NewFinder(c, true)
		dc, err := finder.DefaultDatacenter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		finder.SetDatacenter(dc)
		f(ctx, c, finder)
	}, model)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wait returns a function that waits for the task a method started.
func wait(ctx context.Context) func(*object.Task, error) error {
	return func(task *object.Task, err error) error {
		if err != nil {
			return err
		}
		return task.Wait(ctx)
	}
}

func TestRemoveDatastore(t *testing.T) {
	nasRoot := t.TempDir()
	runIn(t, nasRoot, func(ctx context.Context, c *vim25.Client, finder *find.Finder) {
		h0, err := finder.HostSystem(ctx, "DC0_C0/DC0_C0_H0")
		must(t, err)
		h1, err := finder.HostSystem(ctx, "DC0_C0/DC0_C0_H1")
		must(t, err)
		spec := types.HostNasVolumeSpec{RemoteHost: "nfs.example", RemotePath: "/export", LocalPath: "backups", AccessMode: "readWrite", Type: "NFS"}
		for _, h := range []*object.HostSystem{h0, h1} {
			dss, err := h.ConfigManager().DatastoreSystem(ctx)
			must(t, err)
			_, err = dss.CreateNasDatastore(ctx, spec)
			must(t, err)
		}
		ds, err := finder.Datastore(ctx, "backups")
		must(t, err)

		// A VM on host 0 with its files on the datastore.
		folder, err := finder.DefaultFolder(ctx)
		must(t, err)
		pool, err := finder.ResourcePool(ctx, "DC0_C0/Resources")
		must(t, err)
		task, err := folder.CreateVM(ctx, types.VirtualMachineConfigSpec{
			Name: "vm1", GuestId: "otherGuest64", Files: &types.VirtualMachineFileInfo{VmPathName: "[backups]"},
		}, pool, h0)
		must(t, err)
		info, err := task.WaitForResult(ctx, nil)
		must(t, err)
		vm := object.NewVirtualMachine(c, info.Result.(types.ManagedObjectReference))

		dss0, err := h0.ConfigManager().DatastoreSystem(ctx)
		must(t, err)
		dss1, err := h1.ConfigManager().DatastoreSystem(ctx)
		must(t, err)

		// Host 0 runs the VM: refused, with ESXi's message.
		err = dss0.Remove(ctx, ds)
		if !fault.Is(err, &types.ResourceInUse{}) || !strings.Contains(err.Error(), "The resource 'backups' is in use.") {
			t.Fatalf("remove under a VM: %v", err)
		}
		// Host 1 does not: its mount goes, the datastore stays.
		must(t, dss1.Remove(ctx, ds))
		var got mo.Datastore
		must(t, property.DefaultCollector(c).RetrieveOne(ctx, ds.Reference(), []string{"host"}, &got))
		if len(got.Host) != 1 || got.Host[0].Key != h0.Reference() {
			t.Fatalf("mounts after removal from host 1: %+v", got.Host)
		}
		var host mo.HostSystem
		must(t, property.DefaultCollector(c).RetrieveOne(ctx, h1.Reference(), []string{"datastore"}, &host))
		for _, r := range host.Datastore {
			if r == ds.Reference() {
				t.Fatal("host 1 still lists the datastore")
			}
		}
		// Removing again from host 1: not mounted there.
		if err := dss1.Remove(ctx, ds); !fault.Is(err, &types.NotFound{}) {
			t.Fatalf("remove twice: %v", err)
		}

		// Once the VM is gone, the last mount goes and the datastore with it.
		must(t, wait(ctx)(vm.Destroy(ctx)))
		// The simulator deletes the VM's files in a task of its own that
		// Destroy does not wait for, and that task reads the datastore without
		// its lock: wait, through the simulator's API (which orders the two
		// goroutines), for every recent task to end before changing the datastore.
		waitTasksEnded(t, ctx, c)
		must(t, dss0.Remove(ctx, ds))
		if _, err := finder.Datastore(ctx, "backups"); err == nil {
			t.Fatal("datastore still in the inventory")
		}
		ref, err := object.NewSearchIndex(c).FindByInventoryPath(ctx, "/DC0/datastore/backups")
		if err != nil || ref != nil {
			t.Fatalf("inventory path: %v, %v", ref, err)
		}
	})
}

func TestUpdateVAppConfig(t *testing.T) {
	run(t, func(ctx context.Context, c *vim25.Client, finder *find.Finder) {
		pool, err := finder.ResourcePool(ctx, "DC0_C0/Resources")
		must(t, err)
		folder, err := finder.DefaultFolder(ctx)
		must(t, err)
		app, err := pool.CreateVApp(ctx, "app", types.DefaultResourceConfigSpec(), types.VAppConfigSpec{}, folder)
		must(t, err)
		task, err := app.CreateChildVM(ctx, types.VirtualMachineConfigSpec{
			Name: "member", GuestId: "otherGuest64", Files: &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
		}, nil)
		must(t, err)
		info, err := task.WaitForResult(ctx, nil)
		must(t, err)
		member := info.Result.(types.ManagedObjectReference)
		outsider := types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-nope"}

		err = app.UpdateConfig(ctx, types.VAppConfigSpec{EntityConfig: []types.VAppEntityConfigInfo{{Key: &outsider, StartOrder: 1}}})
		if !fault.Is(err, &types.InvalidArgument{}) {
			t.Fatalf("entity config for a non-member: %v", err)
		}
		must(t, app.UpdateConfig(ctx, types.VAppConfigSpec{
			Annotation:   "restored",
			EntityConfig: []types.VAppEntityConfigInfo{{Key: &member, StartOrder: 2, StartDelay: 10, StartAction: "powerOn", StopAction: "powerOff"}},
		}))
		// Only the fields set change.
		must(t, app.UpdateConfig(ctx, types.VAppConfigSpec{
			EntityConfig: []types.VAppEntityConfigInfo{{Key: &member, WaitingForGuest: types.NewBool(true)}},
		}))
		var va mo.VirtualApp
		must(t, property.DefaultCollector(c).RetrieveOne(ctx, app.Reference(), []string{"vAppConfig"}, &va))
		ec := va.VAppConfig.EntityConfig
		if va.VAppConfig.Annotation != "restored" || len(ec) != 1 || ec[0].StartOrder != 2 || ec[0].StartDelay != 10 ||
			ec[0].StopAction != "powerOff" || ec[0].WaitingForGuest == nil || !*ec[0].WaitingForGuest {
			t.Fatalf("vApp config %+v", va.VAppConfig)
		}

		// After Destroy, the session no longer holds the vApp's wrapper.
		vm := object.NewVirtualMachine(c, member)
		must(t, wait(ctx)(vm.Destroy(ctx)))
		must(t, wait(ctx)(app.Destroy(ctx)))
		err = property.DefaultCollector(c).RetrieveOne(ctx, app.Reference(), []string{"name"}, &va)
		if !fault.Is(err, &types.ManagedObjectNotFound{}) {
			t.Fatalf("reading a destroyed vApp: %v", err)
		}
	})
}

// waitTasksEnded waits until every task in the task manager's recent list
// has succeeded or failed.
func waitTasksEnded(t *testing.T, ctx context.Context, c *vim25.Client) {
	t.Helper()
	pc := property.DefaultCollector(c)
	for deadline := time.Now().Add(10 * time.Second); ; {
		var tm mo.TaskManager
		must(t, pc.RetrieveOne(ctx, *c.ServiceContent.TaskManager, []string{"recentTask"}, &tm))
		running := 0
		for _, ref := range tm.RecentTask {
			var task mo.Task
			if err := pc.RetrieveOne(ctx, ref, []string{"info"}, &task); err != nil {
				continue // a task gone from the inventory has ended
			}
			if st := task.Info.State; st != types.TaskInfoStateSuccess && st != types.TaskInfoStateError {
				running++
			}
		}
		if running == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d simulator tasks still running after 10 s", running)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
