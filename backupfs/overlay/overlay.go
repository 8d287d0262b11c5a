package overlay

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/helper/chroot"

	"github.com/rekindle/rekindle/internal/durable"
)

// DefaultBlockSize is the redirection unit of a new upper directory.
const DefaultBlockSize = 64 << 10

// maxBitmapBlocks is the most blocks BlockSizeFor gives a file's bitmap
// (2 MiB of bits, held four times in memory while the file is open: the
// bits, those in the bitmap file, the pending and the unconfirmed), as a
// 1 TiB file has at DefaultBlockSize.
const maxBitmapBlocks = 1 << 24

// BlockSizeFor returns the block size for a new upper directory whose
// largest base file is size bytes: the smallest power of two from 4 KiB to
// DefaultBlockSize that keeps that file within maxBitmapBlocks blocks, so
// a file up to 64 GiB gets 4 KiB blocks. A smaller block makes a small
// write into a block not written yet cheaper (the fill from the origin
// reads and writes the rest of the block: 60 KiB for a 4 KiB write at
// 64 KiB), at the cost of a larger bitmap; files above 1 TiB keep
// DefaultBlockSize.
func BlockSizeFor(size int64) int {
	bs := int64(minBlockSize)
	for bs < DefaultBlockSize && (size+bs-1)/bs > maxBitmapBlocks {
		bs <<= 1
	}
	return int(bs)
}

const (
	minBlockSize = 4 << 10
	maxBlockSize = 16 << 20

	// maxCachedContents bounds the open-file cache: past it, a file's
	// descriptors are closed when its last handle is.
	maxCachedContents = 1024
	// maxBaseCache bounds the cache of base lookups (it is reset when full).
	maxBaseCache = 1 << 14
)

// Options configure New.
type Options struct {
	// Salt makes base file ids specific to this overlay (use the session
	// id). It must be the same every time an upper directory is opened.
	Salt string
	// Sync makes every write reach stable storage before it returns (data
	// first, then the bitmap that makes it visible). Without it writes stop
	// at the page cache until File.Sync. Metadata is always synced.
	// DefaultOptions sets it; the zero Options does not.
	Sync bool
	// BlockSize is the redirection unit for a new upper directory: a power
	// of two from 4 KiB to 16 MiB; 0 means DefaultBlockSize. An existing
	// upper directory keeps the block size it was made with.
	BlockSize int
	// FS is the filesystem the upper directory lives on; nil means the real
	// one (durable.OS). Tests put a powercut.FS here to prove what survives
	// a power cut.
	FS durable.FS
}

// DefaultOptions returns the options a session uses: synchronous writes and
// the default block size.
func DefaultOptions(salt string) Options {
	return Options{Salt: salt, Sync: true, BlockSize: DefaultBlockSize}
}

// Stats counts the overlay's work since New.
type Stats struct {
	BytesWritten     int64 // bytes accepted by Write and WriteAt
	BlocksRedirected int64 // base blocks that got their first write
	BytesFilled      int64 // origin bytes copied into blocks written in part
	FilesCreated     int64 // files created in the session
}

// Overlay is a copy-on-write billy.Filesystem; see the package comment.
// It is safe for concurrent use.
type Overlay struct {
	base    billy.Filesystem
	dir     string
	dataDir string
	salt    string
	bs      int64
	sync    bool
	fs      durable.FS
	lock    io.Closer
	j       *journal
	blocks  sync.Pool // *[]byte of bs bytes, for read-modify-write

	// mu guards the path→node table and the open-file cache. It is never
	// held across base or data I/O; metadata is encoded under it and
	// written after it is released.
	mu       sync.Mutex
	st       *state
	byID     map[uint64]string              // node id → path
	kids     map[string]map[string]struct{} // directory → names of nodes in it
	contents map[uint64]*content
	// synced: ids of files evicted from contents with every byte written
	// through them synced (content.clean), so that the next content of
	// the file needs no sync for what it did not write: libnfs COMMITs
	// again on close, and past maxCachedContents files that second
	// COMMIT finds a new content.
	synced map[uint64]struct{}
	tx     *txn // the change being made, until commitLocked

	closed atomic.Bool
	// names: the data folder's names made and synced (names.go).
	names groupSync
	// spareMu guards spares (empty data files made ahead for the ids of
	// nodes not created yet, names.go), making (ids whose spare is being
	// made; spareCond signals each one done), refilling (a batch is made
	// in the background; refills counts those goroutines) and spareEnd,
	// the counter value below which spares were made.
	spareMu   sync.Mutex
	spareCond *sync.Cond
	spares    map[uint64]struct{}
	making    map[uint64]struct{}
	refilling bool
	refills   sync.WaitGroup
	spareEnd  uint64

	cacheMu   sync.Mutex
	baseStats map[string]os.FileInfo // nil value: no such base entry
	baseDirs  map[string][]os.FileInfo

	idxMu   sync.Mutex
	baseIdx map[uint64]string // base file id → path, built on first need

	bytesWritten, blocksRedirected, filesCreated, bytesFilled atomic.Int64
}

var (
	_ billy.Filesystem = (*Overlay)(nil)
	_ billy.Change     = (*Overlay)(nil)
	_ billy.Capable    = (*Overlay)(nil)
)

// New opens the overlay of base whose writes live in upperDir, creating
// upperDir if needed. Opening an existing upperDir shows everything written
// to it before. base must never change and is never written; its files'
// ReadAt must be safe for concurrent use, as io.ReaderAt requires.
func New(base billy.Filesystem, upperDir string, opts Options) (*Overlay, error) {
	if base == nil {
		return nil, errors.New("overlay: nil base filesystem")
	}
	if upperDir == "" {
		return nil, errors.New("overlay: empty upper directory")
	}
	upperDir, err := filepath.Abs(upperDir)
	if err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	bs := opts.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if err := checkBlockSize(bs); err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	fsys := opts.FS
	if fsys == nil {
		fsys = durable.OS()
	}
	dataDir := filepath.Join(upperDir, "data")
	if err := durable.MkdirAll(fsys, dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	lock, err := fsys.Lock(filepath.Join(upperDir, "LOCK"))
	if errors.Is(err, durable.ErrLocked) {
		return nil, fmt.Errorf("overlay: upper directory %s is in use by another overlay", upperDir)
	}
	if err != nil {
		return nil, fmt.Errorf("overlay: locking upper directory: %w", err)
	}
	st, err := readMeta(fsys, upperDir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("overlay: %w", err)
	}
	fresh := st == nil
	if fresh {
		st = newState(opts.Salt, bs)
		// The checkpoint first: a log without one is never read.
		b, err := encodeMeta(st)
		if err == nil {
			err = durable.WriteFile(fsys, filepath.Join(upperDir, metaName), b, 0o600)
		}
		if err == nil {
			err = durable.WriteFile(fsys, filepath.Join(upperDir, logName), []byte(logMagic), 0o600)
		}
		if err != nil {
			lock.Close()
			return nil, fmt.Errorf("overlay: %s: %w", upperDir, err)
		}
	} else if st.salt != opts.Salt {
		lock.Close()
		return nil, fmt.Errorf("overlay: upper directory %s belongs to salt %q, not %q", upperDir, st.salt, opts.Salt)
	}
	o := &Overlay{
		base:      base,
		dir:       upperDir,
		dataDir:   dataDir,
		salt:      st.salt,
		bs:        int64(st.blockSize),
		sync:      opts.Sync,
		fs:        fsys,
		lock:      lock,
		st:        st,
		byID:      make(map[uint64]string, len(st.nodes)),
		kids:      make(map[string]map[string]struct{}),
		contents:  make(map[uint64]*content),
		synced:    make(map[uint64]struct{}),
		spares:    make(map[uint64]struct{}),
		making:    make(map[uint64]struct{}),
		baseStats: make(map[string]os.FileInfo),
		baseDirs:  make(map[string][]os.FileInfo),
	}
	o.blocks.New = func() any { b := make([]byte, o.bs); return &b }
	o.spareCond = sync.NewCond(&o.spareMu)
	metaSize := int64(0)
	if fi, err := fsys.Stat(filepath.Join(upperDir, metaName)); err == nil {
		metaSize = fi.Size()
	}
	if o.j, err = openJournal(fsys, upperDir, st, metaSize); err != nil {
		lock.Close()
		return nil, fmt.Errorf("overlay: %w", err)
	}
	for p, n := range st.nodes {
		o.byID[n.ID] = p
		o.linkKidLocked(p)
	}
	if err := o.collectGarbage(); err != nil {
		o.j.close()
		lock.Close()
		return nil, fmt.Errorf("overlay: %s: %w", upperDir, err)
	}
	// The names found are durable from here on (after a crash of the
	// process alone, some may not have been): a sync that finds no new
	// name can skip the folder.
	if err := durable.SyncDir(fsys, dataDir); err != nil {
		o.j.close()
		lock.Close()
		return nil, fmt.Errorf("overlay: %s: %w", upperDir, err)
	}
	return o, nil
}

func checkBlockSize(bs int) error {
	if bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("block size %d: want a power of two from %d to %d", bs, minBlockSize, maxBlockSize)
	}
	return nil
}

// collectGarbage deletes what a crash can leave in the upper directory:
// temporary files and data or bitmap files of nodes that no longer exist.
func (o *Overlay) collectGarbage() error {
	ents, err := o.fs.ReadDir(o.dir)
	if err != nil {
		return err
	}
	for _, de := range ents {
		if name := de.Name(); name == metaName+".tmp" || strings.HasPrefix(name, "."+metaName+".tmp-") ||
			strings.HasPrefix(name, "."+logName+".tmp-") {
			if err := o.fs.Remove(filepath.Join(o.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	ents, err = o.fs.ReadDir(o.dataDir)
	if err != nil {
		return err
	}
	for _, de := range ents {
		name := de.Name()
		stale := strings.HasSuffix(name, ".tmp")
		if !stale {
			id, err := parseID(strings.TrimSuffix(name, ".map"))
			if err != nil {
				continue // not ours to judge
			}
			p, ok := o.byID[id]
			stale = !ok || o.st.nodes[p].Kind != kindFile
		}
		if stale {
			if err := o.fs.Remove(filepath.Join(o.dataDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// Close releases the overlay's file descriptors and its lock on the upper
// directory. Call it once every other call has returned.
func (o *Overlay) Close() error {
	if o.closed.Swap(true) {
		return nil
	}
	o.mu.Lock()
	cs := o.contents
	o.contents = make(map[uint64]*content)
	o.mu.Unlock()
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.closeFiles())
	}
	o.removeSpares()
	errs = append(errs, o.j.close(), o.lock.Close())
	return errors.Join(errs...)
}

// Discard closes the overlay and deletes its upper directory, dropping
// everything the session wrote. The base is untouched.
func (o *Overlay) Discard() error {
	cerr := o.Close()
	if err := o.fs.RemoveAll(o.dir); err != nil {
		return fmt.Errorf("overlay: discarding %s: %w", o.dir, err)
	}
	return cerr
}

// Stats returns the counters since New.
func (o *Overlay) Stats() Stats {
	return Stats{
		BytesWritten:     o.bytesWritten.Load(),
		BlocksRedirected: o.blocksRedirected.Load(),
		BytesFilled:      o.bytesFilled.Load(),
		FilesCreated:     o.filesCreated.Load(),
	}
}

// BlockSize returns the redirection unit of this upper directory.
func (o *Overlay) BlockSize() int { return int(o.bs) }

// Capabilities implements billy.Capable: no file locks.
func (o *Overlay) Capabilities() billy.Capability {
	return billy.WriteCapability | billy.ReadCapability | billy.ReadAndWriteCapability |
		billy.SeekCapability | billy.TruncateCapability
}

// check fails calls after Close.
func (o *Overlay) check() error {
	if o.closed.Load() {
		return os.ErrClosed
	}
	return nil
}

func (o *Overlay) dataPath(id uint64) string { return filepath.Join(o.dataDir, idString(id)) }
func (o *Overlay) mapPath(id uint64) string  { return filepath.Join(o.dataDir, idString(id)+".map") }

// ---- ids

func (o *Overlay) hashID(s string) uint64 {
	h := sha256.New()
	h.Write([]byte(o.salt))
	h.Write([]byte(s))
	var sum [sha256.Size]byte
	id := binary.BigEndian.Uint64(h.Sum(sum[:0]))
	if id == 0 {
		id = 1
	}
	return id
}

// baseID is the id of the base entry at p (clean, absolute); NUL cannot
// occur in a path, so it separates the salt from the path.
func (o *Overlay) baseID(p string) uint64 { return o.hashID("\x00" + p) }

// newIDLocked allocates the id of a node created in the session.
func (o *Overlay) newIDLocked() uint64 {
	for {
		seq := o.st.nextSeq
		o.st.nextSeq++
		id := o.seqID(seq)
		if _, used := o.byID[id]; !used {
			return id
		}
	}
}

// FileID returns the stable id of the file or directory at name. It is the
// inode number in FileInfo.Sys and survives renames and restarts.
func (o *Overlay) FileID(name string) (uint64, error) {
	p, err := cleanPath(name)
	if err != nil {
		return 0, pathErr("fileid", name, err)
	}
	bi, err := o.baseLstat(p)
	if err != nil {
		return 0, pathErr("fileid", name, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.lookupLocked(p, bi)
	switch {
	case e.n != nil:
		return e.n.ID, nil
	case e.bi != nil:
		return o.baseID(p), nil
	}
	return 0, pathErr("fileid", name, os.ErrNotExist)
}

// PathOf returns the current path of the file with the given id; the error
// wraps os.ErrNotExist when no such file exists (any more).
func (o *Overlay) PathOf(id uint64) (string, error) {
	if err := o.check(); err != nil {
		return "", err
	}
	o.mu.Lock()
	p, ok := o.byID[id]
	o.mu.Unlock()
	if ok {
		return p, nil
	}
	idx, err := o.baseIndex()
	if err != nil {
		return "", fmt.Errorf("overlay: file id %s: %w", idString(id), err)
	}
	if p, ok = idx[id]; ok {
		bi, err := o.baseLstat(p)
		if err != nil {
			return "", fmt.Errorf("overlay: file id %s: %w", idString(id), err)
		}
		o.mu.Lock()
		e := o.lookupLocked(p, bi)
		o.mu.Unlock()
		if e.n == nil && e.bi != nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("overlay: file id %s: %w", idString(id), os.ErrNotExist)
}

// baseIndex maps the id of every base entry to its path. The base never
// changes, so it is built once, by walking the base, on first need.
func (o *Overlay) baseIndex() (map[uint64]string, error) {
	o.idxMu.Lock()
	defer o.idxMu.Unlock()
	if o.baseIdx != nil {
		return o.baseIdx, nil
	}
	idx := map[uint64]string{o.baseID("/"): "/"}
	stack := []string{"/"}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		kids, err := o.baseReadDir(d)
		if err != nil {
			return nil, err
		}
		for _, fi := range kids {
			p := path.Join(d, fi.Name())
			idx[o.baseID(p)] = p
			if fi.IsDir() {
				stack = append(stack, p)
			}
		}
	}
	o.baseIdx = idx
	return idx, nil
}

// ---- the base, cached: it never changes

// baseLstat returns the base entry at p, or nil when there is none.
func (o *Overlay) baseLstat(p string) (os.FileInfo, error) {
	o.cacheMu.Lock()
	fi, ok := o.baseStats[p]
	o.cacheMu.Unlock()
	if ok {
		return fi, nil
	}
	fi, err := o.base.Lstat(p)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return nil, fmt.Errorf("base: %w", err)
		}
		fi = nil
	}
	if p == "/" && (fi == nil || !fi.IsDir()) {
		fi = rootInfo{}
	}
	o.cacheMu.Lock()
	if len(o.baseStats) >= maxBaseCache {
		clear(o.baseStats)
	}
	o.baseStats[p] = fi
	o.cacheMu.Unlock()
	return fi, nil
}

// baseReadDir lists the base directory at p (nil when there is none).
func (o *Overlay) baseReadDir(p string) ([]os.FileInfo, error) {
	o.cacheMu.Lock()
	kids, ok := o.baseDirs[p]
	o.cacheMu.Unlock()
	if ok {
		return kids, nil
	}
	kids, err := o.base.ReadDir(p)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return nil, fmt.Errorf("base: %w", err)
		}
		kids = nil
	}
	o.cacheMu.Lock()
	if len(o.baseDirs) >= maxBaseCache {
		clear(o.baseDirs)
	}
	o.baseDirs[p] = kids
	o.cacheMu.Unlock()
	return kids, nil
}

// rootInfo stands for a base that cannot describe its own root.
type rootInfo struct{}

func (rootInfo) Name() string       { return "/" }
func (rootInfo) Size() int64        { return 0 }
func (rootInfo) Mode() os.FileMode  { return os.ModeDir | 0o755 }
func (rootInfo) ModTime() time.Time { return time.Time{} }
func (rootInfo) IsDir() bool        { return true }
func (rootInfo) Sys() any           { return nil }

// ---- the merged namespace

// entry is what a path resolves to: a node, a base entry, or nothing.
type entry struct {
	n  *node       // valid while mu is held
	bi os.FileInfo // the base entry showing through, when there is no node
}

func (e entry) exists() bool { return e.n != nil || e.bi != nil }

func (e entry) isDir() bool {
	if e.n != nil {
		return e.n.Kind == kindDir
	}
	return e.bi != nil && e.bi.IsDir()
}

// showsBase reports whether a directory entry lists the base directory at
// its path.
func (e entry) showsBase() bool {
	if e.n != nil {
		return e.n.Kind == kindDir && !e.n.Opaque
	}
	return e.bi != nil && e.bi.IsDir()
}

// lookupLocked resolves p given bi, the base entry at p (nil if none).
func (o *Overlay) lookupLocked(p string, bi os.FileInfo) entry {
	if n := o.st.nodes[p]; n != nil {
		return entry{n: n}
	}
	if bi == nil || !o.baseVisibleLocked(p) {
		return entry{}
	}
	return entry{bi: bi}
}

// baseVisibleLocked reports whether the base entry at p, if any, would show:
// p is not whited out and every directory above it shows the base.
func (o *Overlay) baseVisibleLocked(p string) bool {
	if p == "/" {
		return true
	}
	if _, w := o.st.whiteouts[p]; w {
		return false
	}
	for a := parentOf(p); ; a = parentOf(a) {
		if n := o.st.nodes[a]; n != nil {
			if n.Kind != kindDir || n.Opaque {
				return false
			}
		} else if _, w := o.st.whiteouts[a]; w {
			return false
		}
		if a == "/" {
			return true
		}
	}
}

type dirent struct {
	name string
	n    *node       // valid while mu is held
	bi   os.FileInfo // base entry, when n is nil
}

// listLocked returns the entries of directory p; baseKids is the listing of
// the base directory at p.
func (o *Overlay) listLocked(p string, e entry, baseKids []os.FileInfo) []dirent {
	var out []dirent
	for name := range o.kids[p] {
		out = append(out, dirent{name: name, n: o.st.nodes[path.Join(p, name)]})
	}
	if e.showsBase() {
		for _, fi := range baseKids {
			c := path.Join(p, fi.Name())
			if _, ok := o.st.nodes[c]; ok {
				continue
			}
			if _, ok := o.st.whiteouts[c]; ok {
				continue
			}
			out = append(out, dirent{name: fi.Name(), bi: fi})
		}
	}
	return out
}

func (o *Overlay) linkKidLocked(p string) {
	if p == "/" {
		return
	}
	dir := parentOf(p)
	m := o.kids[dir]
	if m == nil {
		m = make(map[string]struct{})
		o.kids[dir] = m
	}
	m[path.Base(p)] = struct{}{}
}

// addNodeLocked puts n at p, where nothing showed before or a base entry
// shows that n now hides.
func (o *Overlay) addNodeLocked(p string, n *node) {
	o.markLocked(p)
	o.linkNodeLocked(p, n)
	if _, ok := o.st.whiteouts[p]; ok {
		// The new node hides the base at p and below on its own.
		delete(o.st.whiteouts, p)
		o.pruneWhiteoutsLocked(p)
	}
}

func (o *Overlay) delNodeLocked(p string) *node {
	o.markLocked(p)
	return o.unlinkNodeLocked(p)
}

// linkNodeLocked puts n at p in the table and its indexes, recording
// nothing (see addNodeLocked).
func (o *Overlay) linkNodeLocked(p string, n *node) {
	o.st.nodes[p] = n
	o.byID[n.ID] = p
	o.linkKidLocked(p)
}

// unlinkNodeLocked takes the node at p out of the table and its indexes,
// recording nothing (see delNodeLocked).
func (o *Overlay) unlinkNodeLocked(p string) *node {
	n := o.st.nodes[p]
	delete(o.st.nodes, p)
	delete(o.byID, n.ID)
	if p != "/" {
		dir := parentOf(p)
		if m := o.kids[dir]; m != nil {
			delete(m, path.Base(p))
			if len(m) == 0 {
				delete(o.kids, dir)
			}
		}
	}
	return n
}

// pruneWhiteoutsLocked drops whiteouts strictly below dir, once something
// at dir hides the base there anyway.
func (o *Overlay) pruneWhiteoutsLocked(dir string) {
	for w := range o.st.whiteouts {
		if under(w, dir) {
			o.markLocked(w)
			delete(o.st.whiteouts, w)
		}
	}
}

// whiteoutLocked hides the base entry at p, if one would show, after the
// node at p (if any) is gone.
func (o *Overlay) whiteoutLocked(p string, bi os.FileInfo) {
	if bi != nil && p != "/" && o.baseVisibleLocked(p) {
		o.markLocked(p)
		o.st.whiteouts[p] = struct{}{}
		o.pruneWhiteoutsLocked(p)
	}
}

// touchDirLocked moves the mtime of directory dir forward after its content
// changed: NFS clients revalidate their caches on it.
func (o *Overlay) touchDirLocked(dir string, bi os.FileInfo, now int64) {
	n := o.st.nodes[dir]
	if n == nil {
		if bi == nil || !bi.IsDir() || !o.baseVisibleLocked(dir) {
			return
		}
		n = &node{ID: o.baseID(dir), Kind: kindDir, Mode: bi.Mode().Perm(), MTime: bi.ModTime().UnixNano()}
		o.addNodeLocked(dir, n)
	}
	o.markLocked(dir)
	n.MTime = max(now, n.MTime+1)
}

// txn is the undo record of the change being made under mu: what each path
// it touched held before (a node copy, or nil for none; whether a whiteout
// was there).
type txn struct {
	nodes     map[string]*node
	whiteouts map[string]bool
}

// markLocked records, the first time a change touches p, what p held, so
// that a change that cannot be persisted is undone and the log records p.
// Call it before changing the node or whiteout at p, or a node's fields.
func (o *Overlay) markLocked(p string) {
	if o.tx == nil {
		o.tx = &txn{nodes: map[string]*node{}, whiteouts: map[string]bool{}}
	}
	if _, seen := o.tx.nodes[p]; seen {
		return
	}
	var old *node
	if n := o.st.nodes[p]; n != nil {
		c := *n
		old = &c
	}
	o.tx.nodes[p] = old
	_, w := o.st.whiteouts[p]
	o.tx.whiteouts[p] = w
}

// commitLocked persists the change made since the last commit and returns
// the function that waits until it is durable; call that after releasing
// mu. A change that cannot be written is undone before commitLocked
// returns, and the function returns the error: one failed call (a full
// disk) fails alone and leaves the overlay as it was.
func (o *Overlay) commitLocked() func() error {
	wait, err := o.commitTxLocked()
	if err != nil {
		return func() error { return err }
	}
	return wait
}

func (o *Overlay) commitTxLocked() (wait func() error, err error) {
	tx := o.tx
	o.tx = nil
	if tx == nil {
		return func() error { return nil }, nil
	}
	if o.j.needsCheckpoint() {
		if err := o.j.checkpointLocked(o.st); err != nil {
			o.rollbackLocked(tx)
			return nil, fmt.Errorf("overlay %s: writing a metadata checkpoint: %w", o.dir, err)
		}
		return func() error { return nil }, nil
	}
	rec := logRecord{Seq: o.j.seq + 1, NextSeq: o.st.nextSeq}
	for p := range tx.nodes {
		if n := o.st.nodes[p]; n != nil {
			rec.Put = append(rec.Put, toMetaNode(p, n))
		} else {
			rec.Del = append(rec.Del, p)
		}
		if _, w := o.st.whiteouts[p]; w {
			rec.WPut = append(rec.WPut, p)
		} else {
			rec.WDel = append(rec.WDel, p)
		}
	}
	b, err := encodeRecord(&rec)
	if err == nil {
		err = o.j.appendLocked(b)
	}
	if err != nil {
		o.rollbackLocked(tx)
		return nil, fmt.Errorf("overlay %s: persisting metadata: %w", o.dir, err)
	}
	seq := o.j.seq
	return func() error {
		if err := o.j.sync(seq); err != nil {
			return fmt.Errorf("overlay %s: persisting metadata: %w", o.dir, err)
		}
		return nil
	}, nil
}

// rollbackLocked puts back what tx recorded.
func (o *Overlay) rollbackLocked(tx *txn) {
	for p := range tx.nodes {
		if o.st.nodes[p] != nil {
			o.unlinkNodeLocked(p)
		}
	}
	for p, old := range tx.nodes {
		if old != nil {
			o.linkNodeLocked(p, old)
		}
	}
	for p, had := range tx.whiteouts {
		if had {
			o.st.whiteouts[p] = struct{}{}
		} else {
			delete(o.st.whiteouts, p)
		}
	}
}

// ---- billy.Basic odds and ends

// Join joins path elements with "/".
func (o *Overlay) Join(elem ...string) string { return path.Join(elem...) }

// Root returns "/".
func (o *Overlay) Root() string { return "/" }

// Chroot returns a view of the directory at name.
func (o *Overlay) Chroot(name string) (billy.Filesystem, error) {
	p, err := cleanPath(name)
	if err != nil {
		return nil, pathErr("chroot", name, err)
	}
	return chroot.New(o, p), nil
}

// Symlink is not supported: hypervisors do not need it.
func (o *Overlay) Symlink(target, link string) error {
	return linkErr("symlink", target, link, billy.ErrNotSupported)
}

// Readlink reads a symbolic link of the base; the overlay makes none.
func (o *Overlay) Readlink(link string) (string, error) {
	p, err := cleanPath(link)
	if err != nil {
		return "", pathErr("readlink", link, err)
	}
	bi, err := o.baseLstat(p)
	if err != nil {
		return "", pathErr("readlink", link, err)
	}
	o.mu.Lock()
	e := o.lookupLocked(p, bi)
	o.mu.Unlock()
	switch {
	case !e.exists():
		return "", pathErr("readlink", link, os.ErrNotExist)
	case e.n == nil && e.bi.Mode()&os.ModeSymlink != 0:
		return o.base.Readlink(p)
	}
	return "", pathErr("readlink", link, syscall.EINVAL)
}
