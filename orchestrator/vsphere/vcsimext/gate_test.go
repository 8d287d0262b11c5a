package vcsimext_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// TestVMsBuiltWhileRead creates VMs while another client reads every VM's
// properties over and over, as parallel vApps of a site recovery register
// and look up VMs at once. Under -race, govmomi v0.56.0's simulator alone
// reports a data race here (its createVM task writes the new VM's fields
// without the VM's lock while the retrieval reads them); vcsimext's build
// gate holds retrievals while a VM is being built. Every VM made is then
// read with its name.
func TestVMsBuiltWhileRead(t *testing.T) {
	run(t, func(ctx context.Context, c *vim25.Client, finder *find.Finder) {
		folder, err := finder.DefaultFolder(ctx)
		must(t, err)
		pool, err := finder.ResourcePool(ctx, "DC0_C0/Resources")
		must(t, err)
		const n = 12
		done := make(chan struct{})
		var wg sync.WaitGroup
		reads := 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := view.NewManager(c)
			pc := property.DefaultCollector(c)
			for {
				select {
				case <-done:
					return
				default:
				}
				v, err := m.CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
				if err != nil {
					t.Error(err)
					return
				}
				var vms []mo.VirtualMachine
				if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "summary", "guest", "runtime"}, &vms); err != nil {
					t.Error(err)
				}
				v.Destroy(ctx)
				var refs []types.ManagedObjectReference
				for _, vm := range vms {
					refs = append(refs, vm.Self)
				}
				if len(refs) > 0 {
					var again []mo.VirtualMachine
					if err := pc.Retrieve(ctx, refs, []string{"name", "config.files"}, &again); err != nil {
						t.Error(err)
					}
				}
				reads++
			}
		}()
		for i := range n {
			spec := types.VirtualMachineConfigSpec{
				Name:    fmt.Sprintf("built-%02d", i),
				GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
				Files:   &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
			}
			task, err := folder.CreateVM(ctx, spec, pool, nil)
			must(t, err)
			must(t, task.Wait(ctx))
		}
		close(done)
		wg.Wait()
		if reads == 0 {
			t.Fatal("no retrieval ran while the VMs were built")
		}
		for i := range n {
			name := fmt.Sprintf("built-%02d", i)
			vm, err := finder.VirtualMachine(ctx, name)
			if err != nil {
				t.Fatalf("VM %s made but not found: %v", name, err)
			}
			var o mo.VirtualMachine
			must(t, vm.Properties(ctx, vm.Reference(), []string{"name"}, &o))
			if o.Name != name {
				t.Errorf("VM %s reads as %q", name, o.Name)
			}
		}
	})
}

// TestMountWhileDatastoreRead mounts one NAS datastore on host after host
// while another client reads the datastore's info and summary over and
// over, as the members of parallel vApps mount one export on each of their
// hosts. The simulator refreshes an existing datastore at each mount under
// no lock of the datastore, and a read's reply is encoded after the read
// let go of it: under -race that raced before vcsimext's mount held the
// datastore and gave it a copy of its info. The datastore then has every
// host's mount.
func TestMountWhileDatastoreRead(t *testing.T) {
	run(t, func(ctx context.Context, c *vim25.Client, finder *find.Finder) {
		hosts, err := finder.HostSystemList(ctx, "DC0_C0/*")
		must(t, err)
		spec := types.HostNasVolumeSpec{RemoteHost: "nfs.example", RemotePath: "/export", LocalPath: "shared", AccessMode: "readWrite", Type: "NFS"}
		dss, err := hosts[0].ConfigManager().DatastoreSystem(ctx)
		must(t, err)
		_, err = dss.CreateNasDatastore(ctx, spec)
		must(t, err)
		ds, err := finder.Datastore(ctx, "shared")
		must(t, err)
		done := make(chan struct{})
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pc := property.DefaultCollector(c)
				for {
					select {
					case <-done:
						return
					default:
					}
					var o mo.Datastore
					if err := pc.RetrieveOne(ctx, ds.Reference(), []string{"info", "summary", "host"}, &o); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		for round := range 4 {
			for _, h := range hosts[1:] {
				dss, err := h.ConfigManager().DatastoreSystem(ctx)
				must(t, err)
				if round > 0 {
					must(t, dss.Remove(ctx, ds))
				}
				_, err = dss.CreateNasDatastore(ctx, spec)
				must(t, err)
			}
		}
		close(done)
		wg.Wait()
		var o mo.Datastore
		must(t, property.DefaultCollector(c).RetrieveOne(ctx, ds.Reference(), []string{"host"}, &o))
		if len(o.Host) != len(hosts) {
			t.Fatalf("datastore mounted on %d hosts, want %d: %+v", len(o.Host), len(hosts), o.Host)
		}
	})
}
