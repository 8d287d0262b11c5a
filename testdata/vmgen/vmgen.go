// Package vmgen writes synthetic VMware virtual machine folders for tests: a
// realistic .vmx, an .nvram and disks of any size, in the formats rekindle meets
// (monolithicFlat, monolithicSparse, streamOptimized VMDK, raw), filled with
// deterministic content from a seed. Zero regions are holes: a 256 GiB disk costs
// nothing on the host. Mutate changes a deterministic share of 64 KiB blocks, the
// change between two backups of the same VM.
//
// Only the standard library is used; the sparse and stream formats need qemu-img.
package vmgen

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Fill patterns.
const (
	FillZero   = "zero"   // all holes
	FillRandom = "random" // every byte random
	FillMixed  = "mixed"  // random, zero (hole) and repeated regions
)

// Disk formats.
const (
	FormatFlat   = "flat"   // <disk>.vmdk descriptor + <disk>-flat.vmdk extent (monolithicFlat)
	FormatSparse = "sparse" // <disk>.vmdk monolithicSparse (via qemu-img)
	FormatStream = "stream" // <disk>.vmdk streamOptimized (via qemu-img)
	FormatRaw    = "raw"    // <disk>.img, a raw sparse file
)

// BlockSize is the granularity of Mutate and of the mixed layout.
const BlockSize = 64 << 10

// RepeatSize is the period of repeated regions in FillMixed: content at byte offset
// o of a repeated region is pattern[o % RepeatSize], so every aligned chunk of a
// size that is a multiple of RepeatSize inside a repeated region is the same.
const RepeatSize = 1 << 20

// DefaultMixedData bounds the bytes FillMixed actually writes (see DiskSpec.MaxData).
const DefaultMixedData = 256 << 20

// Spec describes a VM folder.
type Spec struct {
	Name      string // VM name: folder, .vmx and .nvram names, displayName
	Seed      int64  // all content derives from it
	GuestOS   string // default "debian11-64"
	NumCPUs   int    // default 2
	MemoryMB  int    // default 2048
	HWVersion int    // virtualHW.version, default 19
	Firmware  string // "bios" (default) or "efi"
	Disks     []DiskSpec
	NICs      []NICSpec
	// WithLog also writes a small vmware.log (govmomi's simulator needs one beside
	// the .vmx to register a VM).
	WithLog bool
}

// DiskSpec describes one disk; disks attach to scsi0 in order (units 0..6, 8..15).
type DiskSpec struct {
	Name   string // file base name; default "<vm>" for the first disk, "<vm>_<i>" after
	Size   int64  // bytes, a multiple of 512; with Source, 0 means the source's size
	Fill   string // FillZero (default), FillRandom, FillMixed
	Format string // FormatFlat (default), FormatSparse, FormatStream, FormatRaw
	// Source, when set, is a raw image copied into the disk (holes kept) instead of Fill.
	Source string
	// MaxData bounds the data bytes of FillMixed, so huge mixed disks stay cheap:
	// 0 means DefaultMixedData, negative means no bound. Below the bound, about
	// 60% of a mixed disk is data.
	MaxData int64
}

// NICSpec describes one vmxnet3 NIC.
type NICSpec struct {
	Network string // port group name; default "VM Network"
	MAC     string // static address; empty means a generated 00:0c:29 address
}

// DiskFile returns the file the .vmx names for disk d of a VM (descriptor or image).
func DiskFile(d DiskSpec) string {
	if d.Format == FormatRaw {
		return d.Name + ".img"
	}
	return d.Name + ".vmdk"
}

// Normalize fills in the defaults Generate uses and validates the spec.
func (s Spec) Normalize() (Spec, error) {
	if s.Name == "" || strings.ContainsAny(s.Name, "/\\\x00") {
		return s, fmt.Errorf("vmgen: bad VM name %q", s.Name)
	}
	if s.GuestOS == "" {
		s.GuestOS = "debian11-64"
	}
	if s.NumCPUs == 0 {
		s.NumCPUs = 2
	}
	if s.MemoryMB == 0 {
		s.MemoryMB = 2048
	}
	if s.HWVersion == 0 {
		s.HWVersion = 19
	}
	if s.Firmware == "" {
		s.Firmware = "bios"
	}
	if len(s.Disks) > 15 {
		return s, errors.New("vmgen: at most 15 disks")
	}
	disks := make([]DiskSpec, len(s.Disks))
	names := map[string]bool{}
	for i, d := range s.Disks {
		if d.Name == "" {
			d.Name = s.Name
			if i > 0 {
				d.Name = fmt.Sprintf("%s_%d", s.Name, i)
			}
		}
		if d.Fill == "" {
			d.Fill = FillZero
		}
		if d.Format == "" {
			d.Format = FormatFlat
		}
		switch d.Fill {
		case FillZero, FillRandom, FillMixed:
		default:
			return s, fmt.Errorf("vmgen: disk %s: unknown fill %q", d.Name, d.Fill)
		}
		switch d.Format {
		case FormatFlat, FormatSparse, FormatStream, FormatRaw:
		default:
			return s, fmt.Errorf("vmgen: disk %s: unknown format %q", d.Name, d.Format)
		}
		if d.Source != "" && d.Size == 0 {
			fi, err := os.Stat(d.Source)
			if err != nil {
				return s, fmt.Errorf("vmgen: disk %s: %w", d.Name, err)
			}
			d.Size = (fi.Size() + 511) &^ 511
		}
		if d.Size <= 0 || d.Size%512 != 0 {
			return s, fmt.Errorf("vmgen: disk %s: size %d is not a positive multiple of 512", d.Name, d.Size)
		}
		if names[d.Name] {
			return s, fmt.Errorf("vmgen: two disks named %q", d.Name)
		}
		names[d.Name] = true
		disks[i] = d
	}
	s.Disks = disks
	nics := make([]NICSpec, len(s.NICs))
	for i, n := range s.NICs {
		if n.Network == "" {
			n.Network = "VM Network"
		}
		nics[i] = n
	}
	s.NICs = nics
	return s, nil
}

// Generate writes the VM folder dir/<spec.Name>/ and returns its path. The folder
// must not exist yet. The same spec always gives the same bytes (flat and raw disks
// exactly; sparse and stream VMDKs too, with the qemu-img of the same version).
func Generate(dir string, spec Spec) (string, error) {
	spec, err := spec.Normalize()
	if err != nil {
		return "", err
	}
	folder := filepath.Join(dir, spec.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.Mkdir(folder, 0o755); err != nil {
		return "", fmt.Errorf("vmgen: %w", err)
	}
	for i, d := range spec.Disks {
		if err := writeDisk(folder, spec, i, d); err != nil {
			return "", fmt.Errorf("vmgen: disk %s: %w", d.Name, err)
		}
	}
	if err := writeFileAtomic(filepath.Join(folder, spec.Name+".vmx"), []byte(VMX(spec))); err != nil {
		return "", err
	}
	nv := make([]byte, 8684) // the size ESXi's BIOS nvram files have
	newRand(spec.Seed, "nvram").Read(nv)
	copy(nv, "NVRAM rekindle-vmgen\x00")
	if err := writeFileAtomic(filepath.Join(folder, spec.Name+".nvram"), nv); err != nil {
		return "", err
	}
	if spec.WithLog {
		log := fmt.Sprintf("2024-01-01T00:00:00.000Z In(05) vmx - Log for VMware ESX pid=1 version=8.0.2 build=build-22380479 option=Release\n"+
			"2024-01-01T00:00:00.000Z In(05) vmx - DICT displayName = \"%s\"\n", spec.Name)
		if err := writeFileAtomic(filepath.Join(folder, "vmware.log"), []byte(log)); err != nil {
			return "", err
		}
	}
	return folder, nil
}

// ---- deterministic randomness ----

// newRand returns a ChaCha8 stream for one purpose of one seed, so that e.g. adding
// a disk does not change the others.
func newRand(seed int64, purpose string) *rand.ChaCha8 {
	return rand.NewChaCha8(sha256.Sum256([]byte(fmt.Sprintf("rekindle-vmgen/%d/%s", seed, purpose))))
}

func hexBytes(r *rand.ChaCha8, n int) []byte {
	b := make([]byte, n)
	r.Read(b)
	return b
}

// uuidVMX formats 16 bytes the way .vmx files do: "56 4d 12 ... 9a-bc de ...".
func uuidVMX(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		switch {
		case i == 8:
			sb.WriteByte('-')
		case i > 0:
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%02x", c)
	}
	return sb.String()
}

// VMX returns the .vmx text for a normalized spec.
func VMX(spec Spec) string {
	r := newRand(spec.Seed, "vmx")
	bios := hexBytes(r, 16)
	bios[0], bios[1] = 0x56, 0x4d // VMware's prefix for BIOS UUIDs
	vc := hexBytes(r, 16)
	vc[0] = 0x52 // vCenter instance UUIDs start with 52
	var b strings.Builder
	kv := func(k, v string) { fmt.Fprintf(&b, "%s = %q\n", k, v) }
	kv(".encoding", "UTF-8")
	kv("config.version", "8")
	kv("virtualHW.version", strconv.Itoa(spec.HWVersion))
	kv("displayName", spec.Name)
	kv("guestOS", spec.GuestOS)
	kv("numvcpus", strconv.Itoa(spec.NumCPUs))
	kv("memSize", strconv.Itoa(spec.MemoryMB))
	kv("firmware", spec.Firmware)
	kv("nvram", spec.Name+".nvram")
	kv("uuid.bios", uuidVMX(bios))
	kv("uuid.location", uuidVMX(bios))
	kv("vc.uuid", uuidVMX(vc))
	kv("pciBridge0.present", "TRUE")
	kv("svga.present", "TRUE")
	kv("vmci0.present", "TRUE")
	kv("tools.syncTime", "FALSE")
	kv("powerType.powerOff", "soft")
	kv("powerType.reset", "soft")
	if len(spec.Disks) > 0 {
		kv("scsi0.present", "TRUE")
		kv("scsi0.virtualDev", "pvscsi")
		kv("scsi0.pciSlotNumber", "160")
	}
	for i, d := range spec.Disks {
		unit := i
		if unit >= 7 {
			unit++ // unit 7 is the controller itself
		}
		p := fmt.Sprintf("scsi0:%d", unit)
		kv(p+".present", "TRUE")
		kv(p+".deviceType", "scsi-hardDisk")
		kv(p+".fileName", DiskFile(d))
		kv(p+".redo", "")
	}
	for i, n := range spec.NICs {
		p := fmt.Sprintf("ethernet%d", i)
		kv(p+".present", "TRUE")
		kv(p+".virtualDev", "vmxnet3")
		kv(p+".networkName", n.Network)
		kv(p+".connectionType", "bridged")
		if n.MAC != "" {
			kv(p+".addressType", "static")
			kv(p+".address", n.MAC)
		} else {
			m := hexBytes(r, 3)
			kv(p+".addressType", "generated")
			kv(p+".generatedAddress", fmt.Sprintf("00:0c:29:%02x:%02x:%02x", m[0], m[1], m[2]))
			kv(p+".generatedAddressOffset", strconv.Itoa(i*10))
		}
		kv(p+".pciSlotNumber", strconv.Itoa(192+32*i))
	}
	return b.String()
}

// ---- disk content ----

// Extent is a region of a disk with one kind of content.
type Extent struct {
	Off, Len int64
	Kind     string // "random", "zero", "repeat"
}

// Layout returns the content regions of a disk of the given fill, size and seed
// (FillZero: one zero extent; FillRandom: one random extent). Zero extents are holes.
func Layout(fill string, size, maxData int64, seed int64, disk string) []Extent {
	switch fill {
	case FillRandom:
		return []Extent{{0, size, "random"}}
	case FillZero:
		return []Extent{{0, size, "zero"}}
	}
	if maxData == 0 {
		maxData = DefaultMixedData
	}
	density := 0.6
	if maxData > 0 && float64(maxData) < density*float64(size) {
		density = float64(maxData) / float64(size)
	}
	r := rand.New(newRand(seed, "layout/"+disk))
	const meanData = 32.5 * BlockSize // data runs of 1..64 blocks
	meanGap := meanData * (1 - density) / density
	var ext []Extent
	add := func(off, n int64, kind string) {
		if n <= 0 {
			return
		}
		if k := len(ext); k > 0 && ext[k-1].Kind == kind && ext[k-1].Off+ext[k-1].Len == off {
			ext[k-1].Len += n
			return
		}
		ext = append(ext, Extent{off, n, kind})
	}
	var off int64
	for off < size {
		// a data run, mostly random, sometimes repeated
		n := int64(1+r.IntN(64)) * BlockSize
		kind := "random"
		if r.IntN(3) == 0 {
			kind = "repeat"
		}
		n = min(n, size-off)
		add(off, n, kind)
		off += n
		// a gap (hole) of at least one block
		g := int64(1)
		if meanGap > BlockSize {
			g = 1 + int64(r.Float64()*2*(meanGap/BlockSize-1)+0.5)
		}
		g = min(g*BlockSize, size-off)
		add(off, g, "zero")
		off += g
	}
	return ext
}

// writeContent writes the disk content into f (already sized), leaving zero
// extents as holes.
func writeContent(f *os.File, spec Spec, idx int, d DiskSpec) error {
	if d.Source != "" {
		return copySparse(f, d.Source)
	}
	ext := Layout(d.Fill, d.Size, d.MaxData, spec.Seed, d.Name)
	data := newRand(spec.Seed, "data/"+d.Name)
	pattern := make([]byte, RepeatSize)
	newRand(spec.Seed, "repeat/"+d.Name).Read(pattern)
	buf := make([]byte, 1<<20)
	for _, e := range ext {
		switch e.Kind {
		case "zero":
			continue
		case "random":
			for o := e.Off; o < e.Off+e.Len; {
				n := min(int64(len(buf)), e.Off+e.Len-o)
				data.Read(buf[:n])
				if _, err := f.WriteAt(buf[:n], o); err != nil {
					return err
				}
				o += n
			}
		case "repeat":
			for o := e.Off; o < e.Off+e.Len; {
				p := o % RepeatSize
				n := min(RepeatSize-p, e.Off+e.Len-o)
				if _, err := f.WriteAt(pattern[p:p+n], o); err != nil {
					return err
				}
				o += n
			}
		}
	}
	return nil
}

func writeDisk(folder string, spec Spec, idx int, d DiskSpec) error {
	rawPath := filepath.Join(folder, d.Name+"-flat.vmdk")
	switch d.Format {
	case FormatRaw:
		rawPath = filepath.Join(folder, d.Name+".img")
	case FormatSparse, FormatStream:
		rawPath = filepath.Join(folder, "."+d.Name+".raw.tmp")
	}
	f, err := os.OpenFile(rawPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(d.Size); err != nil {
		f.Close()
		return err
	}
	if err := writeContent(f, spec, idx, d); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	cid := binary.BigEndian.Uint32(hexBytes(newRand(spec.Seed, "cid/"+d.Name), 4))
	switch d.Format {
	case FormatFlat:
		return writeFileAtomic(filepath.Join(folder, d.Name+".vmdk"), []byte(FlatDescriptor(d.Name, d.Size, cid, spec.HWVersion)))
	case FormatSparse, FormatStream:
		defer os.Remove(rawPath)
		return qemuToVMDK(rawPath, filepath.Join(folder, d.Name+".vmdk"), d.Format, cid)
	}
	return nil
}

// FlatDescriptor returns a monolithicFlat descriptor for <name>-flat.vmdk.
func FlatDescriptor(name string, size int64, cid uint32, hw int) string {
	sectors := size / 512
	heads, secs := int64(255), int64(63)
	if size < 1<<30 {
		heads, secs = 64, 32
	}
	cyl := min(max(sectors/(heads*secs), 1), 65535)
	if hw == 0 {
		hw = 19
	}
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%08x", name, cid)))
	u := append([]byte{0x60, 0x00, 0xc2, 0x90 | h[0]&0xf}, h[1:13]...)
	return fmt.Sprintf(`# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=%08x
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW %d FLAT "%s-flat.vmdk" 0

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "%d"
ddb.geometry.heads = "%d"
ddb.geometry.sectors = "%d"
ddb.longContentID = "%x"
ddb.thinProvisioned = "1"
ddb.uuid = "%s"
ddb.virtualHWVersion = "%d"
`, cid, sectors, name, cyl, heads, secs, h[16:32], uuidVMX(u), hw)
}

func qemuImg() (string, error) {
	p, err := exec.LookPath("qemu-img")
	if err != nil {
		return "", errors.New("qemu-img is needed for sparse and stream VMDKs (scripts/install-deps installs qemu-utils)")
	}
	return p, nil
}

// qemuToVMDK converts a raw file to a VMDK of the given format and sets its CID
// (qemu-img picks a random one) so the output is deterministic.
func qemuToVMDK(raw, vmdk, format string, cid uint32) error {
	qi, err := qemuImg()
	if err != nil {
		return err
	}
	sub := "monolithicSparse"
	if format == FormatStream {
		sub = "streamOptimized"
	}
	tmp := vmdk + ".tmp"
	os.Remove(tmp)
	out, err := exec.Command(qi, "convert", "-q", "-f", "raw", "-O", "vmdk",
		"-o", "subformat="+sub+",adapter_type=lsilogic", raw, tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("qemu-img convert: %v: %s", err, out)
	}
	if err := setEmbeddedCID(tmp, cid); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, vmdk)
}

var cidRE = regexp.MustCompile(`(?m)^CID=[0-9a-fA-F]+$`)

// setEmbeddedCID rewrites CID= in the descriptor embedded in a hosted sparse VMDK.
func setEmbeddedCID(path string, cid uint32) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, 512)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return err
	}
	if string(hdr[:4]) != "KDMV" {
		return fmt.Errorf("%s: not a sparse VMDK", path)
	}
	off := int64(binary.LittleEndian.Uint64(hdr[28:])) * 512
	size := int64(binary.LittleEndian.Uint64(hdr[36:])) * 512
	if off == 0 || size == 0 || size > 1<<20 {
		return fmt.Errorf("%s: no embedded descriptor", path)
	}
	desc := make([]byte, size)
	if _, err := f.ReadAt(desc, off); err != nil {
		return err
	}
	end := bytes.IndexByte(desc, 0)
	if end < 0 {
		end = len(desc)
	}
	text := desc[:end]
	nt := cidRE.ReplaceAll(text, []byte(fmt.Sprintf("CID=%08x", cid)))
	if len(nt) > len(desc) {
		return fmt.Errorf("%s: descriptor grows too much", path)
	}
	nd := make([]byte, len(desc))
	copy(nd, nt)
	_, err = f.WriteAt(nd, off)
	return err
}

// copySparse copies the raw file src into f, skipping all-zero 64 KiB blocks.
func copySparse(f *os.File, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	buf := make([]byte, BlockSize)
	var off int64
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 && !isZero(buf[:n]) {
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return err
			}
		}
		off += int64(n)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ---- sizes ----

// ParseSize parses "512", "64K", "1.5M", "256G", "2T" (binary units; "KiB", "MB"
// and "s" for 512-byte sectors are accepted too). The result must be a multiple of 512.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := float64(1)
	u := strings.ToUpper(t)
	for _, suf := range []struct {
		s string
		m float64
	}{{"TIB", 1 << 40}, {"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10},
		{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
		{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"S", 512}, {"B", 1}} {
		if strings.HasSuffix(u, suf.s) {
			mult = suf.m
			t = t[:len(t)-len(suf.s)]
			break
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("vmgen: bad size %q", s)
	}
	n := v * mult
	if n != math.Trunc(n) || n > math.MaxInt64/2 {
		return 0, fmt.Errorf("vmgen: bad size %q", s)
	}
	if int64(n)%512 != 0 {
		return 0, fmt.Errorf("vmgen: size %q is not a multiple of 512", s)
	}
	return int64(n), nil
}

// ---- reading a folder back ----

// VMXDisks returns the disk file names a .vmx references (scsiX:Y / sataX:Y /
// ideX:Y / nvmeX:Y .fileName), in the order of their device keys.
func VMXDisks(vmx string) ([]string, error) {
	b, err := os.ReadFile(vmx)
	if err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`(?m)^\s*((?:scsi|sata|ide|nvme)\d+:\d+)\.fileName\s*=\s*"([^"]*)"`)
	type dk struct{ key, file string }
	var ds []dk
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		if strings.HasSuffix(m[2], ".vmdk") || strings.HasSuffix(m[2], ".img") {
			ds = append(ds, dk{m[1], m[2]})
		}
	}
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].key < ds[j].key })
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.file
	}
	return out, nil
}

// FindVMX returns the single .vmx file of a folder.
func FindVMX(folder string) (string, error) {
	m, err := filepath.Glob(filepath.Join(folder, "*.vmx"))
	if err != nil {
		return "", err
	}
	if len(m) != 1 {
		return "", fmt.Errorf("vmgen: %s holds %d .vmx files, want 1", folder, len(m))
	}
	return m[0], nil
}

// diskKind tells how a disk file named in the .vmx stores its content.
type diskKind struct {
	format string // FormatFlat, FormatRaw, FormatSparse, FormatStream
	data   string // the file holding the bytes (flat extent / raw image / the vmdk)
	desc   string // the descriptor for flat disks
}

var extentRE = regexp.MustCompile(`(?m)^RW\s+(\d+)\s+FLAT\s+"([^"]+)"\s+0\s*$`)

func inspectDisk(folder, file string) (diskKind, error) {
	p := filepath.Join(folder, file)
	if strings.HasSuffix(file, ".img") {
		return diskKind{format: FormatRaw, data: p}, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return diskKind{}, err
	}
	defer f.Close()
	hdr := make([]byte, 2048)
	n, _ := io.ReadFull(f, hdr)
	hdr = hdr[:n]
	if bytes.HasPrefix(hdr, []byte("KDMV")) {
		if bytes.Contains(hdr, []byte(`createType="streamOptimized"`)) {
			return diskKind{format: FormatStream, data: p}, nil
		}
		// the descriptor sits after the header; look further for streamOptimized
		rest := make([]byte, 64<<10)
		m, _ := f.ReadAt(rest, 0)
		if bytes.Contains(rest[:m], []byte(`createType="streamOptimized"`)) {
			return diskKind{format: FormatStream, data: p}, nil
		}
		return diskKind{format: FormatSparse, data: p}, nil
	}
	m := extentRE.FindSubmatch(hdr)
	if m == nil {
		return diskKind{}, fmt.Errorf("vmgen: %s: neither a flat descriptor nor a sparse VMDK", p)
	}
	return diskKind{format: FormatFlat, data: filepath.Join(folder, string(m[2])), desc: p}, nil
}
