package vcsimext

import (
	"slices"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// HostNetworkSystem is a stand-in for the simulator's HostNetworkSystem
// port group methods. The simulator makes a datacenter network per
// AddPortGroup and refuses a second host's port group of the same name
// (DuplicateName), and its networks list no hosts. As on ESXi with
// vCenter, a standard port group name here is one network of the
// datacenter that every host carrying the port group is on (network.host,
// host.network, host.config.network.portgroup), and the network goes away
// with its last port group.
type HostNetworkSystem struct {
	*simulator.HostNetworkSystem
}

func (s *HostNetworkSystem) netFolder(ctx *simulator.Context) *simulator.Folder {
	for _, dc := range ctx.Map.All("Datacenter") {
		d := dc.(*simulator.Datacenter)
		for _, f := range []types.ManagedObjectReference{d.HostFolder} {
			if hostUnder(ctx, f, s.Host.Self) {
				return ctx.Map.Get(d.NetworkFolder).(*simulator.Folder)
			}
		}
	}
	return nil
}

// hostUnder says whether host is somewhere below folder.
func hostUnder(ctx *simulator.Context, folder, host types.ManagedObjectReference) bool {
	for ref := host; ; {
		e, ok := ctx.Map.Get(ref).(mo.Entity)
		if !ok || e.Entity().Parent == nil {
			return false
		}
		ref = *e.Entity().Parent
		if ref == folder {
			return true
		}
	}
}

// AddPortGroup adds the port group to its vSwitch on this host and puts the
// host on the datacenter network of that name, creating it if needed.
func (s *HostNetworkSystem) AddPortGroup(ctx *simulator.Context, req *types.AddPortGroup) soap.HasFault {
	body := &methods.AddPortGroupBody{}
	info := s.NetworkInfo
	sw := slices.IndexFunc(info.Vswitch, func(v types.HostVirtualSwitch) bool { return v.Name == req.Portgrp.VswitchName })
	if req.Portgrp.Name == "" || sw < 0 {
		body.Fault_ = simulator.Fault("no port group name, or no vSwitch "+req.Portgrp.VswitchName, &types.InvalidArgument{InvalidProperty: "portgrp"})
		return body
	}
	if slices.ContainsFunc(info.Portgroup, func(pg types.HostPortGroup) bool { return pg.Spec.Name == req.Portgrp.Name }) {
		body.Fault_ = simulator.Fault("", &types.AlreadyExists{Name: req.Portgrp.Name})
		return body
	}
	folder := s.netFolder(ctx)
	if folder == nil {
		body.Fault_ = simulator.Fault("host in no datacenter", &types.NotFound{})
		return body
	}
	pg := types.HostPortGroup{Key: "key-vim.host.PortGroup-" + req.Portgrp.Name, Spec: req.Portgrp}
	var net *mo.Network
	if e := ctx.Map.FindByName(req.Portgrp.Name, folder.ChildEntity); e != nil {
		n, ok := e.(*mo.Network)
		if !ok {
			body.Fault_ = simulator.Fault("", &types.DuplicateName{Name: req.Portgrp.Name, Object: e.Reference()})
			return body
		}
		net = n
		info.Vswitch[sw].Portgroup = append(info.Vswitch[sw].Portgroup, req.Portgrp.Name)
		info.Portgroup = append(info.Portgroup, pg)
	} else {
		// The simulator's own method makes the network (and this host's port group).
		if res := s.HostNetworkSystem.AddPortGroup(ctx, req); res.Fault() != nil {
			return res
		}
		net, _ = ctx.Map.FindByName(req.Portgrp.Name, folder.ChildEntity).(*mo.Network)
		if net == nil {
			body.Fault_ = simulator.Fault("network not made", &types.NotFound{})
			return body
		}
	}
	if h, ok := ctx.Map.Get(s.Host.Self).(*simulator.HostSystem); ok {
		ctx.Map.WithLock(ctx, h, func() {
			if h.Config != nil && h.Config.Network != nil {
				h.Config.Network.Portgroup = append(slices.Clone(h.Config.Network.Portgroup), pg)
			}
			ctx.Map.AddReference(ctx, h, &h.Network, net.Self)
		})
	}
	ctx.Map.AddReference(ctx, net, &net.Host, s.Host.Self)
	body.Res = &types.AddPortGroupResponse{}
	return body
}

// RemovePortGroup removes the port group from this host, and the network
// from the datacenter when no host carries it any more.
func (s *HostNetworkSystem) RemovePortGroup(ctx *simulator.Context, req *types.RemovePortGroup) soap.HasFault {
	body := &methods.RemovePortGroupBody{}
	info := s.NetworkInfo
	i := slices.IndexFunc(info.Portgroup, func(pg types.HostPortGroup) bool { return pg.Spec.Name == req.PgName })
	if i < 0 {
		body.Fault_ = simulator.Fault("", &types.NotFound{})
		return body
	}
	folder := s.netFolder(ctx)
	var net *mo.Network
	if folder != nil {
		net, _ = ctx.Map.FindByName(req.PgName, folder.ChildEntity).(*mo.Network)
	}
	last := net != nil && len(net.Host) <= 1
	if !last {
		info.Portgroup = slices.Delete(info.Portgroup, i, i+1)
		for j := range info.Vswitch {
			info.Vswitch[j].Portgroup = slices.DeleteFunc(info.Vswitch[j].Portgroup, func(n string) bool { return n == req.PgName })
		}
	}
	if h, ok := ctx.Map.Get(s.Host.Self).(*simulator.HostSystem); ok {
		ctx.Map.WithLock(ctx, h, func() {
			if h.Config != nil && h.Config.Network != nil {
				h.Config.Network.Portgroup = slices.DeleteFunc(slices.Clone(h.Config.Network.Portgroup),
					func(pg types.HostPortGroup) bool { return pg.Spec.Name == req.PgName })
			}
			if net != nil {
				ctx.Map.RemoveReference(ctx, h, &h.Network, net.Self)
			}
		})
	}
	if last {
		// The simulator's own method removes the port group and the network.
		res := s.HostNetworkSystem.RemovePortGroup(ctx, req)
		if h, ok := ctx.Map.Get(s.Host.Self).(*simulator.HostSystem); ok && res.Fault() == nil {
			ctx.Map.WithLock(ctx, h, func() {
				if h.Config != nil && h.Config.Network != nil {
					h.Config.Network.Portgroup = slices.DeleteFunc(slices.Clone(h.Config.Network.Portgroup),
						func(pg types.HostPortGroup) bool { return pg.Spec.Name == req.PgName })
				}
				ctx.Map.RemoveReference(ctx, h, &h.Network, net.Self)
			})
		}
		return res
	}
	if net != nil {
		ctx.Map.RemoveReference(ctx, net, &net.Host, s.Host.Self)
	}
	body.Res = &types.RemovePortGroupResponse{}
	return body
}
