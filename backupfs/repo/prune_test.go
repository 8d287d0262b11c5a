package repo_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

const pruneChildEnv = "REKINDLE_TEST_PRUNE_CHILD"

// pruneChild prunes the repository in dir, printing a line per object
// removed, so the parent can kill it at a known point.
func pruneChild(dir string) int {
	r, err := repo.Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(w, "locking")
	w.Flush()
	_, err = r.Prune(context.Background(), repo.PruneOptions{Progress: func(kind string, d repo.Digest) {
		fmt.Fprintln(w, kind, d)
		w.Flush()
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// chunkData is chunk i of a test disk: compressible, distinct per (seed, i).
func chunkData(cs int, seed, i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("seed %d chunk %d;", seed, i)), cs/10)[:cs]
}

// makePoint stores a point of vm whose disk is n chunks: chunk i is
// chunkData(seed(i), i).
func makePoint(t testing.TB, r *repo.Repo, vm string, created time.Time, n int, seed func(i int) int) (*repo.RestorePoint, []byte) {
	t.Helper()
	cs := r.ChunkSize()
	idx := repo.NewIndex(cs, int64(n*cs))
	var disk []byte
	for i := range n {
		b := chunkData(cs, seed(i), i)
		d := repo.Sum(b)
		if _, _, err := r.PutChunk(d, b); err != nil {
			t.Fatal(err)
		}
		idx.Chunks[i] = d
		disk = append(disk, b...)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	xd, err := r.PutIndex(idx)
	if err != nil {
		t.Fatal(err)
	}
	p := &repo.RestorePoint{ID: repo.NewPointID(created), VM: repo.VMIdentity{Name: vm}, Created: created,
		Files: []repo.ConfigFile{{Name: vm + ".vmx", Size: 2, Inline: []byte("{}")}},
		Disks: []repo.Disk{{Name: vm, Controller: "scsi0:0", Size: int64(n * cs), Index: xd}}}
	if err := r.SavePoint(p); err != nil {
		t.Fatal(err)
	}
	return p, disk
}

func readDisk(t testing.TB, r *repo.Repo, p *repo.RestorePoint) []byte {
	t.Helper()
	dr, err := r.OpenDisk(p.Disks[0].Index, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), p.ID)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, p.Disks[0].Size)
	if n, err := dr.ReadAt(b, 0); n != len(b) {
		t.Fatalf("read point %s: %d bytes: %v", p.ID, n, err)
	}
	return b
}

func countObjects(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// history makes three points of one VM: each shares half its chunks with
// the previous one; the middle one is then forgotten.
func history(t testing.TB, n int) (*repo.Repo, []*repo.RestorePoint, [][]byte, *repo.RestorePoint) {
	r, err := repo.Init(t.TempDir(), repo.InitOptions{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var pts []*repo.RestorePoint
	var disks [][]byte
	for v := range 3 {
		p, disk := makePoint(t, r, "web01", t0.Add(time.Duration(v)*time.Hour), n, func(i int) int {
			if i%2 == 0 {
				return 0 // shared by every version
			}
			return v + 1
		})
		pts, disks = append(pts, p), append(disks, disk)
	}
	if err := r.DeletePoint(pts[1].ID); err != nil {
		t.Fatal(err)
	}
	return r, []*repo.RestorePoint{pts[0], pts[2]}, [][]byte{disks[0], disks[2]}, pts[1]
}

func checkPoints(t *testing.T, r *repo.Repo, pts []*repo.RestorePoint, disks [][]byte) {
	t.Helper()
	all, err := r.Points()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Verify(context.Background(), all, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify after prune: %v %+v", err, rep)
	}
	for i, p := range pts {
		if !bytes.Equal(readDisk(t, r, p), disks[i]) {
			t.Fatalf("point %s reads differently after prune", p.ID)
		}
	}
}

func TestPrune(t *testing.T) {
	r, pts, disks, _ := history(t, 20)
	before := countObjects(t, filepath.Join(r.Dir, "chunks"))
	dry, err := r.Prune(context.Background(), repo.PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.ChunksRemoved != 10 || dry.IndexesRemoved != 1 || countObjects(t, filepath.Join(r.Dir, "chunks")) != before {
		t.Fatalf("dry run: %+v (chunks %d -> %d)", dry, before, countObjects(t, filepath.Join(r.Dir, "chunks")))
	}
	rep, err := r.Prune(context.Background(), repo.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The forgotten point's own chunks (its odd ones) and its index go.
	if rep.ChunksRemoved != 10 || rep.IndexesRemoved != 1 || rep.ChunksKept != 30 || countObjects(t, filepath.Join(r.Dir, "chunks")) != before-10 {
		t.Fatalf("prune: %+v", rep)
	}
	checkPoints(t, r, pts, disks)
	if rep, _ := r.Prune(context.Background(), repo.PruneOptions{}); rep.ChunksRemoved != 0 {
		t.Fatalf("second prune removed %d chunks", rep.ChunksRemoved)
	}
}

// A manifest that does not read stops prune before it removes anything.
func TestPruneRefusesDamagedRepository(t *testing.T) {
	r, _, _, _ := history(t, 4)
	if err := os.WriteFile(filepath.Join(r.Dir, "points", "20261201T000000Z-000000.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := countObjects(t, filepath.Join(r.Dir, "chunks"))
	if _, err := r.Prune(context.Background(), repo.PruneOptions{}); err == nil || !strings.Contains(err.Error(), "nothing removed") {
		t.Fatalf("prune of a repository with a broken manifest: %v", err)
	}
	if countObjects(t, filepath.Join(r.Dir, "chunks")) != before {
		t.Fatal("prune removed chunks although a manifest did not read")
	}
}

// kill -9 at several points of a prune: every point still verifies and
// reads, the dead prune's lock does not block the next, which finishes.
func TestPruneKilled(t *testing.T) {
	r, pts, disks, _ := history(t, 400) // 200 chunks to remove
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, after := range []int{0, 1, 7, 60} {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), pruneChildEnv+"="+r.Dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		lines := -1 // the "locking" line comes first
		for lines < after && sc.Scan() {
			lines++
		}
		cmd.Process.Kill()
		for sc.Scan() {
			lines++ // what it printed before the kill landed
		}
		cmd.Wait()
		if lines < after {
			t.Fatalf("child ended after %d removals, before the kill at %d", lines, after)
		}
		total += lines
		checkPoints(t, r, pts, disks)
	}
	rep, err := r.Prune(context.Background(), repo.PruneOptions{})
	if err != nil {
		t.Fatalf("prune after killed prunes: %v", err)
	}
	if total >= 201 || rep.ChunksRemoved+rep.IndexesRemoved == 0 {
		t.Fatalf("killed prunes removed %d objects, the last %+v: the kills did not interrupt", total, rep)
	}
	if got := countObjects(t, filepath.Join(r.Dir, "chunks")); got != 600 {
		t.Fatalf("%d chunks after prunes, want the 600 the two points use", got)
	}
	checkPoints(t, r, pts, disks)
}

func TestLocks(t *testing.T) {
	r, err := repo.Init(t.TempDir(), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s1, err := r.Lock(ctx, repo.LockShared, "backup web01")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := r.Lock(ctx, repo.LockShared, "import db01")
	if err != nil {
		t.Fatalf("two shared locks: %v", err)
	}
	_, err = r.Lock(ctx, repo.LockExclusive, "prune")
	if !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), "backup web01") && !strings.Contains(err.Error(), "import db01") {
		t.Fatalf("exclusive while shared held: %v", err)
	}
	s1.Unlock()
	s2.Unlock()
	x, err := r.Lock(ctx, repo.LockExclusive, "prune")
	if err != nil {
		t.Fatalf("exclusive once free: %v", err)
	}
	if _, err := r.Lock(ctx, repo.LockShared, "backup"); !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), `"prune"`) {
		t.Fatalf("shared while exclusive held: %v", err)
	}
	x.Unlock()

	sv, err := r.Lock(ctx, repo.LockServe, "serve")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lock(ctx, repo.LockServe, "serve"); !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), "another `rekindle serve`") ||
		!strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second serve: %v", err)
	}
	b, err := r.Lock(ctx, repo.LockShared, "backup beside serve")
	if err != nil {
		t.Fatalf("backup beside serve: %v", err)
	}
	b.Unlock()
	sv.Unlock()
	if locks, _ := r.Locks(); len(locks) != 0 {
		t.Fatalf("locks left after unlock: %+v", locks)
	}
}

// A lock whose holder is gone does not block: a dead process of this host,
// or a lock not refreshed for LockStaleAfter.
func TestStaleLocks(t *testing.T) {
	r, err := repo.Init(t.TempDir(), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	now := time.Now().UTC()
	os.MkdirAll(filepath.Join(r.Dir, "locks"), 0o755)
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(r.Dir, "locks", name+".json"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("deadpid", fmt.Sprintf(`{"kind":"shared","purpose":"killed backup","host":%q,"pid":%d,"created":%q,"refreshed":%q}`,
		host, dead.Process.Pid, now.Format(time.RFC3339), now.Format(time.RFC3339)))
	old := now.Add(-repo.LockStaleAfter - time.Minute).Format(time.RFC3339)
	write("oldother", fmt.Sprintf(`{"kind":"exclusive","purpose":"prune elsewhere","host":"other-host","pid":1,"created":%q,"refreshed":%q}`, old, old))
	x, err := r.Lock(context.Background(), repo.LockExclusive, "prune")
	if err != nil {
		t.Fatalf("stale locks block: %v", err)
	}
	x.Unlock()
	if locks, _ := r.Locks(); len(locks) != 0 {
		t.Fatalf("stale locks not removed: %+v", locks)
	}
	// A live lock of another host blocks, named.
	write("live", fmt.Sprintf(`{"kind":"shared","purpose":"backup on nfs2","host":"nfs2","pid":1,"created":%q,"refreshed":%q}`,
		now.Format(time.RFC3339), now.Format(time.RFC3339)))
	if _, err := r.Lock(context.Background(), repo.LockExclusive, "prune"); !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), "on nfs2") {
		t.Fatalf("live lock of another host: %v", err)
	}
}

// BenchmarkPrune100Points prunes a repository of 100 points of one VM (64
// chunks each, half shared by all) after 90 were forgotten: it reports the
// time, the chunks removed, and the ratio to the reference measured in the
// same run: a loop of os.Remove over the same files (the objects the prune
// removes, in a twin repository built the same way and synced the same
// way), one after the other.
//
//	go test -run '^$' -bench Prune100Points -benchtime 3x ./backupfs/repo/
func BenchmarkPrune100Points(b *testing.B) {
	build := func() *repo.Repo {
		r, err := repo.Init(b.TempDir(), repo.InitOptions{ChunkSize: 64 << 10})
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		var pts []*repo.RestorePoint
		for v := range 100 {
			p, _ := makePoint(b, r, "web01", t0.Add(time.Duration(v)*time.Hour), 64, func(i int) int {
				if i%2 == 0 {
					return 0
				}
				return v + 1
			})
			pts = append(pts, p)
		}
		for _, p := range pts[:90] {
			if err := r.DeletePoint(p.ID); err != nil {
				b.Fatal(err)
			}
		}
		return r
	}
	var total, ref time.Duration
	var removed, kept int
	for i := range b.N {
		b.StopTimer()
		r, twin := build(), build()
		// The twin's garbage, as prune would remove it: indexes, then chunks.
		var files []string
		if _, err := twin.Prune(context.Background(), repo.PruneOptions{DryRun: true, Progress: func(kind string, d repo.Digest) {
			if kind == "chunk" {
				files = append(files, twin.ChunkPath(d))
			} else {
				files = append(files, filepath.Join(twin.Dir, "indexes", d.String()[:2], d.String()))
			}
		}}); err != nil {
			b.Fatal(err)
		}
		slices.SortStableFunc(files, func(a, b string) int { // indexes first
			return strings.Compare(filepath.Base(filepath.Dir(filepath.Dir(a))), filepath.Base(filepath.Dir(filepath.Dir(b)))) * -1
		})
		if err := twin.Sync(); err != nil {
			b.Fatal(err)
		}
		unlink := func() {
			start := time.Now()
			for _, f := range files {
				if err := os.Remove(f); err != nil {
					b.Fatal(err)
				}
			}
			ref += time.Since(start)
		}
		prune := func() {
			b.StartTimer()
			start := time.Now()
			rep, err := r.Prune(context.Background(), repo.PruneOptions{})
			if err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			b.StopTimer()
			removed, kept = rep.ChunksRemoved, rep.ChunksKept
			if n := rep.ChunksRemoved + rep.IndexesRemoved; n != len(files) {
				b.Fatalf("prune removed %d objects, the twin has %d to remove", n, len(files))
			}
		}
		// Alternate which goes first: the shared disk's state drifts.
		if i%2 == 0 {
			prune()
			unlink()
		} else {
			unlink()
			prune()
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "prune-s")
	b.ReportMetric(ref.Seconds()/float64(b.N), "unlink-s")
	b.ReportMetric(total.Seconds()/ref.Seconds(), "prune/unlink-ratio")
	b.ReportMetric(float64(removed), "chunks-removed")
	b.ReportMetric(float64(kept), "chunks-kept")
}

// TestLockWaitsForExclusive: a shared locker with LockWait meets a prune's
// exclusive lock held through another Repo (another holder): it says once
// for whom it waits, takes its lock as soon as the prune releases, and
// fails naming the holder when the prune outlasts the wait. An exclusive
// locker never waits; a second serve is refused at once.
func TestLockWaitsForExclusive(t *testing.T) {
	dir := t.TempDir()
	pruner, err := repo.Init(dir, repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	backup, err := repo.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	x, err := pruner.Lock(ctx, repo.LockExclusive, "prune")
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan repo.LockInfo, 10)
	backup.LockWait = time.Minute
	backup.LockWaiting = func(h repo.LockInfo, wait time.Duration) {
		if wait != time.Minute {
			t.Errorf("LockWaiting wait = %s, want the LockWait", wait)
		}
		waiting <- h
	}
	got := make(chan error, 1)
	go func() {
		l, err := backup.Lock(ctx, repo.LockShared, "backup web01")
		if err == nil {
			err = l.Unlock()
		}
		got <- err
	}()
	select {
	case h := <-waiting:
		if h.Kind != repo.LockExclusive || h.Purpose != "prune" || h.ID != x.Info().ID {
			t.Fatalf("waits for %+v, want the prune's lock %s", h, x.Info().ID)
		}
	case err := <-got:
		t.Fatalf("a shared lock beside a prune's did not wait: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no word of waiting within 30 s")
	}
	select {
	case err := <-got:
		t.Fatalf("took its lock while the prune still held it: %v", err)
	default:
	}
	if err := x.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("after the prune released: %v", err)
	}
	if len(waiting) != 0 {
		t.Errorf("said %d more times that it waits for the same holder", len(waiting))
	}

	// The wait is bounded: the error names the holder and the wait.
	x, err = pruner.Lock(ctx, repo.LockExclusive, "prune")
	if err != nil {
		t.Fatal(err)
	}
	defer x.Unlock()
	backup.LockWait = 300 * time.Millisecond
	backup.LockWaiting = nil
	_, err = backup.Lock(ctx, repo.LockShared, "backup web01")
	if !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), x.Info().ID) || !strings.Contains(err.Error(), "waited 300ms") {
		t.Fatalf("shared lock after the wait: %v, want ErrLocked naming %s and the wait", err, x.Info().ID)
	}
	if _, err := backup.Lock(ctx, repo.LockExclusive, "prune too"); !errors.Is(err, repo.ErrLocked) || strings.Contains(err.Error(), "waited") {
		t.Fatalf("exclusive beside exclusive: %v, want ErrLocked without waiting", err)
	}
}
