package view

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5"
)

// errCrossMount is returned for renames between two mounted filesystems.
var errCrossMount = syscall.EXDEV

// Sub is the part of fs under prefix, as a filesystem of its own. File ids
// are fs's own, so a file keeps its id whichever way it is reached.
func Sub(fs billy.Filesystem, prefix string) (billy.Filesystem, error) {
	prefix = clean(prefix)
	fi, err := fs.Stat(prefix)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s: not a directory", prefix)
	}
	return &subFS{base: fs, prefix: prefix}, nil
}

type subFS struct {
	base   billy.Filesystem
	prefix string
}

func (s *subFS) full(p string) string { return path.Join(s.prefix, clean(p)) }

func (s *subFS) Create(f string) (billy.File, error) { return s.base.Create(s.full(f)) }
func (s *subFS) Open(f string) (billy.File, error)   { return s.base.Open(s.full(f)) }
func (s *subFS) OpenFile(f string, flag int, perm os.FileMode) (billy.File, error) {
	return s.base.OpenFile(s.full(f), flag, perm)
}
func (s *subFS) Stat(f string) (os.FileInfo, error)  { return s.base.Stat(s.full(f)) }
func (s *subFS) Lstat(f string) (os.FileInfo, error) { return s.base.Lstat(s.full(f)) }
func (s *subFS) Rename(a, b string) error            { return s.base.Rename(s.full(a), s.full(b)) }
func (s *subFS) Remove(f string) error               { return s.base.Remove(s.full(f)) }
func (s *subFS) Join(elem ...string) string          { return path.Join(elem...) }
func (s *subFS) TempFile(dir, prefix string) (billy.File, error) {
	return s.base.TempFile(s.full(dir), prefix)
}
func (s *subFS) ReadDir(p string) ([]os.FileInfo, error)   { return s.base.ReadDir(s.full(p)) }
func (s *subFS) MkdirAll(p string, perm os.FileMode) error { return s.base.MkdirAll(s.full(p), perm) }
func (s *subFS) Symlink(target, link string) error         { return s.base.Symlink(target, s.full(link)) }
func (s *subFS) Readlink(link string) (string, error)      { return s.base.Readlink(s.full(link)) }
func (s *subFS) Chroot(p string) (billy.Filesystem, error) { return Sub(s, p) }
func (s *subFS) Root() string                              { return "/" }
func (s *subFS) Capabilities() billy.Capability            { return billy.Capabilities(s.base) }

func (s *subFS) FileID(p string) (uint64, error) {
	ider, ok := s.base.(IDer)
	if !ok {
		return HashID("sub:"+s.prefix, clean(p)), nil
	}
	return ider.FileID(s.full(p))
}

func (s *subFS) PathOf(id uint64) (string, error) {
	ider, ok := s.base.(IDer)
	if !ok {
		return "", fmt.Errorf("file id %016x: %w", id, os.ErrNotExist)
	}
	p, err := ider.PathOf(id)
	if err != nil {
		return "", err
	}
	switch rest, ok := strings.CutPrefix(p, s.prefix+"/"); {
	case s.prefix == "/":
		return p, nil
	case p == s.prefix:
		return "/", nil
	case ok:
		return "/" + rest, nil
	}
	return "", fmt.Errorf("file id %016x: outside %s: %w", id, s.prefix, os.ErrNotExist)
}

// MountFS shows named filesystems as the folders of a read-only root:
// /<name>/... is /... of the filesystem mounted as name. Mounts come and go
// while it serves (sessions are published and discarded).
type MountFS struct {
	ns    string
	mu    sync.RWMutex
	subs  map[string]billy.Filesystem
	mtime time.Time
	space func() (total, free, avail uint64, err error)
}

// NewMountFS returns an empty MountFS; ns keeps its root's id apart from
// other MountFSes'.
func NewMountFS(ns string) *MountFS {
	return &MountFS{ns: ns, subs: map[string]billy.Filesystem{}, mtime: time.Now().UTC()}
}

// Mount shows fs as /name.
func (m *MountFS) Mount(name string, fs billy.Filesystem) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("mount name %q invalid", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.subs[name]; ok {
		return fmt.Errorf("mount %q: %w", name, os.ErrExist)
	}
	m.subs[name] = fs
	m.mtime = time.Now().UTC()
	return nil
}

// Unmount removes /name; it reports whether it was there.
func (m *MountFS) Unmount(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.subs[name]
	delete(m.subs, name)
	m.mtime = time.Now().UTC()
	return ok
}

// Mounted returns the filesystem mounted as name.
func (m *MountFS) Mounted(name string) (billy.Filesystem, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	fs, ok := m.subs[name]
	return fs, ok
}

// resolve splits p into the mounted filesystem and the path inside it. A nil
// filesystem means p is the root.
func (m *MountFS) resolve(op, p string) (billy.Filesystem, string, string, error) {
	p = clean(p)
	if p == "/" {
		return nil, "", "/", nil
	}
	name, rest, _ := strings.Cut(p[1:], "/")
	m.mu.RLock()
	fs, ok := m.subs[name]
	m.mu.RUnlock()
	if !ok {
		return nil, "", "", &os.PathError{Op: op, Path: p, Err: os.ErrNotExist}
	}
	return fs, name, "/" + rest, nil
}

func (m *MountFS) rootInfo() os.FileInfo {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return &info{name: "/", mode: os.ModeDir | 0o755, mtime: m.mtime, id: HashID(m.ns, "/")}
}

func rootErr(op, p string) error { return &os.PathError{Op: op, Path: p, Err: os.ErrPermission} }

func (m *MountFS) Create(f string) (billy.File, error) {
	return m.OpenFile(f, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}
func (m *MountFS) Open(f string) (billy.File, error) { return m.OpenFile(f, os.O_RDONLY, 0) }

func (m *MountFS) OpenFile(f string, flag int, perm os.FileMode) (billy.File, error) {
	fs, _, rest, err := m.resolve("open", f)
	if err != nil {
		// Creating a file beside the sessions is refused, not "not found".
		if errors.Is(err, os.ErrNotExist) && flag&os.O_CREATE != 0 && path.Dir(clean(f)) == "/" {
			return nil, rootErr("create", f)
		}
		return nil, err
	}
	if fs == nil {
		if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC) != 0 {
			return nil, rootErr("open", f)
		}
		return NewReadOnlyDir("/", errReadOnly), nil
	}
	return fs.OpenFile(rest, flag, perm)
}

func (m *MountFS) Stat(f string) (os.FileInfo, error) {
	fs, name, rest, err := m.resolve("stat", f)
	if err != nil {
		return nil, err
	}
	if fs == nil {
		return m.rootInfo(), nil
	}
	fi, err := fs.Stat(rest)
	if err != nil || rest != "/" {
		return fi, err
	}
	return renamed{fi, name}, nil
}

func (m *MountFS) Lstat(f string) (os.FileInfo, error) { return m.Stat(f) }

// openStater is a filesystem that can describe a file it opened as its
// Stat of the file's name would, without looking the name up (nfsd's
// OpenStater; the overlay's StatOpen).
type openStater interface {
	StatOpen(name string, f billy.File) (os.FileInfo, bool)
}

// StatOpen is Stat of f, a file m opened as name, when the filesystem
// mounted there can tell it from the open file (ok false: stat the path).
// A mount's root is shown renamed: it is never a file, and is left to Stat.
func (m *MountFS) StatOpen(name string, f billy.File) (os.FileInfo, bool) {
	fs, _, rest, err := m.resolve("stat", name)
	if err != nil || fs == nil || rest == "/" {
		return nil, false
	}
	if os, ok := fs.(openStater); ok {
		return os.StatOpen(rest, f)
	}
	return nil, false
}

// renamed is a mounted filesystem's root seen under its mount name.
type renamed struct {
	os.FileInfo
	name string
}

func (r renamed) Name() string { return r.name }

func (m *MountFS) ReadDir(p string) ([]os.FileInfo, error) {
	fs, _, rest, err := m.resolve("readdir", p)
	if err != nil {
		return nil, err
	}
	if fs != nil {
		return fs.ReadDir(rest)
	}
	m.mu.RLock()
	names := make([]string, 0, len(m.subs))
	for n := range m.subs {
		names = append(names, n)
	}
	m.mu.RUnlock()
	sort.Strings(names)
	var out []os.FileInfo
	for _, n := range names {
		if fi, err := m.Stat("/" + n); err == nil {
			out = append(out, fi)
		}
	}
	return out, nil
}

func (m *MountFS) Rename(from, to string) error {
	fa, na, ra, err := m.resolve("rename", from)
	if err != nil {
		return err
	}
	fb, nb, rb, err := m.resolve("rename", to)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && path.Dir(clean(to)) == "/" {
			return rootErr("rename", to)
		}
		return err
	}
	if fa == nil || fb == nil || ra == "/" || rb == "/" {
		return rootErr("rename", from)
	}
	if na != nb {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: errCrossMount}
	}
	return fa.Rename(ra, rb)
}

func (m *MountFS) Remove(f string) error {
	fs, _, rest, err := m.resolve("remove", f)
	if err != nil {
		return err
	}
	if fs == nil || rest == "/" {
		return rootErr("remove", f)
	}
	return fs.Remove(rest)
}

func (m *MountFS) Join(elem ...string) string { return path.Join(elem...) }

func (m *MountFS) TempFile(dir, prefix string) (billy.File, error) {
	fs, _, rest, err := m.resolve("tempfile", dir)
	if err != nil {
		return nil, err
	}
	if fs == nil {
		return nil, rootErr("tempfile", dir)
	}
	return fs.TempFile(rest, prefix)
}

func (m *MountFS) MkdirAll(p string, perm os.FileMode) error {
	fs, _, rest, err := m.resolve("mkdir", p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return rootErr("mkdir", p)
		}
		return err
	}
	if fs == nil {
		return nil
	}
	return fs.MkdirAll(rest, perm)
}

func (m *MountFS) Symlink(target, link string) error {
	fs, _, rest, err := m.resolve("symlink", link)
	if err != nil || fs == nil {
		return rootErr("symlink", link)
	}
	return fs.Symlink(target, rest)
}

func (m *MountFS) Readlink(link string) (string, error) {
	fs, _, rest, err := m.resolve("readlink", link)
	if err != nil {
		return "", err
	}
	if fs == nil {
		return "", &os.PathError{Op: "readlink", Path: link, Err: errors.New("not a symlink")}
	}
	return fs.Readlink(rest)
}

func (m *MountFS) Chroot(p string) (billy.Filesystem, error) { return Sub(m, p) }
func (m *MountFS) Root() string                              { return "/" }
func (m *MountFS) Capabilities() billy.Capability            { return billy.AllCapabilities }

// Chmod, Lchown, Chown and Chtimes pass SETATTR through to the mounted
// filesystem when it supports them (go-nfs looks for billy.Change).
func (m *MountFS) Chmod(name string, mode os.FileMode) error {
	return m.change("chmod", name, func(c billy.Change, p string) error { return c.Chmod(p, mode) })
}
func (m *MountFS) Lchown(name string, uid, gid int) error {
	return m.change("lchown", name, func(c billy.Change, p string) error { return c.Lchown(p, uid, gid) })
}
func (m *MountFS) Chown(name string, uid, gid int) error {
	return m.change("chown", name, func(c billy.Change, p string) error { return c.Chown(p, uid, gid) })
}
func (m *MountFS) Chtimes(name string, atime, mtime time.Time) error {
	return m.change("chtimes", name, func(c billy.Change, p string) error { return c.Chtimes(p, atime, mtime) })
}

func (m *MountFS) change(op, name string, fn func(billy.Change, string) error) error {
	fs, _, rest, err := m.resolve(op, name)
	if err != nil {
		return err
	}
	c, ok := fs.(billy.Change)
	if fs == nil || !ok {
		return rootErr(op, name)
	}
	return fn(c, rest)
}

// FileID is the id of p: the mounted filesystem's own id for its files.
func (m *MountFS) FileID(p string) (uint64, error) {
	fs, name, rest, err := m.resolve("stat", p)
	if err != nil {
		return 0, err
	}
	if fs == nil {
		return HashID(m.ns, "/"), nil
	}
	if ider, ok := fs.(IDer); ok {
		return ider.FileID(rest)
	}
	return HashID(m.ns+"/"+name, rest), nil
}

// PathOf finds the path whose id is id among the mounted filesystems.
func (m *MountFS) PathOf(id uint64) (string, error) {
	if id == HashID(m.ns, "/") {
		return "/", nil
	}
	m.mu.RLock()
	subs := make(map[string]billy.Filesystem, len(m.subs))
	for n, fs := range m.subs {
		subs[n] = fs
	}
	m.mu.RUnlock()
	for n, fs := range subs {
		if ider, ok := fs.(IDer); ok {
			if p, err := ider.PathOf(id); err == nil {
				return path.Join("/"+n, p), nil
			}
		}
	}
	return "", fmt.Errorf("file id %016x: %w", id, os.ErrNotExist)
}

// SetSpace sets what Space reports (the NFS server's FSSTAT).
func (m *MountFS) SetSpace(fn func() (total, free, avail uint64, err error)) {
	m.mu.Lock()
	m.space = fn
	m.mu.Unlock()
}

// Space reports the capacity set with SetSpace.
func (m *MountFS) Space() (total, free, avail uint64, err error) {
	m.mu.RLock()
	fn := m.space
	m.mu.RUnlock()
	if fn == nil {
		return 0, 0, 0, errors.New("capacity unknown")
	}
	return fn()
}

// FolderSpace reports the capacity of the filesystem holding dir.
func FolderSpace(dir string) func() (total, free, avail uint64, err error) {
	return func() (uint64, uint64, uint64, error) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			return 0, 0, 0, err
		}
		bs := uint64(st.Bsize)
		return st.Blocks * bs, st.Bfree * bs, st.Bavail * bs, nil
	}
}
