package vcbackup_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestVCenterRestartMidRead: vCenter's server stops in the middle of a
// disk read and comes back. The run fails saying what failed and that its
// snapshot is left for the next backup; no point is written; the next run
// removes that snapshot, says so, and writes a point equal to the disk.
func TestVCenterRestartMidRead(t *testing.T) {
	e := newEnv(t)
	e.cfg.Transport = vcbackup.TransportNFC
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "app01", Disks: []int64{diskSize}, PowerOn: true})
	must(t, err)
	must(t, e.lab.WriteDisk("app01", 0, 0, random(1, 4<<20)))
	first := e.backup(t, "app01")[0]
	must(t, first.Err)

	must(t, e.lab.WriteDisk("app01", 0, 1<<20, random(2, 3<<20)))
	cfg := e.cfg
	var once sync.Once
	stopped := false
	cfg.Progress = func(p vcbackup.Progress) {
		if p.Phase == "read" && p.Done > 0 && p.Done < p.Total {
			once.Do(func() { e.lab.StopVCenter(); stopped = true })
		}
	}
	rs, err := vcbackup.BackupVMs(ctx, cfg, []string{"app01"})
	must(t, err)
	res := rs[0]
	if !stopped {
		t.Fatal("the backup ended before vCenter could be stopped in the middle of its read")
	}
	if res.Err == nil || res.Point != nil {
		t.Fatalf("backup cut by a vCenter restart: err %v point %v, want failed without a point", res.Err, res.Point)
	}
	msg := res.Err.Error()
	t.Logf("the cut backup: %s", msg)
	for _, want := range []string{"vm app01", "disk app01", vcbackup.SnapshotPrefix, "the next backup of app01 removes it"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q does not say %q", msg, want)
		}
	}
	if pts, _ := e.r.Points(); len(pts) != 1 {
		t.Fatalf("%d points after the cut backup, want only the first", len(pts))
	}
	e.verify(t)

	must(t, e.lab.StartVCenter())
	if snaps, err := e.lab.Snapshots(ctx, vm); err != nil || len(snaps) != 1 || !strings.HasPrefix(snaps[0], vcbackup.SnapshotPrefix) {
		t.Fatalf("after the restart: snapshots %q (%v), want the cut backup's", snaps, err)
	}
	next := e.backup(t, "app01")[0]
	must(t, next.Err)
	if !slices.ContainsFunc(next.Notes, func(n string) bool { return strings.Contains(n, "left by an earlier backup") }) {
		t.Fatalf("next run's notes %q do not mention the snapshot it removed", next.Notes)
	}
	if next.Mode != vcbackup.ModeIncremental || next.Point.Parent != first.Point.ID {
		t.Fatalf("next run: mode %s parent %s, want incremental from %s", next.Mode, next.Point.Parent, first.Point.ID)
	}
	e.checkDisk(t, next.Point, "app01", 0)
	e.noSnapshots(t, vm)
	e.verify(t)
}
