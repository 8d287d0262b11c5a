package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/rekindle/rekindle/internal/durable"
	"github.com/rekindle/rekindle/internal/durable/powercut"
)

type syncer interface{ Sync() error }

// stableWrite writes b at off in name and syncs, as a FILE_SYNC WRITE.
func stableWrite(t *testing.T, o *Overlay, name string, off int64, b []byte) {
	t.Helper()
	f, err := o.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.(io.WriterAt).WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.(syncer).Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestPowerCutRecords checks the record region (region.go) on a disk that
// forgets what was not synced, at both block sizes: stable writes into
// blocks not written yet, whose bits live only in records; an unsynced
// write folded into the bitmap by the checkpoint of Close; stable writes
// of the next epoch; a rewrite of a block whose record no durable record
// confirmed yet. After the cut every acknowledged write is there. And
// from the disk as synced before the rewrite, with the last written
// block's data lost and its record kept (pages reach the disk in any
// order; the power-cut disk syncs a file whole, so the test zeroes that
// block itself): the block reads as the base, never as zeros.
func TestPowerCutRecords(t *testing.T) {
	for _, bs := range []int{DefaultBlockSize, 4 << 10} {
		t.Run(fmt.Sprintf("block%d", bs), func(t *testing.T) { testPowerCutRecords(t, int64(bs)) })
	}
}

func testPowerCutRecords(t *testing.T, bs int64) {
	fx := newFixture(t)
	pc := powercut.New()
	upper := "/state/sessions/s"
	open := func(fs *powercut.FS) *Overlay {
		t.Helper()
		o, err := New(fx.base, upper, Options{Salt: "s", FS: fs, BlockSize: int(bs)})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	want := bytes.Clone(fx.disk)
	write := func(o *Overlay, off int64, b []byte) {
		t.Helper()
		stableWrite(t, o, diskPath, off, b)
		want = modelWrite(want, off, b)
	}
	chunk := func(i int, tag byte) []byte { return bytes.Repeat([]byte{tag, byte(i)}, 1000) }
	o := open(pc)
	id, err := o.FileID(diskPath)
	if err != nil {
		t.Fatal(err)
	}
	// Epoch 1: stable writes inside blocks not written yet.
	for i := range 6 {
		write(o, int64(i)*3*bs+17, chunk(i, 'W'))
	}
	// Written, never synced; Close folds it into the bitmap after
	// syncing its data.
	uOff := 40*bs + 5
	u := chunk(0, 'U')
	f, err := o.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.(io.WriterAt).WriteAt(u, uOff); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want = modelWrite(want, uOff, u)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(at *powercut.FS, want []byte, what string) {
		t.Helper()
		o := open(at)
		defer o.Close()
		if fi, err := o.Stat(diskPath); err != nil || fi.Size() != diskSize {
			t.Fatalf("%s: Stat of the disk: %v, %v, want %d bytes", what, fi, err, diskSize)
		}
		got := readFile(t, o, diskPath)
		if len(got) != len(want) {
			t.Fatalf("%s: the disk reads %d bytes, want %d", what, len(got), len(want))
		}
		for b := int64(0); b*bs < diskSize; b++ {
			g, w := got[b*bs:min((b+1)*bs, diskSize)], want[b*bs:min((b+1)*bs, diskSize)]
			if !bytes.Equal(g, w) {
				kind := "neither the write nor the base"
				if bytes.Equal(g, fx.disk[b*bs:min((b+1)*bs, diskSize)]) {
					kind = "the base: the write is lost"
				} else if !bytes.ContainsFunc(g, func(r rune) bool { return r != 0 }) {
					kind = "zeros"
				}
				t.Errorf("%s: block %d reads %s", what, b, kind)
			}
		}
	}
	check(pc.SyncedCopy(), want, "after Close")

	// Epoch 2: more stable writes, then the last one's block rewritten
	// while its record is the last.
	o = open(pc)
	for i := range 6 {
		write(o, int64(i)*3*bs+bs+100, chunk(i, 'X'))
	}
	last := int64(5)*3*bs + bs + 100
	torn := pc.SyncedCopy()
	tornWant := bytes.Clone(want)
	lb := last / bs
	copy(tornWant[lb*bs:(lb+1)*bs], fx.disk[lb*bs:(lb+1)*bs])
	write(o, last+7, []byte("REWRITTEN"))
	pc = pc.Cut()
	o.Close()
	check(pc, want, "after the cut")

	// The torn disk: the last record landed, its block's data did not.
	dataName := upper + "/data/" + idString(id)
	df, err := torn.OpenFile(dataName, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := df.WriteAt(make([]byte, bs), lb*bs); err != nil {
		t.Fatal(err)
	}
	if err := df.Sync(); err != nil {
		t.Fatal(err)
	}
	df.Close()
	check(torn, tornWant, "with the last record's data lost")
}

// TestOneSyncPerStableWrite counts the syncs of stable writes into blocks
// not written yet: one fdatasync each (the data file's, which makes the
// record naming the block durable with it), plus, for the file's first,
// the new bitmap file's fsync and the data folder's. A COMMIT after
// unstable writes costs one.
func TestOneSyncPerStableWrite(t *testing.T) {
	fx := newFixture(t)
	pc := powercut.New()
	o, err := New(fx.base, "/u", Options{Salt: "s", FS: pc, BlockSize: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	d, err := o.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const n = 100
	before := pc.Syncs()
	for i := range n {
		if _, err := d.(io.WriterAt).WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), int64(i)*3*4096); err != nil {
			t.Fatal(err)
		}
		if err := d.(syncer).Sync(); err != nil {
			t.Fatal(err)
		}
	}
	syncs := pc.Syncs() - before
	t.Logf("%d stable writes: %d syncs", n, syncs)
	if syncs > n+2 {
		t.Errorf("%d stable writes into new blocks made %d syncs, want at most %d (one each, and the first's bitmap file and folder)", n, syncs, n+2)
	}
	before = pc.Syncs()
	for i := range n {
		if _, err := d.(io.WriterAt).WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), int64(i)*3*4096+4096); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.(syncer).Sync(); err != nil {
		t.Fatal(err)
	}
	if syncs := pc.Syncs() - before; syncs != 1 {
		t.Errorf("a COMMIT of %d unstable writes made %d syncs, want 1", n, syncs)
	}
}

// TestRecordRegionIsNotTheFile: the region lies in the data file past the
// file's end; Stat (with the file open, closed, and after a power cut
// before anything opened it), reads past the end, Seek to the end,
// appends, growing writes and truncation see the file alone.
func TestRecordRegionIsNotTheFile(t *testing.T) {
	fx := newFixture(t)
	pc := powercut.New()
	open := func(fs *powercut.FS) *Overlay {
		t.Helper()
		o, err := New(fx.base, "/u", Options{Salt: "s", FS: fs, BlockSize: 4 << 10})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	size := func(o *Overlay, want int64, what string) {
		t.Helper()
		fi, err := o.Stat(diskPath)
		if err != nil || fi.Size() != want {
			t.Errorf("%s: Stat: %v, %v, want %d bytes", what, fi, err, want)
		}
	}
	o := open(pc)
	want := bytes.Clone(fx.disk)
	stableWrite(t, o, diskPath, 1000, []byte("first"))
	want = modelWrite(want, 1000, []byte("first"))
	size(o, diskSize, "with records")
	f, err := o.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.(io.ReaderAt).ReadAt(make([]byte, 10), diskSize); n != 0 || err != io.EOF {
		t.Errorf("read at the end: %d, %v, want 0, EOF", n, err)
	}
	if end, err := f.Seek(0, io.SeekEnd); err != nil || end != diskSize {
		t.Errorf("seek to the end: %d, %v", end, err)
	}
	f.Close()
	// The power goes with records in the region: Stat before any open.
	o2 := open(pc.SyncedCopy())
	size(o2, diskSize, "after a cut, before an open")
	checkContent(t, o2, diskPath, want)
	o2.Close()
	// A growing write, then a stable write, then an append.
	stableWrite(t, o, diskPath, diskSize+10, []byte("grown"))
	want = modelWrite(want, diskSize+10, []byte("grown"))
	stableWrite(t, o, diskPath, 50000, []byte("second"))
	want = modelWrite(want, 50000, []byte("second"))
	size(o, int64(len(want)), "after growing")
	a, err := o.OpenFile(diskPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("appended")); err != nil {
		t.Fatal(err)
	}
	if err := a.(syncer).Sync(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	want = append(want, "appended"...)
	checkContent(t, o, diskPath, want)
	o2 = open(pc.SyncedCopy())
	checkContent(t, o2, diskPath, want)
	o2.Close()
	// Shrink into a written block, write, and extend again.
	stableWrite(t, o, diskPath, 70000, []byte("third"))
	want = modelWrite(want, 70000, []byte("third"))
	t2, err := o.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := t2.Truncate(70002); err != nil {
		t.Fatal(err)
	}
	if err := t2.Truncate(90000); err != nil {
		t.Fatal(err)
	}
	if err := t2.(syncer).Sync(); err != nil {
		t.Fatal(err)
	}
	t2.Close()
	want = append(want[:70002], make([]byte, 90000-70002)...)
	checkContent(t, o, diskPath, want)
	o.Close()
	o = open(pc)
	defer o.Close()
	checkContent(t, o, diskPath, want)
	if _, err := o.Stat(diskPath); errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

// FuzzDecodeRecords feeds the record decoder what a damaged region could
// hold: an error or records with blocks in range, never a panic.
func FuzzDecodeRecords(f *testing.F) {
	r1 := appendRecord(nil, &record{epoch: 3, seq: 1, blocks: []blockSum{{5, 1}, {6, 2}, {9, 3}}})
	r2 := appendRecord(nil, &record{epoch: 3, seq: 2, confirmed: 1})
	good := append(bytes.Clone(r1), r2...)
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(append(bytes.Clone(r2), r1...))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := decodeRecords(b, 3, 64)
		if err != nil {
			return
		}
		for i, r := range recs {
			if r.seq != uint64(i)+1 || r.confirmed >= r.seq {
				t.Fatalf("record %d: seq %d confirming %d", i, r.seq, r.confirmed)
			}
			for _, s := range r.blocks {
				if s.block < 0 || s.block >= 64 {
					t.Fatalf("block %d of 64", s.block)
				}
			}
		}
		var enc []byte
		for _, r := range recs {
			enc = appendRecord(enc, &r)
		}
		again, err := decodeRecords(enc, 3, 64)
		if err != nil || len(again) != len(recs) {
			t.Fatalf("decoded records do not round-trip: %d of %d, %v", len(again), len(recs), err)
		}
	})
}

// heldWriteFS calls hold after each WriteAt of a data file that hold
// chooses (by its bytes), once the bytes are written.
type heldWriteFS struct {
	durable.FS
	hold func(p []byte)
}

func (f heldWriteFS) OpenFile(name string, flag int, perm os.FileMode) (durable.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || !isDataFile(name) {
		return file, err
	}
	return heldWriteFile{file, f.hold}, nil
}

type heldWriteFile struct {
	durable.File
	hold func(p []byte)
}

func (f heldWriteFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	f.hold(p)
	return n, err
}

// TestSyncWaitsForARewriteOfAPendingBlock: block 1 is written (A) and not
// synced; a second write (B) of the block has put its bytes in the data
// file and not yet returned when a sync starts. The sync must not name the
// block with A's CRC while B's bytes go to the disk with its fdatasync (the
// block would then read as the base after a crash, though A was written
// before the sync began): it waits for B, and once it returns the disk
// holds A or B in the block.
func TestSyncWaitsForARewriteOfAPendingBlock(t *testing.T) {
	fx := newFixture(t)
	pc := powercut.New()
	held, release := make(chan struct{}), make(chan struct{})
	o, err := New(fx.base, "/u", Options{Salt: "s", BlockSize: 4096, FS: heldWriteFS{pc, func(p []byte) {
		if len(p) == 4096 && p[0] == 'B' {
			close(held)
			<-release
		}
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
	a, b := bytes.Repeat([]byte{'A'}, 4096), bytes.Repeat([]byte{'B'}, 4096)
	// A first stable write makes the record region.
	if _, err := d.(io.WriterAt).WriteAt([]byte("first"), 5*4096); err != nil {
		t.Fatal(err)
	}
	if err := d.(syncer).Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.(io.WriterAt).WriteAt(a, 4096); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() { _, err := d.(io.WriterAt).WriteAt(b, 4096); wrote <- err }()
	<-held
	synced := make(chan *powercut.FS, 1)
	go func() {
		if err := d.(syncer).Sync(); err != nil {
			t.Error(err)
		}
		synced <- pc.SyncedCopy()
	}()
	var at *powercut.FS
	select {
	case at = <-synced:
		// Returned while B was held: what it made durable must hold.
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if at == nil {
		at = <-synced
	}
	o2, err := New(fx.base, "/u", Options{Salt: "s", BlockSize: 4096, FS: at})
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Close()
	got := readFile(t, o2, diskPath)[4096:8192]
	if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
		kind := "neither A nor B"
		if bytes.Equal(got, fx.disk[4096:8192]) {
			kind = "the base: A, written before the sync, is lost"
		}
		t.Errorf("block 1 as synced by the sync: %s", kind)
	}
}

// TestPendingAndUnconfSets: a block added again counts once with its last
// CRC, compaction keeps that, and records' blocks leave the unconfirmed
// set when confirmed, or alone when their record was not written.
func TestPendingAndUnconfSets(t *testing.T) {
	p := pendingSet{bits: make([]byte, 1<<18)}
	for i := range 3 << 19 { // 1.5 Mi entries over 1000 blocks: compacts
		p.add(int64(i%1000)*7, uint32(i))
		p.compactIfLong()
	}
	if p.count() >= 3<<19 {
		t.Errorf("%d entries after compacting, want fewer", p.count())
	}
	got := p.take()
	if len(got) != 1000 || p.count() != 0 || p.has(7) {
		t.Fatalf("took %d blocks, %d left, block 7 pending %v", len(got), p.count(), p.has(7))
	}
	for i, s := range got {
		last := (3<<19 - 1) - ((3<<19 - 1 - i) % 1000) // the last i added for block i*7
		if s.block != int64(i)*7 || s.sum != uint32(last) {
			t.Fatalf("entry %d: %+v, want block %d sum %d", i, s, i*7, last)
		}
	}
	u := unconfSet{bits: make([]byte, 16)}
	u.add(1, []blockSum{{3, 0}, {9, 0}})
	u.add(2, []blockSum{{4, 0}})
	u.add(3, []blockSum{{10, 0}})
	if s, ok := u.seqOf(9); !ok || s != 1 {
		t.Errorf("block 9: record %d %v, want 1", s, ok)
	}
	u.drop(3, true)
	u.drop(1, false)
	for b, want := range map[int64]bool{3: false, 9: false, 4: true, 10: false} {
		if _, ok := u.seqOf(b); ok != want {
			t.Errorf("block %d unconfirmed: %v, want %v", b, ok, want)
		}
	}
}
