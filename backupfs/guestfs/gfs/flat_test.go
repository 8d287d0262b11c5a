package gfs

import (
	"bytes"
	"io"
	"os"
	"reflect"
	"testing"
)

// countingWindow is a window that counts its Map calls.
type countingWindow struct {
	window
	maps *int
}

func (w *countingWindow) Map(off, n int64) ([]Piece, error) {
	*w.maps++
	return w.window.Map(off, n)
}

// fragments is a file of frag-byte fragments placed every other frag bytes
// of vol: each Map call walks them and is counted.
type fragments struct {
	vol        io.ReaderAt
	frag, size int64
	maps       *int
}

func (f *fragments) ReadAt(p []byte, off int64) (int, error) {
	ps, err := f.Map(off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	return ReadPieces(p, ps)
}

func (f *fragments) Map(off, n int64) ([]Piece, error) {
	*f.maps++
	var out []Piece
	for pos := off; pos < min(off+n, f.size); {
		k := min(f.frag-pos%f.frag, off+n-pos, f.size-pos)
		out = append(out, Piece{R: f.vol, Off: 2*(pos-pos%f.frag) + pos%f.frag, Len: k})
		pos += k
	}
	return out, nil
}

// fragReader is a filesystem of one file, "f", in fragments on a
// partition of a disk.
type fragReader struct{ file *fragments }

func (r fragReader) Root() (Entry, error) { return Entry{Ino: 1, Mode: os.ModeDir | 0o755}, nil }
func (r fragReader) ReadDir(Entry) ([]Entry, error) {
	return []Entry{{Name: "f", Ino: 2, Mode: 0o644, Size: r.file.size}}, nil
}
func (r fragReader) Open(Entry) (io.ReaderAt, error) { return r.file, nil }
func (r fragReader) Readlink(Entry) (string, error)  { return "", io.EOF }

// TestOpenFileMapResolvedOnce: an open file's pieces on the disk are
// resolved at open; READs (Resolve, as guestfs does per NFS READ) walk
// neither the file's extents nor the partition again, and get the pieces
// the walk gives. A file in more than MaxFlatPieces fragments is walked
// per call, as before.
func TestOpenFileMapResolvedOnce(t *testing.T) {
	disk := bytes.NewReader(bytes.Repeat([]byte("0123456789abcdef"), 1<<16)) // 1 MiB
	for _, tc := range []struct {
		frag      int64
		flattened bool
	}{{frag: 4096, flattened: true}, {frag: 256, flattened: false}} {
		var fileMaps, partMaps int
		part := &countingWindow{window: window{r: disk, base: 8192, size: 1<<20 - 8192}, maps: &partMaps}
		f := &fragments{vol: part, frag: tc.frag, size: 100 * 1024, maps: &fileMaps}
		tr := NewTree(fragReader{file: f}, "volume test")
		_, ra, err := tr.Open("/f")
		if err != nil {
			t.Fatal(err)
		}
		atOpen := fileMaps + partMaps
		// The reference: the same file walked through every layer.
		var refMaps int
		ref := &fragments{vol: &countingWindow{window: part.window, maps: &refMaps}, frag: tc.frag, size: f.size, maps: &refMaps}
		for off := int64(0); off < f.size; off += 3000 {
			got, n, err := Resolve(ra, off, 7000)
			if err != nil {
				t.Fatal(err)
			}
			want, wn, _ := Resolve(ref, off, 7000)
			if n != wn || !reflect.DeepEqual(got, want) {
				t.Fatalf("frag %d off %d: resolved %d bytes %v, the walk gives %d bytes %v", tc.frag, off, n, got, wn, want)
			}
		}
		perRead := fileMaps + partMaps - atOpen
		if tc.flattened && perRead != 0 {
			t.Errorf("%d-byte fragments: READs mapped the file through its layers %d times after open (want 0: resolved once, at open)", tc.frag, perRead)
		}
		if !tc.flattened && perRead == 0 {
			t.Errorf("%d-byte fragments (%d pieces, over MaxFlatPieces): no Map call per READ: the list was kept", tc.frag, f.size/tc.frag)
		}
		b := make([]byte, f.size)
		if _, err := ra.ReadAt(b, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		wantB := make([]byte, f.size)
		ref.ReadAt(wantB, 0)
		if !bytes.Equal(b, wantB) {
			t.Fatalf("frag %d: ReadAt differs from the file's bytes", tc.frag)
		}
	}
}
