package vsphere

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/progress"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
)

// RegisterVM registers the .vmx at p.VMXPath on datastore p.Datastore as VM
// p.Name, on host p.Host, in resource pool or vApp p.Pool, in vm folder
// p.Folder (default: the datacenter's vm folder). A VM named p.Name already
// in the pool is returned as it is.
func (d *Driver) RegisterVM(ctx context.Context, p orchestrator.Placement) (orchestrator.VMRef, error) {
	op := fmt.Sprintf("register %s on host %s", p.Name, p.Host)
	if p.Name == "" || p.Host == "" || p.Datastore == "" || p.VMXPath == "" || p.Pool == "" {
		return "", fmt.Errorf("%s: name, host, datastore, vmx path and pool are all required", op)
	}
	pool, _, err := d.pool(ctx, p.Pool)
	if err != nil {
		return "", fmt.Errorf("%s: pool: %w", op, err)
	}
	vmxPath := object.DatastorePath{Datastore: p.Datastore, Path: strings.TrimPrefix(p.VMXPath, "/")}
	vmx := vmxPath.String()
	if ref, have, err := d.poolVMFiles(ctx, pool, p.Name); err != nil {
		return "", wrapOp(op, err)
	} else if ref != "" {
		// Adopt only our own VM (a retry after a crash): a VM of that name with
		// other files is someone else's, perhaps the production original.
		if have != vmx {
			return "", fmt.Errorf("%s: a VM named %s already runs from %s in pool %s: it is not this restore's; "+
				"remove or rename it, or restore a test clone (--test)", op, p.Name, cmp.Or(have, "unknown files"), p.Pool)
		}
		return ref, nil
	}
	host, err := d.host(ctx, p.Host)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	folder, err := d.vmFolder(ctx, p.Folder)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	task, err := object.NewFolder(d.c, folder).RegisterVM(ctx, vmx, p.Name, false,
		object.NewResourcePool(d.c, pool), object.NewHostSystem(d.c, host))
	var info *types.TaskInfo
	if err == nil {
		info, err = task.WaitForResult(ctx, nil)
	}
	if err != nil {
		if fault.Is(err, &types.AlreadyExists{}) {
			return "", vcErr(err, "%s: %s is registered already, not as %s in pool %s", op, vmx, p.Name, p.Pool)
		}
		return "", vcErr(err, "%s from %s", op, vmx)
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return "", fmt.Errorf("%s: vCenter returned no VM", op)
	}
	d.rememberName(ctx, orchestrator.VMRef(ref.Value), p.Name)
	d.log.Info("registered VM", "vm", p.Name, "host", p.Host, "vmx", vmx, "ref", ref.Value)
	return orchestrator.VMRef(ref.Value), nil
}

// RegisteredVM returns the VM that RegisterVM(p) registered or would adopt:
// the VM named p.Name in p.Pool whose .vmx is p's; "" when there is none
// (nor the pool). A VM of that name with other files is someone else's and
// is not returned.
func (d *Driver) RegisteredVM(ctx context.Context, p orchestrator.Placement) (orchestrator.VMRef, error) {
	pool, _, err := d.pool(ctx, p.Pool)
	if errors.Is(err, orchestrator.ErrNotFound) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("find VM %s registered from %s: pool: %w", p.Name, p.VMXPath, err)
	}
	ref, have, err := d.poolVMFiles(ctx, pool, p.Name)
	if err != nil {
		return "", fmt.Errorf("find VM %s registered from %s: %w", p.Name, p.VMXPath, err)
	}
	vmx := object.DatastorePath{Datastore: p.Datastore, Path: strings.TrimPrefix(p.VMXPath, "/")}
	if ref == "" || have != vmx.String() {
		return "", nil
	}
	return ref, nil
}

// poolVMFiles returns the VM named name directly in pool and the datastore
// path of its .vmx, or "".
func (d *Driver) poolVMFiles(ctx context.Context, pool types.ManagedObjectReference, name string) (orchestrator.VMRef, string, error) {
	ref, err := d.poolVM(ctx, pool, name)
	if err != nil || ref == "" {
		return "", "", err
	}
	var vm mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, types.ManagedObjectReference{Type: "VirtualMachine", Value: string(ref)},
		[]string{"config.files.vmPathName"}, &vm); err != nil {
		return "", "", vcErr(err, "read the files of VM %s", name)
	}
	if vm.Config == nil {
		return ref, "", nil
	}
	return ref, vm.Config.Files.VmPathName, nil
}

// poolVM returns the VM named name directly in pool, or "": one retrieval
// that follows the pool's VM references.
func (d *Driver) poolVM(ctx context.Context, pool types.ManagedObjectReference, name string) (orchestrator.VMRef, error) {
	spec := types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{Obj: pool, Skip: types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{Type: pool.Type, Path: "vm"}}}},
		PropSet: []types.PropertySpec{{Type: "VirtualMachine", PathSet: []string{"name"}}},
	}
	res, err := d.pc.RetrieveProperties(ctx, types.RetrieveProperties{SpecSet: []types.PropertyFilterSpec{spec}})
	if err != nil {
		return "", vcErr(err, "read VMs of pool %s", pool.Value)
	}
	for _, oc := range res.Returnval {
		if n, _ := props(oc)["name"].(string); n == name {
			return orchestrator.VMRef(oc.Obj.Value), nil
		}
	}
	return "", nil
}

func (d *Driver) vmFolder(ctx context.Context, folder string) (types.ManagedObjectReference, error) {
	if folder == "" {
		return orchestrator.Memoize(ctx, lookupKey{d, "vmFolder", ""}, func() (types.ManagedObjectReference, error) {
			folders, err := d.dc.Folders(ctx)
			if err != nil {
				return types.ManagedObjectReference{}, vcErr(err, "read datacenter folders")
			}
			return folders.VmFolder.Reference(), nil
		})
	}
	ref, err := d.lookupPath(ctx, d.vmFolderPath(folder))
	if err == nil && ref.Type != "Folder" {
		return ref, fmt.Errorf("%s is a %s, not a folder", folder, ref.Type)
	}
	return ref, err
}

// FindVM looks a VM up by name in the datacenter.
func (d *Driver) FindVM(ctx context.Context, name string) (orchestrator.VMRef, error) {
	ref, err := d.oneByName(ctx, "VM", []string{"VirtualMachine"}, name)
	if err != nil {
		return "", fmt.Errorf("find VM %s: %w", name, err)
	}
	return orchestrator.VMRef(ref.Value), nil
}

// vmInfo reads the properties of a VM, with ErrNotFound for a VM that is
// not registered.
func (d *Driver) vmInfo(ctx context.Context, vm orchestrator.VMRef, props ...string) (*mo.VirtualMachine, error) {
	var v mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, vmRef(vm), append([]string{"name"}, props...), &v); err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("VM %s: %w", vm, orchestrator.ErrNotFound)
		}
		return nil, vcErr(err, "read VM %s", vm)
	}
	d.rememberName(ctx, vm, v.Name)
	return &v, nil
}

// rememberName keeps vm's name in the run's memo, for messages.
func (d *Driver) rememberName(ctx context.Context, vm orchestrator.VMRef, name string) {
	orchestrator.Forget(ctx, lookupKey{d, "vmName", string(vm)})
	_, _ = orchestrator.Memoize(ctx, lookupKey{d, "vmName", string(vm)}, func() (string, error) { return name, nil })
}

// knownName is vm's name if the run read or gave it already, else "".
func (d *Driver) knownName(ctx context.Context, vm orchestrator.VMRef) string {
	name, _ := orchestrator.Memoize(ctx, lookupKey{d, "vmName", string(vm)}, func() (string, error) { return "", errUnknownName })
	return name
}

var errUnknownName = errors.New("name not known")

// PowerOn powers the VM on; a VM already on is success (vCenter's
// InvalidPowerState fault says so: the state is not read first).
func (d *Driver) PowerOn(ctx context.Context, vm orchestrator.VMRef) error {
	task, err := object.NewVirtualMachine(d.c, vmRef(vm)).PowerOn(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	var ips *types.InvalidPowerState
	if _, ok := fault.As(err, &ips); ok && ips.ExistingState == types.VirtualMachinePowerStatePoweredOn {
		return nil
	}
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("power on: VM %s: %w", vm, orchestrator.ErrNotFound)
		}
		name := string(vm)
		if v, ierr := d.vmInfo(ctx, vm); ierr == nil {
			name = v.Name
		}
		return vcErr(err, "power on %s", name)
	}
	d.log.Info("powered on VM", "vm", d.knownName(ctx, vm), "ref", string(vm))
	return nil
}

// PowerOff powers the VM off (hard); a VM already off is success.
func (d *Driver) PowerOff(ctx context.Context, vm orchestrator.VMRef) error {
	v, err := d.vmInfo(ctx, vm, "runtime.powerState")
	if err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return d.powerOff(ctx, vm, v)
}

func (d *Driver) powerOff(ctx context.Context, vm orchestrator.VMRef, v *mo.VirtualMachine) error {
	if v.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOff {
		return nil
	}
	task, err := object.NewVirtualMachine(d.c, vmRef(vm)).PowerOff(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil && !fault.IsAlreadyPoweredOffError(err) {
		return vcErr(err, "power off %s", v.Name)
	}
	d.log.Info("powered off VM", "vm", v.Name)
	return nil
}

// Unregister removes the VM from the inventory, keeping its files. A
// running VM is powered off first: its disks live in the session overlay,
// which is about to go. A VM that is not registered is success.
func (d *Driver) Unregister(ctx context.Context, vm orchestrator.VMRef) error {
	v, err := d.vmInfo(ctx, vm, "runtime.powerState")
	if errors.Is(err, orchestrator.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unregister: %w", err)
	}
	if err := d.powerOff(ctx, vm, v); err != nil {
		return fmt.Errorf("unregister %s: %w", v.Name, err)
	}
	if err := object.NewVirtualMachine(d.c, vmRef(vm)).Unregister(ctx); err != nil && !isNotFound(err) {
		return vcErr(err, "unregister %s", v.Name)
	}
	d.log.Info("unregistered VM", "vm", v.Name)
	return nil
}

// Reconcile makes the VM's hardware match spec (see ConfigSpec) with one
// ReconfigVM_Task, or none when it matches already. It also sets
// uuid.action = keep, so that ESXi powers the VM on without asking whether
// it was moved or copied (a question that would hold the power-on task).
func (d *Driver) Reconcile(ctx context.Context, vm orchestrator.VMRef, spec orchestrator.VMSpec) error {
	v, err := d.vmInfo(ctx, vm, "config.hardware", "config.extraConfig")
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	op := fmt.Sprintf("reconcile hardware of %s", v.Name)
	if v.Config == nil {
		return fmt.Errorf("%s: vCenter has no configuration for it (inaccessible?)", op)
	}

	networks := map[string]types.BaseVirtualDeviceBackingInfo{}
	for _, nic := range spec.NICs {
		if _, ok := networks[nic.Network]; ok {
			continue
		}
		b, err := d.networkBacking(ctx, nic.Network)
		if err != nil {
			return fmt.Errorf("%s: NIC %s: %w", op, nic.Key, err)
		}
		networks[nic.Network] = b
	}
	cs, err := ConfigSpec(v.Config.Hardware.Device, spec, networks)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if cs.NumCPUs == v.Config.Hardware.NumCPU {
		cs.NumCPUs = 0
	}
	if cs.MemoryMB == int64(v.Config.Hardware.MemoryMB) {
		cs.MemoryMB = 0
	}
	if !slices.ContainsFunc(v.Config.ExtraConfig, func(o types.BaseOptionValue) bool {
		return o.GetOptionValue().Key == "uuid.action"
	}) {
		cs.ExtraConfig = append(cs.ExtraConfig, &types.OptionValue{Key: "uuid.action", Value: "keep"})
	}
	if cs.NumCPUs == 0 && cs.MemoryMB == 0 && len(cs.DeviceChange) == 0 && len(cs.ExtraConfig) == 0 {
		return nil
	}

	task, err := object.NewVirtualMachine(d.c, vmRef(vm)).Reconfigure(ctx, *cs)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		return vcErr(err, "%s", op)
	}
	d.log.Info("reconciled VM hardware", "vm", v.Name, "device_changes", len(cs.DeviceChange))
	return nil
}

// networkBacking finds a network (standard, distributed or opaque) by name
// and returns the backing that attaches a NIC to it, once per run
// (orchestrator.Memoize).
func (d *Driver) networkBacking(ctx context.Context, name string) (types.BaseVirtualDeviceBackingInfo, error) {
	return orchestrator.Memoize(ctx, lookupKey{d, "networkBacking", name}, func() (types.BaseVirtualDeviceBackingInfo, error) {
		return d.findNetworkBacking(ctx, name)
	})
}

func (d *Driver) findNetworkBacking(ctx context.Context, name string) (types.BaseVirtualDeviceBackingInfo, error) {
	ref, err := d.oneByName(ctx, "network", []string{"Network"}, name)
	if err != nil {
		return nil, err
	}
	net, ok := object.NewReference(d.c, ref).(object.NetworkReference)
	if !ok {
		return nil, fmt.Errorf("network %s is a %s, which NICs cannot attach to", name, ref.Type)
	}
	b, err := net.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, vcErr(err, "network %s", name)
	}
	return b, nil
}

// WaitReady waits, with property collector updates, until the guest shows
// what check asks for: guest tools running with a green heartbeat, an IP
// address other than loopback or link-local. It fails when ctx ends, naming
// the VM, what it waited for and what it saw last.
func (d *Driver) WaitReady(ctx context.Context, vm orchestrator.VMRef, check orchestrator.ReadyCheck) error {
	if !check.Heartbeat && !check.IP {
		return nil
	}
	v, err := d.vmInfo(ctx, vm)
	if err != nil {
		return fmt.Errorf("wait for VM to be ready: %w", err)
	}
	var want []string
	if check.Heartbeat {
		want = append(want, "guest tools heartbeat")
	}
	if check.IP {
		want = append(want, "guest IP address")
	}

	var tools, heartbeat, ip string
	ready := func() bool {
		if check.Heartbeat && (tools != string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) ||
			heartbeat != string(types.ManagedEntityStatusGreen)) {
			return false
		}
		return !check.IP || usableIP(ip)
	}
	err = property.Wait(ctx, d.pc, vmRef(vm),
		[]string{"guest.toolsRunningStatus", "guestHeartbeatStatus", "guest.ipAddress"},
		func(changes []types.PropertyChange) bool {
			for _, c := range changes {
				val := ""
				if c.Op != types.PropertyChangeOpRemove && c.Val != nil {
					val = fmt.Sprint(c.Val)
				}
				switch c.Name {
				case "guest.toolsRunningStatus":
					tools = val
				case "guestHeartbeatStatus":
					heartbeat = val
				case "guest.ipAddress":
					ip = val
				}
			}
			return ready()
		})
	if err != nil {
		seen := fmt.Sprintf("tools %s, heartbeat %s, IP %s", orNone(tools), orNone(heartbeat), orNone(ip))
		if ctx.Err() != nil {
			return fmt.Errorf("wait for VM %s (%s): not ready (%s): %w", v.Name, strings.Join(want, " and "), seen, ctx.Err())
		}
		return vcErr(err, "wait for VM %s (%s), last seen %s", v.Name, strings.Join(want, " and "), seen)
	}
	d.log.Info("VM ready", "vm", v.Name, "ip", ip)
	return nil
}

func usableIP(s string) bool {
	ip := net.ParseIP(s)
	return ip != nil && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsUnspecified()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Relocate moves the VM's files and disks to datastore (RelocateVM_Task, a
// Storage vMotion when the VM runs), reporting the task's progress in
// percent, 100 last (vCenter may report few steps; the simulator reports
// none before the end). report runs on another goroutine than the caller's,
// one call at a time, and never after Relocate returns. A VM that is on
// datastore alone already is success.
func (d *Driver) Relocate(ctx context.Context, vm orchestrator.VMRef, datastore string, report func(pct int)) error {
	v, err := d.vmInfo(ctx, vm, "datastore", "config.hardware.device")
	if err != nil {
		return fmt.Errorf("relocate: %w", err)
	}
	op := fmt.Sprintf("relocate %s to datastore %s", v.Name, datastore)
	if report == nil {
		report = func(int) {}
	}
	target, err := d.datastore(ctx, datastore)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if len(v.Datastore) == 1 && v.Datastore[0] == target {
		report(100)
		return nil
	}

	spec := types.VirtualMachineRelocateSpec{Datastore: &target}
	if v.Config != nil {
		for _, dev := range v.Config.Hardware.Device {
			if disk, ok := dev.(*types.VirtualDisk); ok {
				spec.Disk = append(spec.Disk, types.VirtualMachineRelocateSpecDiskLocator{
					DiskId:    disk.Key,
					Datastore: target,
				})
			}
		}
	}
	task, err := object.NewVirtualMachine(d.c, vmRef(vm)).Relocate(ctx, spec, types.VirtualMachineMovePriorityDefaultPriority)
	if err != nil {
		return vcErr(err, "%s", op)
	}

	reports := make(chan progress.Report)
	last := make(chan int, 1)
	go func() { last <- forwardProgress(reports, report) }()
	_, err = task.WaitForResult(ctx, progress.SinkFunc(func() chan<- progress.Report { return reports }))
	if sent := <-last; err == nil && sent < 100 {
		report(100)
	}
	if err != nil {
		return vcErr(err, "%s", op)
	}
	d.log.Info("relocated VM", "vm", v.Name, "datastore", datastore)
	return nil
}

// forwardProgress passes task progress on as rising percentages until the
// channel closes, and returns the last percentage passed.
func forwardProgress(reports <-chan progress.Report, report func(int)) int {
	last := -1
	for r := range reports {
		if r.Error() != nil {
			continue
		}
		pct := min(100, max(0, int(r.Percentage())))
		if pct > last {
			last = pct
			report(pct)
		}
	}
	return last
}
