package repo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
)

// Cache is a bounded cache of decompressed chunks shared by every reader of
// a process. Chunks are named by content, so one cache may serve several
// repositories. A chunk enters the cache on its first read with its frame
// table and fills frame by frame as readers need them (a cold 4 KiB read
// decodes one frame); readahead decodes whole chunks. Loads of the same
// chunk or frame by concurrent readers are merged; no lock is held while a
// chunk is read from disk.
//
// The cache also keeps the frame tables of chunks it has read (tables), in a
// part of its bound of their own, so that a chunk whose frames were evicted
// is read again with one read of the frame it needs, not its header first.
// The bound counts decoded frames and tables: when they pass it, the least
// recently used chunks go, whatever number of frames each holds.
type Cache struct {
	lru      *lru.Cache[Digest, *chunkEntry]
	tables   *lru.Cache[tableKey, *chunkLayout]
	group    singleflight.Group
	ahead    chan struct{} // bounds readahead fetches in flight
	window   int
	maxBytes int64
	maxTable int64    // bytes of frame tables kept, within maxBytes
	held     holdings // memory charged by others against maxBytes (Hold)

	hits, misses, bytes atomic.Int64
	tableBytes          atomic.Int64 // frame tables' share of bytes
	tableHits           atomic.Int64
}

// tableKey names a chunk file: a frame table describes one repository's file
// (another repository may store the same chunk in another layout).
type tableKey struct {
	r *Repo
	d Digest
}

// CacheOptions size a Cache.
type CacheOptions struct {
	MaxBytes  int64 // upper bound on decoded frames and frame tables held; default 256 MiB
	ChunkSize int   // the largest chunk size it will hold; default DefaultChunkSize
	Readahead int   // chunks fetched ahead of a sequential reader; default 8 MiB worth, -1 off
	Parallel  int   // readahead fetches in flight across all readers; default 2×GOMAXPROCS
}

// NewCache returns a cache holding at most opts.MaxBytes of chunk data.
func NewCache(opts CacheOptions) *Cache {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 256 << 20
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.Readahead == 0 {
		opts.Readahead = max(4, (8<<20)/opts.ChunkSize)
	}
	if opts.Readahead < 0 {
		opts.Readahead = 0
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 2 * runtime.GOMAXPROCS(0)
	}
	c := &Cache{ahead: make(chan struct{}, opts.Parallel), window: opts.Readahead, maxBytes: opts.MaxBytes,
		maxTable: opts.MaxBytes / tableShare}
	// Entries are bounded by bytes (trim), the count only caps the
	// bookkeeping: at most one entry per frame the bound could hold.
	n := max(2, int(opts.MaxBytes>>minFrameShift))
	c.lru, _ = lru.NewWithEvict(n, func(_ Digest, e *chunkEntry) { c.bytes.Add(-e.evict()) })
	nt := max(16, int(c.maxTable/layoutBytes((opts.ChunkSize+1<<DefaultFrameShift-1)>>DefaultFrameShift)))
	c.tables, _ = lru.NewWithEvict(nt, func(_ tableKey, l *chunkLayout) {
		b := layoutBytes(len(l.frames))
		c.tableBytes.Add(-b)
		c.bytes.Add(-b)
	})
	return c
}

// tableShare: frame tables may take 1/tableShare of a cache's bound. A
// 256 KiB chunk's table is about 350 bytes, so 1/32 of a 1 GiB cache keeps
// the tables of some 20 GiB of chunks.
const tableShare = 32

// layoutBytes is what a chunk's frame table of k frames costs in memory.
func layoutBytes(k int) int64 { return 96 + 32*int64(k) }

// table returns the frame table of chunk d of repository r, if cached.
func (c *Cache) table(r *Repo, d Digest) (*chunkLayout, bool) {
	return c.tables.Get(tableKey{r, d})
}

// keepTable caches chunk d's frame table, charging it to the cache.
func (c *Cache) keepTable(r *Repo, d Digest, l *chunkLayout) {
	k := tableKey{r, d}
	if c.tables.Contains(k) {
		return
	}
	b := layoutBytes(len(l.frames))
	c.tableBytes.Add(b)
	c.bytes.Add(b)
	c.tables.Add(k, l)
	for c.tableBytes.Load() > c.maxTable && c.tables.Len() > 1 {
		c.tables.RemoveOldest()
	}
}

// dropTable forgets chunk d's frame table (the file no longer matches it).
func (c *Cache) dropTable(r *Repo, d Digest) { c.tables.Remove(tableKey{r, d}) }

// trim evicts the least recently used chunks while the cache and the
// memory charged to it (Hold) pass its bound.
func (c *Cache) trim() {
	for c.bytes.Load()+c.held.bytes.Load() > c.maxBytes && c.lru.Len() > 1 {
		c.lru.RemoveOldest()
	}
}

// CacheStats are a cache's counters. A hit is a read whose bytes were
// decoded already; a miss decoded at least one frame.
type CacheStats struct {
	Hits, Misses int64
	Bytes        int64 // decoded frames and frame tables held now
	MaxBytes     int64
	Entries      int
	// Frame tables: how many are kept, their share of Bytes, and how many
	// chunk reads found theirs kept (and so did not read the header).
	Tables     int
	TableBytes int64
	TableHits  int64
	// Memory charged by others against MaxBytes (Hold): bytes, holdings.
	HeldBytes int64
	Holdings  int
}

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	c.held.mu.Lock()
	holdings := c.held.order.Len()
	c.held.mu.Unlock()
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Bytes: c.bytes.Load(), MaxBytes: c.maxBytes, Entries: c.lru.Len(),
		Tables: c.tables.Len(), TableBytes: c.tableBytes.Load(), TableHits: c.tableHits.Load(),
		HeldBytes: c.held.bytes.Load(), Holdings: holdings}
}

// Get returns a copy of the decompressed chunk d of repository r, decoding
// and caching all its frames.
func (c *Cache) Get(r *Repo, d Digest) ([]byte, error) {
	e, err := c.entry(r, d, 0, -1)
	if err != nil {
		return nil, err
	}
	parts, err := c.parts(r, d, e, 0, e.layout.n)
	if err != nil {
		return nil, err
	}
	return bytes.Join(parts, nil), nil
}

// parts returns bytes [lo, hi) of chunk d's entry e as slices of its
// frames, decoding the frames they need first.
func (c *Cache) parts(r *Repo, d Digest, e *chunkEntry, lo, hi int) ([][]byte, error) {
	if hi > e.layout.n || lo >= hi {
		return nil, fmt.Errorf("chunk %s holds %d bytes, reader needs %d: %w", d, e.layout.n, hi, ErrCorrupt)
	}
	first, last := e.framesOf(lo, hi)
	if e.readyRange(first, last) {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
		if err := e.load(c, r, d, first, last); err != nil {
			return nil, err
		}
	}
	return e.slices(lo, hi), nil
}

// entry returns chunk d's cache entry, reading its header when it is not
// cached. A new entry comes with the frames holding bytes [lo, hi) of the
// chunk decoded, read through the same open file; hi < 0 reads and decodes
// the whole chunk.
func (c *Cache) entry(r *Repo, d Digest, lo, hi int) (*chunkEntry, error) {
	if e, ok := c.lru.Get(d); ok {
		return e, nil
	}
	v, err, _ := c.group.Do(string(d[:]), func() (any, error) {
		if e, ok := c.lru.Peek(d); ok {
			return e, nil
		}
		var e *chunkEntry
		var err error
		l, known := c.table(r, d)
		switch {
		case hi < 0:
			e, err = r.loadChunkEntry(d)
		case known:
			c.tableHits.Add(1)
			e, err = r.readFrames(l, d, lo, hi)
			if errors.Is(err, ErrCorrupt) {
				// The file may have been stored again since (pruned, then
				// backed up by a release that cuts frames otherwise): read
				// its header. Damage fails there too, and says so.
				c.dropTable(r, d)
				e, err = r.openChunkEntry(d, lo, hi)
			}
		default:
			e, err = r.openChunkEntry(d, lo, hi)
		}
		if err != nil {
			return nil, err
		}
		c.keepTable(r, d, e.layout)
		c.bytes.Add(e.held)
		c.lru.Add(d, e)
		c.trim()
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*chunkEntry), nil
}

// prefetch loads d in the background unless it is cached or the readahead
// budget is spent: readahead never makes a caller wait.
func (c *Cache) prefetch(r *Repo, d Digest) {
	if e, ok := c.lru.Peek(d); ok && e.readyRange(0, len(e.ready)-1) {
		return
	}
	select {
	case c.ahead <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-c.ahead }()
		// Errors surface to the reader that needs the chunk.
		if e, err := c.entry(r, d, 0, -1); err == nil {
			_ = e.load(c, r, d, 0, len(e.ready)-1)
		}
	}()
}

// DiskReader reads one disk (or file) version of a repository through the
// shared cache. It implements io.ReaderAt and is safe for concurrent use.
type DiskReader struct {
	repo  *Repo
	idx   *Index
	cache *Cache
	name  string

	mu      sync.Mutex
	streams [4]stream
	next    int
}

// stream is one sequential reader seen by a DiskReader: the chunk it is
// expected to read next and how far ahead chunks were already requested.
type stream struct {
	next, ahead int64
	hits        int
}

// NewDiskReader returns a reader of idx. name is used in error messages
// ("disk web01 of point …").
func NewDiskReader(r *Repo, idx *Index, cache *Cache, name string) *DiskReader {
	dr := &DiskReader{repo: r, idx: idx, cache: cache, name: name}
	for i := range dr.streams {
		dr.streams[i].next = -100
	}
	return dr
}

// OpenDisk opens the disk whose index is d.
func (r *Repo) OpenDisk(d Digest, cache *Cache, name string) (*DiskReader, error) {
	idx, err := r.LoadIndex(d)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if cache != nil {
		cache.LoadFrameIndex(r, d, idx)
	}
	return NewDiskReader(r, idx, cache, name), nil
}

// Size is the disk's size in bytes.
func (dr *DiskReader) Size() int64 { return dr.idx.Size }

// Index is the disk's chunk index.
func (dr *DiskReader) Index() *Index { return dr.idx }

// ReadAt reads len(p) bytes at off. Zero chunks read as zeros without I/O;
// a damaged or missing chunk is an error, never wrong bytes.
func (dr *DiskReader) ReadAt(p []byte, off int64) (int, error) {
	n, eof, err := dr.spans(off, len(p), false, func(k int, parts [][]byte, lo, hi int64) {
		dst := p[lo-off : hi-off]
		if parts == nil {
			clear(dst)
			return
		}
		for _, b := range parts {
			dst = dst[copy(dst, b):]
		}
	})
	if err != nil {
		return 0, err
	}
	return n, eof
}

// spans calls fn with the bytes of each chunk that [off, off+n) touches:
// the k-th chunk's part, covering disk offsets [lo, hi), as slices of the
// cache's own frames, or nil for a zero chunk. It clamps n at the end of the disk (eof is
// then io.EOF), notes the access for readahead, and fetches several chunks
// in parallel. fn may run concurrently for different k.
// With cachedOnly it does no I/O: a chunk whose bytes are not all decoded in
// the cache ends it with errNotCached, before fn has seen any chunk.
func (dr *DiskReader) spans(off int64, n int, cachedOnly bool, fn func(k int, parts [][]byte, lo, hi int64)) (int, error, error) {
	if off < 0 {
		return 0, nil, fmt.Errorf("%s: negative offset %d", dr.name, off)
	}
	if off >= dr.idx.Size {
		return 0, io.EOF, nil
	}
	var eof error
	if rest := dr.idx.Size - off; int64(n) > rest {
		n, eof = int(rest), io.EOF
	}
	if n == 0 {
		return 0, eof, nil
	}
	cs := int64(dr.idx.ChunkSize)
	first, last := off/cs, (off+int64(n)-1)/cs
	if cachedOnly {
		return dr.cachedSpans(off, n, eof, first, last, fn)
	}
	dr.readahead(first, last)
	one := func(i int64) error {
		lo, hi := max(off, i*cs), min(off+int64(n), (i+1)*cs)
		d := dr.idx.Chunks[i]
		if d.IsZero() {
			fn(int(i-first), nil, lo, hi)
			return nil
		}
		e, err := dr.cache.entry(dr.repo, d, int(lo-i*cs), int(hi-i*cs))
		if err != nil {
			return fmt.Errorf("%s: offset %d: %w", dr.name, i*cs, err)
		}
		parts, err := dr.cache.parts(dr.repo, d, e, int(lo-i*cs), int(hi-i*cs))
		if err != nil {
			return fmt.Errorf("%s: offset %d: %w", dr.name, i*cs, err)
		}
		fn(int(i-first), parts, lo, hi)
		return nil
	}
	if first == last { // most reads: no goroutine
		if err := one(first); err != nil {
			return 0, nil, err
		}
		return n, eof, nil
	}
	var g errgroup.Group
	for i := first; i <= last; i++ {
		g.Go(func() error { return one(i) })
	}
	if err := g.Wait(); err != nil {
		return 0, nil, err
	}
	return n, eof, nil
}

// errNotCached ends a cachedOnly spans that would have to read.
var errNotCached = errors.New("not cached")

// cachedSpans is spans without I/O: every chunk of [off, off+n) is a zero
// chunk or has the frames it needs decoded in the cache, or nothing happens.
func (dr *DiskReader) cachedSpans(off int64, n int, eof error, first, last int64, fn func(k int, parts [][]byte, lo, hi int64)) (int, error, error) {
	cs := int64(dr.idx.ChunkSize)
	type span struct {
		parts  [][]byte
		lo, hi int64
	}
	var one [1]span
	spans := one[:0]
	for i := first; i <= last; i++ {
		lo, hi := max(off, i*cs), min(off+int64(n), (i+1)*cs)
		d := dr.idx.Chunks[i]
		if d.IsZero() {
			spans = append(spans, span{nil, lo, hi})
			continue
		}
		e, ok := dr.cache.lru.Get(d)
		if !ok || hi-i*cs > int64(e.layout.n) {
			return 0, nil, errNotCached
		}
		a, b := int(lo-i*cs), int(hi-i*cs)
		if f, l := e.framesOf(a, b); !e.readyRange(f, l) {
			return 0, nil, errNotCached
		}
		spans = append(spans, span{e.slices(a, b), lo, hi})
	}
	dr.cache.hits.Add(int64(len(spans)))
	dr.readahead(first, last)
	for k, sp := range spans {
		fn(k, sp.parts, sp.lo, sp.hi)
	}
	return n, eof, nil
}

// readahead notes an access to chunks [first, last] and, when it continues a
// sequential stream, starts fetching the chunks after it.
func (dr *DiskReader) readahead(first, last int64) {
	window := int64(dr.cache.window)
	if window == 0 {
		return
	}
	dr.mu.Lock()
	var s *stream
	for i := range dr.streams {
		// Clients keep several reads in flight, so a sequential stream's
		// requests arrive slightly out of order.
		if t := &dr.streams[i]; first >= t.next-2 && first <= t.next+2 {
			s = t
			break
		}
	}
	if s == nil {
		s = &dr.streams[dr.next]
		dr.next = (dr.next + 1) % len(dr.streams)
		*s = stream{next: last + 1, ahead: last + 1}
		dr.mu.Unlock()
		return
	}
	s.hits++
	s.next = max(s.next, last+1)
	// A stream is a stream from its second continuing read: a random reader's
	// read lands in or next to the chunk of one of the last few reads about
	// once in a hundred reads on a disk of a few thousand chunks, and each
	// such landing fetched 2 whole chunks, 128 times the 4 KiB it asked for
	// (a third of what cold 4 KiB reads read from storage once frames of
	// raw chunks were 4 KiB). Two landings in a row are rare.
	if s.hits < 2 {
		dr.mu.Unlock()
		return
	}
	// The window doubles with every read that continues the stream, from 2
	// chunks.
	window = min(window, int64(1)<<min(s.hits-1, 30))
	from, to := max(s.ahead, last+1), min(last+window, int64(len(dr.idx.Chunks))-1)
	if to >= from {
		s.ahead = to + 1
	}
	dr.mu.Unlock()
	for i := from; i <= to; i++ {
		if d := dr.idx.Chunks[i]; !d.IsZero() {
			dr.cache.prefetch(dr.repo, d)
		}
	}
}

// ReadFull reads a whole small file (config file) of a restore point.
func (r *Repo) ReadFile(f ConfigFile, cache *Cache) ([]byte, error) {
	if f.Inline != nil || f.Size == 0 {
		return f.Inline, nil
	}
	dr, err := r.OpenDisk(f.Index, cache, "file "+f.Name)
	if err != nil {
		return nil, err
	}
	if dr.Size() != f.Size {
		return nil, fmt.Errorf("file %s: index size %d, manifest says %d: %w", f.Name, dr.Size(), f.Size, ErrCorrupt)
	}
	b := make([]byte, f.Size)
	if _, err := dr.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

// zeros backs the zero chunks ReadSlices lends: never written, so it stays
// the kernel's shared zero pages.
var zeros [1 << 20]byte

// ReadSlices returns the n bytes at off as slices of the cache's own frame
// buffers (and of a shared zero buffer for zero chunks), without copying.
// The slices are read-only and stay valid; the cache drops its reference on
// eviction and the garbage collector frees them when the caller is done.
// Past the end it returns fewer bytes and io.EOF, like ReadAt.
func (dr *DiskReader) ReadSlices(off int64, n int) ([][]byte, int, error) {
	return dr.readSlices(off, n, false)
}

// CachedSlices is ReadSlices when it needs no I/O: when every byte asked
// for is decoded in the cache (or in a zero chunk), it returns them and ok;
// otherwise it does nothing and returns ok false. The NFS server answers
// such a READ on the goroutine that read the call (nfsd.CachedSliceReader).
func (dr *DiskReader) CachedSlices(off int64, n int) ([][]byte, int, bool, error) {
	if parts, got, ok, eof := dr.cachedInChunk(off, n); ok {
		return parts, got, true, eof
	}
	parts, got, err := dr.readSlices(off, n, true)
	if errors.Is(err, errNotCached) {
		return nil, 0, false, nil
	}
	return parts, got, true, err
}

// cachedInChunk is CachedSlices for the usual small read: bytes inside one
// chunk, decoded in the cache (or a zero chunk), lent with one allocation and
// no closure. ok false leaves the read, whatever it is, to readSlices.
func (dr *DiskReader) cachedInChunk(off int64, n int) ([][]byte, int, bool, error) {
	if off < 0 || n <= 0 || off >= dr.idx.Size {
		return nil, 0, false, nil
	}
	var eof error
	if rest := dr.idx.Size - off; int64(n) > rest {
		n, eof = int(rest), io.EOF
	}
	cs := int64(dr.idx.ChunkSize)
	i := off / cs
	if (off+int64(n)-1)/cs != i {
		return nil, 0, false, nil
	}
	a := int(off - i*cs)
	var parts [][]byte
	if d := dr.idx.Chunks[i]; d.IsZero() {
		if n > len(zeros) {
			return nil, 0, false, nil
		}
		parts = [][]byte{zeros[:n:n]}
	} else {
		e, ok := dr.cache.lru.Get(d)
		if !ok || a+n > e.layout.n {
			return nil, 0, false, nil
		}
		if f, l := e.framesOf(a, a+n); !e.readyRange(f, l) {
			return nil, 0, false, nil
		}
		parts = e.slices(a, a+n)
	}
	dr.cache.hits.Add(1)
	dr.readahead(i, i)
	return parts, n, true, eof
}

func (dr *DiskReader) readSlices(off int64, n int, cachedOnly bool) ([][]byte, int, error) {
	cs := int64(dr.idx.ChunkSize)
	per := make([][][]byte, (max(off, 0)+int64(n)-1)/cs-max(off, 0)/cs+1)
	n, eof, err := dr.spans(off, n, cachedOnly, func(k int, parts [][]byte, lo, hi int64) {
		switch {
		case parts != nil:
			per[k] = parts
		case hi-lo <= int64(len(zeros)):
			per[k] = [][]byte{zeros[: hi-lo : hi-lo]}
		default: // a zero chunk larger than the shared buffer
			per[k] = [][]byte{make([]byte, hi-lo)}
		}
	})
	if err != nil {
		return nil, 0, err
	}
	if n == 0 {
		return nil, 0, eof
	}
	per = per[:(off+int64(n)-1)/cs-off/cs+1]
	if len(per) == 1 {
		return per[0], n, eof
	}
	var out [][]byte
	for _, parts := range per {
		out = append(out, parts...)
	}
	return out, n, eof
}
