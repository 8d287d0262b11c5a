package site

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// ExtractOptions says what to extract.
type ExtractOptions struct {
	Site string
	// Datacenters to extract by name; empty extracts every one.
	Datacenters []string
	// Points maps a VM name to the restore point this cycle backed up; VMs
	// without one are recorded but not protected.
	Points map[string]string
	Now    time.Time // default time.Now
}

// Extract reads the package of the site c is connected to.
func Extract(ctx context.Context, c *vim25.Client, opt ExtractOptions) (*Package, error) {
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	p := &Package{Format: Format, Site: opt.Site, Created: opt.Now.UTC(), ID: NewID(opt.Site, opt.Now)}
	if u, err := url.Parse(c.URL().String()); err == nil {
		p.Source = u.Hostname() // never the user or password
	}
	dcs, err := find.NewFinder(c).DatacenterList(ctx, "*")
	if err != nil {
		return nil, fmt.Errorf("list datacenters: %w", err)
	}
	for _, dc := range dcs {
		if len(opt.Datacenters) > 0 && !slices.Contains(opt.Datacenters, dc.Name()) {
			continue
		}
		d, err := extractDC(ctx, c, dc.Reference(), dc.Name(), opt)
		if err != nil {
			return nil, fmt.Errorf("datacenter %s: %w", dc.Name(), err)
		}
		p.Datacenters = append(p.Datacenters, *d)
	}
	for _, want := range opt.Datacenters {
		if !slices.ContainsFunc(p.Datacenters, func(d Datacenter) bool { return d.Name == want }) {
			return nil, fmt.Errorf("datacenter %q not found in %s", want, p.Source)
		}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// node is an inventory object's name and parent.
type node struct {
	kind, name string
	parent     *types.ManagedObjectReference
}

func retrieve[T any](ctx context.Context, m *view.Manager, root types.ManagedObjectReference, kind string, props []string) ([]T, error) {
	v, err := m.CreateContainerView(ctx, root, []string{kind}, true)
	if err != nil {
		return nil, err
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	var out []T
	if err := v.Retrieve(ctx, []string{kind}, props, &out); err != nil {
		return nil, fmt.Errorf("retrieve %s: %w", kind, err)
	}
	return out, nil
}

func alloc(a *types.ResourceAllocationInfo) Allocation {
	if a == nil {
		return Allocation{Limit: -1, Shares: "normal"}
	}
	out := Allocation{Limit: -1}
	if a.Reservation != nil {
		out.Reservation = *a.Reservation
	}
	if a.Limit != nil {
		out.Limit = *a.Limit
	}
	if a.ExpandableReservation != nil {
		out.Expandable = *a.ExpandableReservation
	}
	if a.Shares != nil {
		out.Shares = string(a.Shares.Level)
		if a.Shares.Level == types.SharesLevelCustom {
			out.ShareValue = a.Shares.Shares
		}
	}
	return out
}

func extractDC(ctx context.Context, c *vim25.Client, dcRef types.ManagedObjectReference, dcName string, opt ExtractOptions) (*Datacenter, error) {
	m := view.NewManager(c)
	out := &Datacenter{Name: dcName}
	var dcMo mo.Datacenter
	if err := property.DefaultCollector(c).RetrieveOne(ctx, dcRef, []string{"vmFolder"}, &dcMo); err != nil {
		return nil, err
	}
	nodes := map[types.ManagedObjectReference]node{}

	clusters, err := retrieve[mo.ClusterComputeResource](ctx, m, dcRef, "ClusterComputeResource", []string{"name", "parent", "host", "summary", "resourcePool"})
	if err != nil {
		return nil, err
	}
	hosts, err := retrieve[mo.HostSystem](ctx, m, dcRef, "HostSystem", []string{"name", "config.network.portgroup"})
	if err != nil {
		return nil, err
	}
	hostName := map[types.ManagedObjectReference]string{}
	for _, h := range hosts {
		hostName[h.Self] = h.Name
	}
	rootPool := map[types.ManagedObjectReference]string{} // cluster root pool -> cluster name
	for _, cl := range clusters {
		nodes[cl.Self] = node{"cluster", cl.Name, cl.Parent}
		cc := Cluster{Name: cl.Name}
		for _, h := range cl.Host {
			cc.Hosts = append(cc.Hosts, hostName[h])
		}
		slices.Sort(cc.Hosts)
		if s := cl.Summary.GetComputeResourceSummary(); s != nil {
			cc.CPUMHz, cc.MemoryMB, cc.Cores = int64(s.TotalCpu), s.TotalMemory>>20, int(s.NumCpuCores)
		}
		if cl.ResourcePool != nil {
			rootPool[*cl.ResourcePool] = cl.Name
		}
		out.Clusters = append(out.Clusters, cc)
	}
	pools, err := retrieve[mo.ResourcePool](ctx, m, dcRef, "ResourcePool", []string{"name", "parent", "config"})
	if err != nil {
		return nil, err
	}
	apps, err := retrieve[mo.VirtualApp](ctx, m, dcRef, "VirtualApp", []string{"name", "parent", "parentFolder", "config", "vAppConfig"})
	if err != nil {
		return nil, err
	}
	isApp := map[types.ManagedObjectReference]bool{}
	for _, a := range apps {
		isApp[a.Self] = true
		nodes[a.Self] = node{"vapp", a.Name, a.Parent}
	}
	for _, pl := range pools {
		if !isApp[pl.Self] {
			nodes[pl.Self] = node{"pool", pl.Name, pl.Parent}
		}
	}
	// poolPath is "<cluster>/<pool>/..." for a pool or vApp parent.
	var poolPath func(ref types.ManagedObjectReference) string
	poolPath = func(ref types.ManagedObjectReference) string {
		if name, ok := rootPool[ref]; ok {
			return name
		}
		n, ok := nodes[ref]
		if !ok || n.parent == nil {
			return ""
		}
		parent := poolPath(*n.parent)
		if parent == "" {
			return ""
		}
		return parent + "/" + n.name
	}
	for _, pl := range pools {
		if isApp[pl.Self] || rootPool[pl.Self] != "" {
			continue
		}
		if path := poolPath(pl.Self); path != "" {
			out.Pools = append(out.Pools, Pool{Path: path, CPU: alloc(&pl.Config.CpuAllocation), Mem: alloc(&pl.Config.MemoryAllocation)})
		}
	}
	slices.SortFunc(out.Pools, func(a, b Pool) int { return cmp.Compare(a.Path, b.Path) }) // parents sort before children

	folders, err := retrieve[mo.Folder](ctx, m, dcMo.VmFolder, "Folder", []string{"name", "parent"})
	if err != nil {
		return nil, err
	}
	for _, f := range folders {
		nodes[f.Self] = node{"folder", f.Name, f.Parent}
	}
	var folderPath func(ref types.ManagedObjectReference) string
	folderPath = func(ref types.ManagedObjectReference) string {
		if ref == dcMo.VmFolder {
			return ""
		}
		n, ok := nodes[ref]
		if !ok || n.kind != "folder" || n.parent == nil {
			return ""
		}
		if parent := folderPath(*n.parent); parent != "" {
			return parent + "/" + n.name
		}
		return n.name
	}
	for _, f := range folders {
		if f.Self != dcMo.VmFolder {
			out.Folders = append(out.Folders, folderPath(f.Self))
		}
	}
	slices.Sort(out.Folders)

	// Networks: standard port groups per host, distributed port groups.
	std := map[string]*Network{}
	for _, h := range hosts {
		if h.Config == nil {
			continue
		}
		for _, pg := range h.Config.Network.Portgroup {
			n := std[pg.Spec.Name]
			if n == nil {
				n = &Network{Name: pg.Spec.Name, Kind: NetStandard, VLAN: int(pg.Spec.VlanId)}
				std[pg.Spec.Name] = n
			}
			n.Hosts = append(n.Hosts, HostPortGrp{Host: h.Name, VSwitch: pg.Spec.VswitchName, VLAN: int(pg.Spec.VlanId)})
		}
	}
	dvpgs, err := retrieve[mo.DistributedVirtualPortgroup](ctx, m, dcRef, "DistributedVirtualPortgroup", []string{"name", "key", "config"})
	if err != nil {
		return nil, err
	}
	dvss, err := retrieve[mo.DistributedVirtualSwitch](ctx, m, dcRef, "DistributedVirtualSwitch", []string{"name"})
	if err != nil {
		return nil, err
	}
	dvsName := map[types.ManagedObjectReference]string{}
	for _, s := range dvss {
		dvsName[s.Self] = s.Name
	}
	pgName := map[string]string{} // port group key -> name
	for _, pg := range dvpgs {
		pgName[pg.Key] = pg.Name
		if pg.Config.Uplink != nil && *pg.Config.Uplink {
			continue
		}
		n := Network{Name: pg.Name, Kind: NetDistributed}
		if pg.Config.DistributedVirtualSwitch != nil {
			n.Switch = dvsName[*pg.Config.DistributedVirtualSwitch]
		}
		if s, ok := pg.Config.DefaultPortConfig.(*types.VMwareDVSPortSetting); ok && s != nil {
			if v, ok := s.Vlan.(*types.VmwareDistributedVirtualSwitchVlanIdSpec); ok {
				n.VLAN = int(v.VlanId)
			}
		}
		if strings.HasSuffix(n.Name, "-DVUplinks") || strings.Contains(n.Name, "-DVUplinks-") {
			continue
		}
		out.Networks = append(out.Networks, n)
	}
	for _, n := range std {
		slices.SortFunc(n.Hosts, func(a, b HostPortGrp) int { return cmp.Compare(a.Host, b.Host) })
		if !slices.ContainsFunc(out.Networks, func(o Network) bool { return o.Name == n.Name }) {
			out.Networks = append(out.Networks, *n)
		}
	}
	slices.SortFunc(out.Networks, func(a, b Network) int { return cmp.Compare(a.Name, b.Name) })

	vms, err := retrieve[mo.VirtualMachine](ctx, m, dcRef, "VirtualMachine",
		[]string{"name", "parent", "resourcePool", "parentVApp", "config.hardware", "guest.net", "config.template"})
	if err != nil {
		return nil, err
	}
	vmName := map[types.ManagedObjectReference]string{}
	for _, vm := range vms {
		vmName[vm.Self] = vm.Name
	}
	for _, vm := range vms {
		if vm.Config == nil {
			continue
		}
		v := VM{Name: vm.Name, NumCPU: int(vm.Config.Hardware.NumCPU), MemoryMB: int(vm.Config.Hardware.MemoryMB), Point: opt.Points[vm.Name]}
		if vm.Parent != nil {
			v.Folder = folderPath(*vm.Parent)
		}
		switch {
		case vm.ParentVApp != nil && isApp[*vm.ParentVApp]:
			v.VApp = nodes[*vm.ParentVApp].name
		case vm.ResourcePool != nil && isApp[*vm.ResourcePool]:
			v.VApp = nodes[*vm.ResourcePool].name
		case vm.ResourcePool != nil:
			v.Pool = poolPath(*vm.ResourcePool)
		}
		i := 0
		for _, dev := range vm.Config.Hardware.Device {
			card, ok := dev.(types.BaseVirtualEthernetCard)
			if !ok {
				continue
			}
			e := card.GetVirtualEthernetCard()
			nic := NIC{Key: "ethernet" + strconv.Itoa(i), MAC: strings.ToLower(e.MacAddress), Addressing: AddrUnknown}
			i++
			switch b := e.Backing.(type) {
			case *types.VirtualEthernetCardNetworkBackingInfo:
				nic.Network = b.DeviceName
			case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
				nic.Network = pgName[b.Port.PortgroupKey]
			}
			guestAddresses(&nic, vm.Guest)
			v.NICs = append(v.NICs, nic)
		}
		out.VMs = append(out.VMs, v)
	}
	slices.SortFunc(out.VMs, func(a, b VM) int { return cmp.Compare(a.Name, b.Name) })
	// A NIC on a network outside the datacenter's lists (an opaque
	// network) is recorded without it.
	for i := range out.VMs {
		for j, nic := range out.VMs[i].NICs {
			if !slices.ContainsFunc(out.Networks, func(n Network) bool { return n.Name == nic.Network }) {
				out.VMs[i].NICs[j].Network = ""
			}
		}
	}

	for _, a := range apps {
		va := VApp{Name: a.Name, CPU: alloc(&a.Config.CpuAllocation), Mem: alloc(&a.Config.MemoryAllocation)}
		if a.Parent != nil {
			va.Parent = poolPath(*a.Parent)
		}
		if a.ParentFolder != nil {
			va.Folder = folderPath(*a.ParentFolder)
		}
		if a.VAppConfig != nil {
			va.Priority = priority(a.VAppConfig.Annotation)
			for _, ec := range a.VAppConfig.EntityConfig {
				if ec.Key == nil {
					continue
				}
				name, ok := vmName[*ec.Key]
				if !ok {
					continue
				}
				mb := Member{VM: name, Group: int(ec.StartOrder), StartDelay: int(ec.StartDelay), StartAction: ec.StartAction, StopAction: ec.StopAction}
				if ec.WaitingForGuest != nil {
					mb.WaitForGuest = *ec.WaitingForGuest
				}
				va.Members = append(va.Members, mb)
			}
		}
		// VMs in the vApp without an entity config start in group 1.
		for _, vm := range out.VMs {
			if vm.VApp == a.Name && !slices.ContainsFunc(va.Members, func(m Member) bool { return m.VM == vm.Name }) {
				va.Members = append(va.Members, Member{VM: vm.Name, Group: 1})
			}
		}
		slices.SortFunc(va.Members, func(x, y Member) int { return cmp.Or(cmp.Compare(x.Group, y.Group), cmp.Compare(x.VM, y.VM)) })
		out.VApps = append(out.VApps, va)
	}
	slices.SortFunc(out.VApps, func(a, b VApp) int { return cmp.Compare(a.Name, b.Name) })

	dss, err := retrieve[mo.Datastore](ctx, m, dcRef, "Datastore", []string{"name", "summary"})
	if err != nil {
		return nil, err
	}
	for _, ds := range dss {
		out.Datastores = append(out.Datastores, Datastore{Name: ds.Name, Type: ds.Summary.Type, CapacityBytes: ds.Summary.Capacity})
	}
	slices.SortFunc(out.Datastores, func(a, b Datastore) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// priority reads "rekindle-priority: N" from an annotation.
func priority(annotation string) int {
	for l := range strings.Lines(annotation) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "rekindle-priority:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return 0
}

// guestAddresses fills the NIC's addresses from what the guest reports for
// its MAC address.
func guestAddresses(nic *NIC, g *types.GuestInfo) {
	if g == nil {
		return
	}
	for _, gn := range g.Net {
		if !strings.EqualFold(gn.MacAddress, nic.MAC) {
			continue
		}
		if gn.IpConfig != nil {
			for _, ip := range gn.IpConfig.IpAddress {
				nic.Addresses = append(nic.Addresses, ip.IpAddress+"/"+strconv.Itoa(int(ip.PrefixLength)))
			}
			if d := gn.IpConfig.Dhcp; d != nil && d.Ipv4 != nil && d.Ipv4.Enable {
				nic.Addressing = AddrDHCP
			} else if len(nic.Addresses) > 0 {
				nic.Addressing = AddrStatic
			}
		} else {
			for _, ip := range gn.IpAddress {
				nic.Addresses = append(nic.Addresses, ip)
			}
			if len(nic.Addresses) > 0 {
				nic.Addressing = AddrStatic
			}
		}
	}
}
