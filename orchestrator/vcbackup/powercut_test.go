package vcbackup_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/internal/durable/powercut"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestPowerCutAtEveryStep cuts the power (internal/durable/powercut: a disk
// that keeps only what was synced) at every step of a backup's commit in
// turn, a full backup into an empty repository and an incremental one onto
// a full point, and checks what a reboot finds: a repository that opens,
// whose every point reads and verifies (no point names a chunk or an index
// that is missing or was not synced), and, when the backup said its point
// was saved, that point.
func TestPowerCutAtEveryStep(t *testing.T) {
	ctx := context.Background()
	lab, err := backuplab.New(ctx, t.TempDir())
	must(t, err)
	t.Cleanup(lab.Close)
	const vm, size = "pc01", 256 << 10 // four 64 KiB chunks
	_, err = lab.CreateVM(ctx, backuplab.VMSpec{Name: vm, Disks: []int64{size}, PowerOn: true})
	must(t, err)
	must(t, lab.WriteDisk(vm, 0, 0, random(11, size)))

	// One reader and one disk at a time: the steps come in one order, so
	// cutting at step n of every run cuts at the same place.
	backup := func(r *repo.Repo) vcbackup.Result {
		res, err := vcbackup.BackupVMs(ctx, vcbackup.Config{Client: lab.Client, Repo: r, Readers: 1, DiskParallel: 1}, []string{vm})
		if err != nil {
			return vcbackup.Result{Err: err}
		}
		return res[0]
	}
	// newRepo is a repository on a fresh disk, with a full point when
	// withParent, and the disk changed since.
	seed := uint64(100)
	newRepo := func(withParent bool) (*powercut.FS, *repo.Repo) {
		disk := powercut.New()
		r, err := repo.InitFS(disk, "/repo", repo.InitOptions{ChunkSize: 64 << 10})
		must(t, err)
		if withParent {
			must(t, backup(r).Err)
		}
		seed++
		must(t, lab.WriteDisk(vm, 0, int64(seed%4)*64<<10+100, random(seed, 1000)))
		return disk, r
	}
	check := func(t *testing.T, disk *powercut.FS, n int, res vcbackup.Result, parents int) {
		t.Helper()
		after := disk.Cut()
		r, err := repo.OpenFS(after, "/repo")
		if err != nil {
			t.Fatalf("cut at step %d: the repository does not open: %v", n, err)
		}
		pts, err := r.Points()
		if err != nil {
			t.Fatalf("cut at step %d: %v", n, err)
		}
		rep, err := r.Verify(ctx, pts, nil)
		if err != nil || !rep.OK() {
			t.Fatalf("cut at step %d: verify after the cut: %v %+v", n, err, rep.Problems)
		}
		if res.Point != nil {
			found := false
			for _, p := range pts {
				found = found || p.ID == res.Point.ID
			}
			if !found {
				t.Fatalf("cut at step %d: the backup said point %s was saved, and it is gone after the cut", n, res.Point.ID)
			}
		}
		if len(pts) < parents {
			t.Fatalf("cut at step %d: %d points left of %d before the backup", n, len(pts), parents)
		}
	}

	for _, c := range []struct {
		name   string
		parent bool
	}{{"full", false}, {"incremental", true}} {
		t.Run(c.name, func(t *testing.T) {
			disk, r := newRepo(c.parent)
			disk.CutAt(-1)
			res := backup(r)
			must(t, res.Err)
			if c.parent && res.Mode != vcbackup.ModeIncremental {
				t.Fatalf("mode %s, want incremental", res.Mode)
			}
			steps := disk.Steps()
			t.Logf("a %s backup makes %d steps on the disk", c.name, steps)
			parents := 0
			if c.parent {
				parents = 1
			}
			check(t, disk, steps, res, parents+1)
			for n := range steps {
				disk, r := newRepo(c.parent)
				disk.CutAt(n)
				res := backup(r)
				if res.Err == nil && res.Point == nil {
					t.Fatalf("cut at step %d: no error and no point", n)
				}
				if res.Err != nil && !errors.Is(res.Err, powercut.ErrPowerCut) {
					t.Fatalf("cut at step %d: %v, want the power cut", n, res.Err)
				}
				check(t, disk, n, res, parents)
			}
		})
	}
}
