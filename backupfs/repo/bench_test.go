package repo_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/benchdata"
	"github.com/rekindle/rekindle/backupfs/repo"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(pruneChildEnv); dir != "" {
		os.Exit(pruneChild(dir)) // a prune for TestPruneKilled to kill
	}
	code := m.Run()
	benchdata.Cleanup()
	os.Exit(code)
}

func setup(b *testing.B, chunk int) (*repo.Repo, *repo.RestorePoint, *os.File) {
	b.Helper()
	r, p, err := benchdata.Repo(chunk)
	if err != nil {
		b.Fatal(err)
	}
	_, extent, _ := benchdata.Folder()
	raw, err := os.Open(extent)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	// Warm the page cache for both, so the comparison is decode cost, not disk.
	io.Copy(io.Discard, raw)
	r.Verify(b.Context(), []*repo.RestorePoint{p}, nil)
	return r, p, raw
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

// BenchmarkSequentialRead reads the whole disk in 1 MiB requests through a
// DiskReader with a cold chunk cache, and the raw extent with os.File.ReadAt
// in the same iteration; ratio = rekindle/raw throughput.
func BenchmarkSequentialRead(b *testing.B) {
	for _, cs := range benchdata.ChunkSizes {
		b.Run(fmt.Sprintf("chunk=%dK", cs>>10), func(b *testing.B) {
			r, p, raw := setup(b, cs)
			size := p.Disks[0].Size
			buf := make([]byte, 1<<20)
			var tr, tk time.Duration
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				for off := int64(0); off < size; off += int64(len(buf)) {
					raw.ReadAt(buf, off)
				}
				tr += time.Since(t0)
				dr, _ := r.OpenDisk(p.Disks[0].Index, repo.NewCache(repo.CacheOptions{ChunkSize: cs}), "bench")
				t0 = time.Now()
				for off := int64(0); off < size; off += int64(len(buf)) {
					if _, err := dr.ReadAt(buf, off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
				tk += time.Since(t0)
			}
			n := size * int64(b.N)
			b.ReportMetric(float64(p.Stats.BytesRead)/float64(size), "data-fraction")
			b.ReportMetric(mbps(n, tk), "rekindle-MB/s")
			b.ReportMetric(mbps(n, tr), "raw-MB/s")
			b.ReportMetric(mbps(n, tk)/mbps(n, tr), "ratio")
		})
	}
}

// BenchmarkRandom4K does 4 KiB reads at random aligned offsets: through a
// cold cache (every read decodes a chunk), a warm cache, and the raw file.
func BenchmarkRandom4K(b *testing.B) {
	const reads = 2000
	for _, cs := range benchdata.ChunkSizes {
		b.Run(fmt.Sprintf("chunk=%dK", cs>>10), func(b *testing.B) {
			r, p, raw := setup(b, cs)
			size := p.Disks[0].Size
			rng := rand.New(rand.NewPCG(1, 1))
			offs := make([]int64, reads)
			for i := range offs {
				offs[i] = rng.Int64N(size/4096) * 4096
			}
			buf := make([]byte, 4096)
			warm := repo.NewCache(repo.CacheOptions{MaxBytes: 2 * size, ChunkSize: cs, Readahead: -1})
			wdr, _ := r.OpenDisk(p.Disks[0].Index, warm, "bench")
			for _, o := range offs {
				wdr.ReadAt(buf, o)
			}
			var tr, tc, tw time.Duration
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				for _, o := range offs {
					raw.ReadAt(buf, o)
				}
				tr += time.Since(t0)
				cold := repo.NewCache(repo.CacheOptions{MaxBytes: 64 << 20, ChunkSize: cs, Readahead: -1})
				dr, _ := r.OpenDisk(p.Disks[0].Index, cold, "bench")
				t0 = time.Now()
				for _, o := range offs {
					if _, err := dr.ReadAt(buf, o); err != nil {
						b.Fatal(err)
					}
				}
				tc += time.Since(t0)
				t0 = time.Now()
				for _, o := range offs {
					wdr.ReadAt(buf, o)
				}
				tw += time.Since(t0)
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N*reads) }
			b.ReportMetric(per(tc), "cold-us/read")
			b.ReportMetric(per(tw), "warm-us/read")
			b.ReportMetric(per(tr), "raw-us/read")
			b.ReportMetric(per(tc)/per(tr), "cold/raw")
			b.ReportMetric(per(tw)/per(tr), "warm/raw")
		})
	}
}

// BenchmarkChunkLayout compares the two chunk layouts in one run, on the
// same disk: format version 1 (one zstd payload per chunk) and version 2
// (32 KiB frames). Per iteration: 2000 cold 4 KiB random reads (a fresh
// cache, so the first touch of a chunk reads and decodes it) and a cold
// sequential read of the whole disk in 1 MiB requests, on each layout;
// v2/v1 ratios of time per read (below 1: v2 faster) and of stored bytes.
func BenchmarkChunkLayout(b *testing.B) {
	const reads = 2000
	for _, cs := range benchdata.ChunkSizes[:2] {
		b.Run(fmt.Sprintf("chunk=%dK", cs>>10), func(b *testing.B) {
			type layout struct {
				r  *repo.Repo
				p  *repo.RestorePoint
				tr time.Duration // random
				ts time.Duration // sequential
			}
			var ls [2]*layout
			for i, v := range []int{1, 2} {
				r, p, err := benchdata.RepoVersion(cs, v)
				if err != nil {
					b.Fatal(err)
				}
				r.Verify(b.Context(), []*repo.RestorePoint{p}, nil) // page cache warm: decode cost, not disk
				ls[i] = &layout{r: r, p: p}
			}
			size := ls[0].p.Disks[0].Size
			rng := rand.New(rand.NewPCG(3, 3))
			offs := make([]int64, reads)
			for i := range offs {
				offs[i] = rng.Int64N(size/4096) * 4096
			}
			buf, big := make([]byte, 4096), make([]byte, 1<<20)
			b.ResetTimer()
			for range b.N {
				for _, l := range ls {
					dr, _ := l.r.OpenDisk(l.p.Disks[0].Index, repo.NewCache(repo.CacheOptions{MaxBytes: 64 << 20, ChunkSize: cs, Readahead: -1}), "bench")
					t0 := time.Now()
					for _, o := range offs {
						if _, err := dr.ReadAt(buf, o); err != nil {
							b.Fatal(err)
						}
					}
					l.tr += time.Since(t0)
					dr, _ = l.r.OpenDisk(l.p.Disks[0].Index, repo.NewCache(repo.CacheOptions{ChunkSize: cs}), "bench")
					t0 = time.Now()
					for off := int64(0); off < size; off += int64(len(big)) {
						if _, err := dr.ReadAt(big, off); err != nil && err != io.EOF {
							b.Fatal(err)
						}
					}
					l.ts += time.Since(t0)
				}
			}
			per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(b.N*reads) }
			seq := func(d time.Duration) float64 { return mbps(size*int64(b.N), d) }
			b.ReportMetric(per(ls[0].tr), "v1-cold-us/read")
			b.ReportMetric(per(ls[1].tr), "v2-cold-us/read")
			b.ReportMetric(per(ls[1].tr)/per(ls[0].tr), "v2/v1-cold-4K-time")
			b.ReportMetric(seq(ls[0].ts), "v1-seq-MB/s")
			b.ReportMetric(seq(ls[1].ts), "v2-seq-MB/s")
			b.ReportMetric(seq(ls[1].ts)/seq(ls[0].ts), "v2/v1-seq-throughput")
			b.ReportMetric(float64(ls[1].p.Stats.BytesStored)/float64(ls[0].p.Stats.BytesStored), "v2/v1-stored-bytes")
		})
	}
}

// BenchmarkCacheMemory runs 8 readers (4 sequential, 4 random) against a
// 64 MiB cache and reports the most it held and the heap in use.
func BenchmarkCacheMemory(b *testing.B) {
	r, p, _ := setup(b, repo.DefaultChunkSize)
	size := p.Disks[0].Size
	const bound = 64 << 20
	var peakCache, peakHeap int64
	b.ResetTimer()
	for range b.N {
		cache := repo.NewCache(repo.CacheOptions{MaxBytes: bound, ChunkSize: repo.DefaultChunkSize})
		var wg sync.WaitGroup
		stop := make(chan struct{})
		go func() {
			var ms runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				peakCache = max(peakCache, cache.Stats().Bytes)
				runtime.ReadMemStats(&ms)
				peakHeap = max(peakHeap, int64(ms.HeapInuse))
			}
		}()
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dr, _ := r.OpenDisk(p.Disks[0].Index, cache, "bench")
				buf := make([]byte, 64<<10)
				rng := rand.New(rand.NewPCG(uint64(g), 2))
				for i := int64(0); i < size/int64(len(buf))/2; i++ {
					off := i * int64(len(buf))
					if g%2 == 1 {
						off = rng.Int64N(size - int64(len(buf)))
					}
					dr.ReadAt(buf, off)
				}
			}()
		}
		wg.Wait()
		close(stop)
	}
	b.ReportMetric(float64(peakCache)/(1<<20), "cache-peak-MiB")
	b.ReportMetric(float64(bound)/(1<<20), "cache-bound-MiB")
	b.ReportMetric(float64(peakHeap)/(1<<20), "heap-peak-MiB")
}

// BenchmarkDecodeChunk decodes one 1 MiB chunk of mixed data (random runs,
// repeats, zeros) stored in each layout; v2/v1 is the time ratio of the same
// bytes decoded as 32 frames and as one payload, v1 and v2 interleaved in
// the same iterations.
func BenchmarkDecodeChunk(b *testing.B) {
	data := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(7, 7))
	for off := 0; off < len(data); off += 64 << 10 {
		switch rng.IntN(4) {
		case 0: // zeros
		case 1:
			copy(data[off:off+64<<10], bytes.Repeat([]byte("rekindle"), 8<<10))
		default:
			for i := off; i < off+64<<10; i++ {
				data[i] = byte(rng.Uint32())
			}
		}
	}
	d := repo.Sum(data)
	raws := [2][]byte{repo.EncodeChunkV1(d, data), repo.EncodeChunk(d, data)}
	var took [2]time.Duration
	b.SetBytes(2 << 20)
	for range b.N {
		for i, raw := range raws {
			t0 := time.Now()
			if _, err := repo.DecodeChunk(d, raw); err != nil {
				b.Fatal(err)
			}
			took[i] += time.Since(t0)
		}
	}
	b.ReportMetric(float64(took[1])/float64(took[0]), "v2/v1-time")
}
