// Package backuplab is test support for backups from vCenter: govmomi's
// vCenter simulator with vcsimext's backup stand-ins (changed block
// tracking, disk bytes through the snapshot export lease), and VMs whose
// disks a test writes into and reads back. Production code never imports
// it.
package backuplab

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vapi/rest"
	_ "github.com/vmware/govmomi/vapi/simulator" // vCenter's REST API (tags) in the simulator
	"github.com/vmware/govmomi/vapi/tags"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
)

// Datastore is the simulator datastore the lab's VMs live on.
const Datastore = "LocalDS_0"

// Lab is a running simulated vCenter with the backup stand-ins.
type Lab struct {
	Model  *simulator.Model
	Server *simulator.Server
	Client *vim25.Client
	Backup *vcsimext.Backup
	Finder *find.Finder
	// DatastoreDir is the local folder behind Datastore.
	DatastoreDir string

	mu        sync.Mutex
	restarted []*http.Server // StartVCenter's servers
}

// New starts a lab: a VPX model without its sample VMs, served over HTTPS.
// Close stops it.
func New(ctx context.Context, nasRoot string) (*Lab, error) {
	m := simulator.VPX()
	m.Machine = 0
	if err := m.Create(); err != nil {
		return nil, err
	}
	vcsimext.Extend(m.Map(), vcsimext.Options{NASRoot: nasRoot})
	l := &Lab{Model: m, Backup: vcsimext.ExtendBackup(m)}
	m.Service.TLS = new(tls.Config)
	m.Service.RegisterEndpoints = true // the vAPI (REST) simulator, for tags
	l.Server = m.Service.NewServer()
	c, err := govmomi.NewClient(ctx, l.Server.URL, true)
	if err != nil {
		l.Close()
		return nil, err
	}
	l.Client = c.Client
	l.Finder = find.NewFinder(c.Client, true)
	dc, err := l.Finder.DefaultDatacenter(ctx)
	if err != nil {
		l.Close()
		return nil, err
	}
	l.Finder.SetDatacenter(dc)
	ds, err := l.Finder.Datastore(ctx, Datastore)
	if err != nil {
		l.Close()
		return nil, err
	}
	var dsm mo.Datastore
	if err := ds.Properties(ctx, ds.Reference(), []string{"summary"}, &dsm); err != nil {
		l.Close()
		return nil, err
	}
	l.DatastoreDir = dsm.Summary.Url
	return l, nil
}

// URL is the simulator's SDK URL, credentials included.
func (l *Lab) URL() string { return l.Server.URL.String() }

// Close stops the simulator.
func (l *Lab) Close() {
	if l.Server != nil {
		l.Server.Close()
	}
	l.mu.Lock()
	for _, s := range l.restarted {
		s.Close()
	}
	l.mu.Unlock()
	l.Model.Remove()
}

// StopVCenter stops the simulated vCenter's server as a vCenter restart
// does: the connections in flight (a disk being read) are cut, new ones
// refused, until StartVCenter.
func (l *Lab) StopVCenter() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.restarted); n > 0 {
		l.restarted[n-1].Close()
		return
	}
	l.Server.CloseClientConnections()
	l.Server.Close()
}

// StartVCenter serves the simulated vCenter again at its address, after
// StopVCenter: the same inventory, snapshots and sessions (a real
// vCenter's restart also ends its sessions; the simulator's stay).
func (l *Lab) StartVCenter() error {
	ln, err := net.Listen("tcp", l.Server.URL.Host)
	if err != nil {
		return fmt.Errorf("restart the simulated vCenter at %s: %w", l.Server.URL.Host, err)
	}
	s := &http.Server{Handler: l.Server.Config.Handler}
	l.mu.Lock()
	l.restarted = append(l.restarted, s)
	l.mu.Unlock()
	go s.Serve(tls.NewListener(ln, l.Server.TLS))
	return nil
}

// VMSpec is a VM to create.
type VMSpec struct {
	Name    string
	Disks   []int64 // sizes in bytes; disk i is <name>.vmdk, then <name>_<i>.vmdk
	PowerOn bool
	Network string             // default "VM Network"
	VApp    *object.VirtualApp // create the VM in this vApp (see CreateVApp)
}

// DiskName is the base name of disk i of vm.
func DiskName(vm string, i int) string {
	if i == 0 {
		return vm
	}
	return fmt.Sprintf("%s_%d", vm, i)
}

// CreateVM makes a VM with a pvscsi controller, its disks (flat files of
// their full size, all zeros) and one vmxnet3 NIC.
func (l *Lab) CreateVM(ctx context.Context, s VMSpec) (*object.VirtualMachine, error) {
	if s.Network == "" {
		s.Network = "VM Network"
	}
	folder, err := l.Finder.DefaultFolder(ctx)
	if err != nil {
		return nil, err
	}
	pool, err := l.Finder.ResourcePool(ctx, "DC0_C0/Resources")
	if err != nil {
		return nil, err
	}
	net, err := l.Finder.Network(ctx, s.Network)
	if err != nil {
		return nil, err
	}
	backing, err := net.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, err
	}
	var devs object.VirtualDeviceList
	ctrl, err := devs.CreateSCSIController("pvscsi")
	if err != nil {
		return nil, err
	}
	ctrl.GetVirtualDevice().Key = 1000
	devs = append(devs, ctrl)
	nic, err := devs.CreateEthernetCard("vmxnet3", backing)
	if err != nil {
		return nil, err
	}
	devs = append(devs, nic)
	var change []types.BaseVirtualDeviceConfigSpec
	for _, d := range devs {
		change = append(change, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: d})
	}
	for i, size := range s.Disks {
		unit := int32(i)
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key: int32(2000 + i), ControllerKey: 1000, UnitNumber: &unit,
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
						FileName: fmt.Sprintf("[%s] %s/%s.vmdk", Datastore, s.Name, DiskName(s.Name, i))},
					DiskMode:        string(types.VirtualDiskModePersistent),
					ThinProvisioned: types.NewBool(true),
				},
			},
			CapacityInBytes: size,
			CapacityInKB:    size / 1024,
		}
		change = append(change, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd,
			FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate, Device: disk})
	}
	spec := types.VirtualMachineConfigSpec{Name: s.Name, GuestId: "otherGuest64", NumCPUs: 1, MemoryMB: 128,
		Files: &types.VirtualMachineFileInfo{VmPathName: "[" + Datastore + "]"}, DeviceChange: change}
	host, err := l.Finder.HostSystem(ctx, "DC0_C0/DC0_C0_H0")
	if err != nil {
		return nil, err
	}
	var task *object.Task
	if s.VApp != nil {
		task, err = s.VApp.CreateChildVM(ctx, spec, host)
	} else {
		task, err = folder.CreateVM(ctx, spec, pool, host)
	}
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		return nil, fmt.Errorf("create vm %s: %w", s.Name, err)
	}
	vm := object.NewVirtualMachine(l.Client, info.Result.(types.ManagedObjectReference))
	for i, size := range s.Disks {
		if err := os.Truncate(l.DiskFile(s.Name, i), size); err != nil {
			return nil, err
		}
	}
	if s.PowerOn {
		task, err := vm.PowerOn(ctx)
		if err != nil {
			return nil, err
		}
		if err := task.Wait(ctx); err != nil {
			return nil, err
		}
	}
	return vm, nil
}

// CreateVApp makes an empty vApp in the cluster.
func (l *Lab) CreateVApp(ctx context.Context, name string) (*object.VirtualApp, error) {
	pool, err := l.Finder.ResourcePool(ctx, "DC0_C0/Resources")
	if err != nil {
		return nil, err
	}
	folder, err := l.Finder.DefaultFolder(ctx)
	if err != nil {
		return nil, err
	}
	return pool.CreateVApp(ctx, name, types.DefaultResourceConfigSpec(), types.VAppConfigSpec{}, folder)
}

// StartOrder is one member's startup settings in a vApp.
type StartOrder struct {
	VM           *object.VirtualMachine
	Order, Delay int32
	WaitForGuest bool
}

// SetStartOrder records the vApp's startup order (through vcsimext's
// UpdateVAppConfig).
func (l *Lab) SetStartOrder(ctx context.Context, vapp *object.VirtualApp, order []StartOrder) error {
	var spec types.VAppConfigSpec
	for _, o := range order {
		ref := o.VM.Reference()
		spec.EntityConfig = append(spec.EntityConfig, types.VAppEntityConfigInfo{Key: &ref, StartOrder: o.Order,
			StartDelay: o.Delay, WaitingForGuest: types.NewBool(o.WaitForGuest), StartAction: "powerOn", StopAction: "guestShutdown"})
	}
	return vapp.UpdateConfig(ctx, spec)
}

// DiskFile is the local flat file of disk i of vm.
func (l *Lab) DiskFile(vm string, i int) string {
	return filepath.Join(l.DatastoreDir, vm, DiskName(vm, i)+"-flat.vmdk")
}

// WriteDisk writes data into disk i of vm at off, as a guest would: while
// vm has a snapshot, into the snapshot's delta (vcsimext.Backup.GuestWrite).
func (l *Lab) WriteDisk(vm string, i int, off int64, data []byte) error {
	obj, err := l.Finder.VirtualMachine(context.Background(), vm)
	if err != nil {
		return err
	}
	return l.Backup.GuestWrite(obj.Reference(), l.DiskFile(vm, i), off, data)
}

// Snapshots lists the names of vm's snapshots.
func (l *Lab) Snapshots(ctx context.Context, vm *object.VirtualMachine) ([]string, error) {
	var m mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"snapshot"}, &m); err != nil {
		return nil, err
	}
	var out []string
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(ts []types.VirtualMachineSnapshotTree) {
		for _, t := range ts {
			out = append(out, t.Name)
			walk(t.ChildSnapshotList)
		}
	}
	if m.Snapshot != nil {
		walk(m.Snapshot.RootSnapshotList)
	}
	return out, nil
}

// TagVMs attaches the tag category:tag (creating both when missing) to the
// named VMs, through vCenter's REST API as an admin would.
func (l *Lab) TagVMs(ctx context.Context, category, tag string, vms ...string) error {
	rc := rest.NewClient(l.Client)
	if err := rc.Login(ctx, l.Server.URL.User); err != nil {
		return err
	}
	defer rc.Logout(ctx)
	m := tags.NewManager(rc)
	cat, err := m.GetCategory(ctx, category)
	if err != nil {
		id, err := m.CreateCategory(ctx, &tags.Category{Name: category, Cardinality: "MULTIPLE",
			AssociableTypes: []string{"VirtualMachine"}})
		if err != nil {
			return fmt.Errorf("create tag category %s: %w", category, err)
		}
		cat = &tags.Category{ID: id, Name: category}
	}
	t, err := m.GetTagForCategory(ctx, tag, cat.ID)
	if err != nil {
		id, err := m.CreateTag(ctx, &tags.Tag{Name: tag, CategoryID: cat.ID})
		if err != nil {
			return fmt.Errorf("create tag %s:%s: %w", category, tag, err)
		}
		t = &tags.Tag{ID: id}
	}
	for _, name := range vms {
		vm, err := l.Finder.VirtualMachine(ctx, name)
		if err != nil {
			return err
		}
		if err := m.AttachTag(ctx, t.ID, vm.Reference()); err != nil {
			return fmt.Errorf("tag %s with %s:%s: %w", name, category, tag, err)
		}
	}
	return nil
}

// StartTools reports VMware Tools running in vm's guest, as a booted guest
// with tools does (the simulator runs no tools of its own).
func (l *Lab) StartTools(ctx context.Context, vm *object.VirtualMachine) error {
	task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
		&types.OptionValue{Key: "SET.guest.toolsRunningStatus", Value: string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)},
	}})
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}
