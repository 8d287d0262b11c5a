package gfs

import (
	"errors"
	"io"
	"os"
	"testing"
)

// panicky is a stand-in reader that panics on chosen calls, as a library
// reader might on damaged input.
type panicky struct{ on string }

func (p panicky) Root() (Entry, error) {
	if p.on == "root" {
		panic("nil pointer in root")
	}
	return Entry{Ino: 1, Mode: os.ModeDir | 0o755}, nil
}
func (p panicky) ReadDir(Entry) ([]Entry, error) {
	if p.on == "readdir" {
		var m map[string]int
		m["x"] = 1 // a real runtime panic: assignment to a nil map
	}
	return []Entry{{Name: "f", Ino: 2, Mode: 0o644, Size: 10}, {Name: "l", Ino: 3, Mode: os.ModeSymlink | 0o777}}, nil
}
func (p panicky) Open(Entry) (io.ReaderAt, error) {
	if p.on == "open" {
		panic("open")
	}
	return p, nil
}
func (p panicky) ReadAt(b []byte, off int64) (int, error) {
	var s []byte
	return int(s[off]), nil // index out of range
}
func (p panicky) Readlink(Entry) (string, error) {
	if p.on == "readlink" {
		panic("readlink")
	}
	return "t", nil
}

func TestTreeRecoversPanics(t *testing.T) {
	for _, on := range []string{"root", "readdir", "open", "readlink", "read"} {
		tr := NewTree(panicky{on: on}, "volume test")
		var err error
		switch on {
		case "root":
			_, err = tr.Lstat("/f")
		case "readdir":
			_, err = tr.ReadDir("/")
		case "open":
			_, _, err = tr.Open("/f")
		case "readlink":
			_, err = tr.Readlink("/l")
		case "read":
			var ra io.ReaderAt
			_, ra, err = tr.Open("/f")
			if err == nil {
				_, err = ra.ReadAt(make([]byte, 4), 1)
			}
		}
		if !errors.Is(err, ErrPanic) {
			t.Errorf("%s: err %v, want one wrapping ErrPanic", on, err)
		}
	}
}
