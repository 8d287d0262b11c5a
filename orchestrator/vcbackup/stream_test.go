package vcbackup_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// A backup over the export lease reads each disk as one streamOptimized
// stream (one GET per disk, no ranges) and stores a point equal to the disk.
func TestNFCStreamPointEqualsDisk(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "st01", Disks: []int64{diskSize, 1 << 20}, PowerOn: true})
	must(t, err)
	for i, off := range []int64{0, 65536 - 3, 3<<20 + 12345, diskSize - 4096} {
		must(t, e.lab.WriteDisk("st01", 0, off, random(uint64(40+i), 5000)))
	}
	must(t, e.lab.WriteDisk("st01", 0, 4<<20, []byte(strings.Repeat("compressible ", 20000))))
	must(t, e.lab.WriteDisk("st01", 1, 1<<20-100, random(50, 100)))
	cfg := e.cfg
	cfg.Transport = vcbackup.TransportNFC
	reqs := e.lab.Backup.Requests()
	res, err := vcbackup.BackupVMs(ctx, cfg, []string{"st01"})
	must(t, err)
	must(t, res[0].Err)
	if n := e.lab.Backup.Requests() - reqs; n != 2 {
		t.Fatalf("%d requests to the export lease for 2 disks, want one stream each", n)
	}
	for i := range res[0].Point.Disks {
		e.checkDisk(t, res[0].Point, "st01", i)
	}
	e.verify(t)
	e.noSnapshots(t, vm)
}

// A malformed marker in the stream fails the backup naming the disk and the
// stream offset: no point, no snapshot, and the next run is clean.
func TestNFCCorruptStreamFails(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "bad01", Disks: []int64{diskSize}, PowerOn: true})
	must(t, err)
	must(t, e.lab.WriteDisk("bad01", 0, 1<<20, random(60, 200<<10)))
	e.lab.Backup.CorruptStreams(1)
	res := e.backup(t, "bad01")[0]
	if res.Err == nil || res.Point != nil {
		t.Fatalf("backup over a corrupted stream: err %v point %v, want a failure and no point", res.Err, res.Point)
	}
	disk := vm.Name() + ".vmdk"
	if msg := res.Err.Error(); !strings.Contains(msg, "disk bad01") || !strings.Contains(msg, "streamOptimized stream of the export lease at byte 1024") || !strings.Contains(msg, "grain marker") {
		t.Fatalf("error %q: want it to name the disk, the stream offset and the bad marker (%s)", msg, disk)
	}
	pts, err := e.r.Points()
	must(t, err)
	if len(pts) != 0 {
		t.Fatalf("points after a failed backup: %v", pts)
	}
	e.noSnapshots(t, vm)
	res = e.backup(t, "bad01")[0]
	must(t, res.Err)
	e.checkDisk(t, res.Point, "bad01", 0)
	e.noSnapshots(t, vm)
}
