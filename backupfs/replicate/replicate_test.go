package replicate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/internal/durable/powercut"
)

const testChunk = 64 << 10

// source builds a repository of vms VMs with pointsPerVM points each (each
// point shares most chunks with the previous one, as backups do), an app
// and a site package naming the newest point of every VM.
func source(t testing.TB, dir string, vms, pointsPerVM, chunksPerDisk int) *repo.Repo {
	t.Helper()
	r, err := repo.Init(dir, repo.InitOptions{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var newest []string
	var members []repo.AppMember
	for v := range vms {
		name := fmt.Sprintf("vm%02d", v)
		members = append(members, repo.AppMember{VM: name, Group: 1 + v%2})
		disk := make([][]byte, chunksPerDisk)
		for i := range disk {
			disk[i] = randBytes(rng, testChunk)
		}
		var last string
		for p := range pointsPerVM {
			if p > 0 {
				disk[rng.IntN(len(disk))] = randBytes(rng, testChunk) // one changed chunk
			}
			x := repo.NewIndex(testChunk, int64(len(disk)+1)*testChunk) // a trailing zero chunk
			for i, c := range disk {
				d := repo.Sum(c)
				if _, _, err := r.PutChunk(d, c); err != nil {
					t.Fatal(err)
				}
				x.Chunks[i] = d
			}
			if err := r.Sync(); err != nil {
				t.Fatal(err)
			}
			xd, err := r.PutIndex(x)
			if err != nil {
				t.Fatal(err)
			}
			at = at.Add(time.Hour)
			pt := &repo.RestorePoint{ID: fmt.Sprintf("%s-%06x", at.Format("20060102T150405Z"), v*100+p), VM: repo.VMIdentity{Name: name},
				Created: at, Parent: last, App: "shop",
				Files: []repo.ConfigFile{{Name: name + ".vmx", Size: 4, Inline: []byte("x=1\n")}},
				Disks: []repo.Disk{{Name: name, Controller: "scsi0:0", Size: x.Size, Index: xd}}}
			if err := r.SavePoint(pt); err != nil {
				t.Fatal(err)
			}
			last = pt.ID
		}
		newest = append(newest, last)
	}
	if err := r.SaveApp(&repo.App{Name: "shop", Members: members, Updated: at}); err != nil {
		t.Fatal(err)
	}
	savePackage(t, r, "dc1-20261121T000000Z-00000a", newest)
	return r
}

func savePackage(t testing.TB, r *repo.Repo, id string, points []string) {
	t.Helper()
	var vms []string
	for i, p := range points {
		vms = append(vms, fmt.Sprintf(`{"name":"vm%02d","point":%q}`, i, p))
	}
	pkg := fmt.Sprintf(`{"format":1,"id":%q,"site":"dc1","datacenters":[{"name":"DC0","vms":[%s]}]}`, id, strings.Join(vms, ","))
	if err := r.SaveSitePackage(id, []byte(pkg), points); err != nil {
		t.Fatal(err)
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	// Half random, half text: zstd has something to do.
	copy(b[n/2:], bytes.Repeat([]byte("rekindle "), n/18))
	return b
}

// local is a Local backend of dir, or fails the test.
func local(t testing.TB, dir string) *Local {
	t.Helper()
	l, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// consistent fails the test unless every restore point of the target, and
// every point its site packages name, is whole: every index and chunk
// present and hashing to its name. It reads through the Backend, so it
// checks targets on any filesystem.
func consistent(t *testing.T, b Backend) (points, sites int) {
	t.Helper()
	ctx := context.Background()
	pts, err := b.List(ctx, Points)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, o := range pts {
		have[o.Name] = true
		raw, err := b.Read(ctx, Points, o.Name)
		if err != nil {
			t.Fatal(err)
		}
		p, err := repo.DecodeRestorePoint(raw)
		if err != nil {
			t.Fatalf("point %s: %v", o.Name, err)
		}
		for _, d := range p.Disks {
			raw, err := b.Read(ctx, Indexes, d.Index.String())
			if err == nil {
				err = checkIndex(d.Index.String(), raw)
			}
			if err != nil {
				t.Fatalf("target %s: point %s names index %s: %v", b, o.Name, d.Index.Short(), err)
			}
			x, _ := repo.DecodeIndex(raw)
			for _, cd := range x.Chunks {
				if cd.IsZero() {
					continue
				}
				raw, err := b.Read(ctx, Chunks, cd.String())
				if err == nil {
					_, err = repo.VerifyChunk(cd, raw)
				}
				if err != nil {
					t.Fatalf("target %s: point %s names chunk %s: %v", b, o.Name, cd.Short(), err)
				}
			}
		}
	}
	ss, err := b.List(ctx, Sites)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ss {
		raw, err := b.Read(ctx, Sites, o.Name)
		if err != nil {
			t.Fatal(err)
		}
		names, err := sitePoints(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range names {
			if !have[p] {
				t.Fatalf("target %s: site package %s names point %s, which it lacks", b, o.Name, p)
			}
		}
	}
	return len(pts), len(ss)
}

// sameObjects fails unless the target holds every source object of every
// kind, byte for byte.
func sameObjects(t *testing.T, src, dst Backend) {
	t.Helper()
	ctx := context.Background()
	for _, k := range []Kind{Chunks, Indexes, Points, Apps, Sites} {
		objs, err := src.List(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) == 0 {
			t.Fatalf("source has no %s: the test repository is wrong", k)
		}
		for _, o := range objs {
			a, _ := src.Read(ctx, k, o.Name)
			b, err := dst.Read(ctx, k, o.Name)
			if err != nil || !bytes.Equal(a, b) {
				t.Fatalf("%s %s: target differs from source (%v)", k, o.Name, err)
			}
		}
	}
}

func TestCopyAllThenNothing(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	source(t, srcDir, 3, 3, 6)
	dstDir := filepath.Join(t.TempDir(), "replica")
	src, dst := local(t, srcDir), local(t, dstDir)
	var lastDone, lastTotal int64
	st, err := Copy(ctx, src, dst, Options{Progress: func(p Progress) { lastDone, lastTotal = p.Done, p.Total }})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Created || st.Points != 9 || st.Sites != 1 || st.Apps != 1 || st.Indexes != 9 {
		t.Fatalf("stats %+v: want a created target with 9 points, 9 indexes, 1 app, 1 site", st)
	}
	if lastDone != lastTotal || lastTotal == 0 {
		t.Fatalf("progress ended at %d of %d", lastDone, lastTotal)
	}
	sameObjects(t, src, dst)
	// The target is a repository rekindle opens and verifies.
	r, err := repo.Open(dstDir)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := r.Points()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Verify(ctx, pts, nil)
	if err != nil || !rep.OK() || rep.Points != 9 {
		t.Fatalf("verify target: %+v %v", rep, err)
	}
	st2, err := Copy(ctx, src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st2.Bytes != 0 || st2.Chunks+st2.Indexes+st2.Points+st2.Apps+st2.Sites != 0 || st2.Created {
		t.Fatalf("second copy wrote %d bytes (%+v): want nothing", st2.Bytes, st2)
	}
}

// interrupted is a test wrapper around a real target: it fails every call
// once writes of kind have reached after (the process died there).
type interrupted struct {
	Backend
	kind    Kind
	after   int
	writes  atomic.Int64
	dead    atomic.Bool
	onDeath func() // e.g. cut the power
}

var errKilled = errors.New("test: process killed")

func (b *interrupted) die() error {
	if !b.dead.Swap(true) && b.onDeath != nil {
		b.onDeath()
	}
	return errKilled
}

func (b *interrupted) Write(ctx context.Context, kind Kind, name string, data []byte) error {
	if b.dead.Load() {
		return errKilled
	}
	if kind == b.kind && b.writes.Add(1) > int64(b.after) {
		return b.die()
	}
	return b.Backend.Write(ctx, kind, name, data)
}

func (b *interrupted) Flush(ctx context.Context) error {
	if b.dead.Load() {
		return errKilled
	}
	return b.Backend.Flush(ctx)
}

func (b *interrupted) List(ctx context.Context, kind Kind) ([]Object, error) {
	if b.dead.Load() {
		return nil, errKilled
	}
	return b.Backend.List(ctx, kind)
}

// flushKiller dies at the flush ending phase kind (every object of it
// written, none flushed).
type flushKiller struct {
	*interrupted
	phase Kind
	cur   Kind
}

func (b *flushKiller) Write(ctx context.Context, kind Kind, name string, data []byte) error {
	b.cur = kind
	return b.interrupted.Write(ctx, kind, name, data)
}

func (b *flushKiller) Flush(ctx context.Context) error {
	if b.cur == b.phase {
		return b.die()
	}
	return b.interrupted.Flush(ctx)
}

func TestInterruptAtEachPhaseThenResume(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	source(t, srcDir, 3, 2, 5)
	src := local(t, srcDir)
	// The bytes a whole copy writes, measured on a fresh target.
	full, err := Copy(ctx, src, local(t, t.TempDir()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	type kill struct {
		kind  Kind
		after int
	}
	var kills []kill
	for _, k := range []Kind{Chunks, Indexes, Points} {
		kills = append(kills, kill{k, 0}, kill{k, 1})
	}
	kills = append(kills, kill{Apps, 0}, kill{Sites, 0}, kill{Chunks, full.Chunks / 2}, kill{Indexes, 4})
	for _, k := range kills {
		t.Run(fmt.Sprintf("%s-after-%d", k.kind, k.after), func(t *testing.T) {
			dst := local(t, filepath.Join(t.TempDir(), "replica"))
			ib := &interrupted{Backend: dst, kind: k.kind, after: k.after}
			st1, err := Copy(ctx, src, ib, Options{Workers: 1})
			if !errors.Is(err, errKilled) {
				t.Fatalf("interrupted copy: %v, want the kill", err)
			}
			consistent(t, dst)
			st2, err := Copy(ctx, src, dst, Options{})
			if err != nil {
				t.Fatal(err)
			}
			consistent(t, dst)
			sameObjects(t, src, dst)
			// Resumed, not restarted: the second run writes only what the
			// first did not (a chunk written but not flushed may be
			// written again only if it vanished; on a live disk it did not).
			if st1.Bytes+st2.Bytes != full.Bytes {
				t.Fatalf("first run wrote %d bytes, second %d: sum %d, a whole copy writes %d", st1.Bytes, st2.Bytes, st1.Bytes+st2.Bytes, full.Bytes)
			}
			if k.kind != Chunks && st2.Chunks != 0 {
				t.Fatalf("killed in phase %s, the chunks were all copied, yet the resumed run copied %d chunks", k.kind, st2.Chunks)
			}
		})
	}
}

// noLock is a test wrapper for a target on an in-memory filesystem, where
// package repo's locks (operating-system files) cannot be taken.
type noLock struct{ *Local }

type unlocked struct{}

func (unlocked) Unlock() error { return nil }

func (noLock) Lock(context.Context, string) (Unlocker, error) { return unlocked{}, nil }

// TestPowerCutAtEachFlush cuts the power (powercut forgets whatever was not
// synced) at each point of a copy: after the nth write of each phase and at
// the flush that ends each phase. What survives is consistent, and a copy
// after the reboot completes it.
func TestPowerCutAtEachFlush(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	source(t, srcDir, 2, 2, 4)
	src := local(t, srcDir)
	type cut struct {
		kind    Kind
		after   int
		atFlush bool
	}
	var cuts []cut
	for _, k := range []Kind{Chunks, Indexes, Points, Apps, Sites} {
		cuts = append(cuts, cut{k, 0, true}, cut{k, 0, false})
	}
	cuts = append(cuts, cut{Points, 3, false}, cut{Chunks, 5, false})
	for _, c := range cuts {
		t.Run(fmt.Sprintf("%s-after-%d-flush-%v", c.kind, c.after, c.atFlush), func(t *testing.T) {
			fsys := powercut.New()
			var rebooted *powercut.FS
			dst := &Local{Dir: "/replica", FS: fsys}
			ib := &interrupted{Backend: noLock{dst}, kind: c.kind, after: c.after, onDeath: func() { rebooted = fsys.Cut() }}
			var target Backend = ib
			if c.atFlush {
				ib.after = 1 << 30
				target = &flushKiller{interrupted: ib, phase: c.kind}
			}
			if _, err := Copy(ctx, src, target, Options{Workers: 1}); !errors.Is(err, errKilled) {
				t.Fatalf("copy: %v, want the power cut", err)
			}
			after := &Local{Dir: "/replica", FS: rebooted}
			if _, err := after.Config(ctx); err != nil {
				t.Fatalf("after the cut: %v", err) // created durably before any object
			}
			consistent(t, noLock{after})
			if _, err := Copy(ctx, src, noLock{after}, Options{}); err != nil {
				t.Fatal(err)
			}
			if pts, sites := consistent(t, noLock{after}); pts != 4 || sites != 1 {
				t.Fatalf("after resuming: %d points, %d site packages; want 4 and 1", pts, sites)
			}
			sameObjects(t, src, noLock{after})
		})
	}
}

// TestEverythingFlushedAtTheEnd: once Copy returns, all of the copy
// survives a power cut.
func TestEverythingFlushedAtTheEnd(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	source(t, srcDir, 2, 1, 3)
	src := local(t, srcDir)
	fsys := powercut.New()
	if _, err := Copy(ctx, src, noLock{&Local{Dir: "/replica", FS: fsys}}, Options{}); err != nil {
		t.Fatal(err)
	}
	after := noLock{&Local{Dir: "/replica", FS: fsys.Cut()}}
	sameObjects(t, src, after) // a finished copy is durable: all of it survives the cut
}

func TestCorruptChunkRefused(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	r := source(t, srcDir, 2, 1, 4)
	pts, err := r.Points()
	if err != nil {
		t.Fatal(err)
	}
	victim := pts[0]
	x, err := r.LoadIndex(victim.Disks[0].Index)
	if err != nil {
		t.Fatal(err)
	}
	bad := x.Chunks[1]
	// A chunk whose header and checksum agree with its payload, but whose
	// payload is not the bytes its name is the SHA-256 of: only the full
	// hash check catches it.
	payload, err := r.GetChunk(bad)
	if err != nil {
		t.Fatal(err)
	}
	payload[100] ^= 0xff
	if err := os.WriteFile(r.ChunkPath(bad), repo.EncodeChunk(bad, payload), 0o644); err != nil {
		t.Fatal(err)
	}
	dstDir := filepath.Join(t.TempDir(), "replica")
	dst := local(t, dstDir)
	st, err := Copy(ctx, local(t, srcDir), dst, Options{})
	if !errors.Is(err, repo.ErrCorrupt) || !errors.Is(err, ErrRefused) {
		t.Fatalf("copy of a corrupt source: %v, want ErrCorrupt and ErrRefused", err)
	}
	if !strings.Contains(err.Error(), bad.String()) || !strings.Contains(err.Error(), victim.ID) {
		t.Fatalf("error %q does not name chunk %s and point %s", err, bad, victim.ID)
	}
	if _, serr := os.Stat(filepath.Join(dstDir, "chunks", bad.String()[:2], bad.String())); serr == nil {
		t.Fatalf("corrupt chunk %s was written to the target", bad.Short())
	}
	if len(st.Refused) != 1 || st.Refused[0].Name != bad.String() || !slices.Equal(st.Refused[0].Points, []string{victim.ID}) {
		t.Fatalf("refused %+v", st.Refused)
	}
	// The other VM's point arrived; the victim and the package naming it did not.
	if st.Points != 1 || st.Sites != 0 || len(st.SkippedSites) != 1 {
		t.Fatalf("stats %+v: want 1 point copied, the site package skipped", st)
	}
	consistent(t, dst)
}

func TestLocksHeldWhileCopying(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	src := source(t, srcDir, 1, 1, 3)
	dstDir := filepath.Join(t.TempDir(), "replica")
	var srcErr, dstErr error
	checked := false
	_, err := Copy(ctx, local(t, srcDir), local(t, dstDir), Options{Workers: 1, Progress: func(Progress) {
		if checked {
			return
		}
		checked = true
		if l, err := src.Lock(ctx, repo.LockExclusive, "prune"); err == nil {
			l.Unlock()
		} else {
			srcErr = err
		}
		d, err := repo.Open(dstDir)
		if err != nil {
			dstErr = err
			return
		}
		if l, err := d.Lock(ctx, repo.LockExclusive, "prune"); err == nil {
			l.Unlock()
		} else {
			dstErr = err
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(srcErr, repo.ErrLocked) || !errors.Is(dstErr, repo.ErrLocked) {
		t.Fatalf("prune's lock during a copy: source %v, target %v; want both refused", srcErr, dstErr)
	}
	if locks, _ := src.Locks(); len(locks) != 0 {
		t.Fatalf("locks left on the source: %v", locks)
	}
}

func TestWatchFollowsNewPoints(t *testing.T) {
	srcDir := t.TempDir()
	src := source(t, srcDir, 1, 1, 2)
	dstDir := filepath.Join(t.TempDir(), "replica")
	_, wait, stop := watching(t, local(t, srcDir), local(t, dstDir), 20*time.Millisecond)
	wait("of the first point", func(st *Stats) bool { return st.Points == 1 && st.Sites == 1 })
	// A new protect cycle: a point and a package naming it.
	p, err := src.LatestPoint("vm00")
	if err != nil {
		t.Fatal(err)
	}
	p.ID, p.Parent, p.Created = "20261201T000000Z-abcdef", p.ID, p.Created.Add(time.Hour)
	if err := src.SavePoint(p); err != nil {
		t.Fatal(err)
	}
	savePackage(t, src, "dc1-20261201T000000Z-00000b", []string{p.ID})
	wait("of the new cycle", func(st *Stats) bool { return st.Points == 1 && st.Sites == 1 && st.Chunks == 0 })
	stop()
	consistent(t, local(t, dstDir))
}

// ordered is a test wrapper that records, at every write, whether an
// object of another kind is still unflushed: the target may persist
// unflushed writes in any order, so each phase must be flushed before the
// next one writes.
type ordered struct {
	Backend
	t         *testing.T
	mu        sync.Mutex
	unflushed map[Kind]int
	kinds     []Kind // in the order first written
}

func (b *ordered) Write(ctx context.Context, kind Kind, name string, data []byte) error {
	b.mu.Lock()
	for k, n := range b.unflushed {
		if k != kind && n > 0 {
			b.t.Errorf("%s %s written while %d %s are not flushed", kind, name, n, k)
		}
	}
	if !slices.Contains(b.kinds, kind) {
		b.kinds = append(b.kinds, kind)
	}
	b.unflushed[kind]++
	b.mu.Unlock()
	return b.Backend.Write(ctx, kind, name, data)
}

func (b *ordered) Flush(ctx context.Context) error {
	err := b.Backend.Flush(ctx)
	if err == nil {
		b.mu.Lock()
		clear(b.unflushed)
		b.mu.Unlock()
	}
	return err
}

func TestPhasesFlushedInOrder(t *testing.T) {
	srcDir := t.TempDir()
	source(t, srcDir, 2, 2, 3)
	dst := &ordered{Backend: local(t, filepath.Join(t.TempDir(), "replica")), t: t, unflushed: map[Kind]int{}}
	if _, err := Copy(context.Background(), local(t, srcDir), dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if want := []Kind{Chunks, Indexes, Points, Apps, Sites}; !slices.Equal(dst.kinds, want) {
		t.Fatalf("phases %v, want %v", dst.kinds, want)
	}
	if n := len(dst.unflushed); n != 0 {
		t.Fatalf("copy returned with %d kinds unflushed", n)
	}
}

// A replica never holds chunks of a newer layout than its own version:
// copying version 2 chunks into a version 1 repository is refused before
// anything is written.
func TestOlderTargetVersionRefused(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	source(t, srcDir, 1, 1, 2)
	dstDir := t.TempDir()
	if _, err := repo.Init(dstDir, repo.InitOptions{ChunkSize: testChunk, Version: 1}); err != nil {
		t.Fatal(err)
	}
	st, err := Copy(ctx, local(t, srcDir), local(t, dstDir), Options{})
	if err == nil || !strings.Contains(err.Error(), "format version 1 and the source version 2") {
		t.Fatalf("copy into a version 1 repository: %v, want a refusal naming both versions", err)
	}
	if st.Bytes != 0 || st.Chunks != 0 {
		t.Fatalf("refused copy wrote %d bytes, %d chunks", st.Bytes, st.Chunks)
	}
	objs, err := local(t, dstDir).List(ctx, Chunks)
	if err != nil || len(objs) != 0 {
		t.Fatalf("target holds %d chunks after a refused copy (%v)", len(objs), err)
	}
}

// watching runs Watch from src to dst every poll until the test's end (the
// returned stop ends it and waits for it); each poll's Stats arrive on got, and
// wait(what, ok) waits up to 30 s for a poll whose Stats satisfy ok.
func watching(t *testing.T, src, dst Backend, poll time.Duration) (got <-chan *Stats, wait func(what string, ok func(*Stats) bool), stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	stats := make(chan *Stats, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, src, dst, poll, Options{}, func(st *Stats, err error) {
			if err != nil {
				t.Error(err)
			}
			stats <- st
		})
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	wait = func(what string, ok func(*Stats) bool) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case st := <-stats:
				if ok(st) {
					return
				}
			case <-deadline:
				t.Fatalf("watch: no copy %s within 30s", what)
			}
		}
	}
	return stats, wait, stop
}
