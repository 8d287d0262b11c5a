package ext4

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// FuzzExt4 opens arbitrary bytes as an ext filesystem and walks it: no
// panic, no hang, whatever the bytes (errors are fine).
func FuzzExt4(f *testing.F) {
	f.Add(make([]byte, 4096))
	// A real filesystem as a seed, made by mke2fs at test time.
	dir := f.TempDir()
	img := filepath.Join(dir, "seed.img")
	os.WriteFile(filepath.Join(dir, "a"), []byte("hello"), 0o644)
	os.Symlink("a", filepath.Join(dir, "l"))
	if err := os.WriteFile(img, nil, 0o644); err == nil && os.Truncate(img, 256<<10) == nil {
		if out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-N", "16", "-d", dir, img).CombinedOutput(); err != nil {
			f.Fatalf("mke2fs: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(img); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		tr := gfs.NewTree(fs, "fuzz")
		var walk func(p string, depth int)
		walk = func(p string, depth int) {
			ents, err := tr.ReadDir(p)
			if err != nil || depth > 4 {
				return
			}
			for i, e := range ents {
				if i > 64 {
					break
				}
				c := p + "/" + e.Name
				switch {
				case e.Mode.IsDir():
					walk(c, depth+1)
				case e.Mode.IsRegular():
					if _, ra, err := tr.Open(c); err == nil {
						buf := make([]byte, 4096)
						ra.ReadAt(buf, 0)
						ra.ReadAt(buf, max(e.Size-100, 0))
					}
				default:
					tr.Readlink(c)
				}
			}
		}
		walk("", 0)
	})
}

var _ io.ReaderAt = (*bytesAt)(nil)
