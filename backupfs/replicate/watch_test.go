package replicate

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// listCounter counts a backend's List calls.
type listCounter struct {
	Backend
	lists atomic.Int64
}

func (b *listCounter) List(ctx context.Context, kind Kind) ([]Object, error) {
	b.lists.Add(1)
	return b.Backend.List(ctx, kind)
}

// packageChecker is a target that, when a site package is written, checks
// that every point it names is already in the target, whole and flushed.
type packageChecker struct {
	*ordered
	mu       sync.Mutex
	packages []string
}

func (b *packageChecker) Write(ctx context.Context, kind Kind, name string, data []byte) error {
	if kind == Sites {
		pts, err := sitePoints(data)
		if err != nil {
			b.t.Errorf("package %s: %v", name, err)
		}
		for _, id := range pts {
			if _, err := b.Backend.Read(ctx, Points, id); err != nil {
				b.t.Errorf("package %s written before its point %s: %v", name, id, err)
			}
		}
		consistent(b.t, b.Backend)
		b.mu.Lock()
		b.packages = append(b.packages, name)
		b.mu.Unlock()
	}
	return b.ordered.Write(ctx, kind, name, data)
}

// TestWatchCycleArrivesWhole: while replicate watches, idle polls read the
// source's listings and leave the target alone; a protect cycle made
// meanwhile (its point first, its package later) arrives at the target
// whole, the package only after every point it names.
func TestWatchCycleArrivesWhole(t *testing.T) {
	srcDir := t.TempDir()
	src := source(t, srcDir, 2, 1, 3)
	srcB := &listCounter{Backend: local(t, srcDir)}
	dstL := &listCounter{Backend: local(t, filepath.Join(t.TempDir(), "replica"))}
	dst := &packageChecker{ordered: &ordered{Backend: dstL, t: t, unflushed: map[Kind]int{}}}
	got, wait, stop := watching(t, srcB, dst, 10*time.Millisecond)
	waitFn := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("watch: %s not within 30s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("of the repository", func(st *Stats) bool { return st.Points == 2 && st.Sites == 1 })

	// Idle: ten polls list the source (three listings each), none the target.
	dstLists, srcLists := dstL.lists.Load(), srcB.lists.Load()
	waitFn("ten idle polls", func() bool { return srcB.lists.Load() >= srcLists+30 })
	if n := dstL.lists.Load() - dstLists; n != 0 {
		t.Errorf("ten idle polls listed the target %d times: want none (nothing new in the source)", n)
	}
	select {
	case st := <-got:
		t.Errorf("an idle poll copied: %+v", st)
	default:
	}

	// A protect cycle: the new point of vm00 (one changed chunk) first...
	p, err := src.LatestPoint("vm00")
	if err != nil {
		t.Fatal(err)
	}
	x, err := src.LoadIndex(p.Disks[0].Index)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("a chunk the new cycle wrote, and only it")
	chunk := make([]byte, testChunk)
	copy(chunk, data)
	d := repo.Sum(chunk)
	if _, _, err := src.PutChunk(d, chunk); err != nil {
		t.Fatal(err)
	}
	x.Chunks[0] = d
	if err := src.Sync(); err != nil {
		t.Fatal(err)
	}
	xd, err := src.PutIndex(x)
	if err != nil {
		t.Fatal(err)
	}
	p.ID, p.Parent, p.Created = "20261201T000000Z-abcdef", p.ID, p.Created.Add(time.Hour)
	p.Disks[0].Index = xd
	if err := src.SavePoint(p); err != nil {
		t.Fatal(err)
	}
	wait("of the cycle's point", func(st *Stats) bool { return st.Points == 1 && st.Chunks == 1 && st.Indexes == 1 && st.Sites == 0 })
	// ... then its package, naming it and vm01's point of before.
	q, err := src.LatestPoint("vm01")
	if err != nil {
		t.Fatal(err)
	}
	savePackage(t, src, "dc1-20261201T000000Z-00000c", []string{p.ID, q.ID})
	wait("of the cycle's package", func(st *Stats) bool { return st.Sites == 1 && st.Points == 0 && st.Chunks == 0 })
	stop()
	if pts, sites := consistent(t, dstL.Backend); pts != 3 || sites != 2 {
		t.Fatalf("target: %d points, %d packages: want 3 and 2", pts, sites)
	}
	dst.mu.Lock()
	defer dst.mu.Unlock()
	if len(dst.packages) != 2 || dst.packages[1] != "dc1-20261201T000000Z-00000c" {
		t.Fatalf("packages written %v", dst.packages)
	}
}
