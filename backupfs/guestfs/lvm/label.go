package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// On-disk layout of an LVM2 physical volume (all integers little-endian):
//
//	label (one of sectors 0-3):
//	  0  "LABELONE"    8  sector number of this label   16 crc of bytes 20..512
//	  20 offset of the PV header in this sector          24 "LVM2 001"
//	PV header (at that offset):
//	  0  uuid, 32 ASCII characters                       32 device size, bytes
//	  40 data areas: {offset, size} pairs of uint64 ending in {0, 0}
//	     metadata areas: the same, after the data areas
//	mda_header (512 bytes at each metadata area's offset):
//	  0  crc of bytes 4..512   4 magic " LVM2 x[5A%r0N*>"   20 version (1)
//	  24 start (the area's offset)   32 size (the area's size)
//	  40 raw_locn entries {offset, size uint64; crc, flags uint32} ending in
//	     zeros; the first names the current metadata text, at offset bytes
//	     from the area's start, wrapping round to just after the header when
//	     it passes the area's end (a circular buffer).
const (
	sectorSize    = 512
	labelScan     = 4 // sectors that may hold the label
	mdaHeaderSize = 512
	crcInitial    = 0xf597a6cf
	rawLocnIgnore = 1
	maxAreas      = 8 // of each kind in one PV header (LVM writes at most 2)
)

var (
	labelID  = []byte("LABELONE")
	labelTyp = []byte("LVM2 001")
	mdaMagic = []byte(" LVM2 x[5A%r0N*>")
)

// ErrNoLabel means none of the first four sectors holds an LVM2 label.
var ErrNoLabel = errors.New("no LVM2 label")

// ErrDamaged means a label, header or metadata area fails its checks.
var ErrDamaged = errors.New("lvm: damaged")

// crc is LVM's checksum: CRC-32 (the IEEE polynomial, reflected) from
// 0xf597a6cf, without the final inversion.
func crc(b []byte) uint32 { return crcUpdate(crcInitial, b) }

func crcUpdate(c uint32, b []byte) uint32 { return ^crc32.Update(^c, crc32.IEEETable, b) }

// Area is a byte range of a physical volume.
type Area struct {
	Offset int64
	Size   int64 // 0 for a data area: to the end of the device
}

// Label is what a physical volume's label and PV header say.
type Label struct {
	Sector     int    // the sector holding the label
	UUID       string // 32 characters, no dashes
	DeviceSize int64
	Data       []Area
	Metadata   []Area
}

// PV is a physical volume as read from its device: its label and the
// newest metadata text its metadata areas hold (nil when it has none, as
// with pvcreate --metadatacopies 0).
type PV struct {
	Label
	Text   []byte
	Errors []string // metadata areas that could not be read
}

// ReadLabel reads the label and PV header of a device of size bytes.
func ReadLabel(r io.ReaderAt, size int64) (*Label, error) {
	b := make([]byte, labelScan*sectorSize)
	n, err := r.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("lvm label: %w", err)
	}
	b = b[:n]
	for s := 0; s < labelScan && (s+1)*sectorSize <= len(b); s++ {
		sec := b[s*sectorSize : (s+1)*sectorSize]
		if !bytes.Equal(sec[:8], labelID) || !bytes.Equal(sec[24:32], labelTyp) {
			continue
		}
		le := binary.LittleEndian
		if got := le.Uint64(sec[8:]); got != uint64(s) {
			return nil, fmt.Errorf("%w: label in sector %d says sector %d", ErrDamaged, s, got)
		}
		if want, got := le.Uint32(sec[16:]), crc(sec[20:]); want != got {
			return nil, fmt.Errorf("%w: label checksum %#x, computed %#x", ErrDamaged, want, got)
		}
		off := le.Uint32(sec[20:])
		if off < 32 || off > sectorSize-40-16 {
			return nil, fmt.Errorf("%w: PV header at offset %d of the label sector", ErrDamaged, off)
		}
		return parseHeader(sec[off:], s, size)
	}
	return nil, ErrNoLabel
}

func parseHeader(h []byte, sector int, size int64) (*Label, error) {
	le := binary.LittleEndian
	l := &Label{Sector: sector, UUID: string(h[:32]), DeviceSize: int64(le.Uint64(h[32:]))}
	for _, c := range l.UUID {
		if c < '!' || c > '~' {
			return nil, fmt.Errorf("%w: PV uuid %q is not printable", ErrDamaged, l.UUID)
		}
	}
	pos := 40
	for list := 0; list < 2; list++ {
		for i := 0; ; i++ {
			if pos+16 > len(h) {
				return nil, fmt.Errorf("%w: PV header's area lists pass the label sector's end", ErrDamaged)
			}
			off, sz := le.Uint64(h[pos:]), le.Uint64(h[pos+8:])
			pos += 16
			if off == 0 {
				break
			}
			if i >= maxAreas {
				return nil, fmt.Errorf("%w: more than %d areas in the PV header", ErrDamaged, maxAreas)
			}
			if off > uint64(size) || sz > uint64(size)-off {
				return nil, fmt.Errorf("%w: area %d+%d passes the device's end (%d bytes)", ErrDamaged, off, sz, size)
			}
			a := Area{Offset: int64(off), Size: int64(sz)}
			if list == 0 {
				l.Data = append(l.Data, a)
			} else {
				l.Metadata = append(l.Metadata, a)
			}
		}
	}
	return l, nil
}

// Read reads a physical volume: its label and the newest metadata text of
// its metadata areas. A metadata area that fails its checks is named in
// PV.Errors; the PV is still returned when its label is sound.
func Read(r io.ReaderAt, size int64) (*PV, error) {
	l, err := ReadLabel(r, size)
	if err != nil {
		return nil, err
	}
	pv := &PV{Label: *l}
	for _, a := range l.Metadata {
		text, err := readArea(r, a)
		if err != nil {
			pv.Errors = append(pv.Errors, fmt.Sprintf("metadata area at %d: %v", a.Offset, err))
			continue
		}
		if text != nil && pv.Text == nil {
			pv.Text = text
		}
	}
	return pv, nil
}

// readArea returns the current metadata text of one metadata area (nil if
// the area holds none or is marked ignored).
func readArea(r io.ReaderAt, a Area) ([]byte, error) {
	if a.Size < mdaHeaderSize*2 {
		return nil, fmt.Errorf("%w: metadata area of %d bytes", ErrDamaged, a.Size)
	}
	h := make([]byte, mdaHeaderSize)
	if _, err := r.ReadAt(h, a.Offset); err != nil {
		return nil, fmt.Errorf("mda_header: %w", err)
	}
	le := binary.LittleEndian
	if !bytes.Equal(h[4:20], mdaMagic) {
		return nil, fmt.Errorf("%w: mda_header magic %q", ErrDamaged, h[4:20])
	}
	if want, got := le.Uint32(h[0:]), crc(h[4:]); want != got {
		return nil, fmt.Errorf("%w: mda_header checksum %#x, computed %#x", ErrDamaged, want, got)
	}
	if v := le.Uint32(h[20:]); v != 1 {
		return nil, fmt.Errorf("%w: mda_header version %d", ErrDamaged, v)
	}
	if start, sz := le.Uint64(h[24:]), le.Uint64(h[32:]); start != uint64(a.Offset) || sz != uint64(a.Size) {
		return nil, fmt.Errorf("%w: mda_header says %d+%d, the PV header %d+%d", ErrDamaged, start, sz, a.Offset, a.Size)
	}
	off, sz := le.Uint64(h[40:]), le.Uint64(h[48:])
	sum, flags := le.Uint32(h[56:]), le.Uint32(h[60:])
	if off == 0 || sz == 0 || flags&rawLocnIgnore != 0 {
		return nil, nil
	}
	area := uint64(a.Size)
	if sz > MaxText || sz > area-mdaHeaderSize {
		return nil, fmt.Errorf("%w: metadata text of %d bytes (bound %d, area %d)", ErrDamaged, sz, MaxText, area)
	}
	if off < mdaHeaderSize || off >= area {
		return nil, fmt.Errorf("%w: metadata text at %d of a %d-byte area", ErrDamaged, off, area)
	}
	text := make([]byte, sz)
	first := min(sz, area-off)
	if _, err := r.ReadAt(text[:first], a.Offset+int64(off)); err != nil {
		return nil, fmt.Errorf("metadata text: %w", err)
	}
	if first < sz { // wrapped round the circular buffer
		if _, err := r.ReadAt(text[first:], a.Offset+mdaHeaderSize); err != nil {
			return nil, fmt.Errorf("metadata text: %w", err)
		}
	}
	if got := crc(text); got != sum {
		return nil, fmt.Errorf("%w: metadata text checksum %#x, computed %#x", ErrDamaged, sum, got)
	}
	return bytes.TrimRight(text, "\x00"), nil
}

// normUUID drops the dashes of a uuid as metadata text writes it.
func normUUID(s string) string { return strings.ReplaceAll(s, "-", "") }
