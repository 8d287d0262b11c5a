package gfs

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// window maps its bytes [0, size) onto r from base (a partition).
type window struct {
	r          io.ReaderAt
	base, size int64
}

func (w *window) ReadAt(p []byte, off int64) (int, error) { return w.r.ReadAt(p, w.base+off) }
func (w *window) Map(off, n int64) ([]Piece, error) {
	if off >= w.size {
		return nil, nil
	}
	return []Piece{{R: w.r, Off: w.base + off, Len: min(n, w.size-off)}}, nil
}

// fixed maps whatever is asked to its pieces.
type fixed struct{ ps []Piece }

func (f *fixed) ReadAt(p []byte, off int64) (int, error) { return 0, io.EOF }
func (f *fixed) Map(off, n int64) ([]Piece, error)       { return f.ps, nil }

func TestResolve(t *testing.T) {
	disk := bytes.NewReader(make([]byte, 1000))
	part := &window{r: disk, base: 100, size: 500}
	// A file: 10 bytes at 0 of the partition, a hole of 5, 10 bytes at 10
	// (they follow the first piece on the disk: merged), then 20 bytes at
	// 490, of which the partition holds 10.
	file := &fixed{ps: []Piece{{R: part, Off: 0, Len: 10}, {Len: 5}, {Len: 3}, {R: part, Off: 10, Len: 10}, {R: part, Off: 20, Len: 4}, {R: part, Off: 490, Len: 20}}}
	ps, n, err := Resolve(file, 0, 52)
	if err != nil {
		t.Fatal(err)
	}
	want := []Piece{{R: disk, Off: 100, Len: 10}, {Len: 8}, {R: disk, Off: 110, Len: 14}, {R: disk, Off: 590, Len: 10}}
	if n != 42 || len(ps) != len(want) {
		t.Fatalf("%d bytes in %+v, want 42 in %+v", n, ps, want)
	}
	for i := range want {
		if ps[i] != want[i] {
			t.Fatalf("piece %d: %+v, want %+v", i, ps[i], want[i])
		}
	}
	// More bytes than asked for is a damaged map, not a longer read.
	if _, _, err := Resolve(file, 0, 20); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a map longer than asked: %v", err)
	}
	// A map that names itself ends, with an error.
	loop := &fixed{}
	loop.ps = []Piece{{R: loop, Len: 1}}
	if _, _, err := Resolve(loop, 0, 1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a map naming itself: %v", err)
	}
}
