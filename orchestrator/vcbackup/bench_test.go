package vcbackup_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
)

// BenchmarkIncremental1Percent backs up a 128 MiB disk full, changes 1% of
// its 64 KiB blocks at random places, and backs it up again: it reports the
// bytes the incremental read from vCenter per byte of disk, and its time
// against the full backup's in the same run.
//
//	go test -run '^$' -bench Incremental1Percent -benchtime 3x ./orchestrator/vcbackup/
//
// It reads through the datastore transport (ranged reads);
// BenchmarkIncremental1PercentNFC reads the same through the export lease,
// whose streamOptimized stream has no ranges: the incremental transfers the
// stream up to the last changed area.
func BenchmarkIncremental1Percent(b *testing.B) { benchIncremental(b, vcbackup.TransportDatastore) }

// BenchmarkIncremental1PercentNFC is BenchmarkIncremental1Percent over nfc.
func BenchmarkIncremental1PercentNFC(b *testing.B) { benchIncremental(b, vcbackup.TransportNFC) }

// BenchmarkIncremental1PercentPoweredOn is BenchmarkIncremental1Percent of
// the running VM with transport auto: the full backup reads the nfc stream,
// the incremental the changed areas of the snapshot's disk through ranged
// datastore reads.
func BenchmarkIncremental1PercentPoweredOn(b *testing.B) {
	benchIncremental(b, vcbackup.TransportAuto)
}

func benchIncremental(b *testing.B, transport string) {
	const size = 128 << 20
	ctx := context.Background()
	lab, err := backuplab.New(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer lab.Close()
	if _, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: "bench01", Disks: []int64{size}, PowerOn: true}); err != nil {
		b.Fatal(err)
	}
	if err := lab.WriteDisk("bench01", 0, 0, random(1, size)); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	var fullT, incT time.Duration
	var read, disk int64
	for i := 0; i < b.N; i++ {
		r, err := repo.Init(b.TempDir(), repo.InitOptions{})
		if err != nil {
			b.Fatal(err)
		}
		cfg := vcbackup.Config{Client: lab.Client, Repo: r, Transport: transport}
		t0 := time.Now()
		res, err := vcbackup.BackupVMs(ctx, cfg, []string{"bench01"})
		if err != nil || res[0].Err != nil {
			b.Fatal(err, res[0].Err)
		}
		fullT += time.Since(t0)
		blocks := int64(size / vcsimext.CBTBlockSize)
		for range blocks / 100 {
			off := rng.Int64N(blocks) * vcsimext.CBTBlockSize
			if err := lab.WriteDisk("bench01", 0, off+rng.Int64N(vcsimext.CBTBlockSize-4096), random(rng.Uint64(), 4096)); err != nil {
				b.Fatal(err)
			}
		}
		t0 = time.Now()
		res, err = vcbackup.BackupVMs(ctx, cfg, []string{"bench01"})
		if err != nil || res[0].Err != nil || res[0].Mode != vcbackup.ModeIncremental {
			b.Fatal(err, res[0].Err, res[0].Mode)
		}
		incT += time.Since(t0)
		read += res[0].BytesRead
		disk += size
	}
	b.ReportMetric(100*float64(read)/float64(disk), "%read/disk")
	b.ReportMetric(incT.Seconds()/fullT.Seconds(), "incr/full-time")
	b.ReportMetric(fullT.Seconds()/float64(b.N), "full-s")
	b.ReportMetric(incT.Seconds()/float64(b.N), "incr-s")
}
