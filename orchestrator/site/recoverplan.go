package site

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rekindle/rekindle/internal/durable"
)

// Mapping says where a primary site's entities go at a recovery site. It is
// kept in the repository (sites/mappings/<site>.json) so that a later
// recovery of the same site (a resume, another test, the real one) puts
// things in the same places; --map overrides update it.
type Mapping struct {
	Site string `json:"site"`
	// Clusters maps a primary cluster name to a recovery cluster inventory
	// path ("/DC0/host/DC0_C0").
	Clusters map[string]string `json:"clusters,omitempty"`
	// Networks maps a primary network name to the recovery network name.
	Networks map[string]string `json:"networks,omitempty"`
	// Datastores maps a primary datastore name to a recovery datastore.
	Datastores map[string]string `json:"datastores,omitempty"`
}

// Map kinds of --map KIND:FROM=TO.
const (
	MapNetwork   = "network"
	MapCluster   = "cluster"
	MapDatastore = "datastore"
)

// ParseMap applies one "KIND:FROM=TO" override to m.
func (m *Mapping) ParseMap(s string) error {
	kind, rest, ok := strings.Cut(s, ":")
	from, to, ok2 := strings.Cut(rest, "=")
	if !ok || !ok2 || from == "" || to == "" {
		return fmt.Errorf("--map %q: want KIND:FROM=TO with KIND network, cluster or datastore", s)
	}
	set := func(mp *map[string]string) {
		if *mp == nil {
			*mp = map[string]string{}
		}
		(*mp)[from] = to
	}
	switch kind {
	case MapNetwork:
		set(&m.Networks)
	case MapCluster:
		set(&m.Clusters)
	case MapDatastore:
		set(&m.Datastores)
	default:
		return fmt.Errorf("--map %q: kind %q unknown (want network, cluster or datastore)", s, kind)
	}
	return nil
}

func mappingPath(repoDir, siteName string) string {
	return filepath.Join(repoDir, "sites", "mappings", siteName+".json")
}

// LoadMapping reads the stored mapping of siteName; none stored is an empty
// mapping.
func LoadMapping(repoDir, siteName string) (*Mapping, error) {
	m := &Mapping{Site: siteName}
	b, err := durable.ReadFile(durable.OS(), mappingPath(repoDir, siteName))
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recovery mapping of site %s: %w", siteName, err)
	}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("recovery mapping of site %s: %w", siteName, err)
	}
	return m, nil
}

// SaveMapping stores m durably for later recoveries of its site.
func SaveMapping(repoDir string, m *Mapping) error {
	if !siteNameRe.MatchString(m.Site) {
		return fmt.Errorf("recovery mapping: site name %q invalid", m.Site)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	p := mappingPath(repoDir, m.Site)
	if err := durable.MkdirAll(durable.OS(), filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return durable.WriteFile(durable.OS(), p, append(b, '\n'), 0o600)
}

// Inventory is what a recovery plan needs to know of the recovery vCenter:
// which names exist already (reused, never removed) and the hosts of each
// cluster.
type Inventory struct {
	Datacenter string              // inventory path, "/DC0"
	Clusters   map[string][]string // cluster inventory path -> host names
	// Networks maps a network name to its VLAN (-1 when it has none
	// readable, e.g. an opaque network).
	Networks map[string]int
	Switches map[string]bool // distributed switch names
	Pools    map[string]bool // resource pool and vApp inventory paths
	Folders  map[string]bool // VM folder paths under the datacenter's vm folder
	VMs      map[string]bool // VM names
}

// RecoveryOptions say how to recover.
type RecoveryOptions struct {
	// Cluster is the recovery cluster (inventory path) for primary clusters
	// the mapping does not name.
	Cluster string
	// Test recovers a test copy: names get TestSuffix, every network is an
	// isolated port group (TestSuffix added, on a vSwitch with no uplinks).
	Test bool
	// Server is the NFS server name the recovery hosts mount.
	Server string
}

// TestSuffix marks everything a test recovery creates.
const TestSuffix = "-test"

// IsolatedSwitch is the standard vSwitch with no uplinks that test
// recoveries put their networks on.
const IsolatedSwitch = "rekindle-isolated"

// RecoveryPlan is a recovery worked out against the recovery vCenter's
// inventory: every entity of the packages, where it goes and whether it is
// created (and removed again by stop) or exists already (and is left
// alone). It is stored with the recovery session, so a resume carries out
// the same plan.
type RecoveryPlan struct {
	Packages   []string        `json:"packages"`
	Site       string          `json:"site"`
	Test       bool            `json:"test,omitempty"`
	Datacenter string          `json:"datacenter"`
	Server     string          `json:"server"`
	Mapping    Mapping         `json:"mapping"`
	Networks   []PlannedNet    `json:"networks"`
	Switches   []PlannedSwitch `json:"switches,omitempty"`
	Pools      []PlannedPool   `json:"pools"`
	Folders    []PlannedFolder `json:"folders"`
	VApps      []PlannedVApp   `json:"vapps"`
	VMs        []RecoverVM     `json:"vms"`
	Skipped    []string        `json:"skipped,omitempty"` // VMs without a restore point
	// SessionsPer says what one restore session recovers: SessionsPerVApp
	// (a vApp's members, or one standalone VM); "" in plans recorded
	// before it existed, one VM each.
	SessionsPer string `json:"sessions_per,omitempty"`
	// Sessions maps "vapp:<vApp path>", or a standalone VM's name (any
	// VM's with one session per VM), to its restore session, recorded
	// before the session runs (so a resume reuses it).
	Sessions map[string]string `json:"sessions,omitempty"`
}

// SessionsPerVApp is a plan whose restore sessions recover a vApp each
// (one export, one datastore per host for all its members).
const SessionsPerVApp = "vapp"

// PlannedNet is one network at the recovery site, made once however many
// packages and datacenters name it.
type PlannedNet struct {
	Name   string   `json:"name"` // at the recovery site
	From   []string `json:"from"` // "<package>/<datacenter>/<name>" that map to it
	Kind   string   `json:"kind"` // standard, distributed
	VLAN   int      `json:"vlan"`
	Switch string   `json:"switch"`          // vSwitch (standard) or distributed switch
	Hosts  []string `json:"hosts,omitempty"` // standard: hosts that get the port group
	Exists bool     `json:"exists"`          // found at the recovery site: reused
}

// PlannedSwitch is a distributed switch to create.
type PlannedSwitch struct {
	Name  string   `json:"name"`
	Hosts []string `json:"hosts"`
}

// PlannedPool is a resource pool: a site-prefixed placeholder per primary
// datacenter and cluster, and the primary's pools below it.
type PlannedPool struct {
	Path   string     `json:"path"` // recovery inventory path
	From   string     `json:"from,omitempty"`
	CPU    Allocation `json:"cpu"`
	Mem    Allocation `json:"mem"`
	Exists bool       `json:"exists"`
}

// PlannedFolder is a VM folder, relative to the recovery datacenter's vm
// folder.
type PlannedFolder struct {
	Path   string `json:"path"`
	Exists bool   `json:"exists"`
}

// PlannedVApp is a vApp to create, with its startup order.
type PlannedVApp struct {
	Name     string     `json:"name"`
	Parent   string     `json:"parent"` // recovery pool path
	Path     string     `json:"path"`
	From     string     `json:"from"`
	CPU      Allocation `json:"cpu"`
	Mem      Allocation `json:"mem"`
	Members  []Member   `json:"members"` // VM names at the recovery site
	Priority int        `json:"priority"`
	Exists   bool       `json:"exists"`
}

// RecoverVM is one protected VM: where it runs and on which networks.
type RecoverVM struct {
	Name     string            `json:"name"`   // at the recovery site
	Source   string            `json:"source"` // primary (and repository) name
	Point    string            `json:"point"`
	Target   string            `json:"target"` // pool or vApp inventory path
	VApp     string            `json:"vapp,omitempty"`
	Folder   string            `json:"folder,omitempty"` // VM folder (not for vApp members)
	NICs     []NIC             `json:"nics"`             // networks are recovery names
	NetMap   map[string]string `json:"network_map"`      // primary -> recovery network
	Priority int               `json:"priority"`
	Group    int               `json:"group"`
}

// prefix is the site-prefixed name of a primary datacenter at the recovery
// site.
func prefix(siteName, dc string, test bool) string {
	p := siteName + "-" + dc
	if test {
		p += TestSuffix
	}
	return p
}

// MakeRecoveryPlan maps every entity of pkgs to the recovery site. It does
// no I/O. Networks named by several packages or datacenters are planned
// once; the same name with different VLANs is refused.
func MakeRecoveryPlan(pkgs []*Package, inv Inventory, m Mapping, opt RecoveryOptions) (*RecoveryPlan, error) {
	if len(pkgs) == 0 {
		return nil, errors.New("recovery plan: no site package")
	}
	if opt.Server == "" {
		return nil, errors.New("recovery plan: no NFS server name for the recovery hosts to mount")
	}
	p := &RecoveryPlan{Site: pkgs[0].Site, Test: opt.Test, Datacenter: inv.Datacenter, Server: opt.Server, Mapping: m,
		SessionsPer: SessionsPerVApp}
	sfx := ""
	if opt.Test {
		sfx = TestSuffix
	}
	nets := map[string]*PlannedNet{}
	var netOrder []string
	clusterOf := func(primary string) (string, error) {
		c := m.Clusters[primary]
		if c == "" {
			c = opt.Cluster
		}
		if c == "" {
			return "", fmt.Errorf("recovery plan: cluster %s: no recovery cluster (pass --cluster or --map cluster:%s=PATH)", primary, primary)
		}
		if _, ok := inv.Clusters[c]; !ok {
			return "", fmt.Errorf("recovery plan: cluster %s maps to %s, which is not a cluster of the recovery vCenter (have %s)",
				primary, c, strings.Join(slices.Sorted(mapsKeys(inv.Clusters)), ", "))
		}
		return c, nil
	}
	seenPool := map[string]bool{}
	seenFolder := map[string]bool{}
	seenVM := map[string]bool{}
	for _, pkg := range pkgs {
		if pkg.Site != p.Site {
			return nil, fmt.Errorf("recovery plan: packages of sites %s and %s: recover one site at a time", p.Site, pkg.Site)
		}
		p.Packages = append(p.Packages, pkg.ID)
		for _, dc := range pkg.Datacenters {
			pre := prefix(pkg.Site, dc.Name, opt.Test)
			// Hosts that get the standard port groups: those of the
			// recovery clusters this datacenter's clusters map to.
			var hosts []string
			poolPath := map[string]string{} // primary pool path -> recovery path
			for _, c := range dc.Clusters {
				rc, err := clusterOf(c.Name)
				if err != nil {
					return nil, err
				}
				hosts = append(hosts, inv.Clusters[rc]...)
				top := rc + "/Resources/" + pre
				if len(dc.Clusters) > 1 {
					top += "-" + c.Name
				}
				poolPath[c.Name] = top
				if !seenPool[top] {
					seenPool[top] = true
					p.Pools = append(p.Pools, PlannedPool{Path: top, From: pkg.ID + "/" + dc.Name + "/" + c.Name,
						CPU: Allocation{Limit: -1, Expandable: true, Shares: "normal"},
						Mem: Allocation{Limit: -1, Expandable: true, Shares: "normal"}, Exists: inv.Pools[top]})
				}
			}
			slices.Sort(hosts)
			hosts = slices.Compact(hosts)
			for _, pl := range dc.Pools {
				parent, name, _ := cutLast(pl.Path)
				rp := poolPath[parent] + "/" + name
				poolPath[pl.Path] = rp
				if seenPool[rp] {
					return nil, fmt.Errorf("recovery plan: pool %s of %s/%s lands where another already does (%s)", pl.Path, pkg.ID, dc.Name, rp)
				}
				seenPool[rp] = true
				p.Pools = append(p.Pools, PlannedPool{Path: rp, From: pkg.ID + "/" + dc.Name + "/" + pl.Path, CPU: pl.CPU, Mem: pl.Mem, Exists: inv.Pools[rp]})
			}
			folderPath := func(f string) string {
				if f == "" {
					return pre
				}
				return pre + "/" + f
			}
			for _, f := range append([]string{""}, dc.Folders...) {
				rf := folderPath(f)
				if !seenFolder[rf] {
					seenFolder[rf] = true
					p.Folders = append(p.Folders, PlannedFolder{Path: rf, Exists: inv.Folders[rf]})
				}
			}
			for _, n := range dc.Networks {
				to := m.Networks[n.Name]
				if to == "" {
					to = n.Name
				}
				vlan, sw := n.VLAN, n.Switch
				kind := n.Kind
				if opt.Test {
					// Isolated: a port group of its own on a switch with no uplinks.
					to, kind, sw = to+TestSuffix, NetStandard, IsolatedSwitch
				} else if kind == NetStandard {
					sw = "vSwitch0"
					if len(n.Hosts) > 0 && n.Hosts[0].VSwitch != "" {
						sw = n.Hosts[0].VSwitch
					}
				}
				from := pkg.ID + "/" + dc.Name + "/" + n.Name
				if have, ok := nets[to]; ok {
					if have.VLAN != vlan || have.Kind != kind {
						return nil, fmt.Errorf("recovery plan: network %s: %s has VLAN %d (%s), %s has VLAN %d (%s): "+
							"one name cannot carry both; map one elsewhere with --map network:%s=NAME",
							to, have.From[0], have.VLAN, have.Kind, from, vlan, kind, n.Name)
					}
					have.From = append(have.From, from)
					have.Hosts = slices.Compact(slices.Sorted(slices.Values(append(have.Hosts, hosts...))))
					continue
				}
				pn := &PlannedNet{Name: to, From: []string{from}, Kind: kind, VLAN: vlan, Switch: sw}
				if kind == NetStandard {
					pn.Hosts = slices.Clone(hosts)
				}
				if v, ok := inv.Networks[to]; ok {
					if v >= 0 && v != vlan {
						return nil, fmt.Errorf("recovery plan: network %s (VLAN %d, from %s) exists at the recovery site with VLAN %d: "+
							"map it elsewhere with --map network:%s=NAME", to, vlan, from, v, n.Name)
					}
					pn.Exists = true
				} else if kind == NetDistributed && !inv.Switches[sw] && !slices.ContainsFunc(p.Switches, func(s PlannedSwitch) bool { return s.Name == sw }) {
					p.Switches = append(p.Switches, PlannedSwitch{Name: sw, Hosts: hosts})
				}
				nets[to] = pn
				netOrder = append(netOrder, to)
			}
			netMap := map[string]string{}
			for _, n := range dc.Networks {
				to := m.Networks[n.Name]
				if to == "" {
					to = n.Name
				}
				if opt.Test {
					to += TestSuffix
				}
				netMap[n.Name] = to
			}
			apps := map[string]*PlannedVApp{}
			for _, a := range dc.VApps {
				parent := poolPath[a.Parent]
				pa := PlannedVApp{Name: a.Name + sfx, Parent: parent, Path: parent + "/" + a.Name + sfx, From: pkg.ID + "/" + dc.Name + "/" + a.Name,
					CPU: a.CPU, Mem: a.Mem, Priority: a.Priority, Exists: inv.Pools[parent+"/"+a.Name+sfx]}
				for _, mb := range a.Members {
					mb.VM += sfx
					pa.Members = append(pa.Members, mb)
				}
				p.VApps = append(p.VApps, pa)
				apps[a.Name] = &p.VApps[len(p.VApps)-1]
			}
			for _, vm := range dc.VMs {
				if vm.Point == "" {
					p.Skipped = append(p.Skipped, dc.Name+"/"+vm.Name)
					continue
				}
				name := vm.Name + sfx
				if seenVM[name] || inv.VMs[name] {
					return nil, fmt.Errorf("recovery plan: a VM named %s exists at the recovery site already (or twice in the packages): "+
						"remove it, or recover a test copy (--test)", name)
				}
				seenVM[name] = true
				rv := RecoverVM{Name: name, Source: vm.Name, Point: vm.Point, NetMap: map[string]string{}}
				if vm.VApp != "" {
					a := dc.VApps[slices.IndexFunc(dc.VApps, func(a VApp) bool { return a.Name == vm.VApp })]
					rv.Target, rv.VApp, rv.Priority = apps[a.Name].Path, apps[a.Name].Name, a.Priority
					if i := slices.IndexFunc(a.Members, func(mb Member) bool { return mb.VM == vm.Name }); i >= 0 {
						rv.Group = a.Members[i].Group
					}
				} else {
					pool := vm.Pool
					if pool == "" && len(dc.Clusters) > 0 {
						pool = dc.Clusters[0].Name
					}
					rv.Target = poolPath[pool]
					rv.Folder = folderPath(vm.Folder)
					rv.Priority = -1 // standalone VMs after every vApp: set below
				}
				if rv.Target == "" {
					return nil, fmt.Errorf("recovery plan: VM %s of %s/%s: no recovery pool", vm.Name, pkg.ID, dc.Name)
				}
				for _, nic := range vm.NICs {
					nic.Network = netMap[nic.Network]
					rv.NetMap[vm.NICs[len(rv.NICs)].Network] = nic.Network
					rv.NICs = append(rv.NICs, nic)
				}
				p.VMs = append(p.VMs, rv)
			}
		}
	}
	top := 0
	for _, a := range p.VApps {
		top = max(top, a.Priority)
	}
	for i := range p.VMs {
		if p.VMs[i].Priority < 0 {
			p.VMs[i].Priority = top + 1
		}
	}
	for _, n := range netOrder {
		p.Networks = append(p.Networks, *nets[n])
	}
	slices.SortStableFunc(p.VMs, func(a, b RecoverVM) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.VApp, b.VApp), cmp.Compare(a.Group, b.Group))
	})
	return p, nil
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Print writes the plan for people: what is created, what is reused, the
// power-on order.
func (p *RecoveryPlan) Print(w io.Writer) {
	state := func(exists bool) string {
		if exists {
			return "reuse "
		}
		return "create"
	}
	fmt.Fprintf(w, "recover site %s from %s into %s", p.Site, strings.Join(p.Packages, ", "), p.Datacenter)
	if p.Test {
		fmt.Fprintf(w, " (test: names end in %s, networks isolated on %s)", TestSuffix, IsolatedSwitch)
	}
	fmt.Fprintln(w)
	for _, s := range p.Switches {
		fmt.Fprintf(w, "  create distributed switch %s on %s\n", s.Name, strings.Join(s.Hosts, ", "))
	}
	for _, n := range p.Networks {
		fmt.Fprintf(w, "  %s network %s (%s, VLAN %d, %s) <- %s\n", state(n.Exists), n.Name, n.Kind, n.VLAN, n.Switch, strings.Join(n.From, ", "))
	}
	for _, pl := range p.Pools {
		fmt.Fprintf(w, "  %s pool %s (cpu reservation %d MHz, mem reservation %d MB)\n", state(pl.Exists), pl.Path, pl.CPU.Reservation, pl.Mem.Reservation)
	}
	for _, f := range p.Folders {
		fmt.Fprintf(w, "  %s folder %s\n", state(f.Exists), path.Join(p.Datacenter, "vm", f.Path))
	}
	for _, a := range p.VApps {
		var order []string
		for _, m := range a.Members {
			order = append(order, fmt.Sprintf("%s@%d", m.VM, m.Group))
		}
		fmt.Fprintf(w, "  %s vApp %s priority %d, startup %s\n", state(a.Exists), a.Path, a.Priority, strings.Join(order, " "))
	}
	for i, vm := range p.VMs {
		var nics []string
		for _, n := range vm.NICs {
			s := n.Key + "@" + n.Network
			if n.Addressing == AddrStatic {
				s += " " + strings.Join(n.Addresses, ",")
			}
			nics = append(nics, s)
		}
		fmt.Fprintf(w, "  %3d. recover VM %s (point %s) into %s [%s]\n", i+1, vm.Name, vm.Point, vm.Target, strings.Join(nics, "; "))
	}
	for _, s := range p.Skipped {
		fmt.Fprintf(w, "  skip VM %s: not protected in this package (no restore point)\n", s)
	}
}
