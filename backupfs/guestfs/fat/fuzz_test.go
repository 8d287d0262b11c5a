package fat

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// FuzzFAT opens arbitrary bytes as a FAT filesystem and walks it: no panic,
// no hang (errors are fine).
func FuzzFAT(f *testing.F) {
	f.Add(make([]byte, 1024))
	img := filepath.Join(f.TempDir(), "seed.img")
	if os.WriteFile(img, nil, 0o644) == nil && os.Truncate(img, 256<<10) == nil {
		if out, err := exec.Command("mkfs.vfat", img).CombinedOutput(); err != nil {
			f.Fatalf("mkfs.vfat: %v\n%s", err, out)
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
				if e.Mode.IsDir() {
					walk(p+"/"+e.Name, depth+1)
				} else if _, ra, err := tr.Open(p + "/" + e.Name); err == nil {
					ra.ReadAt(make([]byte, 4096), 0)
				}
			}
		}
		walk("", 0)
	})
}
