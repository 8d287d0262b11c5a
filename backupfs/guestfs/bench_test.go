package guestfs

import (
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// BenchmarkExt4File reads a 64 MiB file out of an ext4 volume through the
// guest file view (sub-benchmark files) and the same number of bytes of the
// same disk through the raw disk reader (sub-benchmark disk), each with a
// cold cache, 1 MiB reads. The ratio of their throughputs is what the
// filesystem layer costs:
//
//	go test -run XXX -bench Ext4File -benchtime 5x ./backupfs/guestfs
func BenchmarkExt4File(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	data := make([]byte, 64<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "big.bin"), data, 0o644)
	img := filepath.Join(dir, "disk.raw")
	guestimg.Ext(b, img, 80<<20, src, "-t", "ext4", "-b", "4096")
	r := newRepo(b)
	pt := importDisks(b, r, "bench", img)
	buf := make([]byte, 1<<20)
	b.Run("files", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
			if err != nil {
				b.Fatal(err)
			}
			f, err := fs.Open("/bench/" + pt.ID + "/" + pt.Disks[0].Name + "/whole/big.bin")
			if err != nil {
				b.Fatal(err)
			}
			for off := int64(0); off < int64(len(data)); off += int64(len(buf)) {
				if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("disk", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			dr, err := r.OpenDisk(pt.Disks[0].Index, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), "bench")
			if err != nil {
				b.Fatal(err)
			}
			for off := int64(0); off < int64(len(data)); off += int64(len(buf)) {
				if _, err := dr.ReadAt(buf, off+4<<20); err != nil && err != io.EOF {
					b.Fatal(err)
				}
			}
		}
	})
}

// BenchmarkColdVolumeRoot is the time from an empty cache to the first
// listing of one volume's root, on a restore point of two disks holding
// five volumes (guestimg.LinuxDisk: ext2, ext3, ext4 and a damaged ext4;
// WholeExt2): a new view and chunk cache each iteration, then one ReadDir
// of p5's root. Beside the time it reports what load cannot change: the
// volumes the listing opened, the chunk cache's misses (reads that decoded
// a frame), the bytes of chunks it holds after it and the bytes charged
// to its bound (open volumes, the layout, listings); and the process's CPU time
// per listing (user and system: less moved by other processes than wall
// time on a shared machine):
//
//	go test -run XXX -bench ColdVolumeRoot -benchtime 20x -count 3 ./backupfs/guestfs
func BenchmarkColdVolumeRoot(b *testing.B) {
	dir := b.TempDir()
	disk, _ := guestimg.LinuxDisk(b, dir)
	whole, _ := guestimg.WholeExt2(b, dir)
	r := newRepo(b)
	pt := importDisks(b, r, "bench", disk, whole)
	root := "/bench/" + pt.ID + "/" + pt.Disks[0].Name + "/p5"
	var opened, misses, bytes, held int64
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		cache := repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()})
		fs, err := New(r, cache, Options{})
		if err != nil {
			b.Fatal(err)
		}
		ents, err := fs.ReadDir(root)
		if err != nil || len(ents) == 0 {
			b.Fatalf("listing %s: %d entries, %v", root, len(ents), err)
		}
		st := cache.Stats()
		opened, misses, bytes, held = opened+int64(fs.OpenVolumes()), misses+st.Misses, bytes+st.Bytes, held+st.HeldBytes
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms")
	b.ReportMetric(float64(opened)/float64(b.N), "volumes-opened")
	b.ReportMetric(float64(misses)/float64(b.N), "cache-misses")
	b.ReportMetric(float64(bytes)/float64(b.N)/(1<<20), "cache-MiB")
	b.ReportMetric(float64(held)/float64(b.N)/(1<<20), "held-MiB")
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
