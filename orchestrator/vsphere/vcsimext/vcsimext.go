// Package vcsimext extends govmomi's in-process vCenter simulator (v0.56.0)
// with what rekindle's vsphere driver needs and the simulator lacks. It is
// test support, importable by any package's tests; production code never
// imports it.
//
// Vocabulary:
//
//   - extension: a vSphere method the simulator does not implement
//     (HostDatastoreSystem.RemoveDatastore, VirtualApp.UpdateVAppConfig),
//     written here to behave as vCenter does for the cases rekindle
//     exercises. It is not a general fake.
//   - NAS root: the local folder that stands in for NFS servers. The
//     simulator backs a NAS datastore with the local folder named by the
//     spec's LocalPath and names the datastore after its last element; on
//     ESXi, LocalPath is just the datastore name. With a NAS root, a mount of
//     LocalPath "rekindle" is backed by <NASRoot>/rekindle, so the driver
//     sends what it sends to ESXi and every host that mounts that name sees
//     the same files, as with one real export.
//
// How it hooks in: the simulator dispatches a call to the object it finds
// first in the caller's session registry, then in the global registry.
// Extend installs a Registry.Handler, which runs before every dispatch, and
// puts a wrapper (the simulator object embedded, plus the extension method)
// into the session registry when an extended method is called. The global
// registry keeps the simulator's own object, so the simulator's internal
// type assertions keep working.
package vcsimext

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Options configures Extend.
type Options struct {
	// NASRoot, when set, backs NAS datastores: CreateNasDatastore with
	// LocalPath "name" mounts <NASRoot>/name, creating the folder. When
	// empty, the simulator's own behaviour applies (LocalPath must be an
	// existing folder).
	NASRoot string
	// NFS, with NASRoot, is the address (host:port) of the NFS server
	// behind every NAS mount (rekindle's): the first host's mount of an
	// export then copies its VM folders into the NAS folder all its hosts
	// share, through a real NFS client, standing in for the hosts' NFS
	// clients (the simulator reads VM files locally).
	NFS string
}

// Extend installs the extensions on the simulator registry r (a Model's
// Map(), or simulator.Map(ctx) inside simulator.Test). Call it before
// clients make calls; a Handler already set on r keeps running after ours.
func Extend(r *simulator.Registry, opt Options) {
	x := &extender{opt: opt}
	gate := newBuildGate()
	r.AddHandler(gate)
	prev := r.Handler
	r.Handler = func(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		if gated[m.Name] {
			gate.wait()
		}
		x.route(ctx, m)
		if prev != nil {
			return prev(ctx, m)
		}
		return nil, nil
	}
}

type extender struct {
	opt     Options
	mirrors mirrorSet
}

// mirrorSet remembers which NAS folders hold their export's copy. Every
// host that mounts one export shares its NAS folder, so the first mount
// copies the export in and a later host's mount finds the files there, as
// a host sees the files of an export other hosts mount already; copying
// again would also overwrite what the simulator's VMs changed meanwhile.
// Once no host mounts the datastore any more, the next mount copies anew.
type mirrorSet struct {
	mu   sync.Mutex
	dirs map[string]*mirrorDir
}

type mirrorDir struct {
	mu   sync.Mutex // held while the export is copied in
	done bool
}

func (m *mirrorSet) dir(d string) *mirrorDir {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dirs == nil {
		m.dirs = map[string]*mirrorDir{}
	}
	if m.dirs[d] == nil {
		m.dirs[d] = &mirrorDir{}
	}
	return m.dirs[d]
}

func (m *mirrorSet) forget(d string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.dirs, d)
}

// mirror copies the export at path into dir unless a mount made it
// already.
func (m *mirrorSet) mirror(addr, path, dir string) error {
	md := m.dir(dir)
	md.mu.Lock()
	defer md.mu.Unlock()
	if md.done {
		return nil
	}
	if err := mirrorExport(addr, path, dir); err != nil {
		return err
	}
	md.done = true
	return nil
}

// route puts a wrapper into the caller's session registry when m is an
// extended method, and takes it out again when the object is destroyed, so
// that a destroyed object is not kept alive in the session.
func (x *extender) route(ctx *simulator.Context, m *simulator.Method) {
	if ctx.Session == nil {
		return
	}
	obj := ctx.Map.Get(m.This)
	if sw, ok := obj.(*simulator.DistributedVirtualSwitch); ok && m.Name == "Destroy_Task" {
		destroySwitchPortgroups(ctx, sw)
	}
	if ds, ok := obj.(*simulator.Datastore); ok && m.Name == "Destroy_Task" {
		x.mirrors.forget(ds.Info.GetDatastoreInfo().Url)
	}
	if obj == nil || m.Name == "Destroy_Task" {
		if isWrapper(ctx.Session.Registry.Get(m.This)) {
			ctx.Session.Remove(ctx, m.This)
		}
		return
	}
	var w mo.Reference
	switch o := obj.(type) {
	case *simulator.HostDatastoreSystem:
		switch {
		case m.Name == "RemoveDatastore",
			m.Name == "CreateNasDatastore" && x.opt.NASRoot != "":
			w = &HostDatastoreSystem{HostDatastoreSystem: o, nasRoot: x.opt.NASRoot, nfs: x.opt.NFS, mirrors: &x.mirrors}
		}
	case *simulator.VirtualApp:
		if m.Name == "UpdateVAppConfig" {
			w = &VirtualApp{VirtualApp: o}
		}
	case *simulator.HostNetworkSystem:
		if m.Name == "AddPortGroup" || m.Name == "RemovePortGroup" {
			w = &HostNetworkSystem{HostNetworkSystem: o}
		}
	}
	if w != nil && !isWrapper(ctx.Session.Registry.Get(m.This)) {
		ctx.Session.Put(w)
	}
}

// destroySwitchPortgroups removes a distributed switch's port groups (its
// uplink port group too) as vCenter does when the switch is destroyed; the
// simulator leaves them in the inventory.
func destroySwitchPortgroups(ctx *simulator.Context, sw *simulator.DistributedVirtualSwitch) {
	var pgs []types.ManagedObjectReference
	ctx.WithLock(sw, func() { pgs = slices.Clone(sw.Portgroup) })
	for _, ref := range pgs {
		pg, ok := ctx.Map.Get(ref).(*simulator.DistributedVirtualPortgroup)
		if !ok || pg.Parent == nil {
			continue
		}
		if f, ok := ctx.Map.Get(*pg.Parent).(*simulator.Folder); ok {
			ctx.WithLock(f, func() { ctx.Map.RemoveReference(ctx, f, &f.ChildEntity, ref) })
		}
		ctx.Map.Remove(ctx, ref)
	}
}

func isWrapper(obj mo.Reference) bool {
	switch obj.(type) {
	case *HostDatastoreSystem, *VirtualApp, *HostNetworkSystem:
		return true
	}
	return false
}

// HostDatastoreSystem is the simulator's HostDatastoreSystem with
// RemoveDatastore, and with NAS mounts mapped under the NAS root.
type HostDatastoreSystem struct {
	*simulator.HostDatastoreSystem

	nasRoot string
	nfs     string
	mirrors *mirrorSet
}

// CreateNasDatastore mounts LocalPath under the NAS root and lets the
// simulator do the rest; with an NFS server, the first host's mount then
// copies the export in (the hosts' NFS client stand-in, mirrorExport; see
// mirrorSet).
func (s *HostDatastoreSystem) CreateNasDatastore(ctx *simulator.Context, req *types.CreateNasDatastore) soap.HasFault {
	mirrorTo := ""
	if s.nasRoot != "" && !filepath.IsAbs(req.Spec.LocalPath) {
		dir := filepath.Join(s.nasRoot, req.Spec.LocalPath)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return &methods.CreateNasDatastoreBody{
				Fault_: simulator.Fault(err.Error(), &types.HostConfigFault{}),
			}
		}
		spec := req.Spec
		spec.LocalPath = dir
		req = &types.CreateNasDatastore{This: req.This, Spec: spec}
		if s.nfs != "" {
			mirrorTo = dir
		}
	}
	// The simulator's add writes the host's datastore list under no lock
	// of the host: hold it, so property reads of the host do not race a
	// mount (parallel recoveries mount on one host at once).
	// A datastore of that name that other hosts mount already is refreshed
	// by the simulator's add (its summary, and its info's free space and
	// timestamp) under no lock of the datastore, while another client's
	// property read may be encoding that info (a pointer the read handed
	// out): hold the datastore's lock too, and give it a copy of its info
	// to write into (TestMountWhileDatastoreRead).
	var res soap.HasFault
	mount := func() { res = s.HostDatastoreSystem.CreateNasDatastore(ctx, req) }
	ds := datastoreNamed(ctx, filepath.Base(req.Spec.LocalPath)) // the simulator names it so
	ctx.WithLock(s.Host.Self, func() {
		if ds == nil {
			mount()
			return
		}
		ctx.WithLock(ds, func() {
			if info, ok := ds.Info.(*types.NasDatastoreInfo); ok {
				c := *info
				ds.Info = &c
			}
			mount()
		})
	})
	if res.Fault() == nil && mirrorTo != "" {
		if err := s.mirrors.mirror(s.nfs, req.Spec.RemotePath, mirrorTo); err != nil {
			return &methods.CreateNasDatastoreBody{
				Fault_: simulator.Fault(fmt.Sprintf("NFS mount %s:%s: %v", req.Spec.RemoteHost, req.Spec.RemotePath, err), &types.HostConfigFault{}),
			}
		}
	}
	return res
}

// datastoreNamed is the simulator's datastore of that name, or nil.
func datastoreNamed(ctx *simulator.Context, name string) *simulator.Datastore {
	for _, e := range ctx.Map.All("Datastore") {
		if ds, ok := e.(*simulator.Datastore); ok && ds.Name == name {
			return ds
		}
	}
	return nil
}

// RemoveDatastore unmounts a datastore from this host, as ESXi does: it
// refuses while a VM registered on this host uses the datastore, and the
// datastore leaves the inventory once no host mounts it.
func (s *HostDatastoreSystem) RemoveDatastore(ctx *simulator.Context, req *types.RemoveDatastore) soap.HasFault {
	body := new(methods.RemoveDatastoreBody)
	hostRef := s.Host.Self

	ds, ok := ctx.Map.Get(req.Datastore).(*simulator.Datastore)
	if !ok || !slices.ContainsFunc(ds.Host, func(m types.DatastoreHostMount) bool { return m.Key == hostRef }) {
		body.Fault_ = simulator.Fault(fmt.Sprintf("datastore %s is not mounted on host %s", req.Datastore.Value, s.Host.Name),
			&types.NotFound{})
		return body
	}

	var users []string
	for _, ref := range ds.Vm {
		vm, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
		if !ok {
			continue // the simulator leaves unregistered VMs in Datastore.vm
		}
		ctx.WithLock(vm, func() {
			if vm.Runtime.Host != nil && *vm.Runtime.Host == hostRef && slices.Contains(vm.Datastore, ds.Self) {
				users = append(users, vm.Name)
			}
		})
	}
	if len(users) > 0 {
		body.Fault_ = simulator.Fault(fmt.Sprintf("The resource '%s' is in use.", ds.Name),
			&types.ResourceInUse{Type: "Datastore", Name: ds.Name})
		return body
	}

	var mounts []types.DatastoreHostMount
	ctx.WithLock(ds, func() {
		mounts = slices.DeleteFunc(slices.Clone(ds.Host), func(m types.DatastoreHostMount) bool { return m.Key == hostRef })
		ctx.Update(ds, []types.PropertyChange{{Name: "host", Val: mounts}})
	})

	ctx.Update(s.HostDatastoreSystem, []types.PropertyChange{{Name: "datastore", Val: without(s.Datastore, ds.Self)}})
	if host, ok := ctx.Map.Get(hostRef).(*simulator.HostSystem); ok {
		ctx.WithLock(host, func() {
			ctx.Update(host, []types.PropertyChange{{Name: "datastore", Val: without(host.Datastore, ds.Self)}})
		})
	}

	// The compute resource lists a datastore while any of its hosts mounts it.
	if s.Host.Parent != nil {
		obj := ctx.Map.Get(*s.Host.Parent)
		if cr := computeResource(obj); cr != nil {
			still := slices.ContainsFunc(mounts, func(m types.DatastoreHostMount) bool { return slices.Contains(cr.Host, m.Key) })
			if !still {
				// Update the registry's object: the property type info
				// follows its managed object type.
				ctx.WithLock(obj, func() {
					ctx.Update(obj, []types.PropertyChange{{Name: "datastore", Val: without(cr.Datastore, ds.Self)}})
				})
			}
		}
	}

	if len(mounts) == 0 {
		removeDatastore(ctx, ds)
		if s.mirrors != nil {
			s.mirrors.forget(ds.Info.GetDatastoreInfo().Url)
		}
	}

	body.Res = new(types.RemoveDatastoreResponse)
	return body
}

// removeDatastore takes an unmounted datastore out of its folder, its
// datacenter and the registry.
func removeDatastore(ctx *simulator.Context, ds *simulator.Datastore) {
	var parent *types.ManagedObjectReference
	if ds.Parent != nil {
		if f, ok := ctx.Map.Get(*ds.Parent).(*simulator.Folder); ok {
			ctx.WithLock(f, func() {
				ctx.Update(f, []types.PropertyChange{{Name: "childEntity", Val: without(f.ChildEntity, ds.Self)}})
			})
			parent = f.Parent
		}
	}
	for parent != nil {
		obj := ctx.Map.Get(*parent)
		if dc, ok := obj.(*simulator.Datacenter); ok {
			ctx.WithLock(dc, func() {
				ctx.Update(dc, []types.PropertyChange{{Name: "datastore", Val: without(dc.Datastore, ds.Self)}})
			})
			break
		}
		e, ok := obj.(mo.Entity)
		if !ok {
			break
		}
		parent = e.Entity().Parent
	}
	ctx.Map.Remove(ctx, ds.Browser)
	ctx.Map.Remove(ctx, ds.Self)
}

func computeResource(obj mo.Reference) *mo.ComputeResource {
	switch cr := obj.(type) {
	case *simulator.ClusterComputeResource:
		return &cr.ComputeResource
	case *mo.ComputeResource:
		return cr
	}
	return nil
}

func without(refs []types.ManagedObjectReference, ref types.ManagedObjectReference) []types.ManagedObjectReference {
	return slices.DeleteFunc(slices.Clone(refs), func(r types.ManagedObjectReference) bool { return r == ref })
}

// VirtualApp is the simulator's VirtualApp with UpdateVAppConfig.
type VirtualApp struct {
	*simulator.VirtualApp
}

// UpdateVAppConfig applies the entity configs (startup order) and the
// annotation of the spec. As in vCenter, an entity config names a member of
// the vApp, and only the fields it sets change.
func (a *VirtualApp) UpdateVAppConfig(ctx *simulator.Context, req *types.UpdateVAppConfig) soap.HasFault {
	body := new(methods.UpdateVAppConfigBody)

	var cfg types.VAppConfigInfo
	if a.VAppConfig != nil {
		cfg = *a.VAppConfig
	}
	cfg.EntityConfig = slices.Clone(cfg.EntityConfig)

	for _, ec := range req.Spec.EntityConfig {
		if ec.Key == nil || !(slices.Contains(a.Vm, *ec.Key) || slices.Contains(a.ResourcePool.ResourcePool, *ec.Key)) {
			key := "<nil>"
			if ec.Key != nil {
				key = ec.Key.Value
			}
			body.Fault_ = simulator.Fault(fmt.Sprintf("entity %s is not a member of vApp %s", key, a.Name),
				&types.InvalidArgument{InvalidProperty: "spec.entityConfig.key"})
			return body
		}
		i := slices.IndexFunc(cfg.EntityConfig, func(c types.VAppEntityConfigInfo) bool {
			return c.Key != nil && *c.Key == *ec.Key
		})
		if i < 0 {
			cfg.EntityConfig = append(cfg.EntityConfig, ec)
			continue
		}
		cfg.EntityConfig[i] = mergeEntityConfig(cfg.EntityConfig[i], ec)
	}
	if req.Spec.Annotation != "" {
		cfg.Annotation = req.Spec.Annotation
	}

	ctx.Update(a.VirtualApp, []types.PropertyChange{{Name: "vAppConfig", Val: &cfg}})
	body.Res = new(types.UpdateVAppConfigResponse)
	return body
}

func mergeEntityConfig(cur, upd types.VAppEntityConfigInfo) types.VAppEntityConfigInfo {
	if upd.Tag != "" {
		cur.Tag = upd.Tag
	}
	if upd.StartOrder != 0 {
		cur.StartOrder = upd.StartOrder
	}
	if upd.StartDelay != 0 {
		cur.StartDelay = upd.StartDelay
	}
	if upd.WaitingForGuest != nil {
		cur.WaitingForGuest = upd.WaitingForGuest
	}
	if upd.StartAction != "" {
		cur.StartAction = upd.StartAction
	}
	if upd.StopDelay != 0 {
		cur.StopDelay = upd.StopDelay
	}
	if upd.StopAction != "" {
		cur.StopAction = upd.StopAction
	}
	if upd.DestroyWithParent != nil {
		cur.DestroyWithParent = upd.DestroyWithParent
	}
	return cur
}
