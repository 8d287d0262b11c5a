package repo

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// ManifestFormat is the version of the JSON manifests this code writes and the
// newest it reads.
const ManifestFormat = 1

// RestorePoint is the manifest of one backup of one VM: everything needed to
// bring the VM folder back, with its disks as references to flat indexes.
type RestorePoint struct {
	Format  int          `json:"format"`
	ID      string       `json:"id"`
	VM      VMIdentity   `json:"vm"`
	App     string       `json:"app,omitempty"`    // vApp this VM belongs to, if any
	Created time.Time    `json:"created"`          // UTC, when the import started
	Parent  string       `json:"parent,omitempty"` // previous point of the same VM
	Files   []ConfigFile `json:"files"`            // .vmx, .nvram, ... (not disks)
	Disks   []Disk       `json:"disks"`
	NICs    []NIC        `json:"nics,omitempty"`
	Stats   IngestStats  `json:"stats"`
	// Source says where the point was read from when it came from a
	// hypervisor rather than a copied VM folder.
	Source *PointSource `json:"source,omitempty"`
}

// PointSource records how a backup taken from vCenter was read.
type PointSource struct {
	Kind     string `json:"kind"`               // "vcenter"
	Server   string `json:"server,omitempty"`   // vCenter host name
	MoRef    string `json:"moref,omitempty"`    // the VM's managed object id, e.g. vm-42
	Snapshot string `json:"snapshot,omitempty"` // name of the snapshot the disks were read from
	Quiesced bool   `json:"quiesced,omitempty"`
	Mode     string `json:"mode"`           // "full" or "incremental"
	Note     string `json:"note,omitempty"` // why a backup that could have been incremental was full
}

// VMIdentity is who the VM is, as read from its .vmx.
type VMIdentity struct {
	Name         string `json:"name"`
	UUID         string `json:"uuid,omitempty"`          // uuid.bios
	InstanceUUID string `json:"instance_uuid,omitempty"` // vc.uuid
	GuestOS      string `json:"guest_os,omitempty"`
	NumCPU       int    `json:"num_cpu,omitempty"`
	MemoryMB     int    `json:"memory_mb,omitempty"`
	Firmware     string `json:"firmware,omitempty"` // bios | efi
	HWVersion    int    `json:"hw_version,omitempty"`
}

// ConfigFile is a small VM file kept whole. Small files are inline; larger ones
// are chunked like disks and referenced by index.
type ConfigFile struct {
	Name   string `json:"name"` // base name, e.g. "web01.vmx"
	Size   int64  `json:"size"`
	Inline []byte `json:"inline,omitempty"` // base64 in JSON
	Index  Digest `json:"index,omitzero"`   // set when not inline
}

// Disk is one virtual disk of a restore point.
type Disk struct {
	Name         string `json:"name"`                    // base name without extension, e.g. "web01_1"
	Controller   string `json:"controller"`              // vmx device key, e.g. "scsi0:1"
	Adapter      string `json:"adapter,omitempty"`       // lsilogic, pvscsi, ide, sata, nvme
	Size         int64  `json:"size"`                    // bytes, as seen by the guest
	Index        Digest `json:"index"`                   // flat index of this disk version
	SourceFormat string `json:"source_format,omitempty"` // monolithicFlat, monolithicSparse, streamOptimized, raw
	Thin         bool   `json:"thin,omitempty"`
	// ChangeID is vSphere's changed block tracking id of the snapshot this
	// disk version was read from; the next backup asks vCenter what changed
	// since it.
	ChangeID string `json:"change_id,omitempty"`
}

// NIC is one network adapter of the VM as recorded in its .vmx.
type NIC struct {
	Key         string `json:"key"` // "ethernet0"
	Network     string `json:"network,omitempty"`
	Type        string `json:"type,omitempty"` // vmxnet3, e1000, ...
	MAC         string `json:"mac,omitempty"`
	AddressType string `json:"address_type,omitempty"` // generated, static, vpx
	IPAddress   string `json:"ip_address,omitempty"`   // when known (static guests)
}

// IngestStats records what the import that made a point cost.
type IngestStats struct {
	BytesLogical int64 `json:"bytes_logical"` // sum of disk sizes
	BytesRead    int64 `json:"bytes_read"`    // allocated bytes read from the source
	BytesNew     int64 `json:"bytes_new"`     // uncompressed bytes of chunks this import added
	BytesStored  int64 `json:"bytes_stored"`  // compressed bytes written for those chunks
	ChunksTotal  int64 `json:"chunks_total"`  // non-zero chunks referenced
	ChunksNew    int64 `json:"chunks_new"`
}

// App is the manifest of a distributed application (a vSphere vApp).
type App struct {
	Format    int         `json:"format"`
	Name      string      `json:"name"`
	Members   []AppMember `json:"members"`
	Networks  []string    `json:"networks,omitempty"`
	Resources Resources   `json:"resources,omitzero"`
	Updated   time.Time   `json:"updated"`
}

// AppMember is one VM of an App and how it starts and stops.
type AppMember struct {
	VM           string `json:"vm"`
	Group        int    `json:"group"`                    // startup order group, 1 starts first
	StartDelay   int    `json:"start_delay_s,omitempty"`  // seconds to wait after start before the next group
	WaitForGuest bool   `json:"wait_for_guest,omitempty"` // wait for tools heartbeat/IP before the next group
	StartAction  string `json:"start_action,omitempty"`   // powerOn | none
	StopAction   string `json:"stop_action,omitempty"`    // powerOff | guestShutdown | suspend | none
	StopDelay    int    `json:"stop_delay_s,omitempty"`
}

// Resources are the vApp's resource pool settings. Zero means unset.
type Resources struct {
	CPUSharesLevel    string `json:"cpu_shares,omitempty"` // low, normal, high
	CPUReservationMHz int64  `json:"cpu_reservation_mhz,omitempty"`
	CPULimitMHz       int64  `json:"cpu_limit_mhz,omitempty"`
	MemReservationMB  int64  `json:"mem_reservation_mb,omitempty"`
	MemLimitMB        int64  `json:"mem_limit_mb,omitempty"`
}

var (
	pointIDRe = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$`)
	// Names of VMs and apps become parts of NFS paths: no separators, no dot
	// names, no control characters.
	nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._+()-]{0,79}$`)
)

// ValidName reports whether s may name a VM, app or disk. These names become
// folder and file names in the NFS export, so the rule is strict.
func ValidName(s string) error {
	if !nameRe.MatchString(s) {
		return fmt.Errorf("name %q: use 1-80 letters, digits, spaces or ._+()- and start with a letter or digit", s)
	}
	return nil
}

// ValidPointID reports whether s has the shape of a restore point id.
func ValidPointID(s string) bool { return pointIDRe.MatchString(s) }

// Validate checks the invariants a decoded restore point must hold before any
// of it is trusted.
func (p *RestorePoint) Validate() error {
	if p.Format < 1 || p.Format > ManifestFormat {
		return fmt.Errorf("restore point format %d not supported (this rekindle reads up to %d): upgrade rekindle", p.Format, ManifestFormat)
	}
	if !ValidPointID(p.ID) {
		return fmt.Errorf("restore point id %q malformed", p.ID)
	}
	if err := ValidName(p.VM.Name); err != nil {
		return fmt.Errorf("restore point %s: vm %w", p.ID, err)
	}
	if p.App != "" {
		if err := ValidName(p.App); err != nil {
			return fmt.Errorf("restore point %s: app %w", p.ID, err)
		}
	}
	if p.Parent != "" && !ValidPointID(p.Parent) {
		return fmt.Errorf("restore point %s: parent id %q malformed", p.ID, p.Parent)
	}
	seen := map[string]bool{}
	for _, f := range p.Files {
		if err := validFileName(f.Name); err != nil {
			return fmt.Errorf("restore point %s: file %w", p.ID, err)
		}
		if seen[f.Name] {
			return fmt.Errorf("restore point %s: file %q listed twice", p.ID, f.Name)
		}
		seen[f.Name] = true
		if f.Size < 0 || (f.Inline != nil && int64(len(f.Inline)) != f.Size) {
			return fmt.Errorf("restore point %s: file %q: size %d does not match its content", p.ID, f.Name, f.Size)
		}
		if f.Inline == nil && f.Index.IsZero() && f.Size > 0 {
			return fmt.Errorf("restore point %s: file %q has neither inline content nor index", p.ID, f.Name)
		}
	}
	for _, d := range p.Disks {
		if err := ValidName(d.Name); err != nil {
			return fmt.Errorf("restore point %s: disk %w", p.ID, err)
		}
		for _, suffix := range []string{".vmdk", "-flat.vmdk"} {
			if seen[d.Name+suffix] {
				return fmt.Errorf("restore point %s: disk %q clashes with file %q", p.ID, d.Name, d.Name+suffix)
			}
			seen[d.Name+suffix] = true
		}
		if d.Size <= 0 || d.Size > MaxDiskSize {
			return fmt.Errorf("restore point %s: disk %q: size %d out of range", p.ID, d.Name, d.Size)
		}
		if d.Index.IsZero() {
			return fmt.Errorf("restore point %s: disk %q has no index", p.ID, d.Name)
		}
	}
	return nil
}

// Validate checks an app manifest.
func (a *App) Validate() error {
	if a.Format < 1 || a.Format > ManifestFormat {
		return fmt.Errorf("app format %d not supported (this rekindle reads up to %d): upgrade rekindle", a.Format, ManifestFormat)
	}
	if err := ValidName(a.Name); err != nil {
		return fmt.Errorf("app %w", err)
	}
	if len(a.Members) == 0 {
		return fmt.Errorf("app %q has no members", a.Name)
	}
	seen := map[string]bool{}
	for _, m := range a.Members {
		if err := ValidName(m.VM); err != nil {
			return fmt.Errorf("app %q: member %w", a.Name, err)
		}
		if seen[m.VM] {
			return fmt.Errorf("app %q: member %q listed twice", a.Name, m.VM)
		}
		seen[m.VM] = true
		if m.Group < 1 {
			return fmt.Errorf("app %q: member %q: startup group must be 1 or more, got %d", a.Name, m.VM, m.Group)
		}
		if m.StartDelay < 0 || m.StopDelay < 0 {
			return fmt.Errorf("app %q: member %q: negative delay", a.Name, m.VM)
		}
	}
	return nil
}

func validFileName(s string) error {
	if s == "" || s == "." || s == ".." || len(s) > 255 {
		return fmt.Errorf("name %q invalid", s)
	}
	for _, c := range s {
		if c == '/' || c == '\\' || c < 0x20 || c == 0x7f {
			return fmt.Errorf("name %q contains a forbidden character", s)
		}
	}
	return nil
}

// DecodeRestorePoint parses and validates a restore point manifest.
func DecodeRestorePoint(b []byte) (*RestorePoint, error) {
	var p RestorePoint
	if err := strictUnmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode restore point manifest: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// DecodeApp parses and validates an app manifest.
func DecodeApp(b []byte) (*App, error) {
	var a App
	if err := strictUnmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("decode app manifest: %w", err)
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}

// strictUnmarshal accepts unknown fields (a newer minor writer may add some)
// but rejects trailing garbage.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytesReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after manifest")
	}
	return nil
}
