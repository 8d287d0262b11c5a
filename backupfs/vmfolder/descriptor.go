package vmfolder

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"regexp"
	"strconv"
	"strings"
)

const (
	sectorSize = 512
	// maxDiskSectors bounds any disk or extent size read from a file: 64 TiB,
	// above VMware's 62 TB limit.
	maxDiskSectors = 1 << 37
	// maxDescriptorSize bounds a text descriptor. VMware's are under 2 KiB;
	// a split disk of 62 TB in 2 GB extents stays under 2 MiB.
	maxDescriptorSize = 4 << 20
	// maxExtents bounds the extent lines of a descriptor (62 TB in 2 GB
	// extents is about 31,000).
	maxExtents = 1 << 16
	// noParentCID is the parentCID of a disk that is not a snapshot delta.
	noParentCID = "ffffffff"
)

// descriptor is a parsed VMDK text descriptor.
type descriptor struct {
	createType string
	parentCID  string // lower-case hex as written; noParentCID for a base disk
	parentHint string // parentFileNameHint of a delta disk
	extents    []extentLine
	ddb        map[string]string // keys without "ddb.", lower case
}

// extentLine is one line of a descriptor's extent description, e.g.
// `RW 10240 FLAT "web01-flat.vmdk" 0`.
type extentLine struct {
	access  string // RW, RDONLY or NOACCESS
	sectors int64
	kind    string // FLAT, SPARSE, ZERO, VMFS, VMFSSPARSE, SESPARSE, VMFSRDM, VMFSRAW
	file    string // empty for ZERO
	offset  int64  // in sectors, FLAT and VMFS only
}

// totalSectors is the disk size the extents add up to.
func (d *descriptor) totalSectors() int64 {
	var n int64
	for _, e := range d.extents {
		n += e.sectors // parseDescriptor keeps the sum bounded
	}
	return n
}

var descriptorStartRe = regexp.MustCompile(`(?m)^[ \t]*(# Disk DescriptorFile|createType[ \t]*=)`)

// descriptorText is the text of a descriptor: up to its first NUL, as QEMU
// and VMware read it. Descriptors are padded with NULs to a sector boundary,
// and qemu-img rewrites one in place with a NUL-terminated string that may be
// shorter than the old one, leaving the old tail after the NUL.
func descriptorText(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// looksLikeDescriptor reports whether b is a text VMDK descriptor rather
// than the first bytes of a raw image.
func looksLikeDescriptor(b []byte) bool {
	b = bytes.TrimRight(descriptorText(b), " \t\r\n")
	return len(b) > 0 && descriptorStartRe.Match(b)
}

// parseDescriptor parses a VMDK text descriptor. It checks the syntax and
// bounds of every extent line; what to do with the extent kinds is the
// caller's business.
func parseDescriptor(b []byte) (*descriptor, error) {
	if len(b) > maxDescriptorSize {
		return nil, fmt.Errorf("descriptor larger than %d bytes", maxDescriptorSize)
	}
	b = descriptorText(b)
	d := &descriptor{parentCID: noParentCID, ddb: map[string]string{}}
	var total int64
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if isExtentLine(line) {
			e, err := parseExtentLine(line)
			if err != nil {
				return nil, fmt.Errorf("descriptor line %d: %w", n+1, err)
			}
			if len(d.extents) == maxExtents {
				return nil, fmt.Errorf("descriptor line %d: more than %d extents", n+1, maxExtents)
			}
			total += e.sectors
			if total > maxDiskSectors {
				return nil, fmt.Errorf("descriptor line %d: extents add up to more than %d sectors", n+1, int64(maxDiskSectors))
			}
			d.extents = append(d.extents, e)
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("descriptor line %d: %q is neither key=value nor an extent", n+1, clip(line))
		}
		key := strings.ToLower(strings.TrimSpace(k))
		val := strings.TrimSpace(v)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		switch {
		case key == "createtype":
			d.createType = val
		case key == "parentcid":
			d.parentCID = strings.ToLower(val)
		case key == "parentfilenamehint":
			d.parentHint = val
		case strings.HasPrefix(key, "ddb."):
			d.ddb[strings.TrimPrefix(key, "ddb.")] = val
		}
	}
	if len(d.extents) == 0 {
		return nil, errors.New("descriptor names no extent")
	}
	return d, nil
}

func isExtentLine(line string) bool {
	for _, a := range []string{"RW", "RDONLY", "NOACCESS"} {
		if rest, ok := strings.CutPrefix(line, a); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			return true
		}
	}
	return false
}

func parseExtentLine(line string) (extentLine, error) {
	var e extentLine
	fields := strings.Fields(line)
	if len(fields) < 3 {
		return e, fmt.Errorf("extent %q: expected ACCESS SECTORS TYPE \"FILE\" [OFFSET]", clip(line))
	}
	e.access, e.kind = fields[0], strings.ToUpper(fields[2])
	n, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || n < 0 || n > maxDiskSectors {
		return e, fmt.Errorf("extent %q: size %q is not a sector count between 0 and %d", clip(line), clip(fields[1]), int64(maxDiskSectors))
	}
	e.sectors = n
	if e.kind == "ZERO" {
		if len(fields) != 3 {
			return e, fmt.Errorf("extent %q: a ZERO extent names no file", clip(line))
		}
		return e, nil
	}
	// The file name is quoted and may hold spaces.
	i := strings.IndexByte(line, '"')
	if i < 0 {
		return e, fmt.Errorf("extent %q: file name not quoted", clip(line))
	}
	j := strings.IndexByte(line[i+1:], '"')
	if j < 0 {
		return e, fmt.Errorf("extent %q: file name has no closing quote", clip(line))
	}
	e.file = line[i+1 : i+1+j]
	if e.file == "" {
		return e, fmt.Errorf("extent %q: empty file name", clip(line))
	}
	rest := strings.Fields(line[i+1+j+1:])
	if len(rest) > 0 && (e.kind == "FLAT" || e.kind == "VMFS") {
		off, err := strconv.ParseInt(rest[0], 10, 64)
		if err != nil || off < 0 || off > maxDiskSectors {
			return e, fmt.Errorf("extent %q: offset %q is not a sector count between 0 and %d", clip(line), clip(rest[0]), int64(maxDiskSectors))
		}
		e.offset = off
	}
	return e, nil
}

// FlatDescriptor returns a monolithicFlat VMDK descriptor for an extent file
// named extentName holding size bytes, for a disk attached to an adapter as
// named in a vmx (lsilogic, pvscsi, ide, ...). The output depends only on the
// inputs, byte for byte: the NFS server serves it and hypervisors cache what
// they read, so it must never change for the same disk.
//
// extentName should be a plain file name; quotes and control characters,
// which a descriptor cannot hold, are replaced by '_'.
func FlatDescriptor(extentName string, size int64, adapter string) []byte {
	if size < 0 {
		size = 0
	}
	sectors := (size + sectorSize - 1) / sectorSize
	ddbAdapter := descriptorAdapter(adapter)
	cyl, heads, secs := geometry(sectors, ddbAdapter)
	name := strings.Map(func(r rune) rune {
		if r == '"' || r < 0x20 || r == 0x7f {
			return '_'
		}
		return r
	}, extentName)
	cid := crc32.ChecksumIEEE([]byte(fmt.Sprintf("rekindle\x00%s\x00%d\x00%s", name, sectors, ddbAdapter)))
	if cid == 0xffffffff || cid == 0xfffffffe {
		cid = 0x7fffffff // those two mean "no CID" to VMware
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=%08x
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW %d FLAT "%s" 0

# The Disk Data Base
#DDB

ddb.adapterType = "%s"
ddb.geometry.cylinders = "%d"
ddb.geometry.heads = "%d"
ddb.geometry.sectors = "%d"
ddb.virtualHWVersion = "4"
`, cid, sectors, name, ddbAdapter, cyl, heads, secs)
	return b.Bytes()
}

// descriptorAdapter maps a vmx controller type to a descriptor's
// ddb.adapterType. VMware knows only ide, buslogic, lsilogic and legacyESX
// there, and writes lsilogic for the newer SCSI controllers (LSI SAS,
// paravirtual) and for NVMe; SATA disks are described as ide.
func descriptorAdapter(adapter string) string {
	switch strings.ToLower(strings.TrimSpace(adapter)) {
	case "ide", "sata":
		return "ide"
	case "buslogic":
		return "buslogic"
	}
	return "lsilogic"
}

// geometry is the CHS geometry VMware and qemu write in descriptors: 16
// heads for IDE (cylinders capped at 16383, as ATA does), 255 for SCSI, 63
// sectors per track.
func geometry(sectors int64, ddbAdapter string) (cylinders, heads, secs int64) {
	heads, secs = 255, 63
	if ddbAdapter == "ide" {
		heads = 16
	}
	cylinders = sectors / (heads * secs)
	if ddbAdapter == "ide" && cylinders > 16383 {
		cylinders = 16383
	}
	if cylinders < 1 {
		cylinders = 1
	}
	return cylinders, heads, secs
}
