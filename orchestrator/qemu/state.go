package qemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rekindle/rekindle/internal/durable"
	"github.com/rekindle/rekindle/orchestrator"
)

// mountState is a datastore this host reaches over NFS.
type mountState struct {
	Name    string    `json:"name"`
	Server  string    `json:"server"`
	Path    string    `json:"path"`
	Mounted time.Time `json:"mounted"`
}

// appState is a vApp: QEMU has none, so its spec is only recorded.
type appState struct {
	Spec    orchestrator.AppSpec `json:"spec"`
	Created time.Time            `json:"created"`
}

// vmState is one registered VM.
type vmState struct {
	Name       string    `json:"name"`
	Host       string    `json:"host"`
	Datastore  string    `json:"datastore"` // holds the .vmx
	VMXPath    string    `json:"vmx_path"`
	Pool       string    `json:"pool,omitempty"`
	Folder     string    `json:"folder,omitempty"`
	Registered time.Time `json:"registered"`

	NumCPU   int                    `json:"num_cpu,omitempty"`
	MemoryMB int                    `json:"memory_mb,omitempty"`
	Disks    []diskState            `json:"disks,omitempty"`
	NICs     []orchestrator.NICSpec `json:"nics,omitempty"`

	// Boots counts power-ons; PoweredOn and Ready belong to the latest.
	Boots      int       `json:"boots,omitempty"`
	PoweredOn  time.Time `json:"powered_on,omitzero"`
	Ready      time.Time `json:"ready,omitzero"`
	PoweredOff time.Time `json:"powered_off,omitzero"`
	PID        int       `json:"pid,omitempty"` // informational: liveness reads the pid file
}

// diskState is one disk: where the backup has it, and where it lives now.
type diskState struct {
	ID         string `json:"id"`   // QEMU drive id: disk0, disk1, ...
	Name       string `json:"name"` // disk base name, "web01_1"
	File       string `json:"file"` // the descriptor, "[ds] folder/web01_1.vmdk"
	Datastore  string `json:"datastore"`
	Extent     string `json:"extent"`        // the flat extent's path inside the datastore
	URL        string `json:"url,omitempty"` // nfs://server/path/extent, for people and qemu-img
	Controller string `json:"controller,omitempty"`
	Adapter    string `json:"adapter,omitempty"`
	SizeBytes  int64  `json:"size_bytes,omitempty"`
	// Local is the raw file the disk was relocated to; empty while the
	// disk lives on the datastore.
	Local string `json:"local,omitempty"`
}

// checkName refuses names that cannot be one path element.
func checkName(what, name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%s name %q cannot name a file", what, name)
	}
	return nil
}

// readJSON decodes path into v; a missing file returns an error that
// errors.Is os.ErrNotExist.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writeJSON replaces path atomically: a temp file, fsync, rename, fsync of
// the folder. A crash leaves the old file or the new one, never half.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := durable.WriteFile(durable.OS(), path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (d *Driver) mountPath(name string) string {
	return filepath.Join(d.cfg.WorkDir, "mounts", name+".json")
}

func (d *Driver) appPath(name string) string {
	return filepath.Join(d.cfg.WorkDir, "apps", name+".json")
}

func (d *Driver) vmDir(name string) string { return filepath.Join(d.cfg.WorkDir, "vms", name) }

func (d *Driver) vmFile(name, file string) string { return filepath.Join(d.vmDir(name), file) }

func (d *Driver) loadMount(name string) (*mountState, error) {
	var m mountState
	if err := readJSON(d.mountPath(name), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// mounts lists the recorded datastores.
func (d *Driver) mounts() ([]mountState, error) {
	ents, err := os.ReadDir(filepath.Join(d.cfg.WorkDir, "mounts"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []mountState
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		m, err := d.loadMount(name)
		if err != nil {
			return nil, err
		}
		out = append(out, *m)
	}
	return out, nil
}

// loadVM reads a VM's state; a VM that is not registered is ErrNotFound.
func (d *Driver) loadVM(name string) (*vmState, error) {
	if err := checkName("vm", name); err != nil {
		return nil, fmt.Errorf("vm %q: %w", name, orchestrator.ErrNotFound)
	}
	var v vmState
	if err := readJSON(d.vmFile(name, "vm.json"), &v); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("vm %s is not registered on qemu host %s: %w", name, hostName, orchestrator.ErrNotFound)
		}
		return nil, err
	}
	return &v, nil
}

func (d *Driver) saveVM(v *vmState) error { return writeJSON(d.vmFile(v.Name, "vm.json"), v) }

// updateVM applies fn to the VM's state and saves it, under the state lock.
func (d *Driver) updateVM(name string, fn func(v *vmState) error) (*vmState, error) {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	v, err := d.loadVM(name)
	if err != nil {
		return nil, err
	}
	if err := fn(v); err != nil {
		return nil, err
	}
	return v, d.saveVM(v)
}

// vmNames lists the registered VMs.
func (d *Driver) vmNames() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(d.cfg.WorkDir, "vms"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(d.vmFile(e.Name(), "vm.json")); err == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
