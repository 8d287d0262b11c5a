package overlay

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/go-git/go-billy/v5"
)

// file is an open handle: a position over a content. Handles are cheap;
// the descriptors belong to the content and outlive them.
type file struct {
	o                       *Overlay
	name                    string
	c                       *content // nil for a directory
	dir                     bool
	read, write, appendMode bool
	closed                  atomic.Bool

	mu  sync.Mutex // guards pos
	pos int64
}

var _ billy.File = (*file)(nil)

func (f *file) Name() string { return f.name }

func (f *file) usable(op string, mode bool) error {
	switch {
	case f.closed.Load():
		return pathErr(op, f.name, os.ErrClosed)
	case f.dir:
		return pathErr(op, f.name, syscall.EISDIR)
	case !mode:
		return pathErr(op, f.name, syscall.EBADF)
	}
	return nil
}

func (f *file) Read(p []byte) (int, error) {
	if err := f.usable("read", f.read); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.c.readAt(p, f.pos)
	f.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, f.wrap("read", err)
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if err := f.usable("read", f.read); err != nil {
		return 0, err
	}
	n, err := f.c.readAt(p, off)
	return n, f.wrap("read", err)
}

func (f *file) Write(p []byte) (int, error) {
	if err := f.usable("write", f.write); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	off, err := f.c.writeAt(p, f.pos, f.appendMode)
	if err != nil {
		return 0, f.wrap("write", err)
	}
	f.pos = off + int64(len(p))
	return len(p), nil
}

// WriteAt writes p at off, like os.File.WriteAt (billy v6 will require it).
func (f *file) WriteAt(p []byte, off int64) (int, error) {
	if err := f.usable("write", f.write); err != nil {
		return 0, err
	}
	if f.appendMode {
		return 0, pathErr("write", f.name, errors.New("WriteAt in append mode"))
	}
	if _, err := f.c.writeAt(p, off, false); err != nil {
		return 0, f.wrap("write", err)
	}
	return len(p), nil
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	if err := f.usable("seek", true); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		size, err := f.c.sizeNow()
		if err != nil {
			return 0, f.wrap("seek", err)
		}
		offset += size
	default:
		return 0, pathErr("seek", f.name, syscall.EINVAL)
	}
	if offset < 0 {
		return 0, pathErr("seek", f.name, syscall.EINVAL)
	}
	f.pos = offset
	return offset, nil
}

func (f *file) Truncate(size int64) error {
	if err := f.usable("truncate", f.write); err != nil {
		return err
	}
	return f.wrap("truncate", f.c.truncate(size))
}

// Sync flushes the file's written data to stable storage.
func (f *file) Sync() error {
	if err := f.usable("sync", true); err != nil {
		return err
	}
	return f.wrap("sync", f.c.sync())
}

// Lock is not supported (see Overlay.Capabilities).
func (f *file) Lock() error { return billy.ErrNotSupported }

// Unlock is not supported (see Overlay.Capabilities).
func (f *file) Unlock() error { return billy.ErrNotSupported }

func (f *file) Close() error {
	if f.closed.Swap(true) {
		return pathErr("close", f.name, os.ErrClosed)
	}
	if f.c != nil {
		f.o.release(f.c)
	}
	return nil
}

func (f *file) wrap(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return err
	}
	return pathErr(op, f.name, err)
}
