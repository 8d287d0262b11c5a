package guestfs

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// countingReader counts the bytes read through a guest file's reader and
// hands on its map, so copySparse sees the file as it is; past limit bytes
// it calls stop (the copy then ends at once instead of reading gigabytes).
type countingReader struct {
	ra    io.ReaderAt
	read  atomic.Int64
	limit int64
	stop  func()
}

func (c *countingReader) ReadAt(b []byte, off int64) (int, error) {
	n, err := c.ra.ReadAt(b, off)
	if c.read.Add(int64(n)) > c.limit {
		c.stop()
	}
	return n, err
}

func (c *countingReader) Map(off, n int64) ([]gfs.Piece, error) {
	m, ok := c.ra.(gfs.Mapper)
	if !ok {
		return nil, gfs.ErrNotMapped
	}
	return m.Map(off, n)
}

// checkHuge reads the bytes around the data at the end of the sparse file
// p (w), then copies it as `files get` does and checks that only its data
// was read (the hole skipped through the file's map, not read as zeros),
// that the copy holds the data at its end and keeps the hole.
func checkHuge(t *testing.T, fs *FS, p string, w *guestimg.Want) {
	t.Helper()
	f, err := fs.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 5000)
	if n, err := f.ReadAt(buf, w.DataAt-904); n != 5000 || (err != nil && err != io.EOF) {
		t.Fatalf("%s: read %d, %v", p, n, err)
	}
	if !bytes.Equal(buf[:904], make([]byte, 904)) || !bytes.Equal(buf[904:], w.Data[:4096]) {
		t.Fatalf("%s: bytes around its data differ", p)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	c := &countingReader{ra: f.(*guestFile).ra, limit: 1 << 20, stop: stop}
	out, err := os.Create(filepath.Join(t.TempDir(), "huge.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	n, err := copySparse(ctx, out, c, c, w.Size, func(int64) {})
	if got := c.read.Load(); got > c.limit {
		t.Fatalf("%s: copying it read %d bytes before it was stopped, want only its %d bytes of data (its hole read as zeros)", p, got, len(w.Data))
	}
	if err != nil || n != w.Size {
		t.Fatalf("%s: copied %d bytes, %v; want %d", p, n, err, w.Size)
	}
	end := make([]byte, len(w.Data)+1)
	if _, err := out.ReadAt(end, w.DataAt-1); err != nil || end[0] != 0 || !bytes.Equal(end[1:], w.Data) {
		t.Errorf("%s: the copy's bytes at %d differ from its data (%v)", p, w.DataAt-1, err)
	}
	if fi, err := out.Stat(); err != nil || fi.Size() != w.Size {
		t.Errorf("%s: the copy has %v bytes (%v), want %d", p, fi.Size(), err, w.Size)
	}
}
