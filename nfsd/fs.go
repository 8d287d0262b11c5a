package nfsd

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"

	billy "github.com/go-git/go-billy/v5"
)

// exportFS is the filesystem go-nfs sees for an export. It refuses paths that
// climb out of the export, refuses every change on a read-only export, and, unless
// the server runs unsafe, syncs each file after every write and truncate: go-nfs
// answers every WRITE with FILE_SYNC, so the bytes must be on stable storage before
// the reply leaves.
type exportFS struct {
	billy.Filesystem
	exp      *export
	readOnly bool
	unsafe   bool
}

func (fs *exportFS) check(op, p string) error {
	if strings.IndexByte(p, 0) >= 0 {
		return &os.PathError{Op: op, Path: p, Err: os.ErrPermission}
	}
	for rest := filepath.ToSlash(p); ; {
		i := strings.IndexByte(rest, '/')
		c := rest
		if i >= 0 {
			c = rest[:i]
		}
		if c == ".." {
			return &os.PathError{Op: op, Path: p, Err: os.ErrPermission}
		}
		if i < 0 {
			return nil
		}
		rest = rest[i+1:]
	}
}

func (fs *exportFS) checkWrite(op, p string) error {
	if err := fs.check(op, p); err != nil {
		return err
	}
	if fs.readOnly {
		return &os.PathError{Op: op, Path: p, Err: syscall.EROFS}
	}
	return nil
}

const writeFlags = os.O_WRONLY | os.O_RDWR | os.O_CREATE | os.O_TRUNC | os.O_APPEND

// Capabilities hides write capabilities on a read-only export, which makes go-nfs
// answer NFS3ERR_ROFS.
func (fs *exportFS) Capabilities() billy.Capability {
	c := billy.Capabilities(fs.Filesystem)
	if fs.readOnly {
		c &^= billy.WriteCapability | billy.ReadAndWriteCapability | billy.TruncateCapability
	}
	return c
}

func (fs *exportFS) Create(name string) (billy.File, error) {
	if err := fs.checkWrite("create", name); err != nil {
		return nil, err
	}
	f, err := fs.Filesystem.Create(name)
	return fs.wrap(f, err)
}

func (fs *exportFS) Open(name string) (billy.File, error) {
	if err := fs.check("open", name); err != nil {
		return nil, err
	}
	return fs.Filesystem.Open(name)
}

func (fs *exportFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	if flag&writeFlags != 0 {
		if err := fs.checkWrite("open", name); err != nil {
			return nil, err
		}
		f, err := fs.Filesystem.OpenFile(name, flag, perm)
		return fs.wrap(f, err)
	}
	if err := fs.check("open", name); err != nil {
		return nil, err
	}
	return fs.Filesystem.OpenFile(name, flag, perm)
}

func (fs *exportFS) Stat(name string) (os.FileInfo, error) {
	if err := fs.check("stat", name); err != nil {
		return nil, err
	}
	return fs.Filesystem.Stat(name)
}

// statOpen is Stat of f, a file fs opened as name, from the open file when
// the export's filesystem can tell it (OpenStater), saving the lookup of
// the name; ok false: stat the path.
func (fs *exportFS) statOpen(name string, f billy.File) (os.FileInfo, bool) {
	so, ok := fs.Filesystem.(OpenStater)
	if !ok || pathStats.Load() || fs.check("stat", name) != nil {
		return nil, false
	}
	if sf, ok := f.(*syncFile); ok {
		f = sf.File
	}
	return so.StatOpen(name, f)
}

func (fs *exportFS) Lstat(name string) (os.FileInfo, error) {
	if err := fs.check("lstat", name); err != nil {
		return nil, err
	}
	return fs.Filesystem.Lstat(name)
}

func (fs *exportFS) Rename(from, to string) error {
	if err := fs.checkWrite("rename", from); err != nil {
		return err
	}
	if err := fs.checkWrite("rename", to); err != nil {
		return err
	}
	return fs.Filesystem.Rename(from, to)
}

func (fs *exportFS) Remove(name string) error {
	if err := fs.checkWrite("remove", name); err != nil {
		return err
	}
	return fs.Filesystem.Remove(name)
}

func (fs *exportFS) TempFile(dir, prefix string) (billy.File, error) {
	if err := fs.checkWrite("tempfile", dir); err != nil {
		return nil, err
	}
	f, err := fs.Filesystem.TempFile(dir, prefix)
	return fs.wrap(f, err)
}

func (fs *exportFS) ReadDir(name string) ([]os.FileInfo, error) {
	if err := fs.check("readdir", name); err != nil {
		return nil, err
	}
	return fs.Filesystem.ReadDir(name)
}

func (fs *exportFS) MkdirAll(name string, perm os.FileMode) error {
	if err := fs.checkWrite("mkdir", name); err != nil {
		return err
	}
	return fs.Filesystem.MkdirAll(name, perm)
}

// Symlink refuses targets that are absolute or climb with "..": a link is
// followed by the server's own filesystem, which must not lead out of the export.
func (fs *exportFS) Symlink(target, link string) error {
	if err := fs.checkWrite("symlink", link); err != nil {
		return err
	}
	if !safeLinkTarget(target) {
		return &os.PathError{Op: "symlink", Path: target, Err: os.ErrPermission}
	}
	return fs.Filesystem.Symlink(target, link)
}

func safeLinkTarget(target string) bool {
	if target == "" || strings.HasPrefix(target, "/") || strings.IndexByte(target, 0) >= 0 {
		return false
	}
	for _, c := range strings.Split(target, "/") {
		if c == ".." {
			return false
		}
	}
	return true
}

func (fs *exportFS) Readlink(name string) (string, error) {
	if err := fs.check("readlink", name); err != nil {
		return "", err
	}
	return fs.Filesystem.Readlink(name)
}

// Chroot is not used by go-nfs; a chrooted view would lose the checks, so it is
// refused.
func (fs *exportFS) Chroot(string) (billy.Filesystem, error) {
	return nil, fmt.Errorf("nfsd: export filesystems cannot be chrooted")
}

func (fs *exportFS) wrap(f billy.File, err error) (billy.File, error) {
	if err != nil || fs.unsafe {
		return f, err
	}
	sync := syncerOf(f)
	if sync == nil && fs.exp != nil && fs.exp.noSync.CompareAndSwap(false, true) && fs.exp.log != nil {
		fs.exp.log.Warn("nfsd: files of this export have no Sync method: writes are acknowledged as stable without being synced",
			"export", fs.exp.Path)
	}
	return &syncFile{File: f, sync: sync}, nil
}

// syncFile syncs after every Write and Truncate.
type syncFile struct {
	billy.File
	sync func() error
}

func (f *syncFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	if err != nil {
		return n, err
	}
	if f.sync != nil {
		if err := f.sync(); err != nil {
			return n, fmt.Errorf("sync %s: %w", f.Name(), err)
		}
	}
	return n, nil
}

func (f *syncFile) Truncate(size int64) error {
	if err := f.File.Truncate(size); err != nil {
		return err
	}
	if f.sync != nil {
		if err := f.sync(); err != nil {
			return fmt.Errorf("sync %s: %w", f.Name(), err)
		}
	}
	return nil
}

// Sync lets a caller sync explicitly.
func (f *syncFile) Sync() error {
	if f.sync == nil {
		return nil
	}
	return f.sync()
}

type syncer interface{ Sync() error }

// syncerOf finds the Sync method of f, looking through wrappers that keep the
// real file in an embedded billy.File field named File (go-billy's chroot helper
// does, and hides Sync that way). It returns nil when there is none.
func syncerOf(f billy.File) func() error {
	for depth := 0; depth < 8 && f != nil; depth++ {
		if s, ok := f.(syncer); ok {
			return s.Sync
		}
		v := reflect.ValueOf(f)
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
			return nil
		}
		field := v.Elem().FieldByName("File")
		if !field.IsValid() || field.Kind() != reflect.Interface || field.IsNil() {
			return nil
		}
		inner, ok := field.Interface().(billy.File)
		if !ok {
			return nil
		}
		f = inner
	}
	return nil
}
