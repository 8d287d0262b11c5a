package overlay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5"

	"github.com/rekindle/rekindle/internal/durable"
)

const (
	bitmapMagic     = "RKOVBM01"
	bitmapHeaderLen = 16
)

// content is the bytes of one file, shared by all its handles and keyed by
// file id, so a rename never disturbs an open file. Its lock is per file:
// reads and writes share it (writes to different blocks run together; those
// touching a common block take turns in arrival order, see blockLocks);
// truncation, appends, growing a file whose data file has a record region
// and writing a record hold it alone. Under the shared lock, stateMu guards
// size, bits and the block states. Lock order: content.mu, then
// Overlay.mu, then stateMu, then syncMu.
type content struct {
	o       *Overlay
	id      uint64
	refs    int // guarded by Overlay.mu
	removed atomic.Bool

	mu        sync.RWMutex
	upper     bool   // a node exists: the data file is authoritative
	origin    string // base path read through unmarked blocks
	baseLimit int64
	baseSize  int64 // without a node: the base file's size
	loaded    bool
	data      durable.File
	stateMu   sync.Mutex // the fields up to blocks, while mu is held shared
	size      int64
	bits      []byte // marked blocks below the base limit; nil without origin
	// pending are the blocks marked since the last record, each with the
	// CRC-32C of its content as written: the next sync names them in a
	// record (see region.go).
	pending pendingSet
	// unconf are the blocks named by a record of this epoch that no
	// durable record confirms yet, by record. Such a block counts at the
	// next open only if its content still matches the record's CRC, so a
	// write to it waits until it is confirmed (confirm).
	unconf unconfSet
	// durSeq is the last record known durable (a data sync that started
	// after it was written returned), durConf the last record a durable
	// record confirms; both count in epoch recEpoch.
	durSeq, durConf, recEpoch uint64
	// rewriting counts writes in flight into pending blocks (their CRC
	// is being redone); a sync taking the pending blocks waits for none
	// (rewritten, on stateMu).
	rewriting int
	rewritten *sync.Cond
	blocks    blockLocks

	// The bitmap file and the record region, guarded by mu held
	// exclusively (read under it shared). mapVer is the bitmap file's
	// version on disk (0: none), hdr what its version 2 header says;
	// durable holds the bits in the bitmap file. Records go at
	// hdr.region+recOff, recSeq is the last one written in this epoch and
	// lastConf the record it confirmed: those three also change under mu
	// held shared with recMu, which orders the syncs' records.
	mapVer   int
	hdr      bitmapHeader
	recMu    sync.Mutex
	recOff   int64
	recSeq   uint64
	lastConf uint64
	mapf     durable.File
	durable  []byte
	// regionSize is the file's size while its data file holds a record
	// region (the data file is longer), -1 without one, -2 while not
	// loaded: Stat reads it without the content's lock.
	regionSize atomic.Int64

	baseMu sync.Mutex
	base   billy.File

	// syncErr is the first failed data sync's error, returned by every
	// sync after it: a failed fdatasync may have dropped the bytes it was
	// to write (Linux marks them clean), so no later sync can promise
	// them. synced is the value of writes when the last successful sync
	// started. Both guarded by syncMu.
	syncMu  sync.Mutex
	syncErr error
	// writes counts changes of the data file's bytes or size (from 1, so
	// the first sync of a content always syncs: an earlier content of the
	// same file may have left bytes unsynced). A sync that finds it equal
	// to synced and no blocks to name has nothing to make durable: a
	// second COMMIT costs no fdatasync.
	writes atomic.Uint64
	synced uint64
	// writing counts data writes in flight and wrote those started, so
	// keepMtime can tell whether one may have moved the mtime.
	writing, wrote atomic.Int64
}

// acquireLocked returns the content of id, counting a reference. n is the
// node when there is one; otherwise basePath and bi name the base file.
func (o *Overlay) acquireLocked(id uint64, n *node, basePath string, bi os.FileInfo) *content {
	c := o.contents[id]
	if c == nil {
		c = &content{o: o, id: id}
		c.writes.Store(1)
		if _, ok := o.synced[id]; ok {
			// The last content of the file synced all it wrote.
			delete(o.synced, id)
			c.synced = 1
		}
		c.regionSize.Store(-2)
		if n != nil {
			c.upper, c.origin, c.baseLimit = true, n.Origin, n.BaseLimit
		} else {
			c.origin, c.baseSize = basePath, bi.Size()
		}
		o.contents[id] = c
	}
	c.refs++
	return c
}

// release drops a reference; an unreferenced content stays cached, with its
// descriptors open, unless its file is gone or the cache is full.
func (o *Overlay) release(c *content) {
	o.mu.Lock()
	c.refs--
	evict := c.refs == 0 && (c.removed.Load() || len(o.contents) > maxCachedContents)
	if evict && o.contents[c.id] == c {
		delete(o.contents, c.id)
		if c.upper && !c.removed.Load() && c.clean() {
			o.synced[c.id] = struct{}{}
		}
	}
	o.mu.Unlock()
	if evict {
		c.closeFiles()
	}
}

// clean reports whether every write made through c was synced, its bits
// included (in a record or the bitmap). o.mu is held and c unreferenced,
// so no write or sync runs.
func (c *content) clean() bool {
	c.stateMu.Lock()
	pending := c.pending.count()
	c.stateMu.Unlock()
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	return pending == 0 && c.syncErr == nil && c.synced == c.writes.Load()
}

func (c *content) closeFiles() error {
	var errs []error
	c.mu.Lock()
	// Bits not in the bitmap file yet live only here and in the region's
	// records: write them, after their data, before the descriptors go.
	if c.loaded && c.needsCheckpoint() {
		errs = append(errs, c.checkpoint(false))
	}
	if c.data != nil {
		errs = append(errs, c.data.Close())
		c.data, c.loaded = nil, false
	}
	if c.mapf != nil {
		errs = append(errs, c.mapf.Close())
		c.mapf = nil
	}
	c.regionSize.Store(-2)
	c.mu.Unlock()
	c.baseMu.Lock()
	if c.base != nil {
		errs = append(errs, c.base.Close())
		c.base = nil
	}
	c.baseMu.Unlock()
	return errors.Join(errs...)
}

// needsCheckpoint reports whether bits live only in memory or in records.
// mu is held.
func (c *content) needsCheckpoint() bool {
	if c.bits == nil || c.removed.Load() {
		return false
	}
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.pending.count() > 0 || c.recOff > 0
}

// lock takes the content exclusively, loading its upper state first.
func (c *content) lock() error {
	c.mu.Lock()
	if c.upper && !c.loaded {
		if err := c.load(); err != nil {
			c.mu.Unlock()
			return err
		}
	}
	return nil
}

// rlock takes the content shared, loading its upper state first.
func (c *content) rlock() error {
	for {
		c.mu.RLock()
		if !c.upper || c.loaded {
			return nil
		}
		c.mu.RUnlock()
		if err := c.lock(); err != nil {
			return err
		}
		c.mu.Unlock()
	}
}

// load opens the data file, creating it if nothing was written yet, reads
// the bitmap and replays the record region. c.mu is held exclusively.
func (c *content) load() error {
	if c.o.closed.Load() {
		return os.ErrClosed
	}
	if c.removed.Load() {
		return os.ErrNotExist
	}
	o := c.o
	name := o.dataPath(c.id)
	if c.origin == "" {
		// A spare for this id may be being made: wait until it is
		// counted among the names the next folder sync covers.
		o.waitSpare(c.id)
	}
	f, err := o.fs.OpenFile(name, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = c.createData(name)
	}
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	var bits []byte
	ver, hdr := 0, bitmapHeader{}
	if c.origin != "" && c.baseLimit > 0 {
		nblocks := (c.baseLimit + o.bs - 1) / o.bs
		bits = make([]byte, (nblocks+7)/8)
		if ver, hdr, err = c.readBitmap(bits); err != nil {
			f.Close()
			return err
		}
	}
	size := fi.Size()
	if hdr.region > 0 {
		size = hdr.size
	}
	c.data, c.bits = f, bits
	c.mapVer, c.hdr = ver, hdr
	c.durable = bytes.Clone(bits)
	c.recOff, c.recSeq, c.lastConf = 0, 0, 0
	c.stateMu.Lock()
	c.size = size
	c.pending = pendingSet{bits: make([]byte, len(bits))}
	c.unconf = unconfSet{bits: make([]byte, len(bits))}
	c.durSeq, c.durConf, c.recEpoch = 0, 0, hdr.epoch
	if c.rewritten == nil {
		c.rewritten = sync.NewCond(&c.stateMu)
	}
	c.stateMu.Unlock()
	if hdr.region > 0 && fi.Size() > hdr.region {
		// Records (or what a crash left of them): replay them, then fold
		// them into the bitmap so the region starts empty.
		err := c.replayRegion(fi.Size())
		if err != nil {
			err = fmt.Errorf("%s: %w", name, err)
		} else {
			err = c.checkpoint(false)
		}
		if err != nil {
			f.Close()
			c.data = nil
			return err
		}
	}
	if c.hdr.region > 0 {
		c.regionSize.Store(size)
	} else {
		c.regionSize.Store(-1)
	}
	c.loaded = true
	return nil
}

// replayRegion sets the bits of the blocks the region's records name: all
// those of a record a durable record confirms, and of the others (their
// data sync may not have finished before a crash) those whose content
// matches the record's CRC. Any other block keeps the base's bytes: its
// write was never acknowledged. mu is held exclusively.
func (c *content) replayRegion(dataSize int64) error {
	n := min(dataSize-c.hdr.region, maxRegionRead)
	b := make([]byte, n)
	m, err := c.data.ReadAt(b, c.hdr.region)
	if err != nil && err != io.EOF {
		return err
	}
	nblocks := (c.baseLimit + c.o.bs - 1) / c.o.bs
	recs, err := decodeRecords(b[:m], c.hdr.epoch, nblocks)
	if err != nil {
		return err
	}
	var confirmed uint64
	for _, r := range recs {
		confirmed = max(confirmed, r.confirmed)
	}
	bp := c.o.blocks.Get().(*[]byte)
	defer c.o.blocks.Put(bp)
	for _, r := range recs {
		for _, s := range r.blocks {
			if r.seq > confirmed {
				bStart, bEnd := s.block*c.o.bs, min((s.block+1)*c.o.bs, c.baseLimit)
				buf := (*bp)[:bEnd-bStart]
				if err := c.readData(buf, bStart); err != nil {
					return err
				}
				if crc32.Checksum(buf, castagnoli) != s.sum {
					continue
				}
			}
			c.bits[s.block>>3] |= 1 << (s.block & 7)
		}
	}
	return nil
}

// createData makes the data file of a node that has none yet: a hole as
// long as the file, carrying the node's mtime. It appears whole (rename) so
// Stat never sees it half made.
func (c *content) createData(name string) (durable.File, error) {
	o := c.o
	size := int64(0)
	if c.origin != "" {
		size = c.baseLimit
	}
	mtime := time.Now()
	o.mu.Lock()
	if p, ok := o.byID[c.id]; ok {
		mtime = time.Unix(0, o.st.nodes[p].MTime)
	}
	o.mu.Unlock()
	tmp := name + ".tmp"
	f, err := o.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(size)
	if err == nil && o.sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = o.fs.Chtimes(tmp, mtime, mtime)
	}
	if err == nil {
		err = o.fs.Rename(tmp, name)
	}
	if err != nil {
		o.fs.Remove(tmp)
		return nil, err
	}
	if c.origin == "" {
		// A node created in the session: the next ones get spares,
		// named durable by the same folder sync as this one.
		o.spareMu.Lock()
		ids := o.reserveSparesLocked(spareBatch)
		o.spareMu.Unlock()
		o.makeSpares(ids)
	}
	if err := o.newName(); err != nil {
		return nil, err
	}
	return o.fs.OpenFile(name, os.O_RDWR, 0)
}

// readBitmap fills bits from the bitmap file and returns its version (0
// for none) and, for version 2, its header; a missing file or missing
// bytes are unmarked blocks.
func (c *content) readBitmap(bits []byte) (int, bitmapHeader, error) {
	name := c.o.mapPath(c.id)
	b, err := durable.ReadFile(c.o.fs, name)
	if errors.Is(err, os.ErrNotExist) {
		return 0, bitmapHeader{}, nil
	}
	if err != nil {
		return 0, bitmapHeader{}, err
	}
	if len(b) >= 8 && string(b[:8]) == bitmapMagic2 {
		// Version 2 is only ever made whole (synced before its rename),
		// and its header rewritten in place, within one sector.
		h, err := decodeBitmapHeader(b, c.o.bs)
		if err != nil {
			return 0, h, fmt.Errorf("%s: %w", name, err)
		}
		copy(bits, b[bitmapHeaderLen2:])
		return 2, h, nil
	}
	// Version 1, as earlier versions wrote it in place.
	if !bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) {
		// Made, and its name made durable by another file's sync, but
		// its bytes never synced: no bit was ever durable.
		return 1, bitmapHeader{}, nil
	}
	if len(b) >= bitmapHeaderLen && !bytes.ContainsFunc(b[:bitmapHeaderLen], func(r rune) bool { return r != 0 }) {
		// Bits whose header page a crash lost (the file's pages reach the
		// disk in any order): a bit was written only after the data it
		// marks was synced, so they are good, at this overlay's block
		// size (it made the file).
		copy(bits, b[bitmapHeaderLen:])
		return 1, bitmapHeader{}, nil
	}
	if len(b) < bitmapHeaderLen || string(b[:8]) != bitmapMagic {
		return 0, bitmapHeader{}, fmt.Errorf("%s: %w: bad bitmap header", name, ErrCorruptMeta)
	}
	if bs := binary.LittleEndian.Uint32(b[8:12]); int64(bs) != c.o.bs {
		return 0, bitmapHeader{}, fmt.Errorf("%s: %w: bitmap block size %d, overlay uses %d", name, ErrCorruptMeta, bs, c.o.bs)
	}
	copy(bits, b[bitmapHeaderLen:])
	return 1, bitmapHeader{}, nil
}

// regionSizeOf returns the size of file id while its data file holds a
// record region (and is longer than the file), read from its bitmap
// file's header; ok is false without a region.
func (o *Overlay) regionSizeOf(id uint64) (size int64, ok bool) {
	f, err := o.fs.OpenFile(o.mapPath(id), os.O_RDONLY, 0)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	b := make([]byte, bitmapHeaderLen2)
	if n, _ := f.ReadAt(b, 0); n < bitmapHeaderLen2 || string(b[:8]) != bitmapMagic2 {
		return 0, false
	}
	h, err := decodeBitmapHeader(b, o.bs)
	if err != nil || h.region == 0 {
		return 0, false
	}
	return h.size, true
}

func (c *content) marked(b int64) bool { return c.bits[b>>3]&(1<<(b&7)) != 0 }

// sizeNow returns the file's size.
func (c *content) sizeNow() (int64, error) {
	if err := c.rlock(); err != nil {
		return 0, err
	}
	defer c.mu.RUnlock()
	if !c.upper {
		return c.baseSize, nil
	}
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.size, nil
}

// readAt reads like io.ReaderAt.
func (c *content) readAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if err := c.rlock(); err != nil {
		return 0, err
	}
	defer c.mu.RUnlock()
	size := c.baseSize
	if c.upper {
		c.stateMu.Lock()
		size = c.size
		c.stateMu.Unlock()
	}
	if off >= size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > size-off {
		p, eof = p[:size-off], io.EOF
	}
	var err error
	if c.upper {
		err = c.readUpper(p, off)
	} else {
		err = c.readOrigin(p, off, size)
	}
	if err != nil {
		return 0, err
	}
	return len(p), eof
}

// readUpper fills p from the data file for marked blocks and everything at
// or beyond the base limit, and from the origin for the rest.
func (c *content) readUpper(p []byte, off int64) error {
	bs := c.o.bs
	end := off + int64(len(p))
	for x := off; x < end; {
		if c.bits == nil || x >= c.baseLimit {
			return c.readData(p[x-off:], x)
		}
		b := x / bs
		c.stateMu.Lock()
		m := c.marked(b)
		run := (b + 1) * bs
		for run < end && run < c.baseLimit && c.marked(run/bs) == m {
			run += bs
		}
		c.stateMu.Unlock()
		run = min(run, end)
		if !m {
			run = min(run, c.baseLimit)
		}
		seg := p[x-off : run-off]
		var err error
		if m {
			err = c.readData(seg, x)
		} else {
			err = c.readOrigin(seg, x, c.baseLimit)
		}
		if err != nil {
			return err
		}
		x = run
	}
	return nil
}

func (c *content) readData(p []byte, off int64) error {
	n, err := c.data.ReadAt(p, off)
	if err != nil && err != io.EOF {
		return err
	}
	clear(p[n:])
	return nil
}

// readOrigin fills p with the origin's bytes at off; those at or beyond
// limit, or past the origin's end, are zeros.
func (c *content) readOrigin(p []byte, off, limit int64) error {
	n := 0
	if off < limit {
		n = int(min(int64(len(p)), limit-off))
	}
	if n > 0 {
		bf, err := c.baseFile()
		if err != nil {
			return err
		}
		m, err := bf.ReadAt(p[:n], off)
		if err != nil && err != io.EOF {
			return fmt.Errorf("base %s: %w", c.origin, err)
		}
		clear(p[m:n])
	}
	clear(p[n:])
	return nil
}

func (c *content) baseFile() (billy.File, error) {
	c.baseMu.Lock()
	defer c.baseMu.Unlock()
	if c.base == nil {
		f, err := c.o.base.Open(c.origin)
		if err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
		c.base = f
	}
	return c.base, nil
}

// allocateMin is the smallest write that reserves its range of the data
// file (durable.Allocator) before writing into holes. Measured on ext4, a
// 1 MiB write into a hole costs 2.4 times the CPU of one into the reserved
// range (including the fallocate); at 64 KiB they are even, and at 4 KiB the
// fallocate costs three times the write.
const allocateMin = 128 << 10

// writeAt writes p at off (at the end with appendMode) and returns the
// offset used. Unmarked blocks below the base limit that p covers only in
// part are first filled from the origin, so a marked block is whole.
func (c *content) writeAt(p []byte, off int64, appendMode bool) (int64, error) {
	// An append needs the size to stay put until it has written, and a
	// write growing a file whose data file holds records first folds
	// them into the bitmap (the region lies past the end): both take the
	// file alone. Other writes share it, with the blocks they touch.
	excl := appendMode
	for {
		lock, unlock := c.rlock, c.mu.RUnlock
		if excl {
			lock, unlock = c.lock, c.mu.Unlock
		}
		if err := lock(); err != nil {
			return 0, err
		}
		if !c.upper {
			unlock()
			return 0, syscall.EBADF
		}
		at := off
		if appendMode {
			at = c.size
		}
		if at < 0 {
			unlock()
			return 0, syscall.EINVAL
		}
		if len(p) == 0 { // like pwrite(2): no bytes, no change of size
			unlock()
			return at, nil
		}
		if c.hdr.region > 0 {
			c.stateMu.Lock()
			grows := at+int64(len(p)) > c.size
			c.stateMu.Unlock()
			if grows && !excl {
				unlock()
				excl = true
				continue
			}
			if grows {
				if err := c.checkpoint(true); err != nil {
					unlock()
					return 0, err
				}
			}
		}
		ep, wait, err := c.write(p, at)
		unlock()
		if err != nil {
			return 0, err
		}
		if wait > 0 {
			if err := c.confirm(ep, wait); err != nil {
				return 0, err
			}
			continue
		}
		c.o.bytesWritten.Add(int64(len(p)))
		if c.o.sync {
			if err := c.sync(); err != nil {
				return 0, err
			}
		}
		return at, nil
	}
}

// Block states, as write finds them.
const (
	blockNew     = iota // unmarked: filled (if written in part) and marked
	blockPending        // marked, not in a record yet: its CRC is redone
	blockSettled        // in the bitmap file or confirmed: written in place
)

// write writes p at off under the content's lock (shared or exclusive),
// marking the blocks it redirects as pending with their CRCs. If a block
// it touches is named by a record not confirmed yet, it writes nothing and
// returns that record (and its epoch) to wait for.
func (c *content) write(p []byte, off int64) (epoch, wait uint64, err error) {
	bs := c.o.bs
	end := off + int64(len(p))
	c.blocks.lock(off/bs, (end-1)/bs)
	defer c.blocks.unlock(off/bs, (end-1)/bs)
	var first, last int64 = 0, -1 // blocks to mark
	if c.bits != nil && off < c.baseLimit {
		first, last = off/bs, (min(end, c.baseLimit)-1)/bs
	}
	var one [2]uint32
	kinds, sums := one[:1], one[1:]
	if n := last - first + 1; n > 1 {
		kinds, sums = make([]uint32, n), make([]uint32, n)
	} else if n == 0 {
		kinds, sums = nil, nil
	}
	// Whether p may land in holes of the data file: unmarked blocks, or
	// bytes past the base limit (not tracked by the bitmap).
	fresh := c.bits == nil || end > c.baseLimit
	removed := c.removed.Load()
	rewrites := 0
	c.stateMu.Lock()
	epoch = c.recEpoch
	for b := first; b <= last; b++ {
		k := uint32(blockSettled)
		if !c.marked(b) {
			k = blockNew
			fresh = true
		} else if c.pending.has(b) {
			k = blockPending
			rewrites++
		} else if s, ok := c.unconf.seqOf(b); ok && !removed {
			wait = max(wait, s)
		}
		kinds[b-first] = k
	}
	if wait > 0 {
		c.stateMu.Unlock()
		return epoch, wait, nil
	}
	if rewrites > 0 {
		// A sync taking the pending blocks now would name them with the
		// CRC of what they held before this write: it waits.
		c.rewriting += rewrites
		defer func() {
			c.stateMu.Lock()
			if c.rewriting -= rewrites; c.rewriting == 0 {
				c.rewritten.Broadcast()
			}
			c.stateMu.Unlock()
		}()
	}
	c.stateMu.Unlock()
	filled := uint32(1 << 8) // a kind's flag: its CRC is taken
	for b := first; b <= last; b++ {
		bStart, bEnd := b*bs, min((b+1)*bs, c.baseLimit)
		if kinds[b-first] != blockNew || (off <= bStart && end >= bEnd) {
			continue
		}
		if sums[b-first], err = c.fillBlock(p, off, bStart, bEnd); err != nil {
			return epoch, 0, err
		}
		kinds[b-first] |= filled
	}
	if fresh && len(p) >= allocateMin {
		if a, ok := c.data.(durable.Allocator); ok {
			// Only the bytes p covers: a write never allocates more of the
			// data file than it fills, and what reads the origin is the
			// bitmap, not the data file's holes. On failure the write
			// allocates as it would have.
			_ = a.Allocate(off, int64(len(p)))
		}
	}
	c.wrote.Add(1)
	c.writing.Add(1)
	_, err = c.data.WriteAt(p, off)
	c.writing.Add(-1)
	if err != nil {
		return epoch, 0, err
	}
	c.writes.Add(1)
	var bp *[]byte
	for b := first; b <= last; b++ {
		k := kinds[b-first]
		if k == blockSettled || k&filled != 0 {
			continue
		}
		bStart, bEnd := b*bs, min((b+1)*bs, c.baseLimit)
		if off <= bStart && end >= bEnd {
			sums[b-first] = crc32.Checksum(p[bStart-off:bEnd-off], castagnoli)
			continue
		}
		// A pending block written in part: its CRC is of what it holds now.
		if bp == nil {
			bp = c.o.blocks.Get().(*[]byte)
			defer c.o.blocks.Put(bp)
		}
		buf := (*bp)[:bEnd-bStart]
		if err := c.readData(buf, bStart); err != nil {
			return epoch, 0, err
		}
		sums[b-first] = crc32.Checksum(buf, castagnoli)
	}
	var newBits int64
	c.stateMu.Lock()
	for b := first; b <= last; b++ {
		k := kinds[b-first] &^ filled
		if k == blockSettled {
			continue
		}
		if k == blockNew {
			c.bits[b>>3] |= 1 << (b & 7)
			newBits++
		}
		if !removed {
			c.pending.add(b, sums[b-first])
		}
	}
	c.pending.compactIfLong()
	c.size = max(c.size, end)
	c.stateMu.Unlock()
	c.o.blocksRedirected.Add(newBits)
	return epoch, 0, nil
}

// confirm returns once record seq of epoch ep is confirmed by a durable
// record (or folded into the bitmap by a checkpoint): its data sync done,
// then a record written and synced after it.
func (c *content) confirm(ep, seq uint64) error {
	for {
		c.stateMu.Lock()
		done := c.recEpoch != ep || c.durConf >= seq
		durable := c.durSeq >= seq
		c.stateMu.Unlock()
		if done || c.removed.Load() {
			return nil
		}
		if err := c.syncRecord(durable); err != nil {
			return err
		}
	}
}

// blockLocks are the block ranges of one file that writes are working on:
// a write whose blocks overlap another's waits for it, so a block filled
// from the origin is never written by two writes at once, and overlapping
// writes land in the order they took their blocks.
type blockLocks struct {
	mu     sync.Mutex
	cond   *sync.Cond
	active [][2]int64
}

// lock waits until no write holds a block in [first, last], then holds them.
func (l *blockLocks) lock(first, last int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cond == nil {
		l.cond = sync.NewCond(&l.mu)
	}
	for l.busy(first, last) {
		l.cond.Wait()
	}
	l.active = append(l.active, [2]int64{first, last})
}

func (l *blockLocks) busy(first, last int64) bool {
	for _, r := range l.active {
		if r[0] <= last && first <= r[1] {
			return true
		}
	}
	return false
}

// unlock gives back blocks [first, last] that lock took.
func (l *blockLocks) unlock(first, last int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, r := range l.active {
		if r == [2]int64{first, last} {
			l.active = append(l.active[:i], l.active[i+1:]...)
			break
		}
	}
	l.cond.Broadcast()
}

// fillBlock writes block [bStart, bEnd) to the data file as the origin has
// it, overlaid with the part of p (written at off) that falls inside, and
// returns the block's CRC-32C.
func (c *content) fillBlock(p []byte, off, bStart, bEnd int64) (uint32, error) {
	bp := c.o.blocks.Get().(*[]byte)
	defer c.o.blocks.Put(bp)
	buf := (*bp)[:bEnd-bStart]
	if err := c.readOrigin(buf, bStart, c.baseLimit); err != nil {
		return 0, err
	}
	from, to := max(off, bStart), min(off+int64(len(p)), bEnd)
	if from < to {
		copy(buf[from-bStart:], p[from-off:to-off])
	}
	if _, err := c.data.WriteAt(buf, bStart); err != nil {
		return 0, err
	}
	c.o.bytesFilled.Add(bEnd - bStart - max(to-from, 0))
	return crc32.Checksum(buf, castagnoli), nil
}

// truncate sets the file's size. Shrinking below the base limit lowers it
// (in the metadata, before the data file shrinks) so that a later extension
// reads zeros, not the origin.
func (c *content) truncate(size int64) error {
	if size < 0 {
		return syscall.EINVAL
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	if !c.upper {
		return syscall.EBADF
	}
	if c.bits != nil && !c.removed.Load() {
		// The region lies past the file's end, and records' CRCs cover
		// blocks up to the base limit: fold them, and bits not in a
		// record yet, into the bitmap before either moves.
		c.stateMu.Lock()
		pending := c.pending.count() > 0
		c.stateMu.Unlock()
		if c.hdr.region > 0 || (pending && size < c.baseLimit) {
			if err := c.checkpoint(c.hdr.region > 0); err != nil {
				return err
			}
		}
	}
	if c.origin != "" && size < c.baseLimit {
		if err := c.o.setBaseLimit(c.id, size); err != nil {
			return err
		}
		c.baseLimit = size
	}
	if err := c.data.Truncate(size); err != nil {
		return err
	}
	c.writes.Add(1)
	c.stateMu.Lock()
	c.size = size
	c.stateMu.Unlock()
	if c.o.sync {
		return c.data.DataSync()
	}
	return nil
}

func (o *Overlay) setBaseLimit(id uint64, limit int64) error {
	o.mu.Lock()
	p, ok := o.byID[id]
	if !ok {
		o.mu.Unlock()
		return nil // removed while open: nothing to persist
	}
	o.markLocked(p)
	o.st.nodes[p].BaseLimit = limit
	save := o.commitLocked()
	o.mu.Unlock()
	return save()
}

// sync makes what was written durable with one fdatasync of the data
// file: blocks redirected since the last sync are first named in a record
// appended to the data file's region (see region.go), so the data and the
// record that makes it visible become durable together; then the names of
// new data and bitmap files. Concurrent syncs each fdatasync the data file
// (the kernel shares the journal commit between them, as it does for a
// server that syncs every stable write of a plain file). Records are
// written one at a time under the content's exclusive lock, so a sync
// returns once the blocks of every sync that started before it are durable:
// their record was written before its fdatasync started.
func (c *content) sync() error { return c.syncRecord(false) }

// syncRecord is sync; with force it writes a record even without new
// blocks (confirm's: it confirms the records before it).
func (c *content) syncRecord(force bool) error {
	if err := c.rlock(); err != nil {
		return err
	}
	unlock := c.mu.RUnlock
	if !c.upper {
		unlock()
		return nil
	}
	var rec, conf uint64
	if c.bits != nil {
		// Every sync passes here, so one that started after another's
		// record fdatasyncs after it was written.
		c.recMu.Lock()
		err := c.appendRecord(force)
		if errors.Is(err, errExclusive) {
			// A region to make, or a checkpoint: the file alone.
			c.recMu.Unlock()
			unlock()
			if err = c.lock(); err != nil {
				return err
			}
			unlock = c.mu.Unlock
			c.recMu.Lock()
			err = c.writeRecord(force)
		}
		rec, conf = c.recSeq, c.lastConf
		c.recMu.Unlock()
		if err != nil {
			unlock()
			return err
		}
	}
	data := c.data
	c.stateMu.Lock()
	ep := c.recEpoch
	c.stateMu.Unlock()
	c.syncMu.Lock()
	writes := c.writes.Load()
	err := c.syncErr
	idle := writes == c.synced
	c.syncMu.Unlock()
	unlock()
	if err != nil {
		return err
	}
	if idle && !c.o.names.needed() {
		return nil
	}
	if err := data.DataSync(); err != nil {
		c.failed(err)
		return err
	}
	c.settle(ep, rec, conf)
	if err := c.o.syncNames(); err != nil {
		return err
	}
	c.syncMu.Lock()
	c.synced = max(c.synced, writes)
	c.syncMu.Unlock()
	return nil
}

// errExclusive asks appendRecord's caller to take the file alone.
var errExclusive = errors.New("needs the content alone")

// failed records a failed data sync's error for every later sync.
func (c *content) failed(err error) {
	c.syncMu.Lock()
	if c.syncErr == nil {
		c.syncErr = err
	}
	c.syncMu.Unlock()
}

// settle follows a data sync that started once record rec, confirming
// record conf, was written in epoch ep: both are durable now.
func (c *content) settle(ep, rec, conf uint64) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if ep != c.recEpoch {
		return // a checkpoint came between: its bits are in the bitmap
	}
	c.durSeq = max(c.durSeq, rec)
	if conf > c.durConf {
		c.unconf.drop(conf, false)
	}
	c.durConf = max(c.durConf, conf)
}

// writeRecord appends a record naming the pending blocks (with force, also
// none) to the region, making the region first if there is none; past
// the region's size, or with more blocks than a record takes, it writes a
// checkpoint instead. mu is held exclusively.
func (c *content) writeRecord(force bool) error {
	err := c.appendRecord(force)
	if !errors.Is(err, errExclusive) {
		return err
	}
	c.stateMu.Lock()
	n := c.pending.count()
	c.stateMu.Unlock()
	if n > maxRecordBlocks || c.recOff >= checkpointAt {
		return c.checkpoint(false)
	}
	if err := c.openRegion(); err != nil {
		return err
	}
	return c.appendRecord(force)
}

// appendRecord is writeRecord where it needs mu only shared (with recMu):
// it returns errExclusive where writeRecord makes a region or a
// checkpoint.
func (c *content) appendRecord(force bool) error {
	c.stateMu.Lock()
	n := c.pending.count()
	c.stateMu.Unlock()
	if c.removed.Load() {
		// A removed file's bitmap is gone and not written.
		if n > 0 {
			c.stateMu.Lock()
			c.pending.reset()
			c.stateMu.Unlock()
		}
		return nil
	}
	if n == 0 && (!force || c.hdr.region == 0) {
		return nil
	}
	c.syncMu.Lock()
	err := c.syncErr
	c.syncMu.Unlock()
	if err != nil {
		return err
	}
	if c.hdr.region == 0 || n > maxRecordBlocks || c.recOff >= checkpointAt {
		return errExclusive
	}
	// Taking the blocks and making them the record's is one step: a
	// write into one of them from now on waits for the record's
	// confirmation, so the CRCs named stay the blocks' content.
	c.stateMu.Lock()
	for c.rewriting > 0 {
		c.rewritten.Wait()
	}
	if c.pending.count() > maxRecordBlocks {
		c.stateMu.Unlock()
		return errExclusive
	}
	r := record{epoch: c.hdr.epoch, seq: c.recSeq + 1, confirmed: c.durSeq, blocks: c.pending.take()}
	c.unconf.add(r.seq, r.blocks)
	c.stateMu.Unlock()
	b := appendRecord(nil, &r)
	if err := c.keepMtime(func() error {
		_, err := c.data.WriteAt(b, c.hdr.region+c.recOff)
		return err
	}); err != nil {
		// The blocks are pending again; the next record goes here.
		c.stateMu.Lock()
		c.unconf.drop(r.seq, true)
		for _, s := range r.blocks {
			c.pending.add(s.block, s.sum)
		}
		c.stateMu.Unlock()
		return err
	}
	c.writes.Add(1)
	c.recOff += int64(len(b))
	c.recSeq, c.lastConf = r.seq, r.confirmed
	return nil
}

// openRegion starts a record region past the file's end: the bitmap file
// (version 2) says where, with the file's size, before any record is
// written there. mu is held exclusively.
func (c *content) openRegion() error {
	c.stateMu.Lock()
	size := c.size
	c.stateMu.Unlock()
	h := bitmapHeader{
		epoch:  c.hdr.epoch + 1,
		region: max((size+regionAlign-1)/regionAlign*regionAlign, regionAlign),
		size:   size,
	}
	if err := c.writeHeader(h); err != nil {
		return err
	}
	c.hdr = h
	c.recOff, c.recSeq, c.lastConf = 0, 0, 0
	c.stateMu.Lock()
	c.recEpoch, c.durSeq, c.durConf = h.epoch, 0, 0
	c.unconf.reset()
	c.stateMu.Unlock()
	c.regionSize.Store(size)
	return nil
}

// checkpoint folds every bit into the bitmap file: the data is synced
// first (the file is held alone, so every bit marks data written), then
// the bits written and synced, then, with a region, the epoch moved on in
// the header (synced after the bits: the records stay valid until the bits
// are durable) and the records cut off. With drop, the region goes: the
// data file is cut to the file's size (synced) before the header says there
// is no region, so that no crash shows the records as the file's bytes.
// mu is held exclusively.
func (c *content) checkpoint(drop bool) error {
	if c.bits == nil {
		return nil
	}
	if c.removed.Load() {
		// Its bitmap is gone and not written; a region past the end only
		// has to go before the file grows over it.
		if drop && c.hdr.region > 0 {
			if err := c.data.Truncate(c.size); err != nil {
				return err
			}
			c.hdr.region = 0
			c.regionSize.Store(-1)
		}
		return nil
	}
	c.syncMu.Lock()
	err := c.syncErr
	c.syncMu.Unlock()
	if err != nil {
		return err
	}
	if err := c.data.DataSync(); err != nil {
		c.failed(err)
		return err
	}
	lo, hi := 0, 0
	for i := range c.bits {
		if c.bits[i] != c.durable[i] {
			if hi == 0 {
				lo = i
			}
			hi = i + 1
		}
	}
	h := c.hdr
	if lo < hi {
		if c.mapVer == 2 {
			f, err := c.bitmapFile()
			if err == nil {
				_, err = f.WriteAt(c.bits[lo:hi], int64(bitmapHeaderLen2+lo))
			}
			if err == nil {
				err = f.DataSync()
			}
			if err != nil {
				return err
			}
			copy(c.durable[lo:hi], c.bits[lo:hi])
		} else {
			copy(c.durable, c.bits)
			if err := c.writeHeader(h); err != nil {
				return err
			}
		}
	}
	if h.region > 0 {
		c.stateMu.Lock()
		size := c.size
		c.stateMu.Unlock()
		cut := h.region
		if drop {
			cut = size
		}
		if err := c.keepMtime(func() error { return c.data.Truncate(cut) }); err != nil {
			return err
		}
		c.writes.Add(1)
		if drop {
			if err := c.data.DataSync(); err != nil {
				c.failed(err)
				return err
			}
			h.region, h.size = 0, 0
		}
		h.epoch++
		if err := c.writeHeader(h); err != nil {
			return err
		}
		c.hdr = h
		if drop {
			c.regionSize.Store(-1)
		}
	}
	c.recOff, c.recSeq, c.lastConf = 0, 0, 0
	c.stateMu.Lock()
	c.pending.reset()
	c.unconf.reset()
	c.durSeq, c.durConf, c.recEpoch = 0, 0, h.epoch
	c.stateMu.Unlock()
	return c.o.syncNames()
}

// keepMtime runs change, a change of the data file that is not one of the
// file's (records, the region's cut), and sets the data file's mtime back:
// it is the file's mtime. Where a write of the file's bytes ran meanwhile
// (records are written beside writes) the mtime stays as it is, later
// than that write's. mu is held, at least shared.
func (c *content) keepMtime(change func() error) error {
	wrote := c.wrote.Load()
	quiet := c.writing.Load() == 0
	fi, err := c.data.Stat()
	if err != nil {
		return err
	}
	if err := change(); err != nil {
		return err
	}
	if !quiet || c.wrote.Load() != wrote || c.writing.Load() != 0 {
		return nil
	}
	// The zero atime leaves it as it is.
	if err := c.o.fs.Chtimes(c.o.dataPath(c.id), time.Time{}, fi.ModTime()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// writeHeader makes h the bitmap file's header, durably: in place in a
// version 2 file (the header is one sector), otherwise as a new version 2
// file holding the durable bits (written, synced, renamed into place; its
// name is durable after the next folder sync, until which the old file, or
// none, is what a crash leaves, and no record counts). mu is held
// exclusively.
func (c *content) writeHeader(h bitmapHeader) error {
	hdr := encodeBitmapHeader(c.o.bs, h)
	if c.mapVer == 2 {
		f, err := c.bitmapFile()
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(hdr, 0); err != nil {
			return err
		}
		return f.DataSync()
	}
	o := c.o
	name := o.mapPath(c.id)
	tmp := name + ".tmp"
	f, err := o.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(hdr, c.durable...))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = o.fs.Rename(tmp, name)
	}
	if err != nil {
		o.fs.Remove(tmp)
		return err
	}
	if c.mapf != nil {
		c.mapf.Close()
		c.mapf = nil
	}
	c.mapVer = 2
	return o.newName()
}

// bitmapFile returns the open version 2 bitmap file. mu is held
// exclusively.
func (c *content) bitmapFile() (durable.File, error) {
	if c.mapf == nil {
		f, err := c.o.fs.OpenFile(c.o.mapPath(c.id), os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		c.mapf = f
	}
	return c.mapf, nil
}

func (c *content) chtimes(atime, mtime time.Time) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return c.o.fs.Chtimes(c.o.dataPath(c.id), atime, mtime)
}
