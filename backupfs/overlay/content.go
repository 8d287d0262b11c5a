package overlay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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
// touching a common block take turns in arrival order, see blockLocks),
// truncation and appends hold it alone. Under the shared lock, stateMu
// guards size and bits. Lock order: content.mu, then Overlay.mu, then
// mapMu, then stateMu.
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
	stateMu   sync.Mutex // size and bits, while mu is held shared
	size      int64
	bits      []byte // marked blocks below the base limit; nil without origin
	blocks    blockLocks

	baseMu sync.Mutex
	base   billy.File

	// Syncs run together: each fdatasyncs the data file itself (the
	// kernel shares the journal commit between concurrent ones, as it does
	// for a server that syncs every stable write of a plain file), then
	// waits until the bits taken by every sync that started before it
	// reached the bitmap file, written only once their own data sync is
	// done (see sync). syncMu guards the fields below; syncCond waits on it.
	syncMu   sync.Mutex
	syncCond *sync.Cond
	// batches are the bitmap bytes taken by syncs, by sequence number
	// (nextSeq the last given out); persistedSeq is the last one written
	// and synced, with every one before it; persisting while one sync
	// writes them.
	batches      map[uint64]*bitBatch
	nextSeq      uint64
	persistedSeq uint64
	persisting   bool
	// syncErr is the first failed sync's error, returned by every sync
	// after it: a failed fdatasync may have dropped the bytes it was to
	// write (Linux marks them clean), so no later sync can promise them.
	syncErr error
	// writes counts changes of the data file's bytes or size (from 1, so
	// the first sync of a content always syncs: an earlier content of the
	// same file may have left bytes unsynced); synced is its value when
	// the last successful sync started (guarded by syncMu). A sync that
	// finds them equal, no bits to write and none being written has nothing
	// to make durable: a second COMMIT costs no fdatasync.
	writes atomic.Uint64
	synced uint64

	mapMu   sync.Mutex
	mapf    durable.File
	durable []byte // the bits known to be in the bitmap file
	// Without Options.Sync, bits set by writes reach the bitmap file only
	// in sync, after the data they mark: [dirtyLo, dirtyHi) is the range
	// of bitmap bytes with bits not written yet (empty when equal).
	dirtyLo, dirtyHi int64
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
// included. o.mu is held and c unreferenced, so no write or sync runs.
func (c *content) clean() bool {
	c.mapMu.Lock()
	defer c.mapMu.Unlock()
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	return c.dirtyLo == c.dirtyHi && c.syncErr == nil &&
		c.synced == c.writes.Load() && c.persistedSeq == c.nextSeq
}

func (c *content) closeFiles() error {
	var errs []error
	// Bits not in the bitmap file yet live only here: write them, after
	// their data, before the descriptors go.
	c.mapMu.Lock()
	dirty := c.dirtyLo < c.dirtyHi
	c.mapMu.Unlock()
	if dirty {
		errs = append(errs, c.sync())
	}
	c.mu.Lock()
	if c.data != nil {
		errs = append(errs, c.data.Close())
		c.data, c.loaded = nil, false
	}
	c.mu.Unlock()
	c.mapMu.Lock()
	if c.mapf != nil {
		errs = append(errs, c.mapf.Close())
		c.mapf = nil
	}
	c.mapMu.Unlock()
	c.baseMu.Lock()
	if c.base != nil {
		errs = append(errs, c.base.Close())
		c.base = nil
	}
	c.baseMu.Unlock()
	return errors.Join(errs...)
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

// load opens the data file, creating it if nothing was written yet, and
// reads the bitmap. c.mu is held exclusively.
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
	if c.origin != "" && c.baseLimit > 0 {
		nblocks := (c.baseLimit + o.bs - 1) / o.bs
		bits = make([]byte, (nblocks+7)/8)
		if err := c.readBitmap(bits); err != nil {
			f.Close()
			return err
		}
	}
	c.data, c.size, c.bits, c.loaded = f, fi.Size(), bits, true
	c.mapMu.Lock()
	c.durable = bytes.Clone(bits)
	c.mapMu.Unlock()
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

// readBitmap fills bits from the bitmap file; a missing file or missing
// bytes are unmarked blocks.
func (c *content) readBitmap(bits []byte) error {
	name := c.o.mapPath(c.id)
	b, err := durable.ReadFile(c.o.fs, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) {
		// Made, and its name made durable by another file's sync, but
		// its bytes never synced: no bit was ever durable.
		return nil
	}
	if len(b) >= bitmapHeaderLen && !bytes.ContainsFunc(b[:bitmapHeaderLen], func(r rune) bool { return r != 0 }) {
		// Bits whose header page a crash lost (the file's pages reach the
		// disk in any order): a bit is written only after the data it
		// marks is synced, so they are good, at this overlay's block size
		// (it made the file). The next write of bits writes the header.
		copy(bits, b[bitmapHeaderLen:])
		return nil
	}
	if len(b) < bitmapHeaderLen || string(b[:8]) != bitmapMagic {
		return fmt.Errorf("%s: %w: bad bitmap header", name, ErrCorruptMeta)
	}
	if bs := binary.LittleEndian.Uint32(b[8:12]); int64(bs) != c.o.bs {
		return fmt.Errorf("%s: %w: bitmap block size %d, overlay uses %d", name, ErrCorruptMeta, bs, c.o.bs)
	}
	copy(bits, b[bitmapHeaderLen:])
	return nil
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
	// An append needs the size to stay put until it has written: it takes
	// the file alone. Other writes share it, with the blocks they touch.
	lock, unlock := c.rlock, c.mu.RUnlock
	if appendMode {
		lock, unlock = c.lock, c.mu.Unlock
	}
	if err := lock(); err != nil {
		return 0, err
	}
	if !c.upper {
		unlock()
		return 0, syscall.EBADF
	}
	if appendMode {
		off = c.size
	}
	if off < 0 {
		unlock()
		return 0, syscall.EINVAL
	}
	if len(p) == 0 { // like pwrite(2): no bytes, no change of size
		unlock()
		return off, nil
	}
	o := c.o
	bs := o.bs
	end := off + int64(len(p))
	c.blocks.lock(off/bs, (end-1)/bs)
	var first, last int64 = 0, -1 // blocks to mark
	// Whether p may land in holes of the data file: unmarked blocks, or
	// bytes past the base limit (not tracked by the bitmap).
	fresh := c.bits == nil || end > c.baseLimit
	if c.bits != nil && off < c.baseLimit {
		first, last = off/bs, (min(end, c.baseLimit)-1)/bs
		for b := first; b <= last; b++ {
			c.stateMu.Lock()
			m := c.marked(b)
			c.stateMu.Unlock()
			if m {
				continue
			}
			fresh = true
			bStart, bEnd := b*bs, min((b+1)*bs, c.baseLimit)
			if off <= bStart && end >= bEnd {
				continue
			}
			if err := c.fillBlock(p, off, bStart, bEnd); err != nil {
				c.blocks.unlock(off/bs, (end-1)/bs)
				unlock()
				return 0, err
			}
		}
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
	if _, err := c.data.WriteAt(p, off); err != nil {
		c.blocks.unlock(off/bs, (end-1)/bs)
		unlock()
		return 0, err
	}
	c.writes.Add(1)
	var newBits int64
	var lo int64
	var snap []byte
	c.stateMu.Lock()
	for b := first; b <= last; b++ {
		if !c.marked(b) {
			c.bits[b>>3] |= 1 << (b & 7)
			newBits++
		}
	}
	if newBits > 0 && o.sync {
		lo = first >> 3
		snap = bytes.Clone(c.bits[lo : last>>3+1])
	}
	c.size = max(c.size, end)
	c.stateMu.Unlock()
	if newBits > 0 && !o.sync {
		c.mapMu.Lock()
		c.dirtyRange(first>>3, last>>3+1)
		c.mapMu.Unlock()
	}
	c.blocks.unlock(off/bs, (end-1)/bs)
	removed := c.removed.Load()
	data := c.data
	unlock()

	o.bytesWritten.Add(int64(len(p)))
	o.blocksRedirected.Add(newBits)
	// Data reaches the disk before the bit that makes it visible; the
	// bits were snapshot after their data was written, so this sync
	// covers them even if another write's sync persists them.
	if o.sync {
		if err := data.DataSync(); err != nil {
			return 0, err
		}
	}
	if snap != nil && !removed {
		if err := c.persistBits(lo, snap, true); err != nil {
			return 0, err
		}
	}
	return off, nil
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

// dirtyRange adds bitmap bytes [lo, hi) to the range sync must write.
// mapMu is held.
func (c *content) dirtyRange(lo, hi int64) {
	if c.dirtyLo == c.dirtyHi {
		c.dirtyLo, c.dirtyHi = lo, hi
		return
	}
	c.dirtyLo, c.dirtyHi = min(c.dirtyLo, lo), max(c.dirtyHi, hi)
}

// fillBlock writes block [bStart, bEnd) to the data file as the origin has
// it, overlaid with the part of p (written at off) that falls inside.
func (c *content) fillBlock(p []byte, off, bStart, bEnd int64) error {
	bp := c.o.blocks.Get().(*[]byte)
	defer c.o.blocks.Put(bp)
	buf := (*bp)[:bEnd-bStart]
	if err := c.readOrigin(buf, bStart, c.baseLimit); err != nil {
		return err
	}
	from, to := max(off, bStart), min(off+int64(len(p)), bEnd)
	if from < to {
		copy(buf[from-bStart:], p[from-off:to-off])
	}
	if _, err := c.data.WriteAt(buf, bStart); err != nil {
		return err
	}
	c.o.bytesFilled.Add(bEnd - bStart - max(to-from, 0))
	return nil
}

// persistBits ORs snap (bitmap bytes from index lo) into the bitmap file.
// Bits are only ever set, so writes landing out of order lose nothing.
func (c *content) persistBits(lo int64, snap []byte, sync bool) error {
	c.mapMu.Lock()
	defer c.mapMu.Unlock()
	if c.mapf == nil {
		f, err := c.openBitmap()
		if err != nil {
			return err
		}
		c.mapf = f
	}
	d := c.durable[lo : lo+int64(len(snap))]
	for i, v := range snap {
		d[i] |= v
	}
	if _, err := c.mapf.WriteAt(d, bitmapHeaderLen+lo); err != nil {
		return err
	}
	if sync {
		return c.mapf.DataSync()
	}
	return nil
}

// openBitmap opens the bitmap file, making it (header and no marks) first
// if needed. mapMu is held.
func (c *content) openBitmap() (durable.File, error) {
	o := c.o
	name := o.mapPath(c.id)
	hdr := make([]byte, bitmapHeaderLen)
	copy(hdr, bitmapMagic)
	binary.LittleEndian.PutUint32(hdr[8:], uint32(o.bs))
	f, err := o.fs.OpenFile(name, os.O_RDWR, 0)
	if err == nil {
		// A crash may have kept the name and lost the bytes (empty, zeros,
		// or bits without their header): write the header again; the
		// sync of the bits written next makes it durable with them.
		got := make([]byte, bitmapHeaderLen)
		if n, _ := f.ReadAt(got, 0); n < bitmapHeaderLen || !bytes.Equal(got, hdr) {
			if _, err := f.WriteAt(hdr, 0); err != nil {
				f.Close()
				return nil, err
			}
		}
		return f, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	tmp := name + ".tmp"
	f, err = o.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(hdr)
	if err == nil {
		err = f.Truncate(int64(bitmapHeaderLen + len(c.durable)))
	}
	if err == nil && o.sync {
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
		return nil, err
	}
	if err := o.newName(); err != nil {
		return nil, err
	}
	return o.fs.OpenFile(name, os.O_RDWR, 0)
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
	c.size = size
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

// bitBatch is the bitmap bytes [lo, lo+len(snap)) one sync took, to be
// written once that sync's data sync is done (ready).
type bitBatch struct {
	lo    int64
	snap  []byte
	ready bool
}

// sync makes what was written durable: the data first, then the bitmap
// bits that make it visible, then the names of new data and bitmap files.
// Concurrent syncs each fdatasync the data file and share the bitmap's
// writes and fdatasync (group commit), which never write a bit before the
// sync that took it has synced the data the bit marks. A sync returns once
// the bits of every sync that started before it are durable: a write's
// bits may have been taken by another's sync.
func (c *content) sync() error {
	if err := c.rlock(); err != nil {
		return err
	}
	upper, data := c.upper, c.data
	if !upper {
		c.mu.RUnlock()
		return nil
	}
	// The bits set so far mark data written so far: the data sync below
	// covers them. They get their number under mapMu, so numbers follow
	// the order the bits were taken in.
	c.mapMu.Lock()
	lo, hi := c.dirtyLo, c.dirtyHi
	var snap []byte
	if lo < hi {
		c.stateMu.Lock()
		snap = bytes.Clone(c.bits[lo:hi])
		c.stateMu.Unlock()
		c.dirtyLo, c.dirtyHi = 0, 0
	}
	c.syncMu.Lock()
	if c.syncCond == nil {
		c.syncCond = sync.NewCond(&c.syncMu)
		c.batches = map[uint64]*bitBatch{}
	}
	var seq uint64
	if snap != nil {
		c.nextSeq++
		seq = c.nextSeq
		c.batches[seq] = &bitBatch{lo: lo, snap: snap}
	}
	need := c.nextSeq
	writes := c.writes.Load()
	err := c.syncErr
	idle := writes == c.synced && need == c.persistedSeq
	c.syncMu.Unlock()
	c.mapMu.Unlock()
	c.mu.RUnlock()
	if err != nil {
		return err
	}
	if idle && !c.o.names.needed() {
		return nil
	}
	derr := data.DataSync()
	c.syncMu.Lock()
	if derr != nil && c.syncErr == nil {
		c.syncErr = derr
		c.syncCond.Broadcast()
	}
	if seq != 0 {
		c.batches[seq].ready = true
	}
	for c.persistedSeq < need && c.syncErr == nil {
		next := c.batches[c.persistedSeq+1]
		if c.persisting || !next.ready {
			c.syncCond.Wait()
			continue
		}
		// Write every ready batch in order, up to the first whose data
		// sync is still running (its owner writes it when done).
		c.persisting = true
		from, upto := c.persistedSeq+1, c.persistedSeq
		var todo []*bitBatch
		for b := next; b != nil && b.ready; b = c.batches[upto+1] {
			todo = append(todo, b)
			upto++
		}
		c.syncMu.Unlock()
		perr := c.persistBatches(todo)
		c.syncMu.Lock()
		c.persisting = false
		if perr != nil && c.syncErr == nil {
			c.syncErr = perr
		}
		for s := from; s <= upto; s++ {
			delete(c.batches, s)
		}
		c.persistedSeq = upto
		c.syncCond.Broadcast()
	}
	err = c.syncErr
	c.syncMu.Unlock()
	if err == nil {
		err = c.o.syncNames()
	}
	if err == nil {
		c.syncMu.Lock()
		c.synced = max(c.synced, writes)
		c.syncMu.Unlock()
	}
	return err
}

// persistBatches writes the bits of batches whose data is synced to the
// bitmap file and syncs it: only bits written here need syncing, so a
// rewrite of redirected blocks costs one fdatasync, as on a plain file. A
// removed file's bitmap is gone and not written.
func (c *content) persistBatches(todo []*bitBatch) error {
	if c.removed.Load() {
		return nil
	}
	for _, b := range todo {
		if err := c.persistBits(b.lo, b.snap, false); err != nil {
			return err
		}
	}
	// Not under mapMu: writes marking blocks and syncs taking bits go on
	// while the bitmap syncs (only the one persisting sync writes it).
	c.mapMu.Lock()
	f := c.mapf
	c.mapMu.Unlock()
	if f != nil {
		return f.DataSync()
	}
	return nil
}

func (c *content) chtimes(atime, mtime time.Time) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return c.o.fs.Chtimes(c.o.dataPath(c.id), atime, mtime)
}
