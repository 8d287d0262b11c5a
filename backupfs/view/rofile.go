package view

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/go-git/go-billy/v5"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// NewReadOnlyFile is the open file every read-only view serves: size bytes
// of ra (reads past size end there), refusing writes with why.
func NewReadOnlyFile(name string, ra io.ReaderAt, size int64, why error) billy.File {
	return &roFile{name: name, ra: ra, size: size, why: why}
}

// NewReadOnlyDir is an open folder of a read-only view: reads fail, writes
// fail with why.
func NewReadOnlyDir(name string, why error) billy.File {
	return &roFile{name: name, dir: true, why: why}
}

// roFile is an open file of a read-only view.
type roFile struct {
	name string
	ra   io.ReaderAt
	size int64
	dir  bool
	why  error // why writes fail

	mu  sync.Mutex
	off int64
}

func (f *roFile) Name() string { return f.name }
func (f *roFile) Write([]byte) (int, error) {
	return 0, &os.PathError{Op: "write", Path: f.name, Err: f.why}
}
func (f *roFile) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}
func (f *roFile) ReadAt(p []byte, off int64) (int, error) {
	if f.dir {
		return 0, &os.PathError{Op: "read", Path: f.name, Err: errors.New("is a directory")}
	}
	if off >= f.size {
		return 0, io.EOF
	}
	if rem := f.size - off; int64(len(p)) > rem {
		n, err := f.ra.ReadAt(p[:rem], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return f.ra.ReadAt(p, off)
}
func (f *roFile) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.size
	default:
		return 0, fmt.Errorf("seek: bad whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek %s: negative offset", f.name)
	}
	f.off = offset
	return offset, nil
}
func (f *roFile) Close() error  { return nil }
func (f *roFile) Lock() error   { return nil }
func (f *roFile) Unlock() error { return nil }
func (f *roFile) Truncate(int64) error {
	return &os.PathError{Op: "truncate", Path: f.name, Err: f.why}
}

// CachedSlices is ReadSlices when it needs no I/O (see
// repo.DiskReader.CachedSlices): ok is false when the bytes are not at hand,
// or the file is not one whose bytes can be.
func (f *roFile) CachedSlices(off int64, n int) ([][]byte, int, bool, error) {
	if f.dir {
		return nil, 0, false, nil
	}
	switch ra := f.ra.(type) {
	case *repo.DiskReader:
		if f.size == ra.Size() {
			return ra.CachedSlices(off, n)
		}
	case *bytes.Reader: // a small file held in memory
		parts, got, err := f.ReadSlices(off, n)
		return parts, got, true, err
	}
	return nil, 0, false, nil
}

// ReadSlices lends the bytes at off without copying them when they come
// from a disk of the repository: the NFS server's READ fast path sends them
// as they are (see nfsd.SliceReader).
func (f *roFile) ReadSlices(off int64, n int) ([][]byte, int, error) {
	if f.dir {
		return nil, 0, &os.PathError{Op: "read", Path: f.name, Err: errors.New("is a directory")}
	}
	if dr, ok := f.ra.(*repo.DiskReader); ok && f.size == dr.Size() {
		return dr.ReadSlices(off, n)
	}
	b := make([]byte, n)
	m, err := f.ReadAt(b, off)
	return [][]byte{b[:m]}, m, err
}
