package vsphere

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
)

// EnsureApp finds the vApp named app.Name directly under app.Parent (a
// cluster, whose root resource pool is used, a resource pool or a vApp), or
// creates it there with app.Resources. It then records the startup order of
// the members that are already registered in it; members registered later
// get theirs from SetStartOrder. It returns the vApp's inventory path.
// An existing vApp's resource settings are left as they are.
func (d *Driver) EnsureApp(ctx context.Context, app orchestrator.AppSpec) (string, error) {
	op := fmt.Sprintf("ensure vApp %s under %s", app.Name, app.Parent)
	if app.Name == "" || strings.Contains(app.Name, "/") {
		return "", fmt.Errorf("%s: a vApp name is required and may not contain /", op)
	}
	res, err := resourceSpec(app.Resources)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	pool, poolPath, err := d.pool(ctx, app.Parent)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	appPath := path.Join(poolPath, app.Name)

	ref, err := d.childApp(ctx, pool, app.Name)
	if err != nil {
		return "", wrapOp(op, err)
	}
	if ref == nil {
		folders, err := d.dc.Folders(ctx)
		if err != nil {
			return "", vcErr(err, "%s: read datacenter folders", op)
		}
		cfg := types.VAppConfigSpec{Annotation: "Restored by rekindle."}
		created, err := object.NewResourcePool(d.c, pool).CreateVApp(ctx, app.Name, res, cfg, folders.VmFolder)
		switch {
		case err == nil:
			r := created.Reference()
			ref = &r
			d.log.Info("created vApp", "vapp", appPath)
		case fault.Is(err, &types.DuplicateName{}):
			// Created meanwhile by another attempt: use it.
			if ref, err = d.childApp(ctx, pool, app.Name); err != nil || ref == nil {
				return "", vcErr(err, "%s", op)
			}
		default:
			return "", vcErr(err, "%s", op)
		}
	}

	if len(app.Members) > 0 {
		if err := d.applyStartOrder(ctx, *ref, app.Members, false); err != nil {
			return "", fmt.Errorf("%s: %w", op, err)
		}
	}
	return appPath, nil
}

// SetStartOrder records the startup order of the vApp's members
// (VirtualApp.UpdateVAppConfig, one entity config per VM: start order =
// group, start delay, wait for guest, start action powerOn, stop action).
// vCenter keys entity configs by VM, so it can only be called once the
// members are registered in the vApp; a member that is not is ErrNotFound.
func (d *Driver) SetStartOrder(ctx context.Context, appPath string, members []orchestrator.AppMember) error {
	op := fmt.Sprintf("set startup order of vApp %s", appPath)
	ref, err := d.lookupPath(ctx, d.hostPath(appPath))
	if err != nil {
		return wrapOp(op, err)
	}
	if ref.Type != "VirtualApp" {
		return fmt.Errorf("%s: it is a %s, not a vApp", op, ref.Type)
	}
	return wrapOp(op, d.applyStartOrder(ctx, ref, members, true))
}

func (d *Driver) applyStartOrder(ctx context.Context, app types.ManagedObjectReference, members []orchestrator.AppMember, requireAll bool) error {
	var va mo.VirtualApp
	if err := d.pc.RetrieveOne(ctx, app, []string{"name", "vm", "vAppConfig"}, &va); err != nil {
		return vcErr(err, "read vApp %s", app.Value)
	}
	content, err := d.retrieveMissingOK(ctx, va.Vm, []string{"name"})
	if err != nil {
		return vcErr(err, "read VMs of vApp %s", va.Name)
	}
	vms := map[string]types.ManagedObjectReference{}
	for _, oc := range content {
		if n, ok := props(oc)["name"].(string); ok {
			vms[n] = oc.Obj
		}
	}
	var current []types.VAppEntityConfigInfo
	if va.VAppConfig != nil {
		current = va.VAppConfig.EntityConfig
	}

	var changes []types.VAppEntityConfigInfo
	var missing []string
	for _, m := range members {
		ref, ok := vms[m.VM]
		if !ok {
			missing = append(missing, m.VM)
			continue
		}
		ec, err := entityConfig(ref, m)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(current, func(c types.VAppEntityConfigInfo) bool { return sameEntityConfig(c, ec) }) {
			changes = append(changes, ec)
		}
	}
	if requireAll && len(missing) > 0 {
		return fmt.Errorf("VMs %s are not in vApp %s: %w", strings.Join(missing, ", "), va.Name, orchestrator.ErrNotFound)
	}
	if len(changes) == 0 {
		return nil
	}
	if err := object.NewVirtualApp(d.c, app).UpdateConfig(ctx, types.VAppConfigSpec{EntityConfig: changes}); err != nil {
		return vcErr(err, "update vApp config")
	}
	return nil
}

func entityConfig(vm types.ManagedObjectReference, m orchestrator.AppMember) (types.VAppEntityConfigInfo, error) {
	stop := m.StopAction
	switch stop {
	case "":
		stop = string(types.VAppAutoStartActionPowerOff)
	case string(types.VAppAutoStartActionNone), string(types.VAppAutoStartActionPowerOff),
		string(types.VAppAutoStartActionGuestShutdown), string(types.VAppAutoStartActionSuspend):
	default:
		return types.VAppEntityConfigInfo{}, fmt.Errorf("VM %s: stop action %q is not one of none, powerOff, guestShutdown, suspend", m.VM, m.StopAction)
	}
	if m.Group < 0 || m.StartDelay < 0 {
		return types.VAppEntityConfigInfo{}, fmt.Errorf("VM %s: negative group or start delay", m.VM)
	}
	return types.VAppEntityConfigInfo{
		Key:             &vm,
		Tag:             m.VM,
		StartOrder:      int32(m.Group),
		StartDelay:      int32(m.StartDelay),
		WaitingForGuest: types.NewBool(m.WaitForGuest),
		StartAction:     string(types.VAppAutoStartActionPowerOn),
		StopAction:      stop,
	}, nil
}

func sameEntityConfig(a, b types.VAppEntityConfigInfo) bool {
	return a.Key != nil && b.Key != nil && *a.Key == *b.Key &&
		a.StartOrder == b.StartOrder && a.StartDelay == b.StartDelay &&
		(a.WaitingForGuest != nil && *a.WaitingForGuest) == (b.WaitingForGuest != nil && *b.WaitingForGuest) &&
		a.StartAction == b.StartAction && a.StopAction == b.StopAction
}

// DestroyApp destroys the vApp at appPath once it holds no VMs and no
// pools; a missing vApp is success. vCenter's Destroy of a vApp deletes its
// VMs with their files, which is why a vApp that still holds VMs is refused.
func (d *Driver) DestroyApp(ctx context.Context, appPath string) error {
	op := fmt.Sprintf("destroy vApp %s", appPath)
	ref, err := d.lookupPath(ctx, d.hostPath(appPath))
	if errors.Is(err, orchestrator.ErrNotFound) {
		return nil
	}
	if err != nil {
		return wrapOp(op, err)
	}
	if ref.Type != "VirtualApp" {
		return fmt.Errorf("%s: it is a %s, not a vApp", op, ref.Type)
	}
	var va mo.VirtualApp
	if err := d.pc.RetrieveOne(ctx, ref, []string{"name", "vm", "resourcePool"}, &va); err != nil {
		if isNotFound(err) {
			d.forgetPath(ctx, d.hostPath(appPath))
			return nil
		}
		return vcErr(err, "%s", op)
	}
	if len(va.Vm) > 0 {
		content, err := d.retrieveMissingOK(ctx, va.Vm, []string{"name"})
		if err != nil {
			return vcErr(err, "%s: read its VMs", op)
		}
		var names []string
		for _, oc := range content {
			n, _ := props(oc)["name"].(string)
			names = append(names, n)
		}
		if len(names) > 0 {
			slices.Sort(names)
			return fmt.Errorf("%s: it still holds VMs %s", op, strings.Join(names, ", "))
		}
	}
	if len(va.ResourcePool.ResourcePool) > 0 {
		return fmt.Errorf("%s: it still holds %d resource pools or vApps", op, len(va.ResourcePool.ResourcePool))
	}
	task, err := object.NewVirtualApp(d.c, ref).Destroy(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil && !isNotFound(err) {
		return vcErr(err, "%s", op)
	}
	d.forgetPath(ctx, d.hostPath(appPath))
	d.log.Info("destroyed vApp", "vapp", appPath)
	return nil
}

// pool resolves a vApp parent: a cluster or compute resource (its root
// resource pool), a resource pool or a vApp. It returns the pool and its
// inventory path, resolved once per run (orchestrator.Memoize).
func (d *Driver) pool(ctx context.Context, parent string) (types.ManagedObjectReference, string, error) {
	type resolved struct {
		ref  types.ManagedObjectReference
		path string
	}
	r, err := orchestrator.Memoize(ctx, lookupKey{d, "pool", d.hostPath(parent)}, func() (resolved, error) {
		ref, p, err := d.resolvePool(ctx, parent)
		return resolved{ref, p}, err
	})
	return r.ref, r.path, err
}

func (d *Driver) resolvePool(ctx context.Context, parent string) (types.ManagedObjectReference, string, error) {
	p := d.hostPath(parent)
	ref, err := d.lookupPath(ctx, p)
	if err != nil {
		return ref, "", err
	}
	switch ref.Type {
	case "ResourcePool", "VirtualApp":
		return ref, p, nil
	case "ClusterComputeResource", "ComputeResource":
		var cr mo.ComputeResource
		if err := d.pc.RetrieveOne(ctx, ref, []string{"resourcePool"}, &cr); err != nil {
			return ref, "", vcErr(err, "read root resource pool of %s", p)
		}
		if cr.ResourcePool == nil {
			return ref, "", fmt.Errorf("%s has no root resource pool", p)
		}
		var rp mo.ResourcePool
		if err := d.pc.RetrieveOne(ctx, *cr.ResourcePool, []string{"name"}, &rp); err != nil {
			return ref, "", vcErr(err, "read root resource pool of %s", p)
		}
		return *cr.ResourcePool, path.Join(p, rp.Name), nil
	}
	return ref, "", fmt.Errorf("%s is a %s, not a cluster, resource pool or vApp", p, ref.Type)
}

// childApp finds the vApp named name directly under pool.
func (d *Driver) childApp(ctx context.Context, pool types.ManagedObjectReference, name string) (*types.ManagedObjectReference, error) {
	children, err := d.refsOf(ctx, pool, "resourcePool")
	if err != nil {
		return nil, err
	}
	content, err := d.retrieveMissingOK(ctx, children, []string{"name"})
	if err != nil {
		return nil, vcErr(err, "read child pools")
	}
	for _, oc := range content {
		if n, _ := props(oc)["name"].(string); n == name {
			if oc.Obj.Type != "VirtualApp" {
				return nil, fmt.Errorf("a %s named %s already exists there", oc.Obj.Type, name)
			}
			ref := oc.Obj
			return &ref, nil
		}
	}
	return nil, nil
}

// resourceSpec turns backed-up vApp resource settings into vSphere's: zero
// reservation and unlimited limit where unset, expandable reservations.
func resourceSpec(r orchestrator.Resources) (types.ResourceConfigSpec, error) {
	cpuShares, err := shares(r.CPUShares)
	if err != nil {
		return types.ResourceConfigSpec{}, err
	}
	alloc := func(what string, reservation, limit int64, s *types.SharesInfo) (types.ResourceAllocationInfo, error) {
		if reservation < 0 {
			return types.ResourceAllocationInfo{}, fmt.Errorf("negative %s reservation", what)
		}
		switch {
		case limit == 0:
			limit = -1
		case limit < -1:
			return types.ResourceAllocationInfo{}, fmt.Errorf("%s limit %d is not valid (-1 means unlimited)", what, limit)
		case limit > 0 && limit < reservation:
			return types.ResourceAllocationInfo{}, fmt.Errorf("%s limit %d is below its reservation %d", what, limit, reservation)
		}
		return types.ResourceAllocationInfo{
			Reservation:           types.NewInt64(reservation),
			Limit:                 types.NewInt64(limit),
			ExpandableReservation: types.NewBool(true),
			Shares:                s,
		}, nil
	}
	cpu, err := alloc("CPU", r.CPUReservationMHz, r.CPULimitMHz, cpuShares)
	if err != nil {
		return types.ResourceConfigSpec{}, err
	}
	mem, err := alloc("memory", r.MemReservationMB, r.MemLimitMB, &types.SharesInfo{Level: types.SharesLevelNormal})
	if err != nil {
		return types.ResourceConfigSpec{}, err
	}
	return types.ResourceConfigSpec{CpuAllocation: cpu, MemoryAllocation: mem}, nil
}

// shares reads a shares setting: a level (low, normal, high), or a number of
// custom shares.
func shares(s string) (*types.SharesInfo, error) {
	switch s {
	case "":
		return &types.SharesInfo{Level: types.SharesLevelNormal}, nil
	case string(types.SharesLevelLow), string(types.SharesLevelNormal), string(types.SharesLevelHigh):
		return &types.SharesInfo{Level: types.SharesLevel(s)}, nil
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("CPU shares %q is neither low, normal, high nor a number of shares", s)
	}
	return &types.SharesInfo{Level: types.SharesLevelCustom, Shares: int32(n)}, nil
}
