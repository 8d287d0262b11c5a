package guestfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// stallingVolume blocks every read while armed, until released: a call of
// go-ntfs that never ends, as a loop of the library's on damaged metadata
// would.
type stallingVolume struct {
	ra      io.ReaderAt
	armed   *atomic.Bool
	release chan struct{}
	blocked *atomic.Int64
}

func (s stallingVolume) ReadAt(p []byte, off int64) (int, error) {
	if s.armed.Load() {
		s.blocked.Add(1)
		<-s.release
	}
	return s.ra.ReadAt(p, off)
}

// TestNTFSHungVolumeUnavailable: when a go-ntfs call of one NTFS volume
// never returns, the NFS call returns after the call timeout with an error
// saying the volume is unavailable; the disk's folder then shows the
// volume's status entry (status unavailable, the reason and what to do)
// instead of its folder; later calls fail fast, also once the volume was
// dropped from the cache (it is not opened again to hang again); the
// volume of the other disk is served throughout; a volume whose first
// open hangs is listed as unavailable too. The test has its own deadline:
// a missing guard fails it instead of hanging go test.
func TestNTFSHungVolumeUnavailable(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	tree := guestimg.NewTree(10, guestimg.Options{})
	os.MkdirAll(src, 0o755)
	if err := tree.Write(src); err != nil {
		t.Fatal(err)
	}
	a, b := filepath.Join(dir, "a.ntfs"), filepath.Join(dir, "b.ntfs")
	guestimg.NTFS(t, a, 16<<20, src)
	guestimg.NTFS(t, b, 16<<20, src)
	r := newRepo(t)
	pt := importDisks(t, r, "win04", a, b)
	fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 400 * time.Millisecond
	var armed atomic.Bool
	var blocked atomic.Int64
	release := make(chan struct{})
	defer close(release) // lets the goroutine stuck in go-ntfs unwind
	stuckKey := pt.ID + "/" + pt.Disks[0].Name + "/" + WholeDisk
	fs.ntfsTimeout = timeout
	fs.wrapVolume = func(key string, ra io.ReaderAt) io.ReaderAt {
		if key != stuckKey {
			return ra
		}
		return stallingVolume{ra: ra, armed: &armed, release: release, blocked: &blocked}
	}
	diskA := "/win04/" + pt.ID + "/" + pt.Disks[0].Name
	diskB := "/win04/" + pt.ID + "/" + pt.Disks[1].Name
	names := func(p string) string {
		fis, err := fs.ReadDir(p)
		if err != nil {
			t.Fatalf("readdir %s: %v", p, err)
		}
		var n []string
		for _, fi := range fis {
			n = append(n, fi.Name())
		}
		return strings.Join(n, " ")
	}
	if got := names(diskA); got != WholeDisk {
		t.Fatalf("disk a lists %q before the hang, want %q", got, WholeDisk)
	}
	names(diskA + "/" + WholeDisk) // opened, its root listed: the hang comes after
	// Deadline of its own for each step that might hang.
	within := func(what string, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { defer close(done); f() }()
		select {
		case <-done:
		case <-time.After(25 * timeout):
			t.Fatalf("%s did not return within %v: a hung go-ntfs call hangs the server", what, 25*timeout)
		}
	}

	armed.Store(true)
	var first error
	within("readdir of the stalled volume", func() { _, first = fs.ReadDir(diskA + "/whole/etc") })
	if blocked.Load() == 0 {
		t.Fatalf("readdir of the volume read nothing (%v): the test's volume did not stall", first)
	}
	if !errors.Is(first, gfs.ErrUnavailable) || !strings.Contains(first.Error(), stuckKey) {
		t.Fatalf("readdir of the stalled volume: %v; want an error wrapping gfs.ErrUnavailable naming %s", first, stuckKey)
	}
	if got := names(diskA); got != WholeDisk+ReadmeSuffix {
		t.Fatalf("disk a lists %q after the hang, want only the volume's status entry", got)
	}
	rd, err := billyReader{fs}.ReadFile(diskA + "/" + WholeDisk + ReadmeSuffix)
	if err != nil || !strings.Contains(string(rd), ": "+StatusUnavailable+"\n") || !strings.Contains(string(rd), "did not finish within") ||
		!strings.Contains(string(rd), "restore the whole disk") {
		t.Fatalf("status entry of the unavailable volume: %q, %v", rd, err)
	}
	vols, err := fs.Volumes("win04", pt.ID, pt.Disks[0].Name)
	if err != nil || len(vols) != 1 || vols[0].Status != StatusUnavailable {
		t.Fatalf("volumes of disk a: %+v, %v; want one, unavailable", vols, err)
	}

	// The other disk's volume is served while a goroutine is stuck in
	// the first's.
	within("reading the other volume", func() { tree.Check(t, billyReader{fs}, diskB+"/whole", true) })

	base := runtime.NumGoroutine()
	const n = 100
	within("100 calls of the unavailable volume", func() {
		for i := range n {
			if i == n/2 { // dropped from the cache: not opened again
				fs.trees.Remove(stuckKey)
			}
			if _, err := fs.Lstat(diskA + "/whole/etc/hostname"); !errors.Is(err, gfs.ErrUnavailable) {
				t.Errorf("call %d of the unavailable volume: %v, want gfs.ErrUnavailable", i, err)
				return
			}
		}
	})
	if got := blocked.Load(); got != 1 {
		t.Errorf("%d reads of the volume blocked, want 1: later calls reached go-ntfs (or it was opened again)", got)
	}
	if g := runtime.NumGoroutine(); g > base+3 {
		t.Errorf("%d goroutines after %d calls of the unavailable volume, %d before: calls pile up", g, n, base)
	}

	// A second server over the same repository, its volume stalled from
	// its first open: the open times out, and the volume is listed as
	// unavailable (not damaged) with the reason.
	fs2, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	fs2.ntfsTimeout, fs2.wrapVolume = timeout, fs.wrapVolume
	var open error
	within("open of a stalled volume", func() { _, open = fs2.Lstat(diskA + "/whole/etc") })
	if !errors.Is(open, gfs.ErrUnavailable) || !strings.Contains(open.Error(), stuckKey) {
		t.Fatalf("open of a stalled volume: %v; want an error wrapping gfs.ErrUnavailable naming %s", open, stuckKey)
	}
	vols, err = fs2.Volumes("win04", pt.ID, pt.Disks[0].Name)
	if err != nil || len(vols) != 1 || vols[0].Status != StatusUnavailable || !strings.Contains(vols[0].Reason, "did not finish within") {
		t.Fatalf("volumes of disk a after its open hung: %+v, %v; want one, unavailable, saying why", vols, err)
	}
}
