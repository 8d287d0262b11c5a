package replicate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// benchSource is a repository of REKINDLE_BENCH_MB (default 128) MiB of
// chunks at the default chunk size (half random, half text, as
// randBytes makes), in 8 VMs of 4 points each (one changed chunk a point).
func benchSource(b *testing.B) (string, int64) {
	b.Helper()
	mb := 128
	if v, err := strconv.Atoi(os.Getenv("REKINDLE_BENCH_MB")); err == nil && v > 0 {
		mb = v
	}
	dir := filepath.Join(b.TempDir(), "src")
	r, err := repo.Init(dir, repo.InitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	cs := r.ChunkSize()
	rng := rand.New(rand.NewPCG(3, 4))
	const vms, points = 8, 4
	perDisk := mb << 20 / cs / vms
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var logical int64
	for v := range vms {
		disk := make([]repo.Digest, perDisk)
		put := func(i int) {
			c := randBytes(rng, cs)
			disk[i] = repo.Sum(c)
			if _, _, err := r.PutChunk(disk[i], c); err != nil {
				b.Fatal(err)
			}
		}
		for i := range disk {
			put(i)
		}
		for p := range points {
			if p > 0 {
				put(rng.IntN(perDisk))
			}
			x := repo.NewIndex(cs, int64(perDisk*cs))
			copy(x.Chunks, disk)
			if err := r.Sync(); err != nil {
				b.Fatal(err)
			}
			xd, err := r.PutIndex(x)
			if err != nil {
				b.Fatal(err)
			}
			at = at.Add(time.Hour)
			name := fmt.Sprintf("vm%02d", v)
			if err := r.SavePoint(&repo.RestorePoint{ID: fmt.Sprintf("%s-%06x", at.Format("20060102T150405Z"), v*100+p),
				VM: repo.VMIdentity{Name: name}, Created: at,
				Disks: []repo.Disk{{Name: name, Controller: "scsi0:0", Size: x.Size, Index: xd}}}); err != nil {
				b.Fatal(err)
			}
		}
		logical += int64(perDisk * cs)
	}
	return dir, logical
}

func du(b *testing.B, dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// BenchmarkReplicateVsCp copies one repository three ways in each
// iteration, into fresh folders on the same filesystem: `rekindle
// replicate` (every chunk re-hashed, every file fsynced), `cp -a` (no
// check, nothing synced) and `cp -a` then `sync -f` (durable, no check).
// It reports the medians and replicate's time over each reference's.
func BenchmarkReplicateVsCp(b *testing.B) {
	src, _ := benchSource(b)
	size := du(b, src)
	ctx := context.Background()
	var tRep, tCp, tCpSync []float64
	for i := 0; b.Loop(); i++ {
		out := b.TempDir()
		// The source is in the page cache for all three (it was just written
		// or read); each copy writes to a folder of its own.
		t0 := time.Now()
		st, err := Copy(ctx, local(b, src), local(b, filepath.Join(out, "rep")), Options{})
		if err != nil {
			b.Fatal(err)
		}
		tRep = append(tRep, time.Since(t0).Seconds())
		if st.Bytes == 0 {
			b.Fatal("replicate copied nothing")
		}
		t0 = time.Now()
		if o, err := exec.Command("cp", "-a", src, filepath.Join(out, "cp")).CombinedOutput(); err != nil {
			b.Fatalf("cp -a: %v %s", err, o)
		}
		tCp = append(tCp, time.Since(t0).Seconds())
		exec.Command("sync").Run() // the next copy does not pay for this one's writeback
		t0 = time.Now()
		if o, err := exec.Command("sh", "-c", `cp -a "$0" "$1" && sync -f "$1"`, src, filepath.Join(out, "cps")).CombinedOutput(); err != nil {
			b.Fatalf("cp -a && sync -f: %v %s", err, o)
		}
		tCpSync = append(tCpSync, time.Since(t0).Seconds())
		os.RemoveAll(out)
		exec.Command("sync").Run()
	}
	med := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	mib := float64(size) / (1 << 20)
	b.ReportMetric(mib/med(tRep), "replicate_MiB/s")
	b.ReportMetric(mib/med(tCp), "cp_MiB/s")
	b.ReportMetric(mib/med(tCpSync), "cp+sync_MiB/s")
	b.ReportMetric(med(tRep)/med(tCp), "x_cp_time")
	b.ReportMetric(med(tRep)/med(tCpSync), "x_cp+sync_time")
	b.Logf("%.0f MiB repository, %d runs: replicate %.3fs, cp -a %.3fs, cp -a && sync -f %.3fs (medians)", mib, len(tRep), med(tRep), med(tCp), med(tCpSync))
}
