package xfs

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// padded is a volume of size bytes whose first bytes are b, zeros after:
// the fuzzer mutates the metadata at a volume's start (superblock, AG
// headers, inodes, directory blocks), not megabytes of empty space.
type padded struct {
	b    []byte
	size int64
}

func (p padded) ReadAt(q []byte, off int64) (int, error) {
	clear(q)
	if off < int64(len(p.b)) {
		copy(q, p.b[off:])
	}
	return len(q), nil
}

// FuzzXFS opens arbitrary bytes as the start of an XFS volume and walks
// it, calling the reader directly (no gfs.Tree to recover a panic): no
// panic, no hang, whatever the bytes (errors are fine).
func FuzzXFS(f *testing.F) {
	f.Add(make([]byte, 4096))
	dir := f.TempDir()
	img := filepath.Join(dir, "seed.img")
	os.WriteFile(filepath.Join(dir, "a"), []byte("hello\n"), 0o644)
	proto := "/dev/null\n0 0\nd--755 0 0\na ---644 0 0 " + filepath.Join(dir, "a") + "\nl l--777 0 0 a\nd d--755 0 0\n b ---600 0 0 " + filepath.Join(dir, "a") + "\n $\n$\n"
	os.WriteFile(img+".proto", []byte(proto), 0o644)
	// An external log keeps AG 0's inodes and data in the first blocks.
	os.WriteFile(img+".log", nil, 0o644)
	os.Truncate(img+".log", 8<<20)
	if os.WriteFile(img, nil, 0o644) == nil && os.Truncate(img, 16<<20) == nil {
		cmd := exec.Command("mkfs.xfs", "-q", "-f", "-l", "logdev="+img+".log,size=1368b", "-p", img+".proto", img)
		cmd.Env = append(os.Environ(), "TEST_DIR="+dir, "TEST_DEV="+img, "QA_CHECK_FS=xfs")
		if out, err := cmd.CombinedOutput(); err != nil {
			f.Fatalf("mkfs.xfs: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(img); err == nil {
			f.Add(b[:128<<10])
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := Open(padded{b: b, size: 16 << 20}, 16<<20)
		if err != nil {
			return
		}
		root, err := fs.Root()
		if err != nil {
			return
		}
		seen := 0
		var walk func(e gfs.Entry, depth int)
		walk = func(e gfs.Entry, depth int) {
			ents, err := fs.ReadDir(e)
			if err != nil || depth > 4 {
				return
			}
			for i, c := range ents {
				if i > 64 || seen > 512 {
					break
				}
				seen++
				switch {
				case c.Mode.IsDir():
					walk(c, depth+1)
				case c.Mode.IsRegular():
					if ra, err := fs.Open(c); err == nil {
						buf := make([]byte, 4096)
						ra.ReadAt(buf, 0)
						ra.ReadAt(buf, max(c.Size-100, 0))
					}
				default:
					fs.Readlink(c)
				}
			}
		}
		walk(root, 0)
	})
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.n.Add(int64(len(p)))
	return c.r.ReadAt(p, off)
}

// FuzzXFSLog reads arbitrary bytes as an XFS log (padded to whole BBs):
// finding the head and the last record never panics, reads at most its
// bound, and a clean answer comes with no reason.
func FuzzXFSLog(f *testing.F) {
	const bbs = 64
	seed := func(build func(l []byte)) {
		l := make([]byte, bbs*bbSize)
		build(l)
		f.Add(l)
	}
	seed(func(l []byte) { putRecord(l, 0, 1, []logOp{unmountOp}) })
	seed(func(l []byte) {
		at := putRecord(l, 0, 1, []logOp{unmountOp})
		putRecord(l, at, 1, []logOp{startOp, itemOp, commitOp})
	})
	seed(func(l []byte) {
		stamp(l, 0, bbs, 3)
		at := bbs - 2 + putRecord(l, bbs-2, 3, []logOp{startOp, itemOp, commitOp})
		putRecord(l, at%bbs, 4, []logOp{unmountOp})
	})
	f.Add(make([]byte, 2*bbSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 256*bbSize { // a small log: the structures, not the bytes, matter
			b = b[:256*bbSize]
		}
		n := max(2, (int64(len(b))+bbSize-1)/bbSize)
		log := make([]byte, n*bbSize)
		copy(log, b)
		c := &countingReader{r: bytes.NewReader(log)}
		state, why := logStateOf(c, n, maxLogRead)
		if got := c.n.Load(); got > maxLogRead {
			t.Fatalf("read %d bytes of the log, bound %d", got, maxLogRead)
		}
		switch {
		case state == logClean && why != "":
			t.Fatalf("clean, with a reason: %s", why)
		case state != logClean && why == "":
			t.Fatalf("state %d with no reason", state)
		case state < logClean || state > logUnknown:
			t.Fatalf("state %d", state)
		}
	})
}
