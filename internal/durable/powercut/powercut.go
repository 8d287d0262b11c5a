// Package powercut is a test stand-in for a disk that loses power: an
// in-memory durable.FS that keeps, besides what every file and directory
// holds now, what was last synced, and on Cut forgets everything else.
//
// It follows the rules a POSIX filesystem guarantees and no more: a file's
// bytes (and size and times) survive a cut only up to its last Sync or
// DataSync; a name created, renamed or removed in a directory survives only
// if the directory was synced after the change (a file fsynced into a
// directory that was not can vanish). Like Pebble's strict in-memory
// filesystem, it lets a test prove that a durability claim rests on the
// syncs the code makes: remove one and the data is gone after Cut.
//
// Vocabulary: the live state is what calls see now; the synced state is
// what a Cut leaves. Cut returns a new FS holding the synced state (the
// machine booted again); the old FS, and every file open on it, fails every
// call from then on with ErrPowerCut, as a dead process would do nothing.
package powercut

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rekindle/rekindle/internal/durable"
)

// ErrPowerCut is returned by every call on an FS after Cut.
var ErrPowerCut = errors.New("powercut: the power was cut")

// FS is the in-memory filesystem. Its root "/" always exists. Safe for
// concurrent use.
type FS struct {
	mu    sync.Mutex
	dead  bool
	root  *inode
	locks map[string]bool
	syncs int
	// steps counts the calls that change the disk; at cutAt (when >= 0)
	// the power goes and after keeps what a reboot finds.
	steps, cutAt int
	after        *FS
}

type inode struct {
	dir                bool
	mode               os.FileMode
	data, synced       []byte
	mtime, syncedMtime time.Time
	kids, syncedKids   map[string]*inode
}

var _ durable.FS = (*FS)(nil)

// New returns an empty filesystem.
func New() *FS {
	return &FS{root: newDir(0o755), locks: map[string]bool{}, cutAt: -1}
}

func newDir(perm os.FileMode) *inode {
	now := time.Now()
	return &inode{dir: true, mode: perm, mtime: now, syncedMtime: now,
		kids: map[string]*inode{}, syncedKids: map[string]*inode{}}
}

// Cut cuts the power: it returns the filesystem as a reboot would find it,
// holding only what was synced, and kills fs.
func (fsys *FS) Cut() *FS {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if fsys.after != nil { // CutAt's cut came first
		return fsys.after
	}
	fsys.dead = true
	return fsys.synced()
}

// SyncedCopy returns what a Cut now would leave, without cutting: fs lives
// on. A test takes it the moment a call that promises durability returns,
// while other calls still run, and checks the promise on the copy.
func (fsys *FS) SyncedCopy() *FS {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return fsys.synced()
}

// CutAt arms a power cut at a step: the calls that change the disk (a
// create or truncate, a write, a sync, mkdir, rename, remove, chtimes) are
// counted from 0 from now on, and call n finds the power gone: it and every
// later call fail with ErrPowerCut, as after Cut, and Cut then returns the
// filesystem as it was synced before call n. A test cuts at every step of
// an operation in turn (n = 0, 1, ... Steps of a whole run).
func (fsys *FS) CutAt(n int) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	fsys.steps, fsys.cutAt = 0, n
}

// Steps counts the calls that changed the disk since New or CutAt.
func (fsys *FS) Steps() int {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return fsys.steps
}

// step counts a call that changes the disk and cuts the power when it is
// the armed one; fsys.mu is held.
func (fsys *FS) step(op, name string) error {
	if fsys.dead {
		return &fs.PathError{Op: op, Path: name, Err: ErrPowerCut}
	}
	if fsys.cutAt >= 0 && fsys.steps >= fsys.cutAt {
		fsys.after = fsys.synced()
		fsys.dead = true
		return &fs.PathError{Op: op, Path: name, Err: ErrPowerCut}
	}
	fsys.steps++
	return nil
}

// SyncAll makes everything on the filesystem durable, every file's bytes
// and every directory's entries: what syncfs(2) does (see durable.SyncAll).
func (fsys *FS) SyncAll(string) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if err := fsys.step("syncfs", "/"); err != nil {
		return err
	}
	fsys.syncs++
	seen := map[*inode]bool{}
	var walk func(n *inode)
	walk = func(n *inode) {
		if seen[n] {
			return
		}
		seen[n] = true
		n.syncedMtime = n.mtime
		if !n.dir {
			n.synced = slices.Clone(n.data)
			return
		}
		n.syncedKids = make(map[string]*inode, len(n.kids))
		for k, v := range n.kids {
			n.syncedKids[k] = v
			walk(v)
		}
	}
	walk(fsys.root)
	return nil
}

// synced copies the synced state into a new FS; fsys.mu is held.
func (fsys *FS) synced() *FS {
	memo := map[*inode]*inode{}
	var copyNode func(n *inode) *inode
	copyNode = func(n *inode) *inode {
		if c, ok := memo[n]; ok {
			return c
		}
		c := &inode{dir: n.dir, mode: n.mode, mtime: n.syncedMtime, syncedMtime: n.syncedMtime}
		memo[n] = c
		if n.dir {
			c.kids, c.syncedKids = map[string]*inode{}, map[string]*inode{}
			for name, k := range n.syncedKids {
				ck := copyNode(k)
				c.kids[name], c.syncedKids[name] = ck, ck
			}
		} else {
			c.data, c.synced = slices.Clone(n.synced), slices.Clone(n.synced)
		}
		return c
	}
	return &FS{root: copyNode(fsys.root), locks: map[string]bool{}, cutAt: -1}
}

// Syncs counts the Sync and DataSync calls made on fs.
func (fsys *FS) Syncs() int {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return fsys.syncs
}

func split(name string) []string {
	name = filepath.ToSlash(filepath.Clean("/" + name))
	if name == "/" {
		return nil
	}
	return strings.Split(name[1:], "/")
}

// walk finds the node at name; fsys.mu is held.
func (fsys *FS) walk(op, name string) (*inode, error) {
	if fsys.dead {
		return nil, &fs.PathError{Op: op, Path: name, Err: ErrPowerCut}
	}
	n := fsys.root
	for _, c := range split(name) {
		if !n.dir {
			return nil, &fs.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
		}
		k, ok := n.kids[c]
		if !ok {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		n = k
	}
	return n, nil
}

// parent finds the directory holding name and name's last element.
func (fsys *FS) parent(op, name string) (*inode, string, error) {
	parts := split(name)
	if len(parts) == 0 {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: syscall.EBUSY}
	}
	d, err := fsys.walk(op, "/"+strings.Join(parts[:len(parts)-1], "/"))
	if err != nil {
		return nil, "", err
	}
	if !d.dir {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
	}
	return d, parts[len(parts)-1], nil
}

// OpenFile opens name like os.OpenFile.
func (fsys *FS) OpenFile(name string, flag int, perm os.FileMode) (durable.File, error) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if flag&(os.O_CREATE|os.O_TRUNC) != 0 {
		if err := fsys.step("open", name); err != nil {
			return nil, err
		}
	}
	d, base, err := fsys.parent("open", name)
	if err != nil && len(split(name)) > 0 {
		return nil, err
	}
	var n *inode
	if d == nil { // the root
		n = fsys.root
	} else {
		n = d.kids[base]
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	switch {
	case n == nil && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case n == nil:
		n = &inode{mode: perm.Perm(), mtime: time.Now()}
		d.kids[base] = n
		d.mtime = time.Now()
	case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case n.dir && acc != os.O_RDONLY:
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	}
	if flag&os.O_TRUNC != 0 && !n.dir && acc != os.O_RDONLY {
		n.data = n.data[:0]
		n.mtime = time.Now()
	}
	return &file{fs: fsys, n: n, name: name, read: acc != os.O_WRONLY, write: acc != os.O_RDONLY,
		appendMode: flag&os.O_APPEND != 0}, nil
}

// Stat describes name.
func (fsys *FS) Stat(name string) (os.FileInfo, error) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	n, err := fsys.walk("stat", name)
	if err != nil {
		return nil, err
	}
	return info(filepath.Base(name), n), nil
}

// ReadDir lists directory name, sorted.
func (fsys *FS) ReadDir(name string) ([]os.DirEntry, error) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	n, err := fsys.walk("readdir", name)
	if err != nil {
		return nil, err
	}
	if !n.dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: syscall.ENOTDIR}
	}
	out := make([]os.DirEntry, 0, len(n.kids))
	for k, kn := range n.kids {
		out = append(out, fs.FileInfoToDirEntry(info(k, kn)))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// Mkdir creates directory name.
func (fsys *FS) Mkdir(name string, perm os.FileMode) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if err := fsys.step("mkdir", name); err != nil {
		return err
	}
	d, base, err := fsys.parent("mkdir", name)
	if err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return &fs.PathError{Op: "mkdir", Path: name, Err: fs.ErrExist}
		}
		return err
	}
	if _, ok := d.kids[base]; ok {
		return &fs.PathError{Op: "mkdir", Path: name, Err: fs.ErrExist}
	}
	d.kids[base] = newDir(perm.Perm())
	d.kids[base].syncedMtime = time.Time{}
	d.mtime = time.Now()
	return nil
}

// Rename moves oldname to newname like rename(2).
func (fsys *FS) Rename(oldname, newname string) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if err := fsys.step("rename", oldname); err != nil {
		return err
	}
	od, ob, err := fsys.parent("rename", oldname)
	if err != nil {
		return err
	}
	nd, nb, err := fsys.parent("rename", newname)
	if err != nil {
		return err
	}
	n, ok := od.kids[ob]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrNotExist}
	}
	if dst, ok := nd.kids[nb]; ok && dst != n {
		switch {
		case dst.dir && !n.dir:
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: syscall.EISDIR}
		case !dst.dir && n.dir:
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: syscall.ENOTDIR}
		case dst.dir && len(dst.kids) > 0:
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: syscall.ENOTEMPTY}
		}
	}
	delete(od.kids, ob)
	nd.kids[nb] = n
	now := time.Now()
	od.mtime, nd.mtime = now, now
	return nil
}

// Remove removes a file or an empty directory.
func (fsys *FS) Remove(name string) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if err := fsys.step("remove", name); err != nil {
		return err
	}
	d, base, err := fsys.parent("remove", name)
	if err != nil {
		return err
	}
	n, ok := d.kids[base]
	if !ok {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if n.dir && len(n.kids) > 0 {
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.ENOTEMPTY}
	}
	delete(d.kids, base)
	d.mtime = time.Now()
	return nil
}

// RemoveAll removes name and everything below it; a missing name is no error.
func (fsys *FS) RemoveAll(name string) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if err := fsys.step("removeall", name); err != nil {
		return err
	}
	d, base, err := fsys.parent("removeall", name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	delete(d.kids, base)
	d.mtime = time.Now()
	return nil
}

// Chtimes sets name's modification time (kept with the file's bytes: it
// survives a cut once the file is synced).
func (fsys *FS) Chtimes(name string, atime, mtime time.Time) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if err := fsys.step("chtimes", name); err != nil {
		return err
	}
	n, err := fsys.walk("chtimes", name)
	if err != nil {
		return err
	}
	n.mtime = mtime
	return nil
}

// Lock takes an in-process lock named name; Cut releases every lock.
func (fsys *FS) Lock(name string) (io.Closer, error) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if fsys.dead {
		return nil, &fs.PathError{Op: "lock", Path: name, Err: ErrPowerCut}
	}
	key := filepath.Clean(name)
	if fsys.locks[key] {
		return nil, &fs.PathError{Op: "lock", Path: name, Err: durable.ErrLocked}
	}
	fsys.locks[key] = true
	return lockCloser(func() error {
		fsys.mu.Lock()
		defer fsys.mu.Unlock()
		delete(fsys.locks, key)
		return nil
	}), nil
}

type lockCloser func() error

func (c lockCloser) Close() error { return c() }

type fileInfo struct {
	name  string
	size  int64
	mode  os.FileMode
	mtime time.Time
}

func info(name string, n *inode) *fileInfo {
	fi := &fileInfo{name: name, size: int64(len(n.data)), mode: n.mode, mtime: n.mtime}
	if n.dir {
		fi.size, fi.mode = 0, n.mode|os.ModeDir
	}
	return fi
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) Mode() os.FileMode  { return fi.mode }
func (fi *fileInfo) ModTime() time.Time { return fi.mtime }
func (fi *fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *fileInfo) Sys() any           { return nil }

// file is an open file of an FS.
type file struct {
	fs                      *FS
	n                       *inode
	name                    string
	read, write, appendMode bool
	pos                     int64
	closed                  bool
}

// live checks, under fs.mu, that the file may be used.
func (f *file) live(op string) error {
	switch {
	case f.fs.dead:
		return &fs.PathError{Op: op, Path: f.name, Err: ErrPowerCut}
	case f.closed:
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrClosed}
	}
	return nil
}

func (f *file) Name() string { return f.name }

func (f *file) readAt(p []byte, off int64) (int, error) {
	if !f.read || f.n.dir {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EBADF}
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *file) writeAt(p []byte, off int64) (int, error) {
	if !f.write || f.n.dir {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: syscall.EBADF}
	}
	if end := off + int64(len(p)); end > int64(len(f.n.data)) {
		f.n.data = append(f.n.data, make([]byte, end-int64(len(f.n.data)))...)
	}
	copy(f.n.data[off:], p)
	f.n.mtime = time.Now()
	return len(p), nil
}

func (f *file) Read(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live("read"); err != nil {
		return 0, err
	}
	n, err := f.readAt(p, f.pos)
	f.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live("read"); err != nil {
		return 0, err
	}
	return f.readAt(p, off)
}

func (f *file) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live("write"); err != nil {
		return 0, err
	}
	if err := f.fs.step("write", f.name); err != nil {
		return 0, err
	}
	if f.appendMode {
		f.pos = int64(len(f.n.data))
	}
	n, err := f.writeAt(p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live("write"); err != nil {
		return 0, err
	}
	if err := f.fs.step("write", f.name); err != nil {
		return 0, err
	}
	return f.writeAt(p, off)
}

func (f *file) Stat() (os.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live("stat"); err != nil {
		return nil, err
	}
	return info(filepath.Base(f.name), f.n), nil
}

func (f *file) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live("truncate"); err != nil {
		return err
	}
	if err := f.fs.step("truncate", f.name); err != nil {
		return err
	}
	if !f.write || f.n.dir || size < 0 {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: syscall.EINVAL}
	}
	if size <= int64(len(f.n.data)) {
		f.n.data = f.n.data[:size]
	} else {
		f.n.data = append(f.n.data, make([]byte, size-int64(len(f.n.data)))...)
	}
	f.n.mtime = time.Now()
	return nil
}

// Sync makes the file's bytes durable, or a directory's entries.
func (f *file) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live("sync"); err != nil {
		return err
	}
	if err := f.fs.step("sync", f.name); err != nil {
		return err
	}
	f.fs.syncs++
	if f.n.dir {
		f.n.syncedKids = make(map[string]*inode, len(f.n.kids))
		for k, v := range f.n.kids {
			f.n.syncedKids[k] = v
		}
	} else {
		f.n.synced = slices.Clone(f.n.data)
	}
	f.n.syncedMtime = f.n.mtime
	return nil
}

// DataSync is Sync: the stand-in keeps times with the bytes.
func (f *file) DataSync() error { return f.Sync() }

func (f *file) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	return nil
}
