// Package durable is rekindle's one way of putting bytes and names on stable
// storage, and the filesystem interface the server's own state (session
// overlays, handle tables) is written through.
//
// Vocabulary:
//
//   - FS: the operations rekindle's state needs from a filesystem. OS is the
//     real one; package powercut has one that forgets, on a simulated power
//     cut, everything that was not synced (a test stand-in for a disk).
//   - synced: a file's bytes are synced by File.Sync or File.DataSync; a
//     name (a create, rename or remove in a directory) is synced by syncing
//     the directory (SyncDir). On Linux a file that was fsynced but whose
//     directory was not can vanish in a power cut: both are needed.
//   - durable replace (WriteFile): temporary file in the same directory,
//     written, fsynced, renamed over the target, directory fsynced. A crash
//     leaves the old content or the new, never a mix, and once WriteFile
//     returns the new content survives a power cut.
package durable

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// FS is what rekindle's state is written through. Names are OS paths.
type FS interface {
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	Stat(name string) (os.FileInfo, error)
	ReadDir(name string) ([]os.DirEntry, error)
	Mkdir(name string, perm os.FileMode) error
	Rename(oldname, newname string) error
	Remove(name string) error
	RemoveAll(name string) error
	Chtimes(name string, atime, mtime time.Time) error
	// Lock takes an exclusive lock named by the file name (creating it), held
	// until the returned Closer is closed; it fails at once if it is held.
	Lock(name string) (io.Closer, error)
}

// File is an open file of an FS. Opening a directory read-only gives a File
// whose Sync makes its entries durable.
type File interface {
	io.Reader
	io.Writer
	io.ReaderAt
	io.WriterAt
	io.Closer
	Name() string
	Stat() (os.FileInfo, error)
	Truncate(size int64) error
	// Sync makes the file's bytes and attributes durable (fsync).
	Sync() error
	// DataSync makes the file's bytes and size durable, not its times
	// (fdatasync).
	DataSync() error
}

// Allocator is implemented by a File that can reserve storage ahead of the
// writes that fill it (the real filesystem's files, on Linux).
type Allocator interface {
	// Allocate reserves the blocks of [off, off+n) without changing the
	// file's size or the bytes it reads (fallocate(2), FALLOC_FL_KEEP_SIZE:
	// a hole stays reading zeros). A write into a hole has ext4 reserve a
	// block per page as it copies (delayed allocation), about twice the
	// CPU of writing over allocated blocks for a 1 MiB write; the same
	// write into an allocated range costs what an overwrite does. It may
	// fail (no space, a filesystem without fallocate) and then leaves the
	// file as it was: the write allocates as it would have.
	Allocate(off, n int64) error
}

// ErrLocked is returned (wrapped) by FS.Lock when another holder has the lock.
var ErrLocked = errors.New("locked by another holder")

// Options tune Replace.
type Options struct {
	// TempDir holds the temporary file; it must be on the same filesystem as
	// the target. Empty means the target's directory.
	TempDir string
	// TempPrefix starts the temporary file's name (a random suffix follows);
	// empty means "." and the target's base name.
	TempPrefix string
	// NoSync skips the file and directory fsyncs: the replace stays atomic but
	// not durable. For files that a later filesystem-wide sync covers before
	// anything names them (repository chunks).
	NoSync bool
}

// WriteFile replaces name with data durably (see the package comment).
func WriteFile(fsys FS, name string, data []byte, perm os.FileMode) error {
	return Replace(fsys, name, data, perm, Options{})
}

// Replace replaces name with data: temporary file, write, fsync, rename,
// directory fsync, unless opts.NoSync. On failure the temporary file is
// removed and name is unchanged.
func Replace(fsys FS, name string, data []byte, perm os.FileMode, opts Options) error {
	dir := opts.TempDir
	if dir == "" {
		dir = filepath.Dir(name)
	}
	prefix := opts.TempPrefix
	if prefix == "" {
		prefix = "." + filepath.Base(name)
	}
	var suffix [6]byte
	rand.Read(suffix[:])
	tmp := filepath.Join(dir, prefix+".tmp-"+hex.EncodeToString(suffix[:]))
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("replace %s: %w", name, err)
	}
	_, err = f.Write(data)
	if err == nil && !opts.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, name)
	}
	if err != nil {
		fsys.Remove(tmp)
		return fmt.Errorf("replace %s: %w", name, err)
	}
	if !opts.NoSync {
		if err := SyncDir(fsys, filepath.Dir(name)); err != nil {
			return fmt.Errorf("replace %s: %w", name, err)
		}
	}
	return nil
}

// SyncAll makes everything written so far to the filesystem holding dir
// durable, file bytes and directory entries alike (syncfs(2) on Linux): one
// call instead of an fsync per file, for writers of many files (repository
// chunks) that name none of them until it returns. An FS has it when it
// has a SyncAll(dir string) error method (OS and powercut do).
func SyncAll(fsys FS, dir string) error {
	s, ok := fsys.(interface{ SyncAll(dir string) error })
	if !ok {
		return fmt.Errorf("sync %s: %T cannot sync a whole filesystem", dir, fsys)
	}
	if err := s.SyncAll(dir); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// SyncDir makes the entries of directory dir durable.
func SyncDir(fsys FS, dir string) error {
	d, err := fsys.OpenFile(dir, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// MkdirAll creates dir and any missing parents, like os.MkdirAll, and syncs
// the parent of every directory it created, so that the new directories
// survive a power cut.
func MkdirAll(fsys FS, dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := fsys.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("mkdir %s: %s is not a directory", dir, d)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("mkdir %s: %w", dir, err)
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := fsys.Mkdir(missing[i], perm); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("mkdir %s: %w", dir, err)
		}
		if err := SyncDir(fsys, filepath.Dir(missing[i])); err != nil {
			return fmt.Errorf("mkdir %s: %w", dir, err)
		}
	}
	return nil
}

// ReadFile reads the whole file name.
func ReadFile(fsys FS, name string) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Read into a buffer of the file's size (io.ReadAll would grow one from
	// 512 bytes, copying a 1 MiB chunk file some 15 times).
	size := 0
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 && fi.Size() < 1<<40 {
		size = int(fi.Size())
	}
	b := make([]byte, 0, size+512)
	for {
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// Install makes tmp, a file written by someone else (another program),
// durable and moves it to name: fsync, rename, directory fsync.
func Install(fsys FS, tmp, name string) error {
	f, err := fsys.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, name)
	}
	if err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	if err := SyncDir(fsys, filepath.Dir(name)); err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	return nil
}
