package overlay

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5"

	"github.com/rekindle/rekindle/internal/durable"
	"github.com/rekindle/rekindle/internal/durable/powercut"
)

// heldBaseFS holds the first base read at offset hold until released.
type heldBaseFS struct {
	readOnlyFS
	hold    int64
	taken   *atomic.Bool
	held    chan struct{}
	release chan struct{}
}

func (h heldBaseFS) Open(name string) (billy.File, error) {
	return h.OpenFile(name, os.O_RDONLY, 0)
}

func (h heldBaseFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	f, err := h.readOnlyFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return heldBaseFile{File: f, fs: h}, nil
}

type heldBaseFile struct {
	billy.File
	fs heldBaseFS
}

func (f heldBaseFile) ReadAt(p []byte, off int64) (int, error) {
	if off == f.fs.hold && f.fs.taken.CompareAndSwap(false, true) {
		f.fs.held <- struct{}{}
		<-f.fs.release
	}
	return f.File.ReadAt(p, off)
}

// TestWritesToOtherBlocksPassAHeldWrite holds a write of a disk inside the
// overlay (its block is being filled from the base): a write of another
// block of the same file finishes meanwhile, and a write overlapping the
// held one waits for it and lands after it.
func TestWritesToOtherBlocksPassAHeldWrite(t *testing.T) {
	fx := newFixture(t)
	base := heldBaseFS{readOnlyFS: fx.base, hold: 0, taken: new(atomic.Bool), held: make(chan struct{}, 1), release: make(chan struct{})}
	o, err := New(base, fx.upper, Options{})
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			close(base.release)
		}
		o.Close()
	})
	bs := int64(o.bs)
	write := func(off int64, b []byte) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			f, err := o.OpenFile(diskPath, os.O_RDWR, 0)
			if err == nil {
				_, err = f.(interface {
					WriteAt([]byte, int64) (int, error)
				}).WriteAt(b, off)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				t.Errorf("write at %d: %v", off, err)
			}
		}()
		return done
	}
	a := bytes.Repeat([]byte{'a'}, 200)
	doneA := write(100, a) // fills block 0 from the base: held there
	select {
	case <-base.held:
	case <-time.After(20 * time.Second):
		t.Fatal("the first write never read its block from the base")
	}
	c := bytes.Repeat([]byte{'c'}, 100)
	doneC := write(50, c) // overlaps a
	b := bytes.Repeat([]byte{'b'}, 300)
	select {
	case <-write(5*bs+100, b): // another block of the same file
	case <-time.After(20 * time.Second):
		t.Fatal("a write to another block waited for the held write")
	}
	select {
	case <-doneA:
		t.Fatal("the held write finished while held")
	case <-doneC:
		t.Fatal("the overlapping write finished while the write it overlaps was held")
	default:
	}
	close(base.release)
	released = true
	<-doneA
	<-doneC
	want := bytes.Clone(fx.disk)
	copy(want[100:], a)
	copy(want[50:], c)
	copy(want[5*bs+100:], b)
	checkContent(t, o, diskPath, want)
}

// TestConcurrentWritesAgainstModel has writers, each in its own quarter of
// a disk (quarters share blocks' bitmap bytes), write at random while
// readers read (run with -race); the disk then reads as the writes applied.
func TestConcurrentWritesAgainstModel(t *testing.T) {
	fx := newFixture(t)
	o := fx.open(t, Options{})
	want := bytes.Clone(fx.disk)
	const writers = 4
	quarter := int64(diskSize / writers)
	errs := make(chan error, 2*writers)
	done := make(chan struct{})
	for g := range writers {
		rng := rand.New(rand.NewPCG(uint64(g), 7))
		var ops [][2]int64
		var datas [][]byte
		for range 60 {
			n := 1 + rng.Int64N(100<<10)
			off := int64(g)*quarter + rng.Int64N(quarter-n)
			b := randBytes(rng, int(n))
			ops, datas = append(ops, [2]int64{off, n}), append(datas, b)
			copy(want[off:], b)
		}
		go func() {
			f, err := o.OpenFile(diskPath, os.O_RDWR, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for i, op := range ops {
				if _, err := f.(io.WriterAt).WriteAt(datas[i], op[0]); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
		go func() {
			f, err := o.Open(diskPath)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := make([]byte, 70<<10)
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				if _, err := f.ReadAt(buf, rng.Int64N(diskSize-int64(len(buf)))); err != nil && err != io.EOF {
					errs <- err
					return
				}
			}
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	checkContent(t, o, diskPath, want)
	// And after a reopen, from what the bitmap file says.
	o.Close()
	checkContent(t, fx.open(t, Options{}), diskPath, want)
}

// slowSyncFS delays every DataSync by up to 1 ms before it syncs and up to
// 1 ms after, so concurrent syncs overlap in every order.
type slowSyncFS struct{ durable.FS }

func (f slowSyncFS) OpenFile(name string, flag int, perm os.FileMode) (durable.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return slowSyncFile{file}, nil
}

type slowSyncFile struct{ durable.File }

func (f slowSyncFile) DataSync() error {
	time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
	err := f.File.DataSync()
	time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
	return err
}

// TestConcurrentSyncsAreDurableWhenTheyReturn has 8 writers write 4 KiB
// into 40 blocks of a base disk not written yet and sync after each write, all
// at once, on a disk that forgets what was not synced (its syncs slowed
// down at random). The moment a sync returns, the disk's synced state is
// copied; reopened, every copy must hold the write that sync returned for,
// with the base's bytes around it in its block: a sync neither returns
// before the bits that make its write visible are durable (even when
// another sync took them) nor makes a bit durable before the data it marks.
func TestConcurrentSyncsAreDurableWhenTheyReturn(t *testing.T) {
	fx := newFixture(t)
	pc := powercut.New()
	upper := "/state/sessions/s"
	o, err := New(fx.base, upper, Options{Salt: "s", FS: slowSyncFS{pc}})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	d, err := o.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	type check struct {
		at   *powercut.FS
		off  int64
		data []byte
	}
	bs := int64(DefaultBlockSize)
	const nblocks int64 = 40 // of the disk's 80
	var mu sync.Mutex
	var checks []check
	var wg sync.WaitGroup
	for w := range int64(8) {
		wg.Go(func() {
			for b := w; b < nblocks; b += 8 {
				off := b*bs + 1000 + b
				data := bytes.Repeat([]byte{byte(b), 0xa5}, 2048)
				if _, err := d.(io.WriterAt).WriteAt(data, off); err != nil {
					t.Error(err)
					return
				}
				if err := d.(interface{ Sync() error }).Sync(); err != nil {
					t.Error(err)
					return
				}
				at := pc.SyncedCopy()
				mu.Lock()
				checks = append(checks, check{at, off, data})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if int64(len(checks)) != nblocks {
		t.Fatalf("%d syncs returned, want %d", len(checks), nblocks)
	}
	written := map[int64][]byte{} // block -> the block after its write
	for _, c := range checks {
		start := c.off / bs * bs
		written[start/bs] = modelWrite(bytes.Clone(fx.disk[start:start+bs]), c.off-start, c.data)
	}
	for _, c := range checks {
		o2, err := New(fx.base, upper, Options{Salt: "s", FS: c.at})
		if err != nil {
			t.Fatal(err)
		}
		f, err := o2.Open(diskPath)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, nblocks*bs)
		if _, err := f.(io.ReaderAt).ReadAt(got, 0); err != nil {
			t.Fatalf("disk as synced when a sync returned: %v", err)
		}
		f.Close()
		o2.Close()
		own := c.off / bs
		for b := range nblocks {
			g := got[b*bs : (b+1)*bs]
			switch {
			case bytes.Equal(g, written[b]):
			case b == own:
				t.Errorf("block %d as synced when the sync of its write returned: not the write over the base's bytes", b)
			case !bytes.Equal(g, fx.disk[b*bs:(b+1)*bs]):
				t.Errorf("block %d as synced when the sync of block %d's write returned: neither the base's bytes nor its write", b, own)
			}
		}
	}
}

// heldDataSyncFS calls hook before and after each DataSync of a data file
// (not a bitmap file), with "before" or "after".
type heldDataSyncFS struct {
	durable.FS
	hook func(stage string)
}

func (f heldDataSyncFS) OpenFile(name string, flag int, perm os.FileMode) (durable.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || !isDataFile(name) {
		return file, err
	}
	return heldDataSyncFile{file, f.hook}, nil
}

type heldDataSyncFile struct {
	durable.File
	hook func(stage string)
}

func (f heldDataSyncFile) DataSync() error {
	f.hook("before")
	err := f.File.DataSync()
	f.hook("after")
	return err
}

// TestABitWaitsForItsDataSync: sync Y has synced the data file and is
// about to write the bitmap when sync X takes the bits of a write made
// after Y's data sync, and X's own data sync has not run. Y writes only its
// own bits: on the disk as synced now, X's block is the base's, not a
// marked block whose data never reached the disk; once X returns, its write
// is there.
func TestABitWaitsForItsDataSync(t *testing.T) {
	fx := newFixture(t)
	pc := powercut.New()
	upper := "/state/sessions/s"
	type step struct {
		stage string
		go_   chan struct{}
	}
	var hooked atomic.Bool
	steps := make(chan step)
	o, err := New(fx.base, upper, Options{Salt: "s", FS: heldDataSyncFS{pc, func(stage string) {
		if !hooked.Load() {
			return
		}
		st := step{stage, make(chan struct{})}
		steps <- st
		<-st.go_
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	d, err := o.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	bs := int64(DefaultBlockSize)
	write := func(block int64, b byte) {
		t.Helper()
		if _, err := d.(io.WriterAt).WriteAt(bytes.Repeat([]byte{b}, 4096), block*bs+100); err != nil {
			t.Fatal(err)
		}
	}
	syncErr := func() chan error {
		ch := make(chan error, 1)
		go func() { ch <- d.(interface{ Sync() error }).Sync() }()
		return ch
	}
	next := func(want string) step {
		t.Helper()
		st := <-steps
		if st.stage != want {
			t.Fatalf("data sync %s, want %s", st.stage, want)
		}
		return st
	}
	hooked.Store(true)
	write(1, 'Y')
	y := syncErr()
	next("before").go_ <- struct{}{}
	yAfter := next("after") // Y's data is synced; Y holds here
	write(2, 'X')
	x := syncErr()
	xBefore := next("before") // X took block 2's bit; its data sync waits
	close(yAfter.go_)
	if err := <-y; err != nil {
		t.Fatal(err)
	}
	block := func(at *powercut.FS, b int64) []byte {
		t.Helper()
		o2, err := New(fx.base, upper, Options{Salt: "s", FS: at})
		if err != nil {
			t.Fatal(err)
		}
		defer o2.Close()
		f, err := o2.Open(diskPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got := make([]byte, bs)
		if _, err := f.(io.ReaderAt).ReadAt(got, b*bs); err != nil {
			t.Fatal(err)
		}
		return got
	}
	at := pc.SyncedCopy()
	if got, want := block(at, 1), modelWrite(bytes.Clone(fx.disk[bs:2*bs]), 100, bytes.Repeat([]byte{'Y'}, 4096)); !bytes.Equal(got, want) {
		t.Error("block 1 after its sync returned: not its write over the base")
	}
	if got := block(at, 2); !bytes.Equal(got, fx.disk[2*bs:3*bs]) {
		t.Error("block 2 while its data sync had not run: not the base's bytes (its bit reached the disk before its data)")
	}
	close(xBefore.go_)
	next("after").go_ <- struct{}{}
	if err := <-x; err != nil {
		t.Fatal(err)
	}
	hooked.Store(false)
	if got, want := block(pc.SyncedCopy(), 2), modelWrite(bytes.Clone(fx.disk[2*bs:3*bs]), 100, bytes.Repeat([]byte{'X'}, 4096)); !bytes.Equal(got, want) {
		t.Error("block 2 after its sync returned: not its write over the base")
	}
}

// slowLogFS is a powercut.FS whose log fdatasync takes a millisecond, as a
// disk's does: long enough for concurrent changes to queue behind it.
type slowLogFS struct {
	*powercut.FS
	logSyncs atomic.Int64
}

func (fsys *slowLogFS) OpenFile(name string, flag int, perm os.FileMode) (durable.File, error) {
	f, err := fsys.FS.OpenFile(name, flag, perm)
	if err != nil || filepath.Base(name) != logName {
		return f, err
	}
	return &slowLogFile{File: f, fsys: fsys}, nil
}

type slowLogFile struct {
	durable.File
	fsys *slowLogFS
}

func (f *slowLogFile) DataSync() error {
	f.fsys.logSyncs.Add(1)
	time.Sleep(time.Millisecond)
	return f.File.DataSync()
}

// TestConcurrentCreatesShareLogSyncs: CREATEs from several clients at once
// share the log's fdatasync (group commit: one sync covers every record
// written before it started), and each is durable when it returns.
func TestConcurrentCreatesShareLogSyncs(t *testing.T) {
	fx := newFixture(t)
	fsys := &slowLogFS{FS: powercut.New()}
	o, err := New(fx.base, "/u", Options{Salt: "s", FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	const clients, each = 8, 40
	before := fsys.logSyncs.Load()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				f, err := o.Create("/web01/c" + strconv.Itoa(c) + "-" + strconv.Itoa(i))
				if err != nil {
					errs <- err
					return
				}
				f.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	syncs := fsys.logSyncs.Load() - before
	t.Logf("%d CREATEs from %d clients: %d log syncs", clients*each, clients, syncs)
	if syncs > clients*each/2 {
		t.Errorf("%d concurrent CREATEs made %d log syncs, want at most %d (shared)", clients*each, syncs, clients*each/2)
	}
	cut := fsys.FS.Cut()
	o.Close()
	if o, err = New(fx.base, "/u", Options{Salt: "s", FS: cut}); err != nil {
		t.Fatalf("after the power cut: %v", err)
	}
	defer o.Close()
	for c := range clients {
		for i := range each {
			if _, err := o.Stat("/web01/c" + strconv.Itoa(c) + "-" + strconv.Itoa(i)); err != nil {
				t.Errorf("after the power cut: %v", err)
			}
		}
	}
}

// isDataFile says whether name is a session's data file: in the data folder,
// neither a bitmap (.map) nor a temporary file.
func isDataFile(name string) bool {
	return !strings.HasSuffix(name, ".map") && !strings.HasSuffix(name, ".tmp") && filepath.Base(filepath.Dir(name)) == "data"
}
