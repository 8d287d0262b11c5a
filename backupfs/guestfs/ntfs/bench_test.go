package ntfs

import (
	"bytes"
	"testing"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// BenchmarkCallGuard measures what the guard of a go-ntfs call (a
// goroutine, a timer, the read budget) adds to listing a folder: the
// same ReadDir of the seed image's 60-entry folder through the guarded
// FS.ReadDir and straight through readDir under the lock, in one run.
func BenchmarkCallGuard(b *testing.B) {
	img := patched(b, nil)
	fs, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		b.Fatal(err)
	}
	many, err := gfs.NewTree(fs, "bench").Lstat("/many")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("guarded", func(b *testing.B) {
		for b.Loop() {
			if ents, err := fs.ReadDir(many); err != nil || len(ents) != 60 {
				b.Fatal(len(ents), err)
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			fs.mu.Lock()
			ents, err := fs.readDir(many, many.Ref.(*ref))
			fs.mu.Unlock()
			if err != nil || len(ents) != 60 {
				b.Fatal(len(ents), err)
			}
		}
	})
}
