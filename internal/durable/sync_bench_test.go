package durable

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkDataSyncIntoHole measures what a session's stable 4 KiB WRITE pays
// that a server overwriting a disk file in place does not: a 4 KiB write into a
// hole of a sparse file (a session's data file, whose blocks are allocated by
// their first write) then its fdatasync, against the same write and fdatasync
// into a block already written and synced (a plain disk file's overwrite). The
// two alternate in one loop on the same filesystem, so the machine's drift
// falls on both; the ratio is the figure (issue 11: what is left on the
// FILE_SYNC 4 KiB rows).
//
//	go test -run '^$' -bench DataSyncIntoHole -benchtime 2000x ./internal/durable/
//
// Set REKINDLE_BENCH_DIR to measure another filesystem than the test's
// temporary folder.
func BenchmarkDataSyncIntoHole(b *testing.B) {
	dir := os.Getenv("REKINDLE_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	const size = 512 << 20
	const written = 64 << 20
	hole, err := os.Create(filepath.Join(dir, "hole"))
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(hole.Name())
	defer hole.Close()
	alloc, err := os.Create(filepath.Join(dir, "written"))
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(alloc.Name())
	defer alloc.Close()
	if err := hole.Truncate(size); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < written; off += int64(len(buf)) {
		if _, err := alloc.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := alloc.Sync(); err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 4096)
	for i := range p {
		p[i] = byte(i*7 + 1)
	}
	r := rand.New(rand.NewPCG(1, 2))
	used := map[int64]bool{}
	one := func(f *os.File, off int64) time.Duration {
		t := time.Now()
		if _, err := f.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
		if err := fdatasync(f); err != nil {
			b.Fatal(err)
		}
		return time.Since(t)
	}
	var inHole, inWritten time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := int64(r.IntN(size/4096)) * 4096
		for used[off] { // a block written once is no longer a hole
			off = int64(r.IntN(size/4096)) * 4096
		}
		used[off] = true
		inHole += one(hole, off)
		inWritten += one(alloc, int64(r.IntN(written/4096))*4096)
	}
	b.StopTimer()
	b.ReportMetric(float64(inHole.Microseconds())/float64(b.N), "µs/hole-sync")
	b.ReportMetric(float64(inWritten.Microseconds())/float64(b.N), "µs/written-sync")
	b.ReportMetric(float64(inHole)/float64(inWritten), "hole/written")
}
