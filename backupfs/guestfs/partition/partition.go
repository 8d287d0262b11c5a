// Package partition reads a disk's partition table: MBR (primary partitions
// and the chain of extended boot records that holds logical ones) and GPT
// (behind its protective MBR).
//
// A Partition is a byte range of the disk with a name as Linux numbers it:
// p1..p4 for MBR primary partitions, p5 onwards for logical ones in chain
// order, pN for the N-th GPT entry. Extended partitions themselves hold no
// filesystem and are not listed. The package decides nothing about what a
// partition holds; it reports the table's own type codes, and marks the ones
// that are known not to hold a plain filesystem (Windows dynamic disks).
package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// SectorSize is the logical sector size assumed for MBR and GPT.
const SectorSize = 512

// Table kinds.
const (
	KindNone = "none" // no partition table
	KindMBR  = "mbr"
	KindGPT  = "gpt"
)

// Partition is one partition.
type Partition struct {
	Name  string `json:"name"`            // p1, p2, ... p5 for the first logical
	Index int    `json:"index"`           // the number in Name
	Start int64  `json:"start"`           // byte offset on the disk
	Size  int64  `json:"size"`            // bytes
	Type  string `json:"type"`            // MBR type byte as "0x83", or the GPT type GUID
	Label string `json:"label,omitempty"` // GPT partition name
	// Dynamic marks a Windows dynamic disk (LDM) partition: its volumes are
	// described elsewhere and are not read.
	Dynamic bool `json:"dynamic,omitempty"`
	// Truncated marks a partition the table places (partly) past the disk's
	// end: a truncated image or an incomplete copy. It is listed, so its
	// loss is seen, but its bytes are not all there.
	Truncated bool `json:"truncated,omitempty"`
}

// Table is a disk's partition table.
type Table struct {
	Kind       string      `json:"kind"`
	Partitions []Partition `json:"partitions"`
	// Warnings name entries that were skipped or are truncated (beyond the
	// disk, a broken chain).
	Warnings []string `json:"warnings,omitempty"`
}

// ErrNoTable means sector 0 holds no partition table.
var ErrNoTable = errors.New("no partition table")

// maxGPTSectors bounds a GPT entry's sectors (4 EiB: byte offsets and
// sizes fit an int64); an entry past it is invalid, not a truncated disk.
const maxGPTSectors = 1 << 53

// maxLogical bounds the extended boot record chain (a loop in a damaged
// chain must end).
const maxLogical = 256

// GPT partition type GUIDs of Windows dynamic disks (LDM).
var ldmTypes = map[string]bool{
	"5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": true, // LDM metadata
	"AF9B60A0-1431-4F62-BC68-3311714A69AD": true, // LDM data
}

// Read reads the partition table of a disk of size bytes. A disk without
// one returns ErrNoTable (it may hold a filesystem directly).
func Read(r io.ReaderAt, size int64) (*Table, error) {
	mbr := make([]byte, SectorSize)
	if _, err := r.ReadAt(mbr, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("partition table: sector 0: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, ErrNoTable
	}
	ents := mbrEntries(mbr)
	for _, e := range ents {
		if e.typ == 0xEE {
			t, err := readGPT(r, size)
			if err != nil {
				return nil, err
			}
			return t, nil
		}
	}
	// A boot sector of a filesystem also ends in 55 AA: a table's entries
	// have boot flags 0x00 or 0x80 and at least one partition.
	used := 0
	for _, e := range ents {
		if e.status != 0 && e.status != 0x80 {
			return nil, ErrNoTable
		}
		if e.typ != 0 && e.sectors != 0 {
			used++
		}
	}
	if used == 0 {
		return nil, ErrNoTable
	}
	t := &Table{Kind: KindMBR, Partitions: []Partition{}}
	disk := uint64(size) / SectorSize
	var extended *mbrEntry
	for i, e := range ents {
		if e.typ == 0 || e.sectors == 0 {
			continue
		}
		if isExtended(e.typ) {
			if extended == nil {
				ee := e
				extended = &ee
			} else {
				t.Warnings = append(t.Warnings, fmt.Sprintf("p%d: a second extended partition, ignored", i+1))
			}
			continue
		}
		p := mbrPartition(i+1, uint64(e.lba), e)
		if uint64(e.lba)+uint64(e.sectors) > disk {
			t.Warnings = append(t.Warnings, fmt.Sprintf("p%d: sectors %d+%d lie beyond the disk's %d (truncated disk?)", i+1, e.lba, e.sectors, disk))
			p.Truncated = true
		}
		t.Partitions = append(t.Partitions, p)
	}
	if extended != nil {
		t.Warnings = append(t.Warnings, readEBRChain(r, disk, uint64(extended.lba), uint64(extended.sectors), t)...)
	}
	return t, nil
}

type mbrEntry struct {
	status, typ  byte
	lba, sectors uint32
}

func mbrEntries(sec []byte) [4]mbrEntry {
	var out [4]mbrEntry
	for i := range out {
		e := sec[446+16*i:]
		out[i] = mbrEntry{status: e[0], typ: e[4], lba: binary.LittleEndian.Uint32(e[8:]), sectors: binary.LittleEndian.Uint32(e[12:])}
	}
	return out
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0F || t == 0x85 }

func mbrPartition(idx int, lba uint64, e mbrEntry) Partition {
	return Partition{
		Name: fmt.Sprintf("p%d", idx), Index: idx,
		Start: int64(lba) * SectorSize, Size: int64(e.sectors) * SectorSize,
		Type: fmt.Sprintf("0x%02x", e.typ), Dynamic: e.typ == 0x42,
	}
}

// readEBRChain follows the extended boot records from the extended
// partition at extLBA: each holds one logical partition (relative to the
// record) and a link to the next record (relative to the extended
// partition).
func readEBRChain(r io.ReaderAt, disk, extLBA, extSectors uint64, t *Table) []string {
	var warn []string
	seen := map[uint64]bool{}
	ebr := extLBA
	sec := make([]byte, SectorSize)
	for n := 0; ; n++ {
		idx := 5 + n
		if n >= maxLogical {
			return append(warn, fmt.Sprintf("more than %d logical partitions: the rest ignored", maxLogical))
		}
		if seen[ebr] || ebr >= disk || ebr < extLBA || ebr >= extLBA+extSectors {
			return append(warn, fmt.Sprintf("extended boot record at sector %d: outside the extended partition or a loop; chain ends", ebr))
		}
		seen[ebr] = true
		if _, err := r.ReadAt(sec, int64(ebr)*SectorSize); err != nil && !errors.Is(err, io.EOF) {
			return append(warn, fmt.Sprintf("extended boot record at sector %d: %v", ebr, err))
		}
		if sec[510] != 0x55 || sec[511] != 0xAA {
			return append(warn, fmt.Sprintf("extended boot record at sector %d: no 55 AA signature; chain ends", ebr))
		}
		ents := mbrEntries(sec)
		if l := ents[0]; l.typ != 0 && l.sectors != 0 {
			start := ebr + uint64(l.lba)
			p := mbrPartition(idx, start, l)
			if start+uint64(l.sectors) > disk {
				warn = append(warn, fmt.Sprintf("p%d: sectors %d+%d lie beyond the disk's %d (truncated disk?)", idx, start, l.sectors, disk))
				p.Truncated = true
			}
			t.Partitions = append(t.Partitions, p)
		}
		next := ents[1]
		if next.typ == 0 || next.lba == 0 {
			return warn
		}
		ebr = extLBA + uint64(next.lba)
	}
}

// readGPT reads the primary GPT header at LBA 1 (the backup at the disk's
// last sector when the primary is damaged).
func readGPT(r io.ReaderAt, size int64) (*Table, error) {
	t, err := readGPTAt(r, size, 1)
	if err == nil {
		return t, nil
	}
	last := size/SectorSize - 1
	t2, err2 := readGPTAt(r, size, last)
	if err2 != nil {
		return nil, fmt.Errorf("GPT: primary header: %w; backup header: %v", err, err2)
	}
	t2.Warnings = append(t2.Warnings, fmt.Sprintf("primary GPT header unreadable (%v): read the backup header", err))
	return t2, nil
}

func readGPTAt(r io.ReaderAt, size int64, lba int64) (*Table, error) {
	h := make([]byte, SectorSize)
	if _, err := r.ReadAt(h, lba*SectorSize); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("header at LBA %d: %w", lba, err)
	}
	if !bytes.Equal(h[:8], []byte("EFI PART")) {
		return nil, fmt.Errorf("header at LBA %d: no EFI PART signature", lba)
	}
	le := binary.LittleEndian
	entLBA := int64(le.Uint64(h[0x48:]))
	count := le.Uint32(h[0x50:])
	esize := le.Uint32(h[0x54:])
	if esize < 128 || esize > 4096 || esize%8 != 0 || count > 4096 {
		return nil, fmt.Errorf("header at LBA %d: %d entries of %d bytes", lba, count, esize)
	}
	tab := int64(count) * int64(esize)
	if entLBA < 0 || entLBA > size/SectorSize || entLBA*SectorSize+tab > size {
		return nil, fmt.Errorf("header at LBA %d: entry array at LBA %d beyond the disk", lba, entLBA)
	}
	b := make([]byte, tab)
	if _, err := r.ReadAt(b, entLBA*SectorSize); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("entry array: %w", err)
	}
	t := &Table{Kind: KindGPT, Partitions: []Partition{}}
	disk := uint64(size) / SectorSize
	for i := uint32(0); i < count; i++ {
		e := b[int64(i)*int64(esize):]
		typ := guid(e[:16])
		if typ == "00000000-0000-0000-0000-000000000000" {
			continue
		}
		first, last := le.Uint64(e[32:]), le.Uint64(e[40:])
		if last < first || last >= maxGPTSectors {
			t.Warnings = append(t.Warnings, fmt.Sprintf("p%d: sectors %d..%d invalid", i+1, first, last))
			continue
		}
		truncated := last >= disk
		if truncated {
			t.Warnings = append(t.Warnings, fmt.Sprintf("p%d: sectors %d..%d lie beyond the disk's %d (truncated disk?)", i+1, first, last, disk))
		}
		u := make([]uint16, 36)
		for k := range u {
			u[k] = le.Uint16(e[56+2*k:])
		}
		name := strings.TrimRight(string(utf16.Decode(u)), "\x00")
		t.Partitions = append(t.Partitions, Partition{
			Name: fmt.Sprintf("p%d", i+1), Index: int(i + 1),
			Start: int64(first) * SectorSize, Size: int64(last-first+1) * SectorSize,
			Type: typ, Label: name, Dynamic: ldmTypes[typ], Truncated: truncated,
		})
	}
	return t, nil
}

// guid renders a GPT GUID (mixed endian) in its usual text form.
func guid(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X",
		le.Uint32(b), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15])
}
