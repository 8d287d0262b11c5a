package nfsd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	billy "github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/helper/chroot"
	"github.com/go-git/go-billy/v5/osfs"
	"golang.org/x/sys/unix"
)

// attrChanger carries out SETATTR (and the attributes of CREATE, MKDIR and
// SYMLINK) on an export. Each change goes to the filesystem's own method when it
// has one. go-billy's osfs has Chmod only, so for a filesystem backed by a local
// folder the rest is done on that folder, without following symbolic links and
// never outside it. A change nothing can make is ignored: ESXi expects SETATTR of
// times and owners to succeed, and the next GETATTR shows what really holds.
type attrChanger struct {
	fs   *exportFS
	root string // local folder behind the filesystem, or ""
}

func newAttrChanger(fs *exportFS) *attrChanger {
	c := &attrChanger{fs: fs}
	switch u := fs.Filesystem.(type) {
	case *osfs.BoundOS:
		c.root = u.Root()
	case *chroot.ChrootHelper:
		// osfs.New wraps its ChrootOS in a polyfill inside the chroot.
		under := u.Underlying()
		if p, ok := under.(interface{ Underlying() billy.Basic }); ok {
			under = p.Underlying()
		}
		if _, ok := under.(*osfs.ChrootOS); ok {
			c.root = u.Root()
		}
	}
	if c.root != "" {
		if r, err := filepath.EvalSymlinks(c.root); err == nil {
			c.root = r
		}
	}
	return c
}

// local maps name to a path in the local folder whose parent directories stay
// inside it, or fails.
func (c *attrChanger) local(name string) (string, error) {
	if c.root == "" {
		return "", errors.ErrUnsupported
	}
	parts, err := splitPath(filepath.ToSlash(name))
	if err != nil {
		return "", err
	}
	if len(parts) == 0 {
		return c.root, nil
	}
	parent, err := filepath.EvalSymlinks(filepath.Join(append([]string{c.root}, parts[:len(parts)-1]...)...))
	if err != nil {
		return "", err
	}
	if parent != c.root && !strings.HasPrefix(parent, c.root+string(filepath.Separator)) {
		return "", os.ErrPermission
	}
	return filepath.Join(parent, parts[len(parts)-1]), nil
}

func (c *attrChanger) Chmod(name string, mode os.FileMode) error {
	if err := c.fs.checkWrite("chmod", name); err != nil {
		return err
	}
	if ch, ok := c.fs.Filesystem.(billy.Chmod); ok {
		return ch.Chmod(name, mode)
	}
	return nil
}

func (c *attrChanger) Lchown(name string, uid, gid int) error {
	if err := c.fs.checkWrite("lchown", name); err != nil {
		return err
	}
	if ch, ok := c.fs.Filesystem.(interface{ Lchown(string, int, int) error }); ok {
		return ch.Lchown(name, uid, gid)
	}
	p, err := c.local(name)
	if errors.Is(err, errors.ErrUnsupported) {
		return nil
	} else if err != nil {
		return err
	}
	return os.Lchown(p, uid, gid)
}

func (c *attrChanger) Chown(name string, uid, gid int) error {
	if err := c.fs.checkWrite("chown", name); err != nil {
		return err
	}
	if ch, ok := c.fs.Filesystem.(interface{ Chown(string, int, int) error }); ok {
		return ch.Chown(name, uid, gid)
	}
	return c.Lchown(name, uid, gid)
}

func (c *attrChanger) Chtimes(name string, atime, mtime time.Time) error {
	if err := c.fs.checkWrite("chtimes", name); err != nil {
		return err
	}
	if ch, ok := c.fs.Filesystem.(interface {
		Chtimes(string, time.Time, time.Time) error
	}); ok {
		return ch.Chtimes(name, atime, mtime)
	}
	p, err := c.local(name)
	if errors.Is(err, errors.ErrUnsupported) {
		return nil
	} else if err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}
