package vcbackup_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// heldBackup starts a backup of vm with cfg that stops in the middle of its
// disk read until release is closed; it returns once the backup is held
// there, and done gives its result.
func heldBackup(t *testing.T, cfg vcbackup.Config, vm string) (release func(), done <-chan vcbackup.Result) {
	t.Helper()
	held, rel := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cfg.Progress = func(p vcbackup.Progress) {
		if p.Phase == "read" {
			once.Do(func() { close(held); <-rel })
		}
	}
	out := make(chan vcbackup.Result, 1)
	go func() {
		rs, err := vcbackup.BackupVMs(context.Background(), cfg, []string{vm})
		if err != nil {
			out <- vcbackup.Result{Err: err}
			return
		}
		out <- rs[0]
	}()
	select {
	case <-held:
	case r := <-out:
		t.Fatalf("the backup to hold ended before its read: %v", r.Err)
	}
	var relOnce sync.Once
	release = func() { relOnce.Do(func() { close(rel) }) }
	t.Cleanup(release)
	return release, out
}

// claims lists the repository's VM backup claims.
func claims(t *testing.T, r *repo.Repo) []repo.LockInfo {
	t.Helper()
	ls, err := r.Locks()
	must(t, err)
	return slices.DeleteFunc(ls, func(l repo.LockInfo) bool { return l.Kind != repo.LockVM })
}

// TestConcurrentBackupsOfOneVM: a second backup of a VM whose backup is
// held in the middle of its read (same repository, by name and by path) is
// refused naming the holder (host, pid, since), removes nothing: the first
// backup's snapshot stays, and the first's point equals the disk. A third
// told to wait (ClaimWait) says whom it waits for and, once the first ends,
// backs the VM up incrementally from the first's point.
func TestConcurrentBackupsOfOneVM(t *testing.T) {
	e := newEnv(t)
	e.cfg.Transport = vcbackup.TransportNFC
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "web01", Disks: []int64{diskSize}, PowerOn: true})
	must(t, err)
	must(t, e.lab.WriteDisk("web01", 0, 0, random(1, 2<<20)))

	release, first := heldBackup(t, e.cfg, "web01")
	snaps, err := e.lab.Snapshots(ctx, vm)
	must(t, err)
	if len(snaps) != 1 || !strings.HasPrefix(snaps[0], vcbackup.SnapshotPrefix) {
		t.Fatalf("held backup: snapshots %q, want its own", snaps)
	}
	cl := claims(t, e.r)
	if len(cl) != 1 {
		t.Fatalf("held backup: claims %+v, want one", cl)
	}
	host, _ := os.Hostname()
	for _, name := range []string{"web01", "/DC0/vm/web01"} {
		res := e.backup(t, name)[0]
		if res.Err == nil || res.Point != nil {
			t.Fatalf("second backup (as %s) of a VM whose backup runs: err %v point %v, want refused", name, res.Err, res.Point)
		}
		msg := res.Err.Error()
		t.Logf("refused: %s", msg)
		for _, want := range []string{"another backup of this VM is running", "pid " + strconv.Itoa(os.Getpid()), "on " + host,
			"since " + cl[0].Created.UTC().Format(time.RFC3339)} {
			if !strings.Contains(msg, want) {
				t.Fatalf("refusal %q does not say %q", msg, want)
			}
		}
		if !errors.Is(res.Err, repo.ErrLocked) {
			t.Fatalf("refusal %v is not repo.ErrLocked", res.Err)
		}
		if now, err := e.lab.Snapshots(ctx, vm); err != nil || !slices.Equal(now, snaps) {
			t.Fatalf("after the refused backup: snapshots %q (%v), want the held backup's %q", now, err, snaps)
		}
	}

	// A third waits for the claim.
	cfg := e.cfg
	waiting := make(chan repo.LockInfo, 1)
	cfg.ClaimWait = 10 * time.Minute
	cfg.ClaimWaiting = func(vm string, h repo.LockInfo, _ time.Duration) { waiting <- h }
	third := make(chan vcbackup.Result, 1)
	go func() {
		rs, err := vcbackup.BackupVMs(ctx, cfg, []string{"web01"})
		if err != nil {
			third <- vcbackup.Result{Err: err}
			return
		}
		third <- rs[0]
	}()
	select {
	case h := <-waiting:
		if h.PID != os.Getpid() || h.ID != cl[0].ID {
			t.Fatalf("the waiting backup waits for %+v, want the held backup's claim %+v", h, cl[0])
		}
	case r := <-third:
		t.Fatalf("a backup told to wait ended while the first was held: err %v", r.Err)
	}

	release()
	r1 := <-first
	must(t, r1.Err)
	e.checkDisk(t, r1.Point, "web01", 0)
	r3 := <-third
	must(t, r3.Err)
	if r3.Mode != vcbackup.ModeIncremental || r3.Point.Parent != r1.Point.ID {
		t.Fatalf("the waiting backup: mode %s parent %s, want incremental from the first's %s", r3.Mode, r3.Point.Parent, r1.Point.ID)
	}
	e.checkDisk(t, r3.Point, "web01", 0)
	e.noSnapshots(t, vm)
	if cl := claims(t, e.r); len(cl) != 0 {
		t.Fatalf("claims left after the backups: %+v", cl)
	}
	e.verify(t)
}

// writeClaim writes a VM backup claim into r's locks/ as another process
// would (docs/repository-format.md, "VM backup claims").
func writeClaim(t *testing.T, r *repo.Repo, l repo.LockInfo) string {
	t.Helper()
	b, err := json.Marshal(l)
	must(t, err)
	id := "0123456789abcdef0123456789abcdef"
	must(t, os.MkdirAll(filepath.Join(r.Dir, "locks"), 0o755))
	must(t, os.WriteFile(filepath.Join(r.Dir, "locks", id+".json"), b, 0o644))
	return id
}

func instanceUUID(t *testing.T, vm *object.VirtualMachine) string {
	t.Helper()
	var m mo.VirtualMachine
	must(t, property.DefaultCollector(vm.Client()).RetrieveOne(context.Background(), vm.Reference(), []string{"config.instanceUuid"}, &m))
	if m.Config == nil || m.Config.InstanceUuid == "" {
		t.Fatal("the simulator's VM has no instance UUID")
	}
	return m.Config.InstanceUuid
}

// TestStaleClaimTakenOver: a backup killed after its snapshot leaves its
// claim and its snapshot. When that claim's process is gone (this host, no
// such pid) or its claim was not refreshed for repo.LockStaleAfter
// (another host), the next backup takes the claim over, says so, removes the
// snapshot and writes a point equal to the disk. A live claim of another
// host (refreshed now) refuses it and its snapshot stays.
func TestStaleClaimTakenOver(t *testing.T) {
	e := newEnv(t)
	e.cfg.Transport = vcbackup.TransportNFC
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "db01", Disks: []int64{diskSize}, PowerOn: true})
	must(t, err)
	key := "instance-uuid:" + strings.ToLower(instanceUUID(t, vm))
	host, _ := os.Hostname()
	gone := exec.Command("true")
	must(t, gone.Run())
	deadPID := gone.ProcessState.Pid()
	now := time.Now().UTC()

	for i, c := range []struct {
		name  string
		claim repo.LockInfo
		stale bool
	}{
		{"process gone", repo.LockInfo{Host: host, PID: deadPID, Created: now.Add(-time.Minute), Refreshed: now}, true},
		{"not refreshed", repo.LockInfo{Host: "backup-host-2", PID: 4242, Created: now.Add(-2 * time.Hour), Refreshed: now.Add(-repo.LockStaleAfter - time.Minute)}, true},
		{"live on another host", repo.LockInfo{Host: "backup-host-2", PID: 4242, Created: now.Add(-time.Minute), Refreshed: now}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			must(t, e.lab.WriteDisk("db01", 0, int64(i)<<20, random(uint64(30+i), 100<<10)))
			snap := vcbackup.SnapshotPrefix + "20261203T00000" + strconv.Itoa(i) + "Z-killed"
			task, err := vm.CreateSnapshot(ctx, snap, "", false, false)
			must(t, err)
			must(t, task.Wait(ctx))
			l := c.claim
			l.Kind, l.VM, l.Purpose = repo.LockVM, key, "backup of VM db01 from vCenter elsewhere"
			id := writeClaim(t, e.r, l)
			res := e.backup(t, "db01")[0]
			if !c.stale {
				if res.Err == nil || !strings.Contains(res.Err.Error(), "pid 4242 on backup-host-2") {
					t.Fatalf("backup beside a live claim of another host: err %v, want refused naming it", res.Err)
				}
				if snaps, _ := e.lab.Snapshots(ctx, vm); !slices.Equal(snaps, []string{snap}) {
					t.Fatalf("a refused backup changed the snapshots: %q, want %q", snaps, snap)
				}
				// Its holder ends: the claim is released, the snapshot
				// removed.
				must(t, os.Remove(filepath.Join(e.r.Dir, "locks", id+".json")))
				task, err := vm.RemoveSnapshot(ctx, snap, false, nil)
				must(t, err)
				must(t, task.Wait(ctx))
				return
			}
			must(t, res.Err)
			notes := strings.Join(res.Notes, "; ")
			for _, want := range []string{"took over the stale backup claim of pid " + strconv.Itoa(l.PID) + " on " + l.Host,
				"removed snapshot " + snap + " left by an earlier backup"} {
				if !strings.Contains(notes, want) {
					t.Fatalf("notes %q do not say %q", notes, want)
				}
			}
			e.checkDisk(t, res.Point, "db01", 0)
			e.noSnapshots(t, vm)
			if cl := claims(t, e.r); len(cl) != 0 {
				t.Fatalf("claims left: %+v", cl)
			}
		})
	}
	e.verify(t)
}

// TestLostClaimNoPoint: a backup whose claim is removed while it reads (by
// another run that judged it stale, and may have removed its snapshot)
// writes no point and says why.
func TestLostClaimNoPoint(t *testing.T) {
	e := newEnv(t)
	e.cfg.Transport = vcbackup.TransportNFC
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "app02", Disks: []int64{diskSize}, PowerOn: true})
	must(t, err)
	must(t, e.lab.WriteDisk("app02", 0, 0, random(3, 1<<20)))
	release, done := heldBackup(t, e.cfg, "app02")
	cl := claims(t, e.r)
	if len(cl) != 1 {
		t.Fatalf("claims %+v, want the held backup's", cl)
	}
	must(t, os.Remove(filepath.Join(e.r.Dir, "locks", cl[0].ID+".json")))
	release()
	res := <-done
	if res.Err == nil || res.Point != nil || !strings.Contains(res.Err.Error(), "backup claim lost") {
		t.Fatalf("backup whose claim was lost: err %v point %v, want failed saying so", res.Err, res.Point)
	}
	if pts, _ := e.r.Points(); len(pts) != 0 {
		t.Fatalf("a backup whose claim was lost wrote %d points", len(pts))
	}
	e.noSnapshots(t, vm)
}

// TestVMNamedTwiceBackedUpOnce: a VM named by its name and its inventory
// path in one run is one VM: one backup, one point, a note naming the alias.
func TestVMNamedTwiceBackedUpOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "web02", Disks: []int64{1 << 20}, PowerOn: true})
	must(t, err)
	_, err = e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "web03", Disks: []int64{1 << 20}, PowerOn: true})
	must(t, err)
	res := e.backup(t, "web02", "web03", "/DC0/vm/web02", "web02")
	if len(res) != 2 || res[0].VM != "web02" || res[1].VM != "web03" {
		t.Fatalf("results for %d VMs (%+v), want web02 and web03 once each", len(res), res)
	}
	for _, r := range res {
		must(t, r.Err)
	}
	if !slices.Contains(res[0].Notes, "also listed as /DC0/vm/web02, web02: the same VM, backed up once") {
		t.Fatalf("notes %q do not name the aliases", res[0].Notes)
	}
	if pts, _ := e.r.Points(); len(pts) != 2 {
		t.Fatalf("%d points, want one per VM", len(pts))
	}
}
