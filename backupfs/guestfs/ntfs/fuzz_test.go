package ntfs

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// small is the seed image (testdata/make-small.sh builds it), unpacked
// once.
var small = sync.OnceValues(func() ([]byte, error) {
	f, err := os.Open("testdata/small.ntfs.gz")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(z)
})

// patched returns the seed image with patches applied: each is a 4-byte
// little-endian offset, a length byte and that many bytes.
func patched(tb testing.TB, patches []byte) []byte {
	tb.Helper()
	base, err := small()
	if err != nil {
		tb.Fatal(err)
	}
	img := bytes.Clone(base)
	for len(patches) >= 5 {
		off := int(binary.LittleEndian.Uint32(patches) % uint32(len(img)))
		n := min(int(patches[4]), len(patches)-5)
		copy(img[off:], patches[5:5+n])
		patches = patches[5+n:]
	}
	return img
}

// walk does what the server does with a volume: open it, list every
// folder, stat, read and readlink every entry; the work is bounded. It
// returns the errors that came back wrapping gfs.ErrPanic (a panic of
// go-ntfs turned into an error at this package's boundary).
func walk(img []byte) (panics []error) {
	note := func(err error) {
		if errors.Is(err, gfs.ErrPanic) {
			panics = append(panics, err)
		}
	}
	fs, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		note(err)
		return
	}
	root, err := fs.Root()
	if err != nil {
		note(err)
		return
	}
	queue, seen, budget := []gfs.Entry{root}, map[uint64]bool{}, 2000
	buf := make([]byte, 70<<10)
	for len(queue) > 0 && budget > 0 {
		d := queue[0]
		queue = queue[1:]
		if seen[d.Ino] {
			continue
		}
		seen[d.Ino] = true
		ents, err := fs.ReadDir(d)
		note(err)
		for _, e := range ents {
			if budget--; budget <= 0 {
				break
			}
			switch {
			case e.Mode.IsDir():
				queue = append(queue, e)
			case e.Mode.IsRegular():
				ra, err := fs.Open(e)
				note(err)
				if err == nil {
					for _, off := range []int64{0, e.Size / 2, e.Size - 17} {
						_, err := ra.ReadAt(buf, max(off, 0))
						note(err)
					}
				}
			default:
				_, err := fs.Readlink(e)
				note(err)
			}
		}
	}
	return panics
}

// FuzzNTFS damages the seed NTFS image with patches and walks it as the
// server does: go-ntfs must never take the process down (a panic is an
// error of this package's calls) nor hang it (each input is walked within
// 20 seconds).
func FuzzNTFS(f *testing.F) {
	f.Add([]byte{})
	// the boot sector's bytes per sector and MFT cluster; in the MFT (at
	// 0x4000, 1 KiB records): $MFT's own attributes, the root's (record
	// 5), the first user file's (record 16)
	for _, p := range [][]byte{
		{0x0b, 0, 0, 0, 2, 0, 1},
		{0x30, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0},
		{0x40, 0x40, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{0x48, 0x54, 0, 0, 4, 0, 0, 0, 0x10},
		{0x80, 0x80, 0, 0, 4, 0x7f, 0, 0, 0},
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, patches []byte) {
		img := patched(t, patches)
		done := make(chan []error, 1)
		go func() { done <- walk(img) }()
		select {
		case panics := <-done:
			if len(panics) > 0 && os.Getenv("NTFS_FUZZ_STOP_AT_PANIC") != "" {
				t.Fatalf("a panic of go-ntfs, recovered: %v", panics[0])
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("walking the volume did not end in 20 s")
		}
	})
}

// TestSeedImage: the undamaged seed image reads whole (the fuzz target
// starts from a volume the reader understands, not from noise).
func TestSeedImage(t *testing.T) {
	img := patched(t, nil)
	fs, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	tr := gfs.NewTree(fs, "seed")
	want := map[string]string{"/hello.txt": "hello\n", "/hard": "hello\n", "/hello.txt:Zone.Identifier": "[ZoneTransfer]",
		"/many/file-with-a-long-name-60": "60"}
	for p, w := range want {
		_, ra, err := tr.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(w)+1)
		if n, _ := ra.ReadAt(b, 0); string(b[:n]) != w {
			t.Errorf("%s: %q, want %q", p, b[:n], w)
		}
	}
	for p, size := range map[string]int64{"/big.txt": 20000, "/sparse.bin": 300000, "/packed/text.txt": 30000, "/big.txt:big": 3000} {
		e, err := tr.Lstat(p)
		if err != nil || e.Size != size {
			t.Errorf("%s: %v, %v; want %d bytes", p, e.Size, err, size)
		}
	}
	if l, err := tr.Readlink("/link"); l != "hello.txt" || err != nil {
		t.Errorf("link: %q, %v", l, err)
	}
	if ents, err := tr.ReadDir("/many"); len(ents) != 60 || err != nil {
		t.Errorf("many: %d entries, %v", len(ents), err)
	}
	if p := walk(img); len(p) > 0 {
		t.Errorf("the seed image's walk: %v", p)
	}
}
