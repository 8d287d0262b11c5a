package overlay

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rekindle/rekindle/internal/durable"
)

// BenchmarkLogSync measures what a CREATE's record costs on the disk
// under TMPDIR (set it to the disk sessions live on): a 313-byte record (a
// CREATE's in a VM folder) written at the log's end and fdatasynced, with
// the log growing by each record (append, as logs were written before) or
// overwriting zeros written ahead (in-place, as the journal writes them).
// On the project's 2-core ext4 VM (2026-12-04, load 4-7, the same
// sequence interleaved with a 4 KiB data file's write and sync per record,
// median of 1000): append 144-318 µs, in place 104-200 µs, 1.12-1.59x in
// six runs; the difference is the journal commit an fdatasync of a grown
// file waits for.
//
//	go test -run '^$' -bench BenchmarkLogSync -benchtime 2000x ./backupfs/overlay/
func BenchmarkLogSync(b *testing.B) {
	rec := make([]byte, 313)
	for i := range rec {
		rec[i] = 'x'
	}
	for _, mode := range []string{"append", "in-place"} {
		b.Run(mode, func(b *testing.B) {
			fsys := durable.OS()
			f, err := fsys.OpenFile(filepath.Join(b.TempDir(), "log"), os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if mode == "in-place" {
				if _, err := f.WriteAt(make([]byte, int64(b.N+1)*int64(len(rec))), 0); err != nil {
					b.Fatal(err)
				}
				if err := f.DataSync(); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := f.WriteAt(rec, int64(i)*int64(len(rec))); err != nil {
					b.Fatal(err)
				}
				if err := f.DataSync(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
