package overlay

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/helper/chroot"
)

// DefaultBlockSize is the redirection unit of a new upper directory.
const DefaultBlockSize = 64 << 10

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
	lock    *os.File
	blocks  sync.Pool // *[]byte of bs bytes, for read-modify-write

	// mu guards the path→node table and the open-file cache. It is never
	// held across base or data I/O; metadata is encoded under it and
	// written after it is released.
	mu       sync.Mutex
	st       *state
	byID     map[uint64]string              // node id → path
	kids     map[string]map[string]struct{} // directory → names of nodes in it
	contents map[uint64]*content
	gen      uint64 // bumped by every metadata change

	persistMu sync.Mutex
	savedGen  uint64

	failed atomic.Pointer[error] // sticky: metadata could not be persisted
	closed atomic.Bool

	cacheMu   sync.Mutex
	baseStats map[string]os.FileInfo // nil value: no such base entry
	baseDirs  map[string][]os.FileInfo

	idxMu   sync.Mutex
	baseIdx map[uint64]string // base file id → path, built on first need

	bytesWritten, blocksRedirected, filesCreated atomic.Int64
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
	dataDir := filepath.Join(upperDir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	lock, err := lockDir(upperDir)
	if err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	st, err := readMeta(upperDir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("overlay: %w", err)
	}
	fresh := st == nil
	if fresh {
		st = newState(opts.Salt, bs)
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
		lock:      lock,
		st:        st,
		byID:      make(map[uint64]string, len(st.nodes)),
		kids:      make(map[string]map[string]struct{}),
		contents:  make(map[uint64]*content),
		baseStats: make(map[string]os.FileInfo),
		baseDirs:  make(map[string][]os.FileInfo),
	}
	o.blocks.New = func() any { b := make([]byte, o.bs); return &b }
	for p, n := range st.nodes {
		o.byID[n.ID] = p
		o.linkKidLocked(p)
	}
	if fresh {
		b, err := encodeMeta(st)
		if err == nil {
			err = writeFileAtomic(upperDir, metaName, b)
		}
		if err != nil {
			lock.Close()
			return nil, fmt.Errorf("overlay: %s: %w", upperDir, err)
		}
	}
	if err := o.collectGarbage(); err != nil {
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
	if err := os.Remove(filepath.Join(o.dir, metaName+".tmp")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ents, err := os.ReadDir(o.dataDir)
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
			if err := os.Remove(filepath.Join(o.dataDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
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
	errs = append(errs, o.lock.Close())
	return errors.Join(errs...)
}

// Discard closes the overlay and deletes its upper directory, dropping
// everything the session wrote. The base is untouched.
func (o *Overlay) Discard() error {
	cerr := o.Close()
	if err := os.RemoveAll(o.dir); err != nil {
		return fmt.Errorf("overlay: discarding %s: %w", o.dir, err)
	}
	return cerr
}

// Stats returns the counters since New.
func (o *Overlay) Stats() Stats {
	return Stats{
		BytesWritten:     o.bytesWritten.Load(),
		BlocksRedirected: o.blocksRedirected.Load(),
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

// check fails calls after Close or after metadata could not be persisted.
func (o *Overlay) check() error {
	if o.closed.Load() {
		return os.ErrClosed
	}
	if e := o.failed.Load(); e != nil {
		return *e
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
		id := o.hashID("\x00upper\x00" + strconv.FormatUint(seq, 10))
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
	o.st.nodes[p] = n
	o.byID[n.ID] = p
	o.linkKidLocked(p)
	if _, ok := o.st.whiteouts[p]; ok {
		// The new node hides the base at p and below on its own.
		delete(o.st.whiteouts, p)
		o.pruneWhiteoutsLocked(p)
	}
}

func (o *Overlay) delNodeLocked(p string) *node {
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
			delete(o.st.whiteouts, w)
		}
	}
}

// whiteoutLocked hides the base entry at p, if one would show, after the
// node at p (if any) is gone.
func (o *Overlay) whiteoutLocked(p string, bi os.FileInfo) {
	if bi != nil && p != "/" && o.baseVisibleLocked(p) {
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
	n.MTime = max(now, n.MTime+1)
}

// commitLocked records a metadata change and returns the function that
// persists it; call that after releasing mu.
func (o *Overlay) commitLocked() func() error {
	o.gen++
	g := o.gen
	b, err := encodeMeta(o.st)
	return func() error {
		if err != nil {
			return o.fail(err)
		}
		return o.persist(g, b)
	}
}

func (o *Overlay) persist(g uint64, b []byte) error {
	o.persistMu.Lock()
	defer o.persistMu.Unlock()
	if e := o.failed.Load(); e != nil {
		return *e
	}
	if o.savedGen >= g {
		return nil // a later state, including this change, is on disk
	}
	if err := writeFileAtomic(o.dir, metaName, b); err != nil {
		return o.fail(err)
	}
	o.savedGen = g
	return nil
}

// fail makes a metadata write error sticky: the in-memory table is now
// ahead of the disk, so the overlay refuses further work.
func (o *Overlay) fail(err error) error {
	err = fmt.Errorf("overlay %s: persisting metadata: %w", o.dir, err)
	o.failed.CompareAndSwap(nil, &err)
	return *o.failed.Load()
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
