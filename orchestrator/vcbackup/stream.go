package vcbackup

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"

	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
)

// The streamOptimized VMDK vCenter streams from a snapshot export lease's
// disk URL (VMware's "Virtual Disk Format 5.0"): a header sector, then
// sectors up to the header's overhead (embedded descriptor), then markers.
// A grain marker is the grain's LBA (uint64), its compressed size (uint32,
// non-zero) and the zlib data, padded to a sector; a metadata marker has
// size 0, a type (grain table, grain directory, footer, end of stream) and
// takes a sector, followed by as many sectors of metadata as it says. The
// reader takes the grains in order and skips the metadata: a stream holds
// every grain with data, so the tables add nothing.
const (
	streamSector    = 512
	streamMagic     = 0x564d444b // "KDMV" little-endian
	streamFlagComp  = 1 << 16
	streamFlagMark  = 1 << 17
	streamMaxGrain  = 2048    // sectors (1 MiB); vCenter uses 128
	streamMaxHeader = 1 << 16 // sectors of overhead before the first marker
	streamMaxMeta   = 1 << 20 // sectors of one metadata block (a 64 TiB disk's GD is 8192)
	streamMarkerEOS = 0
)

// streamReader parses a streamOptimized VMDK sequentially.
type streamReader struct {
	r        *bufio.Reader
	size     int64 // disk bytes
	grain    int64 // grain bytes
	off      int64 // stream bytes consumed
	next     int64 // disk offset the next grain may start at
	zr       io.ReadCloser
	comp, gr []byte
}

func (s *streamReader) fail(format string, a ...any) error {
	return fmt.Errorf("streamOptimized stream of the export lease at byte %d: %s", s.off, fmt.Sprintf(format, a...))
}

func (s *streamReader) full(p []byte, what string) error {
	n, err := io.ReadFull(s.r, p)
	s.off += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("streamOptimized stream of the export lease at byte %d: %s: %w", s.off, what, err)
	}
	return nil
}

func (s *streamReader) skip(n int64, what string) error {
	m, err := s.r.Discard(int(n))
	s.off += int64(m)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("streamOptimized stream of the export lease at byte %d: %s: %w", s.off, what, err)
	}
	return nil
}

// newStreamReader reads the header of the stream of a disk of size bytes.
func newStreamReader(r io.Reader, size int64) (*streamReader, error) {
	s := &streamReader{r: bufio.NewReaderSize(r, 256<<10), size: size}
	h := make([]byte, streamSector)
	if err := s.full(h, "header"); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	capacity, grain, overhead := le.Uint64(h[12:]), le.Uint64(h[20:]), le.Uint64(h[64:])
	switch {
	case le.Uint32(h[0:]) != streamMagic:
		return nil, s.fail("bad magic %08x: not a VMDK sparse header", le.Uint32(h[0:]))
	case le.Uint32(h[8:])&(streamFlagComp|streamFlagMark) != streamFlagComp|streamFlagMark:
		return nil, s.fail("flags %#x: not streamOptimized (compressed grains with markers)", le.Uint32(h[8:]))
	case le.Uint16(h[77:]) != 1:
		return nil, s.fail("compression algorithm %d: only deflate (1) is known", le.Uint16(h[77:]))
	case capacity != uint64(size+streamSector-1)/streamSector:
		return nil, s.fail("capacity %d sectors, but the disk is %d bytes", capacity, size)
	case grain == 0 || grain > streamMaxGrain || grain&(grain-1) != 0:
		return nil, s.fail("grain size %d sectors: want a power of two up to %d", grain, streamMaxGrain)
	case overhead < 1 || overhead > streamMaxHeader:
		return nil, s.fail("overhead %d sectors: want 1 to %d", overhead, streamMaxHeader)
	}
	s.grain = int64(grain) * streamSector
	if err := s.skip(int64(overhead-1)*streamSector, "descriptor"); err != nil {
		return nil, err
	}
	s.comp = make([]byte, 0, s.maxComp())
	s.gr = make([]byte, s.grain)
	return s, nil
}

// maxComp bounds a grain's compressed size: deflate's stored blocks bound
// the growth of incompressible data.
func (s *streamReader) maxComp() int64 { return s.grain + s.grain/16 + 1024 }

// nextGrain returns the next grain's disk offset and bytes (valid until the
// next call), or io.EOF at the end-of-stream marker.
func (s *streamReader) nextGrain() (int64, []byte, error) {
	var m [12]byte
	for {
		at := s.off
		if err := s.full(m[:], "marker"); err != nil {
			return 0, nil, err
		}
		val, n := binary.LittleEndian.Uint64(m[0:]), binary.LittleEndian.Uint32(m[8:])
		if n == 0 {
			var t [4]byte
			if err := s.full(t[:], "metadata marker"); err != nil {
				return 0, nil, err
			}
			typ := binary.LittleEndian.Uint32(t[:])
			if typ > 3 {
				s.off = at
				return 0, nil, s.fail("metadata marker of unknown type %d", typ)
			}
			if err := s.skip(streamSector-16, "metadata marker"); err != nil {
				return 0, nil, err
			}
			if typ == streamMarkerEOS {
				return 0, nil, io.EOF
			}
			if val > streamMaxMeta {
				s.off = at
				return 0, nil, s.fail("metadata of %d sectors: more than %d", val, streamMaxMeta)
			}
			if err := s.skip(int64(val)*streamSector, "metadata"); err != nil {
				return 0, nil, err
			}
			continue
		}
		if int64(n) > s.maxComp() {
			s.off = at
			return 0, nil, s.fail("grain marker: compressed size %d for a %d-byte grain", n, s.grain)
		}
		// val is checked against the disk before it is multiplied: an LBA
		// of 2^62 or more would wrap round to an offset inside the disk.
		off := int64(min(val, uint64(s.size/streamSector)+1)) * streamSector
		if val%uint64(s.grain/streamSector) != 0 || off >= s.size || off < s.next {
			s.off = at
			return 0, nil, s.fail("grain marker: LBA %d not a grain start after the previous grain within the disk", val)
		}
		s.comp = s.comp[:n]
		if err := s.full(s.comp, "compressed grain"); err != nil {
			return 0, nil, err
		}
		want := min(s.grain, s.size-off)
		got, err := s.inflate()
		if err != nil || (int64(got) != want && int64(got) != s.grain) {
			s.off = at
			if err == nil {
				err = fmt.Errorf("%d bytes", got)
			}
			return 0, nil, s.fail("grain at LBA %d: inflate: %v, want %d bytes", val, err, want)
		}
		if pad := (12 + int64(n)) % streamSector; pad != 0 {
			if err := s.skip(streamSector-pad, "grain padding"); err != nil {
				return 0, nil, err
			}
		}
		s.next = off + s.grain
		return off, s.gr[:want], nil
	}
}

// inflate decompresses s.comp into s.gr, refusing more than a grain.
func (s *streamReader) inflate() (int, error) {
	br := bytes.NewReader(s.comp)
	var err error
	if s.zr == nil {
		s.zr, err = zlib.NewReader(br)
	} else {
		err = s.zr.(zlib.Resetter).Reset(br, nil)
	}
	if err != nil {
		return 0, err
	}
	n, err := io.ReadFull(s.zr, s.gr)
	switch {
	case err == io.ErrUnexpectedEOF || err == io.EOF:
		return n, nil
	case err != nil:
		return n, err
	}
	var one [1]byte
	if k, _ := s.zr.Read(one[:]); k > 0 {
		return n, errors.New("more than a grain")
	}
	return n, nil
}

// diskSource gives a disk's bytes to pointWriter: at any offset (ranged
// reads), or, if sequential, only at increasing offsets.
type diskSource interface {
	readAt(ctx context.Context, p []byte, off int64) error
	sequential() bool
	close()
}

func (*rangeSource) sequential() bool { return false }
func (*rangeSource) close()           {}

// streamSource reads a disk from the export lease's streamOptimized stream,
// one GET without Range (as vCenter serves it), at increasing offsets:
// bytes between grains read as zeros. An incremental backup skips through
// the stream to its changed areas and stops after the last, so it
// transfers the stream up to there, not only the changed bytes.
type streamSource struct {
	c    *vim25.Client
	u    *url.URL
	size int64
	read *atomic.Int64 // stream bytes received

	body io.ReadCloser
	sr   *streamReader
	pos  int64  // disk offset read up to
	gOff int64  // disk offset of g
	g    []byte // current grain
	eos  bool
}

func (s *streamSource) sequential() bool { return true }

func (s *streamSource) close() {
	if s.body != nil {
		s.body.Close()
	}
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (s *streamSource) open(ctx context.Context) error {
	dl := soap.DefaultDownload
	res, err := s.c.Client.DownloadRequest(ctx, s.u, &dl)
	if err != nil {
		return fmt.Errorf("export lease stream: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		return fmt.Errorf("export lease stream: %s answered %s", s.u.Path, res.Status)
	}
	s.body = res.Body
	s.sr, err = newStreamReader(countingReader{r: res.Body, n: s.read}, s.size)
	return err
}

func (s *streamSource) readAt(ctx context.Context, p []byte, off int64) error {
	if s.sr == nil {
		if err := s.open(ctx); err != nil {
			return err
		}
	}
	if off < s.pos {
		return fmt.Errorf("stream read at offset %d after offset %d", off, s.pos)
	}
	for len(p) > 0 {
		for !s.eos && s.gOff+int64(len(s.g)) <= off {
			g, data, err := s.sr.nextGrain()
			if err == io.EOF {
				s.eos, s.g = true, nil
				break
			}
			if err != nil {
				return err
			}
			s.gOff, s.g = g, data
		}
		var n int
		switch {
		case s.g != nil && s.gOff <= off && off < s.gOff+int64(len(s.g)):
			n = copy(p, s.g[off-s.gOff:])
		case s.g != nil && s.gOff > off:
			n = int(min(int64(len(p)), s.gOff-off))
			clear(p[:n])
		default:
			n = len(p)
			clear(p)
		}
		p, off = p[n:], off+int64(n)
	}
	s.pos = off
	return nil
}
