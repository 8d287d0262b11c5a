package simlab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// BenchmarkRecoveryTime measures instant recovery of the 3-VM shop vApp,
// from the restore request to every VM powered on, with 1 GiB and 256 GiB
// disks (mixed data, at most 256 MiB of it; the rest sparse). The reference
// in the same run is a full copy of the same disks: every byte read from the
// repository and written to a local file, measured on the 1 GiB disks and
// scaled by size for 256 GiB (this machine has no room for 768 GiB of
// copies). Instant recovery must not grow with disk size.
//
//	go test -run '^$' -bench RecoveryTime -benchtime 3x ./orchestrator/simlab/
func BenchmarkRecoveryTime(b *testing.B) {
	var copyRate float64 // bytes per second of a full copy, from the 1 GiB run
	for _, size := range []int64{1 << 30, 256 << 30} {
		b.Run(fmt.Sprintf("disk=%dGiB", size>>30), func(b *testing.B) {
			var took time.Duration
			var pts []*repo.RestorePoint
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				l, err := New(context.Background(), Options{Dir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				if pts, err = l.ImportShop(context.Background(), size, vmgen.FillMixed); err != nil {
					b.Fatal(err)
				}
				req := l.Request(orchestrator.KindVApp)
				b.StartTimer()
				t0 := time.Now()
				if _, err := l.Orchestrator.Start(context.Background(), req); err != nil {
					b.Fatal(err)
				}
				took += time.Since(t0)
				b.StopTimer()
				if size == 1<<30 && copyRate == 0 {
					copyRate = fullCopyRate(b, l, pts)
				}
				l.Close()
			}
			perRun := took / time.Duration(b.N)
			// The vApp's db01 waits 1 s after it is up before group 2
			// starts: that delay is the backup's own configuration.
			copyTime := time.Duration(float64(3*size) / copyRate * float64(time.Second))
			b.ReportMetric(perRun.Seconds(), "recovery-s")
			b.ReportMetric(copyTime.Seconds(), "fullcopy-s")
			b.ReportMetric(perRun.Seconds()/copyTime.Seconds(), "recovery/fullcopy")
		})
	}
}

// fullCopyRate copies every byte of the points' disks to local files and
// returns the rate in bytes per second.
func fullCopyRate(b *testing.B, l *Lab, pts []*repo.RestorePoint) float64 {
	cache := repo.NewCache(repo.CacheOptions{ChunkSize: l.Repo.ChunkSize()})
	var n int64
	t0 := time.Now()
	for _, p := range pts {
		dr, err := l.Repo.OpenDisk(p.Disks[0].Index, cache, p.VM.Name)
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(filepath.Join(l.Dir, p.VM.Name+"-copy.raw"))
		if err != nil {
			b.Fatal(err)
		}
		m, err := io.Copy(f, io.NewSectionReader(dr, 0, dr.Size()))
		if err != nil {
			b.Fatal(err)
		}
		f.Sync()
		f.Close()
		os.Remove(f.Name())
		n += m
	}
	return float64(n) / time.Since(t0).Seconds()
}
