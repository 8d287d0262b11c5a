// Package site protects a datacenter's virtual infrastructure and
// recreates it at a recovery site.
//
// Vocabulary. A site package (Package) is the metadata of one protection
// cycle of a primary vCenter: its datacenters, each with clusters and their
// capacity, resource pools (hierarchy and allocations), VM folders, vApps
// (members, startup order), VMs (placement, the restore point this cycle
// backed up, NICs with network, MAC and addresses) and networks (standard
// port groups with their VLAN per host, distributed port groups with their
// switch and VLAN), and datastores. It never holds credentials. The
// extractor (Extract) reads it from vCenter through the property
// collector; the repository stores it beside the backups (backupfs/repo,
// sites/<id>.json). The format is versioned (Format) and specified in
// docs/repository-format.md, with a JSON schema in docs/site-package.schema.json.
package site

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// Format is the version of the site package format this code writes and
// reads.
const Format = 1

// Package is one protection cycle's record of a primary site.
type Package struct {
	Format      int          `json:"format"`
	ID          string       `json:"id"`   // "<site>-<YYYYMMDDThhmmssZ>-<6 hex>"
	Site        string       `json:"site"` // the primary site's name
	Created     time.Time    `json:"created"`
	Source      string       `json:"source,omitempty"` // vCenter host name, no user or password
	Datacenters []Datacenter `json:"datacenters"`
}

// Datacenter is one datacenter's inventory.
type Datacenter struct {
	Name       string      `json:"name"`
	Clusters   []Cluster   `json:"clusters,omitempty"`
	Pools      []Pool      `json:"pools,omitempty"`   // parents before children
	Folders    []string    `json:"folders,omitempty"` // VM folder paths under the datacenter's VM folder, parents first
	VApps      []VApp      `json:"vapps,omitempty"`
	VMs        []VM        `json:"vms,omitempty"`
	Networks   []Network   `json:"networks,omitempty"`
	Datastores []Datastore `json:"datastores,omitempty"`
}

// Cluster is a compute cluster and its capacity.
type Cluster struct {
	Name     string   `json:"name"`
	Hosts    []string `json:"hosts"`
	CPUMHz   int64    `json:"cpu_mhz"`   // total
	MemoryMB int64    `json:"memory_mb"` // total
	Cores    int      `json:"cores"`
}

// Allocation is a resource pool's or vApp's share of CPU (MHz) or memory
// (MB). Limit -1 is unlimited.
type Allocation struct {
	Reservation int64  `json:"reservation"`
	Limit       int64  `json:"limit"`
	Expandable  bool   `json:"expandable"`
	Shares      string `json:"shares"`                // low, normal, high, custom
	ShareValue  int32  `json:"share_value,omitempty"` // with custom
}

// Pool is a resource pool. Path is "<cluster>/<pool>/<sub>..." (the
// cluster's root pool is the cluster itself).
type Pool struct {
	Path string     `json:"path"`
	CPU  Allocation `json:"cpu"`
	Mem  Allocation `json:"mem"`
}

// VApp is a vApp: its place, allocations and startup order.
type VApp struct {
	Name    string     `json:"name"`
	Parent  string     `json:"parent"` // pool path (a cluster name for its root pool)
	Folder  string     `json:"folder,omitempty"`
	CPU     Allocation `json:"cpu"`
	Mem     Allocation `json:"mem"`
	Members []Member   `json:"members"`
	// Priority orders vApps at recovery: lower starts first, equal ones in
	// parallel (from the annotation line "rekindle-priority: N"; default 0).
	Priority int `json:"priority"`
}

// Member is one VM's place in its vApp's startup order.
type Member struct {
	VM           string `json:"vm"`
	Group        int    `json:"group"` // 1 starts first
	StartDelay   int    `json:"start_delay_s,omitempty"`
	WaitForGuest bool   `json:"wait_for_guest,omitempty"`
	StartAction  string `json:"start_action,omitempty"`
	StopAction   string `json:"stop_action,omitempty"`
}

// VM is one VM and where it lives.
type VM struct {
	Name   string `json:"name"`
	Folder string `json:"folder,omitempty"` // VM folder path; empty is the datacenter's VM folder
	Pool   string `json:"pool,omitempty"`   // pool path, when not in a vApp
	VApp   string `json:"vapp,omitempty"`
	// Point is the restore point this cycle backed up; empty when the VM
	// is not protected.
	Point    string `json:"point,omitempty"`
	NumCPU   int    `json:"num_cpu"`
	MemoryMB int    `json:"memory_mb"`
	NICs     []NIC  `json:"nics,omitempty"`
}

// Addressing modes of a NIC.
const (
	AddrStatic  = "static"
	AddrDHCP    = "dhcp"
	AddrUnknown = "unknown" // the guest reported nothing
)

// NIC is one network adapter.
type NIC struct {
	Key        string   `json:"key"` // "ethernet0"
	Network    string   `json:"network"`
	MAC        string   `json:"mac,omitempty"`
	Addressing string   `json:"addressing"`          // static, dhcp, unknown
	Addresses  []string `json:"addresses,omitempty"` // CIDR, e.g. "10.1.0.5/24"
	Gateway    string   `json:"gateway,omitempty"`
}

// Network kinds.
const (
	NetStandard    = "standard"    // a host port group
	NetDistributed = "distributed" // a distributed port group
)

// Network is a port group.
type Network struct {
	Name   string        `json:"name"`
	Kind   string        `json:"kind"`
	VLAN   int           `json:"vlan"`
	Switch string        `json:"switch,omitempty"` // distributed switch name
	Hosts  []HostPortGrp `json:"hosts,omitempty"`  // standard: where it exists
}

// HostPortGrp is a standard port group on one host.
type HostPortGrp struct {
	Host    string `json:"host"`
	VSwitch string `json:"vswitch"`
	VLAN    int    `json:"vlan"`
}

// Datastore is a datastore.
type Datastore struct {
	Name          string `json:"name"`
	Type          string `json:"type"`
	CapacityBytes int64  `json:"capacity_bytes"`
}

var siteNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// NewID returns a fresh package id for site at t.
func NewID(siteName string, t time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return siteName + "-" + t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// ErrFormat marks a package that does not decode or breaks the format's
// rules.
var ErrFormat = errors.New("site package malformed")

// Points returns the restore points the package names.
func (p *Package) Points() []string {
	var out []string
	for _, dc := range p.Datacenters {
		for _, vm := range dc.VMs {
			if vm.Point != "" {
				out = append(out, vm.Point)
			}
		}
	}
	return out
}

// Validate checks what recovery relies on: names that exist and are unique
// where the inventory needs them so, and references that resolve.
func (p *Package) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: package %s: %s", ErrFormat, p.ID, fmt.Sprintf(format, a...))
	}
	if p.Format != Format {
		return fmt.Errorf("%w: format %d; this rekindle reads format %d", ErrFormat, p.Format, Format)
	}
	if !siteNameRe.MatchString(p.Site) {
		return bad("site name %q: use letters, digits, ._- (at most 64)", p.Site)
	}
	if !repo.ValidSitePackageID(p.ID) {
		return bad("id malformed")
	}
	dcs := map[string]bool{}
	for _, dc := range p.Datacenters {
		if dc.Name == "" || dcs[dc.Name] {
			return bad("datacenter name %q empty or repeated", dc.Name)
		}
		dcs[dc.Name] = true
		pools := map[string]bool{}
		for _, c := range dc.Clusters {
			pools[c.Name] = true
		}
		for _, pl := range dc.Pools {
			parent, _, ok := cutLast(pl.Path)
			if !ok || !pools[parent] || pools[pl.Path] {
				return bad("datacenter %s: pool %q: its parent is not listed before it, or it is repeated", dc.Name, pl.Path)
			}
			pools[pl.Path] = true
		}
		folders := map[string]bool{"": true}
		for _, f := range dc.Folders {
			parent, _, _ := cutLast(f)
			if f == "" || !folders[parent] || folders[f] {
				return bad("datacenter %s: folder %q: parent missing or repeated", dc.Name, f)
			}
			folders[f] = true
		}
		apps := map[string]bool{}
		for _, a := range dc.VApps {
			if a.Name == "" || apps[a.Name] || !pools[a.Parent] {
				return bad("datacenter %s: vApp %q: empty, repeated, or its parent pool %q is unknown", dc.Name, a.Name, a.Parent)
			}
			apps[a.Name] = true
		}
		nets := map[string]bool{}
		for _, n := range dc.Networks {
			if n.Name == "" || nets[n.Name] || (n.Kind != NetStandard && n.Kind != NetDistributed) || n.VLAN < 0 || n.VLAN > 4095 {
				return bad("datacenter %s: network %q: empty, repeated, kind %q or VLAN %d invalid", dc.Name, n.Name, n.Kind, n.VLAN)
			}
			nets[n.Name] = true
		}
		vms := map[string]bool{}
		for _, vm := range dc.VMs {
			if repo.ValidName(vm.Name) != nil || vms[vm.Name] {
				return bad("datacenter %s: VM name %q invalid or repeated", dc.Name, vm.Name)
			}
			vms[vm.Name] = true
			if !folders[vm.Folder] || (vm.VApp != "" && !apps[vm.VApp]) || (vm.VApp == "" && vm.Pool != "" && !pools[vm.Pool]) {
				return bad("datacenter %s: VM %s: folder %q, pool %q or vApp %q unknown", dc.Name, vm.Name, vm.Folder, vm.Pool, vm.VApp)
			}
			if vm.Point != "" && !repo.ValidPointID(vm.Point) {
				return bad("datacenter %s: VM %s: restore point id %q malformed", dc.Name, vm.Name, vm.Point)
			}
			for _, nic := range vm.NICs {
				if nic.Network != "" && !nets[nic.Network] {
					return bad("datacenter %s: VM %s %s: network %q not listed", dc.Name, vm.Name, nic.Key, nic.Network)
				}
			}
		}
		for _, a := range dc.VApps {
			for _, m := range a.Members {
				if !vms[m.VM] {
					return bad("datacenter %s: vApp %s: member %q is not a VM of the datacenter", dc.Name, a.Name, m.VM)
				}
			}
		}
	}
	return nil
}

func cutLast(path string) (parent, name string, ok bool) {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[:i], path[i+1:], true
		}
	}
	return "", path, false
}

// Encode returns the package as stored: indented JSON.
func (p *Package) Encode() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Decode parses and validates a stored package. Unknown fields are refused:
// a newer format must raise Format.
func Decode(b []byte) (*Package, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Package
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Save stores the package in r after checking it; every restore point it
// names must be stored already.
func Save(r *repo.Repo, p *Package) error {
	b, err := p.Encode()
	if err != nil {
		return err
	}
	return r.SaveSitePackage(p.ID, b, p.Points())
}

// Load reads package id from r; id "latest" is the newest package.
func Load(r *repo.Repo, id string) (*Package, error) {
	if id == "latest" || id == "" {
		ids, err := r.SitePackages()
		if err != nil {
			return nil, err
		}
		var newest *Package
		for _, cand := range ids {
			p, err := Load(r, cand)
			if err != nil {
				return nil, err
			}
			if newest == nil || p.Created.After(newest.Created) {
				newest = p
			}
		}
		if newest == nil {
			return nil, fmt.Errorf("no site package in %s: run `rekindle protect run` first: %w", r.Dir, repo.ErrNotFound)
		}
		return newest, nil
	}
	b, err := r.SitePackage(id)
	if err != nil {
		return nil, err
	}
	p, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("site package %s: %w", id, err)
	}
	return p, nil
}
