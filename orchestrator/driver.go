package orchestrator

import (
	"context"
	"errors"
)

// Driver is one hypervisor platform as the orchestrator needs it. vsphere
// (govmomi) and qemu (QMP) implement it. Every method is idempotent: calling
// it again after a crash or a retry finds what the first call made instead
// of making it twice. Methods return errors that carry the platform's own
// message (a vCenter fault's text, QEMU's error). orchestrator/drivertest
// is the suite every implementation passes.
type Driver interface {
	// Name is "vsphere" or "qemu".
	Name() string
	// Hosts lists the hosts that could run VMs under target (a cluster,
	// resource pool or vApp inventory path for vsphere; ignored by qemu),
	// with the facts host selection needs.
	Hosts(ctx context.Context, target string) ([]Host, error)
	// MountNFS mounts an NFS export on host as datastore m.Name. Mounting an
	// export already mounted under that name succeeds.
	MountNFS(ctx context.Context, host string, m NFSMount) error
	// UnmountNFS removes the datastore from host. A datastore that is not
	// mounted is not an error; one still used by VMs is.
	UnmountNFS(ctx context.Context, host, datastore string) error
	// EnsureApp creates the vApp (or finds it by name) under app.Parent with
	// its configuration, and returns its inventory path.
	EnsureApp(ctx context.Context, app AppSpec) (string, error)
	// DestroyApp removes an empty vApp; a missing one is not an error.
	DestroyApp(ctx context.Context, path string) error
	// RegisterVM registers the VM whose .vmx is at p.VMXPath on p.Datastore,
	// on p.Host, into p.Pool (a resource pool or vApp path) and p.Folder.
	// A VM of that name already registered there is returned as is.
	RegisterVM(ctx context.Context, p Placement) (VMRef, error)
	// FindVM looks a VM up by name.
	FindVM(ctx context.Context, name string) (VMRef, error)
	// Reconcile makes the VM's hardware match its backup record: CPU, memory,
	// disks on their controllers, NICs on their (mapped) networks with their
	// MAC addresses.
	Reconcile(ctx context.Context, vm VMRef, spec VMSpec) error
	PowerOn(ctx context.Context, vm VMRef) error
	// PowerOff stops the VM; one not registered (any more) is ErrNotFound.
	PowerOff(ctx context.Context, vm VMRef) error
	// WaitReady returns when the guest shows what check asks for, or fails
	// when ctx ends.
	WaitReady(ctx context.Context, vm VMRef, check ReadyCheck) error
	// Relocate moves the running VM's files to datastore (Storage vMotion),
	// reporting progress in percent.
	Relocate(ctx context.Context, vm VMRef, datastore string, progress func(pct int)) error
	// Unregister removes the VM from the inventory without deleting its
	// files (they live in the session overlay, which is discarded).
	Unregister(ctx context.Context, vm VMRef) error
}

// RegisteredFinder is a Driver that tells which VM a RegisterVM(p) call
// registered when its caller never learned it (rekindle died during the
// call, or before its register step recorded the VMs): the VM named p.Name
// in p.Pool whose .vmx is p's, "" when there is none. A VM of that name with
// other files is someone else's and is never returned. Stop uses it for a
// register step that did not record its VMs; vsphere and qemu implement it.
type RegisteredFinder interface {
	RegisteredVM(ctx context.Context, p Placement) (VMRef, error)
}

// ErrNotFound is returned (wrapped) when a VM, vApp or host does not exist.
var ErrNotFound = errors.New("not found")

// Host is a hypervisor host and what host selection needs to know of it.
type Host struct {
	Name        string   `json:"name"`
	Cluster     string   `json:"cluster,omitempty"`
	Connected   bool     `json:"connected"`
	Maintenance bool     `json:"maintenance"`
	CPUFreeMHz  int64    `json:"cpu_free_mhz"`
	MemFreeMB   int64    `json:"mem_free_mb"`
	Datastores  []string `json:"datastores,omitempty"`
}

// NFSMount is an NFS export to mount as a datastore. ESXi requires the same
// server name and path on every host for a datastore to be the same one.
type NFSMount struct {
	Server string `json:"server"`
	Path   string `json:"path"`
	Name   string `json:"name"`
}

// AppSpec is a vApp to create, with its backed-up configuration.
type AppSpec struct {
	Name      string      `json:"name"`
	Parent    string      `json:"parent"` // cluster or resource pool inventory path
	Members   []AppMember `json:"members"`
	Resources Resources   `json:"resources"`
}

// AppMember is one VM's place in the vApp's startup order.
type AppMember struct {
	VM           string `json:"vm"`
	Group        int    `json:"group"`
	StartDelay   int    `json:"start_delay_s"`
	WaitForGuest bool   `json:"wait_for_guest"`
	StopAction   string `json:"stop_action,omitempty"`
}

// Resources are vApp resource settings; zero means unset, -1 unlimited.
type Resources struct {
	CPUShares         string `json:"cpu_shares,omitempty"`
	CPUReservationMHz int64  `json:"cpu_reservation_mhz,omitempty"`
	CPULimitMHz       int64  `json:"cpu_limit_mhz,omitempty"`
	MemReservationMB  int64  `json:"mem_reservation_mb,omitempty"`
	MemLimitMB        int64  `json:"mem_limit_mb,omitempty"`
}

// Placement says where a VM is registered.
type Placement struct {
	Name      string `json:"name"`      // inventory name
	Host      string `json:"host"`      // host name
	Datastore string `json:"datastore"` // datastore holding the .vmx
	VMXPath   string `json:"vmx_path"`  // path inside the datastore, e.g. "s-1a2b/web01/web01.vmx"
	Pool      string `json:"pool"`      // resource pool or vApp inventory path
	Folder    string `json:"folder,omitempty"`
}

// VMRef identifies a registered VM (a managed object id for vsphere).
type VMRef string

// VMSpec is the hardware a VM must have, from its backup record.
type VMSpec struct {
	NumCPU   int        `json:"num_cpu"`
	MemoryMB int        `json:"memory_mb"`
	Disks    []DiskSpec `json:"disks"`
	NICs     []NICSpec  `json:"nics"`
}

// DiskSpec is one disk: the descriptor's datastore path and its controller.
type DiskSpec struct {
	Controller string `json:"controller"` // "scsi0:1"
	Adapter    string `json:"adapter"`    // pvscsi, lsilogic, ...
	File       string `json:"file"`       // "[ds] s-1a2b/web01/web01_1.vmdk"
	SizeBytes  int64  `json:"size_bytes"`
}

// NICSpec is one network adapter.
type NICSpec struct {
	Key     string `json:"key"` // "ethernet0"
	Network string `json:"network"`
	Type    string `json:"type"`          // vmxnet3, e1000e, ...
	MAC     string `json:"mac,omitempty"` // empty: let the platform generate one
}

// ReadyCheck is what "up" means for a VM before the next startup group starts.
type ReadyCheck struct {
	Heartbeat bool `json:"heartbeat"` // guest tools running with a green heartbeat
	IP        bool `json:"ip"`        // guest reports an IP address
	// Via and Marker say how a driver whose readiness is configured (qemu:
	// marker, agent or none) tells this VM up. The plan records them when
	// the session is made, so a resume, by whichever process with whichever
	// flags, waits the same way. Empty: the driver's own way.
	Via    string `json:"via,omitempty"`
	Marker string `json:"marker,omitempty"`
}

// ReadyMethod is a driver whose way of telling a guest up is configured:
// Plan records it (Via, Marker) in every VM that waits for its guest.
type ReadyMethod interface {
	ReadyMethod() ReadyCheck
}
