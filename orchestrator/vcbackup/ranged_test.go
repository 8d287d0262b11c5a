package vcbackup_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
)

// TestPoweredOnIncrementalReadsRanges: a running VM's incremental reads
// only the changed areas of the snapshot's disk through ranged datastore
// reads (the bytes counted by vCenter's stand-in), while the guest keeps
// writing into the snapshot's delta; a host that refuses the ranged reads
// (a locked file, Range ignored) makes it read the nfc stream and say so;
// a fault in the middle of the ranged reads leaves no point and no
// snapshot.
func TestPoweredOnIncrementalReadsRanges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "db01", Disks: []int64{diskSize}, PowerOn: true})
	must(t, err)
	must(t, e.lab.WriteDisk("db01", 0, 0, random(1, 3<<20)))
	res := e.backup(t, "db01")[0]
	must(t, res.Err)
	if res.Mode != vcbackup.ModeFull || res.Disks[0].Transport != vcbackup.TransportNFC {
		t.Fatalf("first backup: mode %s transport %s, want full over nfc", res.Mode, res.Disks[0].Transport)
	}

	// change writes three known areas, in three chunks, and returns the CBT
	// blocks they touch.
	seed := uint64(100)
	change := func() int64 {
		var want int64
		for _, off := range []int64{100 << 10, 2<<20 + 5, 6 << 20} {
			seed++
			must(t, e.lab.WriteDisk("db01", 0, off, random(seed, 3000)))
			want += vcsimext.CBTBlockSize
		}
		return want
	}
	points := func() int {
		pts, err := e.r.Points()
		must(t, err)
		return len(pts)
	}

	t.Run("ranged", func(t *testing.T) {
		want := change()
		atSnapshot, err := os.ReadFile(e.lab.DiskFile("db01", 0))
		must(t, err)
		// The guest overwrites the same areas once the read has begun: the
		// writes go to the snapshot's delta, not the disk being read.
		cfg := e.cfg
		cfg.Readers, cfg.DiskParallel = 1, 1
		var once sync.Once
		cfg.Progress = func(p vcbackup.Progress) {
			if p.Phase == "read" {
				once.Do(func() {
					for _, off := range []int64{100 << 10, 2<<20 + 5, 6 << 20} {
						must(t, e.lab.WriteDisk("db01", 0, off, random(999, 3000)))
					}
				})
			}
		}
		ds, nfc := e.lab.Backup.DatastoreBytesServed(), e.lab.Backup.BytesServed()
		rs, err := vcbackup.BackupVMs(ctx, cfg, []string{"db01"})
		must(t, err)
		res := rs[0]
		must(t, res.Err)
		served := e.lab.Backup.DatastoreBytesServed() - ds
		if res.Mode != vcbackup.ModeIncremental || res.Disks[0].Transport != vcbackup.TransportDatastore ||
			!slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "ranged datastore reads of the snapshot's disk") }) {
			t.Fatalf("incremental: mode %s transport %s notes %q, want incremental by ranged datastore reads, said", res.Mode, res.Disks[0].Transport, res.Notes)
		}
		// Only the changed blocks (and the one-byte probe) left vCenter.
		if diskBytesRead(res) != want || res.BytesRead != want+1 || served != res.BytesRead || e.lab.Backup.BytesServed() != nfc {
			t.Fatalf("incremental took %d, transferred %d, stand-in served %d by datastore and %d by nfc; want %d changed bytes (+1 probe), no stream",
				diskBytesRead(res), res.BytesRead, served, e.lab.Backup.BytesServed()-nfc, want)
		}
		if got := e.diskBytes(t, res.Point, 0); !slices.Equal(got, atSnapshot) {
			t.Fatal("the point is not the disk as it was at the snapshot")
		}
		// The snapshot is gone, so the delta was consolidated: the disk now
		// has the guest's later writes, which the next backup takes.
		e.noSnapshots(t, vm)
		res = e.backup(t, "db01")[0]
		must(t, res.Err)
		e.checkDisk(t, res.Point, "db01", 0)
		if now, _ := os.ReadFile(e.lab.DiskFile("db01", 0)); slices.Equal(now, atSnapshot) {
			t.Fatal("the guest's writes during the backup were lost")
		}
		e.verify(t)
	})

	for _, refusal := range []struct {
		name, said string
		set        func(bool)
	}{
		{"locked", "409", e.lab.Backup.LockDiskFiles},
		{"range ignored", "not a byte range", e.lab.Backup.IgnoreRange},
	} {
		t.Run(refusal.name, func(t *testing.T) {
			change()
			refusal.set(true)
			defer refusal.set(false)
			nfc := e.lab.Backup.BytesServed()
			res := e.backup(t, "db01")[0]
			must(t, res.Err)
			if res.Mode != vcbackup.ModeIncremental || res.Disks[0].Transport != vcbackup.TransportNFC || e.lab.Backup.BytesServed() == nfc ||
				!slices.ContainsFunc(res.Notes, func(n string) bool {
					return strings.Contains(n, "refused") && strings.Contains(n, refusal.said) && strings.Contains(n, "nfc export stream instead")
				}) {
				t.Fatalf("refused ranged reads: mode %s transport %s notes %q, want an incremental over nfc saying why", res.Mode, res.Disks[0].Transport, res.Notes)
			}
			e.checkDisk(t, res.Point, "db01", 0)
			e.noSnapshots(t, vm)
			e.verify(t)
		})
	}

	t.Run("fault mid-read", func(t *testing.T) {
		change()
		before := points()
		e.lab.Backup.FailDownloadsAfter("db01/db01-flat.vmdk", 2, 1) // the probe and one area pass
		res := e.backup(t, "db01")[0]
		if res.Err == nil || !strings.Contains(res.Err.Error(), "503") {
			t.Fatalf("backup whose ranged read failed: err %v, want the 503", res.Err)
		}
		if points() != before {
			t.Fatal("a failed ranged read wrote a restore point")
		}
		e.noSnapshots(t, vm)
		res = e.backup(t, "db01")[0]
		must(t, res.Err)
		e.checkDisk(t, res.Point, "db01", 0)
		e.verify(t)
	})
}
