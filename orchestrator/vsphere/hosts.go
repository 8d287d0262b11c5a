package vsphere

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
)

// Hosts lists the hosts that can run VMs under target: a cluster, compute
// resource, resource pool or vApp path, a host path, a datacenter or folder
// path, or "" for every host of the datacenter.
//
// The facts of all hosts, with the names of their datastores and clusters,
// come from one property collector retrieval that follows each host's
// datastore and parent references.
func (d *Driver) Hosts(ctx context.Context, target string) ([]orchestrator.Host, error) {
	hosts, err := d.targetHosts(ctx, target)
	if err != nil {
		return nil, err
	}
	if len(hosts) == 0 {
		return nil, nil
	}

	var spec types.PropertyFilterSpec
	spec.ReportMissingObjectsInResults = types.NewBool(true)
	for _, h := range hosts {
		spec.ObjectSet = append(spec.ObjectSet, types.ObjectSpec{
			Obj: h,
			SelectSet: []types.BaseSelectionSpec{
				&types.TraversalSpec{Type: "HostSystem", Path: "datastore"},
				&types.TraversalSpec{Type: "HostSystem", Path: "parent"},
			},
		})
	}
	spec.PropSet = []types.PropertySpec{
		{Type: "HostSystem", PathSet: []string{
			"name", "parent", "datastore",
			"runtime.connectionState", "runtime.inMaintenanceMode",
			"summary.hardware", "summary.quickStats",
		}},
		{Type: "Datastore", PathSet: []string{"name"}},
		{Type: "ClusterComputeResource", PathSet: []string{"name"}},
	}
	res, err := d.pc.RetrieveProperties(ctx, types.RetrieveProperties{SpecSet: []types.PropertyFilterSpec{spec}})
	if err != nil {
		return nil, vcErr(err, "read hosts of %q", target)
	}

	names := map[types.ManagedObjectReference]string{}
	var hostContent []map[string]types.AnyType
	for _, oc := range res.Returnval {
		p := props(oc)
		if oc.Obj.Type == "HostSystem" {
			hostContent = append(hostContent, p)
			continue
		}
		if n, ok := p["name"].(string); ok {
			names[oc.Obj] = n
		}
	}

	out := make([]orchestrator.Host, 0, len(hostContent))
	for _, p := range hostContent {
		h := orchestrator.Host{}
		h.Name, _ = p["name"].(string)
		if parent, ok := p["parent"].(types.ManagedObjectReference); ok && parent.Type == "ClusterComputeResource" {
			h.Cluster = names[parent]
		}
		h.Connected = fmt.Sprint(p["runtime.connectionState"]) == string(types.HostSystemConnectionStateConnected)
		h.Maintenance, _ = p["runtime.inMaintenanceMode"].(bool)
		hw, _ := p["summary.hardware"].(types.HostHardwareSummary)
		qs, _ := p["summary.quickStats"].(types.HostListSummaryQuickStats)
		h.CPUFreeMHz = max(0, int64(hw.CpuMhz)*int64(hw.NumCpuCores)-int64(qs.OverallCpuUsage))
		h.MemFreeMB = max(0, hw.MemorySize/(1<<20)-int64(qs.OverallMemoryUsage))
		for _, ds := range refList(p["datastore"]) {
			if n, ok := names[ds]; ok {
				h.Datastores = append(h.Datastores, n)
			}
		}
		sort.Strings(h.Datastores)
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// targetHosts resolves target to the hosts that can run its VMs.
func (d *Driver) targetHosts(ctx context.Context, target string) ([]types.ManagedObjectReference, error) {
	ref := d.dc.Reference()
	if target != "" {
		var err error
		ref, err = d.lookupPath(ctx, d.hostPath(target))
		if err != nil {
			return nil, fmt.Errorf("hosts of %q: %w", target, err)
		}
	}

	switch ref.Type {
	case "HostSystem":
		return []types.ManagedObjectReference{ref}, nil
	case "ClusterComputeResource", "ComputeResource":
		return d.refsOf(ctx, ref, "host")
	case "ResourcePool", "VirtualApp":
		owner, err := d.refsOf(ctx, ref, "owner")
		if err != nil || len(owner) == 0 {
			return nil, err
		}
		return d.refsOf(ctx, owner[0], "host")
	case "Datacenter", "Folder":
		m := view.NewManager(d.c)
		v, err := m.CreateContainerView(ctx, ref, []string{"HostSystem"}, true)
		if err != nil {
			return nil, vcErr(err, "create container view")
		}
		defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
		refs, err := v.Find(ctx, []string{"HostSystem"}, nil)
		if err != nil {
			return nil, vcErr(err, "list hosts of %q", target)
		}
		return refs, nil
	}
	return nil, fmt.Errorf("hosts of %q: a %s holds no hosts", target, ref.Type)
}

// refsOf reads one reference or list-of-references property of obj.
func (d *Driver) refsOf(ctx context.Context, obj types.ManagedObjectReference, prop string) ([]types.ManagedObjectReference, error) {
	var content []types.ObjectContent
	if err := d.pc.Retrieve(ctx, []types.ManagedObjectReference{obj}, []string{prop}, &content); err != nil {
		return nil, vcErr(err, "read %s of %s", prop, obj)
	}
	var refs []types.ManagedObjectReference
	for _, oc := range content {
		for _, p := range oc.PropSet {
			switch v := p.Val.(type) {
			case types.ManagedObjectReference:
				refs = append(refs, v)
			default:
				refs = append(refs, refList(v)...)
			}
		}
	}
	return slices.Clip(refs), nil
}
