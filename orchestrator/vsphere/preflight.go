package vsphere

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
)

// CheckTarget reports whether target names where restored VMs can be
// registered: a cluster, resource pool or vApp. Restores check it before
// anything changes, so a missing or wrong --target fails at once with what
// to pass, not at the register step of a half-made session.
func (d *Driver) CheckTarget(ctx context.Context, target string) error {
	if target == "" {
		return errors.New("vSphere needs a target: pass --target, a cluster, resource pool or vApp inventory path (e.g. /DC1/host/Cluster1)")
	}
	if _, _, err := d.pool(ctx, target); err != nil {
		return fmt.Errorf("target %q: %w", target, err)
	}
	return nil
}

// CheckPlan checks what a plan names against the inventory before anything
// changes: every network a NIC attaches to exists in the datacenter and is
// on the host the VM is placed on, every planned host is one of hosts, and
// the datastore of --migrate-to exists and every planned host mounts it.
// Errors name what is missing and list what exists.
func (d *Driver) CheckPlan(ctx context.Context, p *orchestrator.Plan, hosts []orchestrator.Host) error {
	// The networks as the run read them (orchestrator.Memoize), read again
	// when the plan does not pass with them (a network made since).
	key := lookupKey{d, "networks", ""}
	read := func() (map[string][]string, error) { return d.networks(ctx) }
	if nets, err := orchestrator.Memoize(ctx, key, read); err == nil && d.checkPlan(ctx, p, hosts, nets) == nil {
		return nil
	}
	orchestrator.Forget(ctx, key)
	nets, err := orchestrator.Memoize(ctx, key, read)
	if err != nil {
		return err
	}
	return d.checkPlan(ctx, p, hosts, nets)
}

func (d *Driver) checkPlan(ctx context.Context, p *orchestrator.Plan, hosts []orchestrator.Host, nets map[string][]string) error {
	byHost := map[string]orchestrator.Host{}
	for _, h := range hosts {
		byHost[h.Name] = h
	}
	for _, vm := range p.VMs {
		h, ok := byHost[vm.Host]
		if !ok {
			return fmt.Errorf("vm %s: host %s is not under target %q: %w", vm.Name, vm.Host, p.Request.Target, orchestrator.ErrNotFound)
		}
		for _, nic := range vm.Spec.NICs {
			onHosts, ok := nets[nic.Network]
			if !ok {
				return &missingError{fmt.Sprintf("vm %s nic %s: network %q does not exist in datacenter %s%s; networks there: %s",
					vm.Name, nic.Key, nic.Network, d.dcPath, mappedFrom(p.Request.NetworkMap, nic.Network), strings.Join(slices.Sorted(maps.Keys(nets)), ", "))}
			}
			// (The simulator's standard networks list no hosts.)
			if len(onHosts) > 0 && !slices.Contains(onHosts, h.Name) {
				return fmt.Errorf("vm %s nic %s: network %q is not on host %s (it is on %s)", vm.Name, nic.Key, nic.Network, h.Name, strings.Join(onHosts, ", "))
			}
		}
	}
	if ds := p.Request.MigrateTo; ds != "" {
		if _, err := d.datastore(ctx, ds); err != nil {
			if errors.Is(err, orchestrator.ErrNotFound) {
				all, lerr := d.names(ctx, "Datastore")
				if lerr != nil {
					return lerr
				}
				return &missingError{fmt.Sprintf("--migrate-to datastore %q does not exist in datacenter %s; datastores there: %s", ds, d.dcPath, strings.Join(all, ", "))}
			}
			return err
		}
		for _, name := range p.Hosts {
			if h := byHost[name]; !slices.Contains(h.Datastores, ds) {
				return fmt.Errorf("--migrate-to datastore %q is not mounted on host %s (it has %s)", ds, name, strings.Join(h.Datastores, ", "))
			}
		}
	}
	return nil
}

// missingError is a named object that does not exist: ErrNotFound.
type missingError struct{ msg string }

func (e *missingError) Error() string        { return e.msg }
func (e *missingError) Is(target error) bool { return target == orchestrator.ErrNotFound }

func mappedFrom(m map[string]string, dst string) string {
	for src, to := range m {
		if to == dst {
			return fmt.Sprintf(" (from --network-map %s=%s)", src, dst)
		}
	}
	return ""
}

// networks maps every network of the datacenter (standard, distributed port
// group, opaque) by name to the names of the hosts it is on, in one
// retrieval that follows each network's host references.
func (d *Driver) networks(ctx context.Context) (map[string][]string, error) {
	m := view.NewManager(d.c)
	v, err := m.CreateContainerView(ctx, d.dc.Reference(), []string{"Network"}, true)
	if err != nil {
		return nil, vcErr(err, "create container view")
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
	var content []mo.Network
	if err := v.Retrieve(ctx, []string{"Network"}, []string{"name", "host"}, &content); err != nil {
		return nil, vcErr(err, "list networks")
	}
	var hosts []types.ManagedObjectReference
	seen := map[types.ManagedObjectReference]bool{}
	for _, n := range content {
		for _, h := range n.Host {
			if !seen[h] {
				seen[h] = true
				hosts = append(hosts, h)
			}
		}
	}
	hostNames := map[types.ManagedObjectReference]string{}
	if len(hosts) > 0 {
		var hs []mo.HostSystem
		if err := d.pc.Retrieve(ctx, hosts, []string{"name"}, &hs); err != nil {
			return nil, vcErr(err, "read host names")
		}
		for _, h := range hs {
			hostNames[h.Self] = h.Name
		}
	}
	out := map[string][]string{}
	for _, n := range content {
		var on []string
		for _, h := range n.Host {
			on = append(on, hostNames[h])
		}
		slices.Sort(on)
		out[n.Name] = slices.Compact(on)
	}
	return out, nil
}

// names lists the names of the datacenter's objects of kind, sorted.
func (d *Driver) names(ctx context.Context, kind string) ([]string, error) {
	m := view.NewManager(d.c)
	v, err := m.CreateContainerView(ctx, d.dc.Reference(), []string{kind}, true)
	if err != nil {
		return nil, vcErr(err, "create container view")
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
	var content []types.ObjectContent
	if err := v.Retrieve(ctx, []string{kind}, []string{"name"}, &content); err != nil {
		return nil, vcErr(err, "list %s", kind)
	}
	var out []string
	for _, oc := range content {
		if n, ok := props(oc)["name"].(string); ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}
