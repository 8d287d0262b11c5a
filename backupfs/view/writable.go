package view

import (
	"os"

	"github.com/go-git/go-billy/v5"
)

// Writable shows a read-only view's files with the modes of writable ones
// (0644 files, 0755 folders). A session's base is read-only, but the session
// over it is not, and clients that look at modes must see that.
func Writable(fs billy.Filesystem) billy.Filesystem { return &writableFS{fs} }

type writableFS struct{ billy.Filesystem }

type writableInfo struct{ os.FileInfo }

func (i writableInfo) Mode() os.FileMode {
	if i.FileInfo.IsDir() {
		return os.ModeDir | 0o755
	}
	return i.FileInfo.Mode()&^os.ModePerm | 0o644
}

func (w *writableFS) Stat(p string) (os.FileInfo, error) {
	fi, err := w.Filesystem.Stat(p)
	if err != nil {
		return nil, err
	}
	return writableInfo{fi}, nil
}

func (w *writableFS) Lstat(p string) (os.FileInfo, error) {
	fi, err := w.Filesystem.Lstat(p)
	if err != nil {
		return nil, err
	}
	return writableInfo{fi}, nil
}

func (w *writableFS) ReadDir(p string) ([]os.FileInfo, error) {
	list, err := w.Filesystem.ReadDir(p)
	for i := range list {
		list[i] = writableInfo{list[i]}
	}
	return list, err
}

func (w *writableFS) FileID(p string) (uint64, error) {
	if ider, ok := w.Filesystem.(IDer); ok {
		return ider.FileID(p)
	}
	return HashID("writable", clean(p)), nil
}

func (w *writableFS) PathOf(id uint64) (string, error) {
	if ider, ok := w.Filesystem.(IDer); ok {
		return ider.PathOf(id)
	}
	return "", os.ErrNotExist
}
