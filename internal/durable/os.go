package durable

import (
	"io"
	"os"
	"time"
)

// OS is the real filesystem.
func OS() FS { return osFS{} }

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Stat(name string) (os.FileInfo, error)             { return os.Stat(name) }
func (osFS) ReadDir(name string) ([]os.DirEntry, error)        { return os.ReadDir(name) }
func (osFS) Mkdir(name string, perm os.FileMode) error         { return os.Mkdir(name, perm) }
func (osFS) Rename(oldname, newname string) error              { return os.Rename(oldname, newname) }
func (osFS) Remove(name string) error                          { return os.Remove(name) }
func (osFS) RemoveAll(name string) error                       { return os.RemoveAll(name) }
func (osFS) Chtimes(name string, atime, mtime time.Time) error { return os.Chtimes(name, atime, mtime) }
func (osFS) Lock(name string) (io.Closer, error)               { return lockFile(name) }

type osFile struct{ *os.File }

func (f osFile) DataSync() error { return fdatasync(f.File) }
