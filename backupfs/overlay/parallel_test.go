package overlay

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5"
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
