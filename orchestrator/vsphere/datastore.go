package vsphere

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
)

// MountNFS mounts the NFS v3 export m.Server:m.Path on host as datastore
// m.Name (HostDatastoreSystem.CreateNasDatastore, read-write). A datastore of
// that name already on the host, backed by the same export, is success; one
// backed by another export is an error.
func (d *Driver) MountNFS(ctx context.Context, hostName string, m orchestrator.NFSMount) error {
	op := fmt.Sprintf("mount NFS %s:%s as datastore %s on host %s", m.Server, m.Path, m.Name, hostName)
	if m.Server == "" || m.Path == "" || m.Name == "" {
		return fmt.Errorf("%s: server, path and name are all required", op)
	}
	host, err := d.host(ctx, hostName)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}

	done, err := d.mounted(ctx, host, m)
	if err != nil || done {
		return wrapOp(op, err)
	}

	dss, err := d.datastoreSystem(ctx, host)
	if err != nil {
		return wrapOp(op, err)
	}
	spec := types.HostNasVolumeSpec{
		RemoteHost: m.Server,
		RemotePath: m.Path,
		LocalPath:  m.Name,
		AccessMode: string(types.HostMountModeReadWrite),
		Type:       string(types.HostFileSystemVolumeFileSystemTypeNFS),
	}
	// vCenter answers the second host's mount of a volume with the existing
	// datastore; govmomi's simulator answers it with an empty reference. Both
	// are checked the same way: by name, on the host.
	_, createErr := dss.CreateNasDatastore(ctx, spec)
	done, err = d.mounted(ctx, host, m)
	switch {
	case done:
		d.log.Info("mounted NFS datastore", "host", hostName, "datastore", m.Name, "export", m.Server+":"+m.Path)
		return nil
	case createErr != nil:
		return vcErr(createErr, "%s", op)
	case err != nil:
		return wrapOp(op, err)
	}
	return fmt.Errorf("%s: vCenter reported success but the host does not list the datastore", op)
}

// mounted reports whether host has a datastore named m.Name backed by m's
// export.
func (d *Driver) mounted(ctx context.Context, host types.ManagedObjectReference, m orchestrator.NFSMount) (bool, error) {
	ds, err := d.hostDatastore(ctx, host, m.Name)
	if err != nil || ds == nil {
		return false, err
	}
	nas, ok := ds.Info.(*types.NasDatastoreInfo)
	if !ok || nas.Nas == nil {
		return false, fmt.Errorf("host already has a datastore named %s that is not NFS", m.Name)
	}
	if !strings.EqualFold(nas.Nas.RemoteHost, m.Server) || path.Clean(nas.Nas.RemotePath) != path.Clean(m.Path) {
		return false, fmt.Errorf("host already has a datastore named %s, backed by %s:%s", m.Name, nas.Nas.RemoteHost, nas.Nas.RemotePath)
	}
	return true, nil
}

// UnmountNFS removes datastore from host (HostDatastoreSystem.RemoveDatastore).
// A datastore the host does not mount is success; one that VMs registered on
// the host still use is an error that names them.
func (d *Driver) UnmountNFS(ctx context.Context, hostName, datastore string) error {
	op := fmt.Sprintf("unmount datastore %s from host %s", datastore, hostName)
	host, err := d.host(ctx, hostName)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ds, err := d.hostDatastore(ctx, host, datastore)
	if err != nil || ds == nil {
		return wrapOp(op, err)
	}
	users, err := d.vmsUsing(ctx, ds, host)
	if err != nil {
		return wrapOp(op, err)
	}
	if len(users) > 0 {
		return fmt.Errorf("%s: still used by VMs %s", op, strings.Join(users, ", "))
	}
	dss, err := d.datastoreSystem(ctx, host)
	if err != nil {
		return wrapOp(op, err)
	}
	if err := dss.Remove(ctx, object.NewDatastore(d.c, ds.Self)); err != nil {
		if isNotFound(err) || fault.Is(err, &types.NotFound{}) {
			return nil
		}
		return vcErr(err, "%s", op)
	}
	d.log.Info("unmounted datastore", "host", hostName, "datastore", datastore)
	return nil
}

// vmsUsing names the VMs registered on host whose files are on ds.
func (d *Driver) vmsUsing(ctx context.Context, ds *mo.Datastore, host types.ManagedObjectReference) ([]string, error) {
	content, err := d.retrieveMissingOK(ctx, ds.Vm, []string{"name", "runtime.host", "datastore"})
	if err != nil {
		return nil, vcErr(err, "read VMs on datastore %s", ds.Name)
	}
	var names []string
	for _, oc := range content {
		p := props(oc)
		h, _ := p["runtime.host"].(types.ManagedObjectReference)
		// Datastore.vm and VirtualMachine.datastore agree on vCenter; the
		// simulator forgets to update the former after a relocation.
		if h == host && slices.Contains(refList(p["datastore"]), ds.Self) {
			n, _ := p["name"].(string)
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// hostDatastore returns the datastore named name that host mounts, or nil:
// one retrieval that follows the host's datastore references.
func (d *Driver) hostDatastore(ctx context.Context, host types.ManagedObjectReference, name string) (*mo.Datastore, error) {
	spec := types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{Obj: host, Skip: types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{Type: "HostSystem", Path: "datastore"}}}},
		PropSet: []types.PropertySpec{{Type: "Datastore", PathSet: []string{"name", "info", "vm"}}},
	}
	res, err := d.pc.RetrieveProperties(ctx, types.RetrieveProperties{SpecSet: []types.PropertyFilterSpec{spec}})
	if err != nil {
		return nil, vcErr(err, "read datastores of host %s", host.Value)
	}
	var dss []mo.Datastore
	if err := mo.LoadObjectContent(res.Returnval, &dss); err != nil {
		return nil, fmt.Errorf("read datastores of host %s: %w", host.Value, err)
	}
	for i := range dss {
		if dss[i].Name == name {
			return &dss[i], nil
		}
	}
	return nil, nil
}

// datastoreSystem is host's datastore system, read once per run
// (orchestrator.Memoize).
func (d *Driver) datastoreSystem(ctx context.Context, host types.ManagedObjectReference) (*object.HostDatastoreSystem, error) {
	ref, err := orchestrator.Memoize(ctx, lookupKey{d, "datastoreSystem", host.Value}, func() (types.ManagedObjectReference, error) {
		var h mo.HostSystem
		if err := d.pc.RetrieveOne(ctx, host, []string{"configManager.datastoreSystem"}, &h); err != nil {
			return types.ManagedObjectReference{}, vcErr(err, "read datastore system of host %s", host.Value)
		}
		if h.ConfigManager.DatastoreSystem == nil {
			return types.ManagedObjectReference{}, errors.New("host has no datastore system (disconnected?)")
		}
		return *h.ConfigManager.DatastoreSystem, nil
	})
	if err != nil {
		return nil, err
	}
	return object.NewHostDatastoreSystem(d.c, ref), nil
}

// wrapOp prefixes err with op, keeping it nil when it is.
func wrapOp(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, err)
}
