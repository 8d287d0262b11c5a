package vmfolder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// Folder is a VM folder ready to import.
type Folder struct {
	Dir         string // absolute
	VMXPath     string // absolute
	VMX         *VMX
	Identity    repo.VMIdentity
	Disks       []DiskRef  // sorted by bus, controller number, unit number
	NICs        []repo.NIC // sorted by ethernet index
	ConfigFiles []string   // absolute paths of small files to keep whole, .vmx first
}

// DiskRef is one virtual disk named in the .vmx.
type DiskRef struct {
	Controller string // vmx device key, e.g. "scsi0:1"
	Adapter    string // lsilogic, lsisas1068, pvscsi, buslogic, ide, sata or nvme
	Path       string // absolute path of the file the vmx names (descriptor .vmdk or raw image)
	Name       string // base name without ".vmdk", ".img" or ".raw", e.g. "web01_1"
}

var (
	diskKeyRe = regexp.MustCompile(`^(scsi|sata|ide|nvme)([0-9]{1,3}):([0-9]{1,3})\.filename$`)
	nicKeyRe  = regexp.MustCompile(`^ethernet([0-9]{1,3})\.`)
)

// Open parses the folder's single .vmx and resolves what it names. Every
// disk must be a file inside the folder: a vmx pointing at another datastore
// or another VM's folder cannot be imported as this VM.
func Open(dir string) (*Folder, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("vm folder %s: %w", dir, err)
	}
	vmxPath, err := findVMX(abs)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(vmxPath)
	if err != nil {
		return nil, fmt.Errorf("open vmx: %w", err)
	}
	vmx, err := ParseVMX(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", vmxPath, err)
	}
	folder := &Folder{Dir: abs, VMXPath: vmxPath, VMX: vmx}
	base := strings.TrimSuffix(filepath.Base(vmxPath), filepath.Ext(vmxPath))
	if folder.Identity, err = identity(vmx, base); err != nil {
		return nil, fmt.Errorf("%s: %w", vmxPath, err)
	}
	if folder.Disks, err = disks(vmx, abs); err != nil {
		return nil, fmt.Errorf("%s: %w", vmxPath, err)
	}
	folder.NICs = nics(vmx)
	if folder.ConfigFiles, err = configFiles(vmx, abs, vmxPath, base); err != nil {
		return nil, fmt.Errorf("%s: %w", vmxPath, err)
	}
	return folder, nil
}

func findVMX(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("vm folder: %w", err)
	}
	var found []string
	for _, e := range entries {
		if strings.EqualFold(filepath.Ext(e.Name()), ".vmx") && !e.IsDir() {
			found = append(found, e.Name())
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("vm folder %s: no .vmx file", dir)
	case 1:
		return filepath.Join(dir, found[0]), nil
	}
	return "", fmt.Errorf("vm folder %s: %d .vmx files (%s): expected exactly one", dir, len(found), strings.Join(found, ", "))
}

func identity(vmx *VMX, base string) (repo.VMIdentity, error) {
	id := repo.VMIdentity{Name: base}
	// The name is not validated here: the importer may replace it (--vm).
	if s, ok := vmx.Get("displayName"); ok && strings.TrimSpace(s) != "" {
		id.Name = s
	}
	id.UUID = vmwareUUID(vmx, "uuid.bios")
	id.InstanceUUID = vmwareUUID(vmx, "vc.uuid")
	id.GuestOS, _ = vmx.Get("guestOS")
	id.Firmware = "bios"
	if s, ok := vmx.Get("firmware"); ok && strings.TrimSpace(s) != "" {
		id.Firmware = strings.ToLower(strings.TrimSpace(s))
	}
	for _, n := range []struct {
		key string
		dst *int
	}{
		{"numvcpus", &id.NumCPU},
		{"memsize", &id.MemoryMB},
		{"virtualHW.version", &id.HWVersion},
	} {
		s, ok := vmx.Get(n.key)
		if !ok || strings.TrimSpace(s) == "" {
			continue
		}
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 0 {
			return id, fmt.Errorf("%s = %q: not a non-negative integer", n.key, clip(s))
		}
		*n.dst = v
	}
	return id, nil
}

// vmwareUUID returns the UUID under key in canonical form. VMware writes
// "56 4d 2b 1c 9e 0f 3a 44-8b 6e 0c 55 1e 2f 7a 90"; vSphere's API and
// everything else use "564d2b1c-9e0f-3a44-8b6e-0c551e2f7a90". A value that is
// not 16 hex bytes is kept as written.
func vmwareUUID(vmx *VMX, key string) string {
	s, _ := vmx.Get(key)
	s = strings.TrimSpace(s)
	h := strings.NewReplacer(" ", "", "-", "").Replace(s)
	if len(h) != 32 {
		return s
	}
	for i := 0; i < len(h); i++ {
		if _, ok := unhex(h[i]); !ok {
			return s
		}
	}
	h = strings.ToLower(h)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

type diskSlot struct {
	bus        string
	ctrl, unit int
	ref        DiskRef
}

func disks(vmx *VMX, dir string) ([]DiskRef, error) {
	var slots []diskSlot
	for k := range vmx.values {
		m := diskKeyRe.FindStringSubmatch(k)
		if m == nil {
			continue
		}
		bus := m[1]
		ctrl, _ := strconv.Atoi(m[2])
		unit, _ := strconv.Atoi(m[3])
		dev := fmt.Sprintf("%s%d:%d", bus, ctrl, unit)
		ctrlKey := fmt.Sprintf("%s%d", bus, ctrl)
		// A disk is skipped only when explicitly absent: backing up a file
		// the VM may not use costs less than losing one it does.
		if p, ok := vmx.Get(dev + ".present"); ok && isFalse(p) {
			continue
		}
		if p, ok := vmx.Get(ctrlKey + ".present"); ok && isFalse(p) {
			continue
		}
		devType, _ := vmx.Get(dev + ".deviceType")
		if !isDiskDeviceType(devType) {
			continue
		}
		fileKey := dev + ".fileName"
		name, _ := vmx.Get(fileKey)
		if strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("%s is empty", fileKey)
		}
		path, err := pathInFolder(dir, name)
		if err != nil {
			return nil, fmt.Errorf("%s = %q: %w", fileKey, name, err)
		}
		st, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%s = %q: disk file %s does not exist", fileKey, name, path)
		case err != nil:
			return nil, fmt.Errorf("%s = %q: %w", fileKey, name, err)
		case !st.Mode().IsRegular():
			return nil, fmt.Errorf("%s = %q: %s is not a regular file", fileKey, name, path)
		}
		adapter := bus
		if bus == "scsi" {
			adapter = "lsilogic" // VMware's default when virtualDev is absent
			if s, ok := vmx.Get(ctrlKey + ".virtualDev"); ok && strings.TrimSpace(s) != "" {
				adapter = strings.ToLower(strings.TrimSpace(s))
			}
		}
		diskName := diskBaseName(path)
		if err := repo.ValidName(diskName); err != nil {
			return nil, fmt.Errorf("%s = %q: disk %w", fileKey, name, err)
		}
		slots = append(slots, diskSlot{bus: bus, ctrl: ctrl, unit: unit, ref: DiskRef{
			Controller: dev,
			Adapter:    adapter,
			Path:       path,
			Name:       diskName,
		}})
	}
	sort.Slice(slots, func(i, j int) bool {
		a, b := slots[i], slots[j]
		if a.bus != b.bus {
			return a.bus < b.bus
		}
		if a.ctrl != b.ctrl {
			return a.ctrl < b.ctrl
		}
		return a.unit < b.unit
	})
	out := make([]DiskRef, 0, len(slots))
	byName := map[string]string{}
	byPath := map[string]string{}
	for _, s := range slots {
		if other, dup := byPath[s.ref.Path]; dup {
			return nil, fmt.Errorf("%s and %s name the same disk file %s", other, s.ref.Controller, s.ref.Path)
		}
		if other, dup := byName[strings.ToLower(s.ref.Name)]; dup {
			return nil, fmt.Errorf("disks of %s and %s would both be named %q", other, s.ref.Controller, s.ref.Name)
		}
		byPath[s.ref.Path] = s.ref.Controller
		byName[strings.ToLower(s.ref.Name)] = s.ref.Controller
		out = append(out, s.ref)
	}
	return out, nil
}

// isDiskDeviceType reports whether a vmx deviceType names a hard disk. CD-ROMs
// (an ISO or the host's drive) and passthrough devices carry no VM data.
func isDiskDeviceType(t string) bool {
	t = strings.ToLower(strings.TrimSpace(t))
	return !strings.Contains(t, "cdrom") && !strings.Contains(t, "passthru") && t != "floppy"
}

// diskBaseName is the disk's name in a restore point: its file name without
// the extension of a disk image.
func diskBaseName(path string) string {
	name := filepath.Base(path)
	ext := filepath.Ext(name)
	switch strings.ToLower(ext) {
	case ".vmdk", ".img", ".raw":
		return strings.TrimSuffix(name, ext)
	}
	return name
}

// pathInFolder resolves a file name read from a vmx or descriptor relative
// to the VM folder, refusing names that leave it. The caller says which key
// or line the name came from.
func pathInFolder(dir, name string) (string, error) {
	switch {
	case strings.TrimSpace(name) == "":
		return "", errors.New("empty file name")
	case filepath.IsAbs(name) || strings.HasPrefix(name, "/"):
		return "", errors.New("absolute path; only files inside the VM folder can be imported")
	}
	clean := filepath.Clean(name)
	if clean == "." {
		return "", errors.New("names the VM folder itself, not a file")
	}
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", errors.New("points outside the VM folder")
	}
	return filepath.Join(dir, clean), nil
}

func nics(vmx *VMX) []repo.NIC {
	seen := map[int]bool{}
	var idx []int
	for k := range vmx.values {
		m := nicKeyRe.FindStringSubmatch(k)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		if !seen[n] {
			seen[n] = true
			idx = append(idx, n)
		}
	}
	sort.Ints(idx)
	var out []repo.NIC
	for _, n := range idx {
		key := fmt.Sprintf("ethernet%d", n)
		get := func(field string) string {
			s, _ := vmx.Get(key + "." + field)
			return strings.TrimSpace(s)
		}
		// A NIC exists only when present says so; leftover keys of a
		// removed NIC are common.
		if p, ok := vmx.Get(key + ".present"); !ok || isFalse(p) {
			continue
		}
		nic := repo.NIC{
			Key:         key,
			Network:     get("networkName"),
			Type:        strings.ToLower(get("virtualDev")),
			AddressType: strings.ToLower(get("addressType")),
		}
		if nic.Network == "" {
			// NICs on a distributed switch name the port group by id only.
			nic.Network = get("dvs.portgroupId")
		}
		static, generated := get("address"), get("generatedAddress")
		switch {
		case nic.AddressType == "static" && static != "":
			nic.MAC = static
		case generated != "":
			nic.MAC = generated
		default:
			nic.MAC = static
		}
		nic.MAC = strings.ToLower(nic.MAC)
		out = append(out, nic)
	}
	return out
}

func configFiles(vmx *VMX, dir, vmxPath, base string) ([]string, error) {
	files := []string{vmxPath}
	seen := map[string]bool{vmxPath: true}
	for _, c := range []struct{ key, fallback string }{
		{"nvram", base + ".nvram"},
		{"", base + ".vmsd"},
		{"extendedConfigFile", base + ".vmxf"},
	} {
		name := c.fallback
		key := c.key
		if c.key != "" {
			if s, ok := vmx.Get(c.key); ok && strings.TrimSpace(s) != "" {
				name = s
			}
		} else {
			key = "file"
		}
		path, err := pathInFolder(dir, name)
		if err != nil {
			return nil, fmt.Errorf("%s = %q: %w", key, name, err)
		}
		st, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // VMware recreates a missing nvram; vmsd and vmxf are optional
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		if !st.Mode().IsRegular() || seen[path] {
			continue
		}
		seen[path] = true
		files = append(files, path)
	}
	return files, nil
}
