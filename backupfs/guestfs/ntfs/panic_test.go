package ntfs

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// panicky is a volume whose reads panic while armed: a panic raised
// inside go-ntfs's own call stack, as a bug of the library would be.
type panicky struct {
	r     *bytes.Reader
	armed atomic.Bool
}

func (p *panicky) ReadAt(b []byte, off int64) (int, error) {
	if p.armed.Load() {
		panic("injected: the volume's read panics")
	}
	return p.r.ReadAt(b, off)
}

// TestLibraryPanicIsAnError: a panic inside go-ntfs, in opening a volume,
// listing a folder and reading a file, comes back as an error wrapping
// gfs.ErrPanic, and the volume answers the next call normally (its lock
// was let go).
func TestLibraryPanicIsAnError(t *testing.T) {
	img := patched(t, nil)
	p := &panicky{r: bytes.NewReader(img)}
	p.armed.Store(true)
	if _, err := Open(p, int64(len(img))); !errors.Is(err, gfs.ErrPanic) {
		t.Fatalf("open: %v, want an error wrapping gfs.ErrPanic", err)
	}
	p.armed.Store(false)
	fs, err := Open(p, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	root, err := fs.Root()
	if err != nil {
		t.Fatal(err)
	}
	p.armed.Store(true)
	if _, err := fs.ReadDir(root); !errors.Is(err, gfs.ErrPanic) {
		t.Fatalf("readdir: %v, want an error wrapping gfs.ErrPanic", err)
	}
	p.armed.Store(false)
	ents, err := fs.ReadDir(root)
	if err != nil || len(ents) == 0 {
		t.Fatalf("readdir after the panic: %d entries, %v", len(ents), err)
	}
	var big gfs.Entry
	for _, e := range ents {
		if e.Name == "big.txt" {
			big = e
		}
	}
	ra, err := fs.Open(big)
	if err != nil {
		t.Fatal(err)
	}
	p.armed.Store(true)
	if _, err := ra.ReadAt(make([]byte, 100), 5000); !errors.Is(err, gfs.ErrPanic) {
		t.Fatalf("read big.txt: %v, want an error wrapping gfs.ErrPanic", err)
	}
	p.armed.Store(false)
	b := make([]byte, 100)
	if n, err := ra.ReadAt(b, 5000); n != 100 || err != nil || string(b) != string(bytes.Repeat([]byte("x"), 100)) {
		t.Fatalf("read big.txt after the panic: %d, %v, %q", n, err, b[:n])
	}
}
