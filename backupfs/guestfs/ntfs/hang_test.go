package ntfs

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// stalling is a volume whose reads block while armed, until released: a
// call of go-ntfs that never returns, as a loop of the library's would.
type stalling struct {
	r       *bytes.Reader
	armed   atomic.Bool
	release chan struct{}
	blocked atomic.Int64 // reads that blocked
	reads   atomic.Int64 // bytes read
}

func (s *stalling) ReadAt(b []byte, off int64) (int, error) {
	if s.armed.Load() {
		s.blocked.Add(1)
		<-s.release
	}
	s.reads.Add(int64(len(b)))
	return s.r.ReadAt(b, off)
}

// within runs f and fails the test if it has not returned in d: a guard
// that does not hold shows as this test's failure, not as a hang of go
// test.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v: a hung call of go-ntfs hangs its caller", what, d)
	}
}

// TestHungCallMakesVolumeUnavailable: a call into go-ntfs that never
// returns (its read blocks) comes back after the call timeout with an
// error naming the volume and what to do; the volume's notes say why it
// is no longer served; later calls fail fast without reading or leaving
// goroutines behind; another volume keeps serving meanwhile.
func TestHungCallMakesVolumeUnavailable(t *testing.T) {
	img := patched(t, nil)
	st := &stalling{r: bytes.NewReader(img), release: make(chan struct{})}
	defer close(st.release) // lets the goroutine stuck in go-ntfs unwind
	const timeout = 300 * time.Millisecond
	hung, err := OpenLimited(st, int64(len(img)), Limits{Name: "volume pt/disk0/p1", CallTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	root, err := hung.Root()
	if err != nil {
		t.Fatal(err)
	}
	other, err := OpenLimited(bytes.NewReader(img), int64(len(img)), Limits{Name: "volume pt/disk0/p2", CallTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	oroot, err := other.Root()
	if err != nil {
		t.Fatal(err)
	}

	st.armed.Store(true)
	var first error
	within(t, 20*timeout, "readdir of a volume whose reads block", func() { _, first = hung.ReadDir(root) })
	if st.blocked.Load() == 0 {
		t.Fatalf("readdir read nothing from the volume (%v): the test's volume did not stall", first)
	}
	if !errors.Is(first, gfs.ErrUnavailable) || !strings.Contains(first.Error(), "volume pt/disk0/p1") ||
		!strings.Contains(first.Error(), "restore the whole disk") {
		t.Fatalf("readdir of a stalled volume: %v; want an error wrapping gfs.ErrUnavailable naming the volume and what to do", first)
	}
	if err := hung.Unavailable(); !errors.Is(err, gfs.ErrUnavailable) {
		t.Fatalf("Unavailable after a hung call: %v", err)
	}
	if n := hung.Notes(); len(n) == 0 || !strings.Contains(n[len(n)-1], "no longer served") {
		t.Fatalf("notes of the unavailable volume: %q; want one saying it is no longer served", n)
	}

	// The stuck goroutine holds nothing the others need.
	if ents, err := other.ReadDir(oroot); err != nil || len(ents) < 5 {
		t.Fatalf("the other volume while one is stuck: %d entries, %v", len(ents), err)
	}

	base := runtime.NumGoroutine()
	const n = 200
	within(t, 20*timeout, "200 calls of an unavailable volume", func() {
		for range n {
			if _, err := hung.ReadDir(root); !errors.Is(err, gfs.ErrUnavailable) {
				t.Errorf("a later readdir: %v, want gfs.ErrUnavailable", err)
				return
			}
			if _, err := hung.Root(); !errors.Is(err, gfs.ErrUnavailable) {
				t.Errorf("a later root: %v, want gfs.ErrUnavailable", err)
				return
			}
		}
	})
	if b := st.blocked.Load(); b != 1 {
		t.Errorf("%d reads blocked after %d later calls, want 1 (later calls must not reach go-ntfs)", b, 2*n)
	}
	if g := runtime.NumGoroutine(); g > base+2 {
		t.Errorf("%d goroutines after %d calls of the unavailable volume, %d before: calls pile up", g, 2*n, base)
	}
}

// TestHungOpen: opening a volume whose reads block returns within the
// deadline with an error naming the volume.
func TestHungOpen(t *testing.T) {
	img := patched(t, nil)
	st := &stalling{r: bytes.NewReader(img), release: make(chan struct{})}
	defer close(st.release)
	st.armed.Store(true)
	const timeout = 300 * time.Millisecond
	var err error
	within(t, 20*timeout, "open of a volume whose reads block", func() {
		_, err = OpenLimited(st, int64(len(img)), Limits{Name: "volume pt/disk1/p3", CallTimeout: timeout})
	})
	if !errors.Is(err, gfs.ErrUnavailable) || !strings.Contains(err.Error(), "volume pt/disk1/p3") {
		t.Fatalf("open: %v; want an error wrapping gfs.ErrUnavailable naming the volume", err)
	}
}

// TestReadBudget: a call that reads more than its budget fails with an
// error naming the volume (its read panics inside go-ntfs, so a loop of
// the library that ignores read errors ends too); the budget is per call,
// so the volume serves the calls that fit.
func TestReadBudget(t *testing.T) {
	img := patched(t, nil)
	st := &stalling{r: bytes.NewReader(img)}
	const budget = 8 << 10
	fs, err := OpenLimited(st, int64(len(img)), Limits{Name: "volume pt/disk0/p4", ReadBudget: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	tr := gfs.NewTree(fs, "budget")
	_, ra, err := tr.Open("/big.txt")
	if err != nil {
		t.Fatal(err)
	}
	// Opening and listing read more than a small budget; reading big.txt
	// (20000 bytes, not resident: go-ntfs reads its clusters itself) too.
	fs.lim.ReadBudget = budget
	before := st.reads.Load()
	_, err = ra.ReadAt(make([]byte, 20000), 0)
	if !errors.Is(err, gfs.ErrCorrupt) || !strings.Contains(err.Error(), "volume pt/disk0/p4") || !strings.Contains(err.Error(), "over 8192 bytes") {
		t.Fatalf("reading 20000 bytes with a budget of %d: %v; want an error naming the volume and the budget", budget, err)
	}
	if got := st.reads.Load() - before; got > budget {
		t.Errorf("the call read %d bytes with a budget of %d", got, budget)
	}
	b := make([]byte, 4000)
	if n, err := ra.ReadAt(b, 1000); n != len(b) || err != nil || !bytes.Equal(b, bytes.Repeat([]byte("x"), len(b))) {
		t.Fatalf("a read within the budget after one past it: %d, %v", n, err)
	}
	if err := fs.Unavailable(); err != nil {
		t.Fatalf("a call past its read budget made the volume unavailable: %v", err)
	}
}
