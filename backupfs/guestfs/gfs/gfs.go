// Package gfs is the vocabulary every guest filesystem reader of rekindle
// speaks, and the path walk they share.
//
//   - An Entry is one file of a guest filesystem as the guest sees it: name,
//     type and permission bits, size, mtime, owner, link count and Ino, the
//     filesystem's own number for the file (hard links share it).
//   - A Reader is a filesystem opened read-only over an io.ReaderAt (a
//     partition or logical volume): its root, a directory's entries, a regular
//     file's bytes, a symlink's target. Readers know nothing of paths.
//   - A Tree walks slash paths over a Reader with a bounded cache of
//     directories, and turns a reader's panic into an error for that call:
//     a broken volume never takes the server down.
package gfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Entry is one file of a guest filesystem.
type Entry struct {
	Name  string
	Ino   uint64      // the filesystem's file number; hard links share it
	Mode  os.FileMode // type bits and permissions (setuid, setgid, sticky kept)
	Size  int64
	Mtime time.Time
	UID   uint32
	GID   uint32
	Nlink uint32
	// Ref is the reader's own handle on the file (an inode, a first cluster).
	Ref any
}

// Reader is a guest filesystem opened read-only.
type Reader interface {
	// Root is the root directory.
	Root() (Entry, error)
	// ReadDir lists dir's entries, without "." and "..".
	ReadDir(dir Entry) ([]Entry, error)
	// Open returns the bytes of a regular file (reads past Size return io.EOF).
	Open(f Entry) (io.ReaderAt, error)
	// Readlink returns a symlink's target.
	Readlink(l Entry) (string, error)
}

// Noter is implemented by readers that have something to say about the
// volume as a whole (a journal not replayed, a feature not read).
type Noter interface {
	Notes() []string
}

// Availability is implemented by readers that may stop serving a volume
// while it is open (a call into a wrapped library that did not finish in
// time): Unavailable says why, nil while the volume is served.
type Availability interface {
	Unavailable() error
}

// Errors a reader wraps so callers can tell what went wrong.
var (
	// ErrCorrupt: the on-disk structures contradict themselves.
	ErrCorrupt = errors.New("filesystem structures damaged")
	// ErrUnsupported: a feature this reader does not read.
	ErrUnsupported = errors.New("not supported")
	// ErrPanic: the reader panicked; the call failed, the server goes on.
	ErrPanic = errors.New("filesystem reader failed")
	// ErrUnavailable: the volume is no longer served (a call hung); every
	// later call fails fast.
	ErrUnavailable = errors.New("volume unavailable")
)

// Corruptf returns an error wrapping ErrCorrupt.
func Corruptf(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrCorrupt)
}
