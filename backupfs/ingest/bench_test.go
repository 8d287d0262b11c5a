package ingest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/benchdata"
	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// BenchmarkIngest imports the benchmark VM into a fresh repository (every
// chunk new) and again (every chunk known), and runs sha256sum over the
// same extent in the same iteration as the reference.
func BenchmarkIngest(b *testing.B) {
	folder, extent, err := benchdata.Folder()
	if err != nil {
		b.Fatal(err)
	}
	defer benchdata.Cleanup()
	if _, err := exec.LookPath("sha256sum"); err != nil {
		b.Fatal("sha256sum not found")
	}
	size := benchdata.Size()
	exec.Command("cat", extent).Run() // warm the page cache
	for _, cs := range benchdata.ChunkSizes {
		b.Run(fmt.Sprintf("chunk=%dK", cs>>10), func(b *testing.B) {
			var tFirst, tAgain, tSum time.Duration
			for i := range b.N {
				r, err := repo.Init(filepath.Join(b.TempDir(), fmt.Sprint(i)), repo.InitOptions{ChunkSize: cs})
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				if err := exec.Command("sha256sum", extent).Run(); err != nil {
					b.Fatal(err)
				}
				tSum += time.Since(t0)
				t0 = time.Now()
				if _, err := ingest.Import(context.Background(), r, folder, ingest.Options{}); err != nil {
					b.Fatal(err)
				}
				tFirst += time.Since(t0)
				t0 = time.Now()
				if _, err := ingest.Import(context.Background(), r, folder, ingest.Options{}); err != nil {
					b.Fatal(err)
				}
				tAgain += time.Since(t0)
			}
			mb := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
			b.ReportMetric(mb(tFirst), "first-MB/s")
			b.ReportMetric(mb(tAgain), "again-MB/s")
			b.ReportMetric(mb(tSum), "sha256sum-MB/s")
			b.ReportMetric(mb(tFirst)/mb(tSum), "first/sha256sum")
			b.ReportMetric(mb(tAgain)/mb(tSum), "again/sha256sum")
		})
	}
}

// BenchmarkScatteredChange measures how many new bytes an incremental import
// stores per byte a guest changed, when the guest wrote 2000 scattered 4 KiB
// blocks: the price of a large chunk.
func BenchmarkScatteredChange(b *testing.B) {
	dir := b.TempDir()
	folder, err := vmgen.Generate(dir, vmgen.Spec{Name: "chg01", Seed: 5,
		Disks: []vmgen.DiskSpec{{Size: 256 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
	if err != nil {
		b.Fatal(err)
	}
	extent := filepath.Join(folder, "chg01-flat.vmdk")
	for _, cs := range benchdata.ChunkSizes {
		b.Run(fmt.Sprintf("chunk=%dK", cs>>10), func(b *testing.B) {
			var amp float64
			for i := range b.N {
				r, _ := repo.Init(filepath.Join(b.TempDir(), fmt.Sprint(i)), repo.InitOptions{ChunkSize: cs})
				if _, err := ingest.Import(context.Background(), r, folder, ingest.Options{}); err != nil {
					b.Fatal(err)
				}
				f, _ := os.OpenFile(extent, os.O_WRONLY, 0)
				rng := rand.New(rand.NewPCG(uint64(i), uint64(cs)))
				blk := make([]byte, 4096)
				const writes = 2000
				for range writes {
					for j := range blk {
						blk[j] = byte(rng.Uint32())
					}
					f.WriteAt(blk, rng.Int64N((256<<20)/4096)*4096)
				}
				f.Close()
				p, err := ingest.Import(context.Background(), r, folder, ingest.Options{})
				if err != nil {
					b.Fatal(err)
				}
				amp += float64(p.Stats.BytesNew) / (writes * 4096)
			}
			b.ReportMetric(amp/float64(b.N), "new-bytes/changed-byte")
		})
	}
}
