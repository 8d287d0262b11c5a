package vcsimext

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
)

// The streamOptimized VMDK that vCenter's snapshot export lease streams for
// a disk, as laid out in VMware's "Virtual Disk Format 5.0": a header
// sector (grain directory "at end"), the embedded descriptor, then for each
// grain table the grains holding data, each behind a 12-byte grain marker
// (LBA, compressed size) and zlib-compressed, followed by a grain table
// marker and the table; then the grain directory marker and directory, a
// footer marker and the footer (the header with the directory's offset), and
// the end-of-stream marker. All-zero grains are left out, as vCenter does.
const (
	streamSector      = 512
	streamGrainSector = 128 // 64 KiB grains, as vCenter and qemu write them
	streamGTEs        = 512 // grain table entries per table
	streamMagic       = 0x564d444b
	streamFlags       = 1 | 1<<16 | 1<<17 // valid newline test, compressed grains, markers
	streamGDAtEnd     = 0xffffffffffffffff

	markerEOS    = 0
	markerGT     = 1
	markerGD     = 2
	markerFooter = 3
)

// WriteStreamOptimized writes the first size bytes of src as a
// streamOptimized VMDK named name, as the export-lease stand-in streams it
// (exported for tests that need such a stream).
func WriteStreamOptimized(w io.Writer, src io.ReaderAt, size int64, name string) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	var pos uint64 // sectors written
	write := func(b []byte) error {
		if pad := len(b) % streamSector; pad != 0 {
			b = append(b, make([]byte, streamSector-pad)...)
		}
		pos += uint64(len(b) / streamSector)
		_, err := bw.Write(b)
		return err
	}
	capacity := uint64(size+streamSector-1) / streamSector
	desc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n"+
		"# Extent description\nRDONLY %d SPARSE \"%s\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n", capacity, name)
	descSectors := uint64(len(desc)+streamSector-1) / streamSector
	header := func(gdOffset uint64) []byte {
		h := make([]byte, streamSector)
		le := binary.LittleEndian
		le.PutUint32(h[0:], streamMagic)
		le.PutUint32(h[4:], 3)
		le.PutUint32(h[8:], streamFlags)
		le.PutUint64(h[12:], capacity)
		le.PutUint64(h[20:], streamGrainSector)
		le.PutUint64(h[28:], 1)
		le.PutUint64(h[36:], descSectors)
		le.PutUint32(h[44:], streamGTEs)
		le.PutUint64(h[56:], gdOffset)
		le.PutUint64(h[64:], 1+descSectors)
		h[73], h[74], h[75], h[76] = '\n', ' ', '\r', '\n'
		le.PutUint16(h[77:], 1) // deflate
		return h
	}
	meta := func(sectors uint64, typ uint32) []byte {
		m := make([]byte, streamSector)
		binary.LittleEndian.PutUint64(m[0:], sectors)
		binary.LittleEndian.PutUint32(m[12:], typ)
		return m
	}
	if err := write(header(streamGDAtEnd)); err != nil {
		return err
	}
	if err := write([]byte(desc)); err != nil {
		return err
	}
	const grainBytes = streamGrainSector * streamSector
	grains := (capacity + streamGrainSector - 1) / streamGrainSector
	gd := make([]byte, 4*((grains+streamGTEs-1)/streamGTEs))
	buf := make([]byte, grainBytes)
	var comp bytes.Buffer
	zw := zlib.NewWriter(&comp)
	for t := uint64(0); t*streamGTEs < grains; t++ {
		gt := make([]byte, 4*streamGTEs)
		used := false
		for j := uint64(0); j < streamGTEs && t*streamGTEs+j < grains; j++ {
			g := t*streamGTEs + j
			off := int64(g * grainBytes)
			b := buf[:min(int64(grainBytes), size-off)]
			n, err := src.ReadAt(b, off)
			if n < len(b) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("read %s at %d: %w", name, off, err)
			}
			if allZero(b) {
				continue
			}
			comp.Reset()
			comp.Write(make([]byte, 12)) // the grain marker, filled below
			zw.Reset(&comp)
			if _, err := zw.Write(b); err != nil {
				return err
			}
			if err := zw.Close(); err != nil {
				return err
			}
			m := comp.Bytes()
			binary.LittleEndian.PutUint64(m[0:], g*streamGrainSector)
			binary.LittleEndian.PutUint32(m[8:], uint32(len(m)-12))
			binary.LittleEndian.PutUint32(gt[4*j:], uint32(pos))
			used = true
			if err := write(m); err != nil {
				return err
			}
		}
		if !used {
			continue
		}
		if err := write(meta(uint64(len(gt))/streamSector, markerGT)); err != nil {
			return err
		}
		binary.LittleEndian.PutUint32(gd[4*t:], uint32(pos))
		if err := write(gt); err != nil {
			return err
		}
	}
	if err := write(meta(uint64(len(gd)+streamSector-1)/streamSector, markerGD)); err != nil {
		return err
	}
	gdOffset := pos
	if err := write(gd); err != nil {
		return err
	}
	if err := write(meta(1, markerFooter)); err != nil {
		return err
	}
	if err := write(header(gdOffset)); err != nil {
		return err
	}
	if err := write(meta(0, markerEOS)); err != nil {
		return err
	}
	return bw.Flush()
}
