package vmfolder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zlib"
)

// Hosted sparse extent layout, from VMware's "Virtual Disk Format 5.0"
// specification: a 512-byte header, an optional embedded descriptor, a grain
// directory (GD) of uint32 sector offsets of grain tables (GT), grain tables
// of uint32 sector offsets of grains. In a streamOptimized extent every grain
// is zlib-compressed behind a 12-byte marker (lba, size), and the GD may
// follow the grains, found through a footer copy of the header.
const (
	sparseMagic        = 0x564d444b // "KDMV" little-endian
	gdAtEnd            = 0xffffffffffffffff
	flagZeroGrainGTE   = 1 << 2
	flagCompressed     = 1 << 16
	flagMarkers        = 1 << 17
	compressionDeflate = 1
	gteZeroed          = 1 // with flagZeroGrainGTE: grain reads as zeros

	// maxGrainSectors bounds the grain size: VMware and qemu use 128
	// sectors (64 KiB); 1 MiB leaves room without letting a header make each
	// read allocate gigabytes.
	maxGrainSectors = 2048
	// maxGTEsPerGT bounds a grain table: VMware uses 512 entries.
	maxGTEsPerGT = 4096
	// maxGDEntries bounds the grain directory: 64 TiB in 64 KiB grains with
	// 512-entry tables needs 2^21 entries.
	maxGDEntries = 1 << 22
	// maxEmbeddedDescriptorSectors bounds the descriptor inside a sparse file.
	maxEmbeddedDescriptorSectors = 2048
	// grainMarkerSize is the lba (uint64) and size (uint32) before a
	// compressed grain.
	grainMarkerSize = 12
	// gtCacheLimit and grainCacheLimit bound what a sparse extent keeps in
	// memory between reads.
	gtCacheLimit    = 1024
	grainCacheLimit = 16
)

// sparseHeader is the header (or footer) of a hosted sparse extent.
type sparseHeader struct {
	version           uint32
	flags             uint32
	capacity          uint64 // sectors
	grainSize         uint64 // sectors
	descriptorOffset  uint64 // sectors
	descriptorSize    uint64 // sectors
	numGTEsPerGT      uint32
	rgdOffset         uint64 // sectors
	gdOffset          uint64 // sectors, or gdAtEnd
	overhead          uint64 // sectors
	compressAlgorithm uint16
}

// parseSparseHeader decodes and checks the fields of a sparse extent header
// that do not depend on the file's size.
func parseSparseHeader(b []byte) (sparseHeader, error) {
	var h sparseHeader
	if len(b) < sectorSize {
		return h, fmt.Errorf("sparse header: %d bytes, want %d", len(b), sectorSize)
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[0:]); m != sparseMagic {
		return h, fmt.Errorf("sparse header: bad magic %08x", m)
	}
	h.version = le.Uint32(b[4:])
	h.flags = le.Uint32(b[8:])
	h.capacity = le.Uint64(b[12:])
	h.grainSize = le.Uint64(b[20:])
	h.descriptorOffset = le.Uint64(b[28:])
	h.descriptorSize = le.Uint64(b[36:])
	h.numGTEsPerGT = le.Uint32(b[44:])
	h.rgdOffset = le.Uint64(b[48:])
	h.gdOffset = le.Uint64(b[56:])
	h.overhead = le.Uint64(b[64:])
	h.compressAlgorithm = le.Uint16(b[77:])
	switch {
	case h.version < 1 || h.version > 3:
		return h, fmt.Errorf("sparse header: version %d not supported (1 to 3)", h.version)
	case h.grainSize == 0 || h.grainSize > maxGrainSectors || h.grainSize&(h.grainSize-1) != 0:
		return h, fmt.Errorf("sparse header: grain size %d sectors: want a power of two up to %d", h.grainSize, maxGrainSectors)
	case h.numGTEsPerGT == 0 || h.numGTEsPerGT > maxGTEsPerGT:
		return h, fmt.Errorf("sparse header: %d entries per grain table: want 1 to %d", h.numGTEsPerGT, maxGTEsPerGT)
	case h.capacity == 0 || h.capacity > maxDiskSectors:
		return h, fmt.Errorf("sparse header: capacity %d sectors: want 1 to %d", h.capacity, int64(maxDiskSectors))
	case h.flags&flagCompressed != 0 && h.compressAlgorithm != compressionDeflate:
		return h, fmt.Errorf("sparse header: compression algorithm %d not supported (only deflate)", h.compressAlgorithm)
	case h.descriptorSize > maxEmbeddedDescriptorSectors:
		return h, fmt.Errorf("sparse header: embedded descriptor of %d sectors: more than %d", h.descriptorSize, maxEmbeddedDescriptorSectors)
	}
	if n := h.gdEntries(); n > maxGDEntries {
		return h, fmt.Errorf("sparse header: grain directory of %d entries: more than %d", n, maxGDEntries)
	}
	return h, nil
}

func (h sparseHeader) grainBytes() int64 { return int64(h.grainSize) * sectorSize }

// gdEntries is the number of grain tables needed to cover the capacity.
func (h sparseHeader) gdEntries() uint64 {
	perGT := h.grainSize * uint64(h.numGTEsPerGT) // both bounded: no overflow
	return (h.capacity + perGT - 1) / perGT
}

func (h sparseHeader) compressed() bool { return h.flags&flagCompressed != 0 }

// sparseExtent reads a hosted sparse extent. It is safe for concurrent use.
type sparseExtent struct {
	name     string // for errors
	r        io.ReaderAt
	fileSize int64
	h        sparseHeader
	gd       []uint32
	desc     *descriptor // embedded descriptor, nil if none

	mu     sync.Mutex
	gts    map[uint64][]uint32 // by GD index
	grains map[int64][]byte    // decompressed grains, by grain index
}

// openSparse reads the header, footer and grain directory of a sparse
// extent and checks them against the file's size.
func openSparse(name string, r io.ReaderAt, fileSize int64) (*sparseExtent, error) {
	fail := func(err error) (*sparseExtent, error) { return nil, fmt.Errorf("%s: %w", name, err) }
	buf := make([]byte, sectorSize)
	if fileSize < sectorSize {
		return fail(fmt.Errorf("sparse extent of %d bytes: shorter than its header", fileSize))
	}
	if _, err := r.ReadAt(buf, 0); err != nil {
		return fail(fmt.Errorf("read sparse header: %w", err))
	}
	h, err := parseSparseHeader(buf)
	if err != nil {
		return fail(err)
	}
	if h.gdOffset == gdAtEnd {
		// streamOptimized written as a stream: the real header is the footer,
		// which sits before the end-of-stream marker in the last 1536 bytes.
		if fileSize < 3*sectorSize+sectorSize {
			return fail(errors.New("grain directory at end of file, but the file has no room for a footer"))
		}
		if _, err := r.ReadAt(buf, fileSize-2*sectorSize); err != nil {
			return fail(fmt.Errorf("read sparse footer: %w", err))
		}
		footer, err := parseSparseHeader(buf)
		if err != nil {
			return fail(fmt.Errorf("footer: %w", err))
		}
		if footer.gdOffset == gdAtEnd {
			return fail(errors.New("footer: grain directory offset still says \"at end\""))
		}
		if footer.capacity != h.capacity || footer.grainSize != h.grainSize || footer.numGTEsPerGT != h.numGTEsPerGT {
			return fail(errors.New("footer disagrees with the header on capacity, grain size or grain table size"))
		}
		h = footer
	}
	s := &sparseExtent{
		name:     name,
		r:        r,
		fileSize: fileSize,
		h:        h,
		gts:      map[uint64][]uint32{},
		grains:   map[int64][]byte{},
	}
	n := h.gdEntries()
	if h.gdOffset == 0 || !within(h.gdOffset, n*4, fileSize) {
		return fail(fmt.Errorf("grain directory of %d entries at sector %d lies outside the file (%d bytes)", n, h.gdOffset, fileSize))
	}
	raw := make([]byte, n*4)
	if _, err := r.ReadAt(raw, int64(h.gdOffset)*sectorSize); err != nil {
		return fail(fmt.Errorf("read grain directory: %w", err))
	}
	s.gd = make([]uint32, n)
	for i := range s.gd {
		s.gd[i] = binary.LittleEndian.Uint32(raw[i*4:])
	}
	if h.descriptorSize > 0 && h.descriptorOffset > 0 {
		if !within(h.descriptorOffset, h.descriptorSize*sectorSize, fileSize) {
			return fail(fmt.Errorf("embedded descriptor at sector %d (%d sectors) lies outside the file (%d bytes)", h.descriptorOffset, h.descriptorSize, fileSize))
		}
		db := make([]byte, h.descriptorSize*sectorSize)
		if _, err := r.ReadAt(db, int64(h.descriptorOffset)*sectorSize); err != nil {
			return fail(fmt.Errorf("read embedded descriptor: %w", err))
		}
		if len(bytes.Trim(db, "\x00")) > 0 {
			if s.desc, err = parseDescriptor(db); err != nil {
				return fail(fmt.Errorf("embedded %w", err))
			}
		}
	}
	return s, nil
}

// within reports whether n bytes from sector start lie inside a file of
// fileSize bytes, without overflowing.
func within(start, n uint64, fileSize int64) bool {
	if start > uint64(fileSize)/sectorSize {
		return false
	}
	off := start * sectorSize
	return n <= uint64(fileSize)-off
}

func (s *sparseExtent) size() int64 { return int64(s.h.capacity) * sectorSize }

// gte returns the grain table entry of grain g: the sector where the grain
// (or its marker) starts, 0 if the grain is not allocated.
func (s *sparseExtent) gte(g int64) (uint32, error) {
	gdIndex := uint64(g) / uint64(s.h.numGTEsPerGT)
	gt, err := s.grainTable(gdIndex)
	if err != nil || gt == nil {
		return 0, err
	}
	e := gt[uint64(g)%uint64(s.h.numGTEsPerGT)]
	if e == gteZeroed && s.h.flags&flagZeroGrainGTE != 0 {
		return 0, nil
	}
	return e, nil
}

// grainTable returns grain table gdIndex, nil if it is not allocated.
func (s *sparseExtent) grainTable(gdIndex uint64) ([]uint32, error) {
	sector := s.gd[gdIndex]
	if sector == 0 || (sector == gteZeroed && s.h.flags&flagZeroGrainGTE != 0) {
		return nil, nil
	}
	s.mu.Lock()
	gt, ok := s.gts[gdIndex]
	s.mu.Unlock()
	if ok {
		return gt, nil
	}
	n := uint64(s.h.numGTEsPerGT)
	if !within(uint64(sector), n*4, s.fileSize) {
		return nil, fmt.Errorf("%s: grain table %d at sector %d lies beyond the end of the file (%d bytes)", s.name, gdIndex, sector, s.fileSize)
	}
	raw := make([]byte, n*4)
	if _, err := s.r.ReadAt(raw, int64(sector)*sectorSize); err != nil {
		return nil, fmt.Errorf("%s: read grain table %d: %w", s.name, gdIndex, err)
	}
	gt = make([]uint32, n)
	for i := range gt {
		gt[i] = binary.LittleEndian.Uint32(raw[i*4:])
	}
	s.mu.Lock()
	if len(s.gts) >= gtCacheLimit {
		clear(s.gts)
	}
	s.gts[gdIndex] = gt
	s.mu.Unlock()
	return gt, nil
}

// readAt fills p from offset off of the extent; the caller keeps the range
// inside size().
func (s *sparseExtent) readAt(p []byte, off int64) error {
	gb := s.h.grainBytes()
	for len(p) > 0 {
		g, in := off/gb, off%gb
		n := min(int64(len(p)), gb-in)
		e, err := s.gte(g)
		if err != nil {
			return err
		}
		switch {
		case e == 0:
			clear(p[:n])
		case s.h.compressed():
			grain, err := s.compressedGrain(g, e)
			if err != nil {
				return err
			}
			copy(p[:n], grain[in:in+n])
		default:
			// Only the part of the last grain inside the capacity need exist.
			need := min(gb, s.size()-g*gb)
			if !within(uint64(e), uint64(need), s.fileSize) {
				return fmt.Errorf("%s: grain %d at sector %d lies beyond the end of the file (%d bytes)", s.name, g, e, s.fileSize)
			}
			if _, err := s.r.ReadAt(p[:n], int64(e)*sectorSize+in); err != nil {
				return fmt.Errorf("%s: read grain %d at sector %d: %w", s.name, g, e, err)
			}
		}
		p, off = p[n:], off+n
	}
	return nil
}

// compressedGrain returns grain g, whose marker starts at sector e,
// inflated to a full grain.
func (s *sparseExtent) compressedGrain(g int64, e uint32) ([]byte, error) {
	s.mu.Lock()
	grain, ok := s.grains[g]
	s.mu.Unlock()
	if ok {
		return grain, nil
	}
	gb := s.h.grainBytes()
	fail := func(format string, args ...any) ([]byte, error) {
		return nil, fmt.Errorf("%s: grain %d at sector %d: %s", s.name, g, e, fmt.Sprintf(format, args...))
	}
	start := int64(e) * sectorSize
	// Deflate can grow incompressible data a little; a grain that
	// "compressed" to much more than its size is corrupt.
	maxCompressed := gb + gb/8 + 1024
	var data []byte
	if s.h.flags&flagMarkers != 0 {
		if !within(uint64(e), grainMarkerSize, s.fileSize) {
			return fail("lies beyond the end of the file (%d bytes)", s.fileSize)
		}
		var m [grainMarkerSize]byte
		if _, err := s.r.ReadAt(m[:], start); err != nil {
			return fail("read marker: %v", err)
		}
		lba := binary.LittleEndian.Uint64(m[0:])
		size := int64(binary.LittleEndian.Uint32(m[8:]))
		switch {
		case size == 0:
			return fail("points at a metadata marker, not a grain")
		case size > maxCompressed:
			return fail("compressed size %d bytes is more than a %d-byte grain can need", size, gb)
		case lba != uint64(g)*s.h.grainSize:
			return fail("marker says sector %d, want %d", lba, uint64(g)*s.h.grainSize)
		case !within(uint64(e), uint64(grainMarkerSize+size), s.fileSize):
			return fail("compressed grain of %d bytes runs beyond the end of the file (%d bytes)", size, s.fileSize)
		}
		data = make([]byte, size)
		if _, err := s.r.ReadAt(data, start+grainMarkerSize); err != nil {
			return fail("read: %v", err)
		}
	} else {
		// Without markers the compressed length is unknown; zlib finds the
		// end of its stream itself.
		if start >= s.fileSize {
			return fail("lies beyond the end of the file (%d bytes)", s.fileSize)
		}
		data = make([]byte, min(maxCompressed, s.fileSize-start))
		if _, err := s.r.ReadAt(data, start); err != nil && !errors.Is(err, io.EOF) {
			return fail("read: %v", err)
		}
	}
	grain = make([]byte, gb)
	zr, err := zlib.NewReader(bytes.NewReader(data))
	if err != nil {
		return fail("inflate: %v", err)
	}
	for n := 0; ; {
		if n == len(grain) {
			// Full: the stream must end here, and reading on checks its checksum.
			var one [1]byte
			k, err := zr.Read(one[:])
			if k > 0 {
				return fail("inflates to more than the grain size of %d bytes", gb)
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return fail("inflate: %v", err)
			}
			break
		}
		k, err := zr.Read(grain[n:])
		n += k
		if errors.Is(err, io.EOF) {
			break // a short last grain: the rest reads as zeros
		}
		if err != nil {
			return fail("inflate: %v", err)
		}
	}
	zr.Close()
	s.mu.Lock()
	if len(s.grains) >= grainCacheLimit {
		clear(s.grains)
	}
	s.grains[g] = grain
	s.mu.Unlock()
	return grain, nil
}

// hasData reports whether [off, off+n) touches an allocated grain; the
// caller keeps the range inside size().
func (s *sparseExtent) hasData(off, n int64) (bool, error) {
	if n <= 0 {
		return false, nil
	}
	gb := s.h.grainBytes()
	perGT := int64(s.h.numGTEsPerGT)
	first, last := off/gb, (off+n-1)/gb
	for g := first; g <= last; {
		gdIndex := g / perGT
		gt, err := s.grainTable(uint64(gdIndex))
		if err != nil {
			return false, err
		}
		end := min(last, (gdIndex+1)*perGT-1)
		if gt != nil {
			for ; g <= end; g++ {
				e := gt[g%perGT]
				if e != 0 && !(e == gteZeroed && s.h.flags&flagZeroGrainGTE != 0) {
					return true, nil
				}
			}
		}
		g = end + 1
	}
	return false, nil
}
