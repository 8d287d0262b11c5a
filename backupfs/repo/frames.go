package repo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// chunkEntry is one chunk in a Cache: its layout and its frames, each
// decoded into its own buffer when a reader first needs it. A frame's buffer
// is set once, before its ready flag, and never written again, so readers
// lend it out while other frames of the chunk are being decoded.
type chunkEntry struct {
	layout *chunkLayout
	frames [][]byte // frame i's bytes once ready[i]
	ready  []atomic.Bool
	// joined[i]: frames i and i+1 were decoded together into one buffer,
	// frame i+1 right after frame i, so a read across them is lent as one
	// slice (set before ready[i+1], never cleared). A 1 MiB read of chunks
	// in 4 KiB frames is then a few slices, not 256 of them.
	joined []bool

	mu      sync.Mutex
	loading []chan struct{} // per frame: closed when the reader decoding it is done
	held    int64           // decoded bytes counted in the cache's total
	evicted bool            // out of the cache: frames decoded now are not counted
}

func newChunkEntry(l *chunkLayout) *chunkEntry {
	k := len(l.frames)
	return &chunkEntry{layout: l, frames: make([][]byte, k), ready: make([]atomic.Bool, k), joined: make([]bool, k), loading: make([]chan struct{}, k)}
}

// evict marks e out of its cache and returns the bytes it held there.
func (e *chunkEntry) evict() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evicted = true
	return e.held
}

// readyRange reports whether frames first..last are all decoded.
func (e *chunkEntry) readyRange(first, last int) bool {
	for i := first; i <= last; i++ {
		if !e.ready[i].Load() {
			return false
		}
	}
	return true
}

// framesOf is the range of frames holding bytes [lo, hi) of the chunk.
func (e *chunkEntry) framesOf(lo, hi int) (int, int) {
	return lo / e.layout.frameSize, (max(hi, lo+1) - 1) / e.layout.frameSize
}

// slices returns bytes [lo, hi) of the chunk as slices of its ready frames,
// frames decoded together as one slice.
func (e *chunkEntry) slices(lo, hi int) [][]byte {
	first, last := e.framesOf(lo, hi)
	n := 1
	for i := first; i < last; i++ {
		if !e.joined[i] {
			n++
		}
	}
	out := make([][]byte, 0, n)
	for i := first; i <= last; i++ {
		flo, fhi := e.layout.frameSpan(i)
		a, b := max(lo-flo, 0), min(hi, fhi)-flo
		if i > first && e.joined[i-1] {
			// Frame i follows frame i-1 in the buffer the previous slice
			// ends in, which runs on (e.frames keeps its capacity).
			k := len(out) - 1
			out[k] = out[k][:len(out[k])+b]
			continue
		}
		out = append(out, e.frames[i][a:b])
	}
	for k, p := range out {
		out[k] = p[:len(p):len(p)] // lent read-only: no append into the next frame
	}
	return out
}

// load decodes frames first..last that are not decoded yet: those no other
// reader is decoding it reads itself (one read for all of them), for the
// others it waits, and it retries a frame whose reader failed.
func (e *chunkEntry) load(c *Cache, r *Repo, d Digest, first, last int) error {
	for {
		var mine []int
		var wait []chan struct{}
		e.mu.Lock()
		for i := first; i <= last; i++ {
			switch {
			case e.ready[i].Load():
			case e.loading[i] != nil:
				wait = append(wait, e.loading[i])
			default:
				e.loading[i] = make(chan struct{})
				mine = append(mine, i)
			}
		}
		e.mu.Unlock()
		if len(mine) > 0 {
			n, err := e.decode(r, d, mine)
			e.mu.Lock()
			for _, i := range mine {
				close(e.loading[i])
				e.loading[i] = nil
			}
			if !e.evicted {
				e.held += n
				c.bytes.Add(n)
			}
			e.mu.Unlock()
			c.trim()
			if err != nil {
				return err
			}
		}
		if len(wait) == 0 {
			return nil
		}
		for _, ch := range wait {
			<-ch
		}
	}
}

// rawPool holds the buffers frames are read into before they are decoded.
var rawPool = sync.Pool{New: func() any { return new([]byte) }}

// decode reads and decodes frames (ascending) of chunk d through the chunk's
// open file (withChunkFile), marks them ready and returns the bytes it
// decoded.
func (e *chunkEntry) decode(r *Repo, d Digest, frames []int) (int64, error) {
	var done int64
	err := r.withChunkFile(d, func(f durablefs.File) error {
		// A second run reads only the frames the first did not decode.
		var rest []int
		for _, i := range frames {
			if !e.ready[i].Load() {
				rest = append(rest, i)
			}
		}
		if len(rest) == 0 {
			return nil
		}
		n, err := e.decodeFrom(d, f, rest)
		done += n
		return err
	})
	return done, err
}

// decodeFrom reads and decodes frames (ascending) of chunk d through f,
// marks them ready and returns the bytes it decoded.
func (e *chunkEntry) decodeFrom(d Digest, f io.ReaderAt, frames []int) (int64, error) {
	l := e.layout
	var done int64
	a, b := l.frames[frames[0]], l.frames[frames[len(frames)-1]]
	if len(frames) == 1 && a.codec == codecStored {
		// A frame that did not compress is read straight into its buffer.
		lo, hi := l.frameSpan(frames[0])
		buf := make([]byte, hi-lo)
		if err := readFull(f, buf, a.off); err != nil {
			return 0, chunkErr(d, l.frameErr(frames[0], err))
		}
		if err := l.decodeFrame(frames[0], buf, buf); err != nil {
			return 0, chunkErr(d, err)
		}
		e.frames[frames[0]] = buf
		e.ready[frames[0]].Store(true)
		return int64(len(buf)), nil
	}
	bp := rawPool.Get().(*[]byte)
	defer rawPool.Put(bp)
	n := int(b.off + b.size - a.off)
	if cap(*bp) < n {
		*bp = make([]byte, n)
	}
	raw := (*bp)[:n]
	if err := readFull(f, raw, a.off); err != nil {
		return 0, chunkErr(d, l.frameErr(frames[0], err))
	}
	// One buffer for all of them, in order: frames that follow each other
	// are then lent as one slice (joined).
	size := 0
	for _, i := range frames {
		lo, hi := l.frameSpan(i)
		size += hi - lo
	}
	out := make([]byte, size)
	for k, i := range frames {
		fr := l.frames[i]
		lo, hi := l.frameSpan(i)
		buf := out[:hi-lo]
		if err := l.decodeFrame(i, raw[fr.off-a.off:fr.off-a.off+fr.size], buf); err != nil {
			return done, chunkErr(d, err)
		}
		e.frames[i] = out // capacity to the buffer's end: see slices
		if k > 0 && frames[k-1] == i-1 {
			e.joined[i-1] = true
		}
		e.ready[i].Store(true)
		out = out[hi-lo:]
		done += int64(hi - lo)
	}
	return done, nil
}

func chunkErr(d Digest, err error) error {
	if errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("chunk %s: %w", d, err)
	}
	return fmt.Errorf("chunk %s: %w: %w", d, ErrCorrupt, err)
}

// readFull reads len(p) bytes at off; a file shorter than its header says
// is corrupt.
func readFull(f io.ReaderAt, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("file ends after %d of %d bytes at offset %d", n, len(p), off)
	}
	return err
}

func (r *Repo) openChunk(d Digest) (durablefs.File, error) {
	f, err := r.fsys().OpenFile(r.ChunkPath(d), os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, missing("chunk", d)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", d, err)
	}
	return f, nil
}

// headRead is how much of a chunk file the first read takes: the header and
// frame table of chunks up to 16 MiB at 32 KiB frames and up to 4 MiB at
// 4 KiB frames (a larger table takes a second read), and the first frames when they are small. Linux reads
// 16 KiB at the start of a file it has not read yet in any case (its
// initial readahead), so the disk does the same work as for the header
// alone, and a read of those frames needs no second read.
const headRead = 16 << 10

// openChunkEntry reads chunk d's header and the frames holding bytes
// [lo, hi), not the rest.
func (r *Repo) openChunkEntry(d Digest, lo, hi int) (*chunkEntry, error) {
	var e *chunkEntry
	err := r.withChunkFile(d, func(f durablefs.File) error {
		var err error
		e, err = readChunkEntry(f, d, lo, hi)
		return err
	})
	return e, err
}

// readChunkEntry is openChunkEntry through chunk d's open file f.
func readChunkEntry(f durablefs.File, d Digest, lo, hi int) (*chunkEntry, error) {
	bp := rawPool.Get().(*[]byte)
	defer rawPool.Put(bp)
	if cap(*bp) < headRead {
		*bp = make([]byte, headRead)
	}
	head := (*bp)[:headRead]
	n, err := f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("chunk %s: %w", d, err)
	}
	size := int64(-1) // unknown: a frame past the end is a short read
	if n < len(head) {
		size, head = int64(n), head[:n]
	}
	hl := chunkHeaderLen(head)
	if hl > len(head) && size < 0 {
		head = make([]byte, hl)
		if err := readFull(f, head, 0); err != nil {
			return nil, chunkErr(d, err)
		}
	}
	if size < 0 && ChunkLayoutVersion(head) == 1 {
		// A version 1 chunk is one payload to the end of the file.
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("chunk %s: %w", d, err)
		}
		size = fi.Size()
	}
	l, err := parseLayout(head, size)
	if err != nil {
		return nil, chunkErr(d, err)
	}
	if l.name != d {
		return nil, fmt.Errorf("chunk %s: %w: the file holds chunk %s", d, ErrCorrupt, l.name)
	}
	e := newChunkEntry(l)
	if lo >= l.n || hi > l.n || lo >= hi {
		return e, nil // the caller reports the short chunk
	}
	frames := e.frameList(lo, hi)
	var src io.ReaderAt = f
	if b := l.frames[frames[len(frames)-1]]; b.off+b.size <= int64(len(head)) {
		src = bytes.NewReader(head) // the first read holds them
	}
	if e.held, err = e.decodeFrom(d, src, frames); err != nil {
		return nil, err
	}
	return e, nil
}

// readFrames reads and decodes the frames of chunk d holding bytes [lo, hi)
// with the chunk's frame table l already known: one read of those frames,
// not of the header.
func (r *Repo) readFrames(l *chunkLayout, d Digest, lo, hi int) (*chunkEntry, error) {
	e := newChunkEntry(l)
	if lo >= l.n || hi > l.n || lo >= hi {
		return e, nil // the caller reports the short chunk
	}
	var err error
	if e.held, err = e.decode(r, d, e.frameList(lo, hi)); err != nil {
		return nil, err
	}
	return e, nil
}

// frameList lists the frames holding bytes [lo, hi) of the chunk.
func (e *chunkEntry) frameList(lo, hi int) []int {
	first, last := e.framesOf(lo, hi)
	frames := make([]int, 0, last-first+1)
	for i := first; i <= last; i++ {
		frames = append(frames, i)
	}
	return frames
}

// loadChunkEntry reads and decodes the whole chunk d.
func (r *Repo) loadChunkEntry(d Digest) (*chunkEntry, error) {
	raw, err := r.ReadChunkRaw(d)
	if err != nil {
		return nil, err
	}
	l, err := parseLayout(raw, int64(len(raw)))
	if err != nil {
		return nil, chunkErr(d, err)
	}
	if l.name != d {
		return nil, fmt.Errorf("chunk %s: %w: the file holds chunk %s", d, ErrCorrupt, l.name)
	}
	e := newChunkEntry(l)
	out := make([]byte, l.n) // one buffer: the whole chunk lends as one slice
	for i, f := range l.frames {
		lo, hi := l.frameSpan(i)
		if err := l.decodeFrame(i, raw[f.off:f.off+f.size], out[lo:hi]); err != nil {
			return nil, chunkErr(d, err)
		}
		e.frames[i] = out[lo:] // capacity to the buffer's end: see slices
		if i > 0 {
			e.joined[i-1] = true
		}
		e.ready[i].Store(true)
	}
	e.held = int64(l.n)
	return e, nil
}
