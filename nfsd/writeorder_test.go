package nfsd

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// heldWriteFS holds every Write whose data starts with "HOLD" until
// released, and tells when one is held.
type heldWriteFS struct {
	billyFS
	held    chan struct{}
	release chan struct{}
}

func (f *heldWriteFS) OpenFile(name string, flag int, perm os.FileMode) (billyFile, error) {
	file, err := f.billyFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &heldWriteFile{billyFile: file, fs: f}, nil
}

type heldWriteFile struct {
	billyFile
	fs *heldWriteFS
}

func (f *heldWriteFile) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("HOLD")) {
		f.fs.held <- struct{}{}
		<-f.fs.release
	}
	return f.billyFile.Write(p)
}

// waitWrite waits for a WRITE's reply and checks it succeeded.
func waitWrite(t *testing.T, p *rpc.Pending, what string) {
	t.Helper()
	r, err := p.Wait(testCtx(t))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if st := nfs.NFSStatus(rpc.NewDecoder(r.Body).Uint32()); st != nfs.NFSStatusOk {
		t.Fatalf("%s: %v", what, st)
	}
}

// TestWritesToOtherBlocksPassAHeldWrite holds one WRITE of a file in the
// filesystem: WRITEs of the same file to other bytes, sent after it on the
// same connection, are answered meanwhile; a WRITE overlapping it, sent
// between them, waits for it and lands after it.
func TestWritesToOtherBlocksPassAHeldWrite(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "disk.img"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := &heldWriteFS{billyFS: osfs.New(dir), held: make(chan struct{}, 1), release: make(chan struct{})}
	ts := startServer(t, Config{StateDir: t.TempDir(), PipesPerConn: 4}, Export{Path: "/rekindle", FS: fs, ID: 7})
	released := false
	t.Cleanup(func() { // before the server stops, which waits for the held call
		if !released {
			close(fs.release)
		}
	})
	n := newNFSClient(t, ts.Addr())
	fh := n.mustLookup(n.mustMount("/rekindle"), "disk.img")
	start := func(off uint64, data []byte) *rpc.Pending {
		p, err := n.c.Start(progNFS, 3, procWrite, writeArgs(fh, off, data))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := append([]byte("HOLD"), bytes.Repeat([]byte{'a'}, 4092)...)
	pa := start(0, a)
	select {
	case <-fs.held:
	case <-time.After(20 * time.Second):
		t.Fatal("the held WRITE never reached the filesystem")
	}
	c := bytes.Repeat([]byte{'c'}, 100)
	pc := start(2048, c) // overlaps a
	b := bytes.Repeat([]byte{'b'}, 4096)
	waitWrite(t, start(512<<10, b), "WRITE to another block while one is held")
	d := bytes.Repeat([]byte{'d'}, 4096)
	waitWrite(t, start(4096, d), "WRITE to the next block while one is held")
	if pa.Ready() || pc.Ready() {
		t.Fatalf("answered while the first WRITE is held: held %v, overlapping %v", pa.Ready(), pc.Ready())
	}
	close(fs.release)
	released = true
	waitWrite(t, pa, "held WRITE")
	waitWrite(t, pc, "overlapping WRITE")
	got, _ := os.ReadFile(filepath.Join(dir, "disk.img"))
	want := make([]byte, 1<<20)
	copy(want[0:], a)
	copy(want[2048:], c)
	copy(want[4096:], d)
	copy(want[512<<10:], b)
	if !bytes.Equal(got, want) {
		t.Fatalf("file differs from the writes applied in order: at 2048 %q", got[2048:2052])
	}
}

// TestOverlappingWritesMatchASerialModel sends many WRITEs of one file at
// once on one connection, at random offsets and lengths so that some
// overlap and most do not, and checks the file against applying them one
// after another in the order sent.
func TestOverlappingWritesMatchASerialModel(t *testing.T) {
	dir := t.TempDir()
	const size = 256 << 10
	if err := os.WriteFile(filepath.Join(dir, "disk.img"), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{StateDir: t.TempDir(), PipesPerConn: 8}, Export{Path: "/rekindle", FS: osfs.New(dir), ID: 7})
	n := newNFSClient(t, ts.Addr())
	fh := n.mustLookup(n.mustMount("/rekindle"), "disk.img")
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(11, 12))
	for round := range 4 {
		var pending []*rpc.Pending
		for i := range 400 {
			off := rng.IntN(size - 16<<10)
			data := bytes.Repeat([]byte{byte(round*400 + i)}, 1+rng.IntN(16<<10))
			how := uint32(rng.IntN(3)) // UNSTABLE, DATA_SYNC and FILE_SYNC mixed
			p, err := n.c.Start(progNFS, 3, procWrite, writeArgsHow(fh, uint64(off), uint32(len(data)), how, data))
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, p)
			copy(model[off:], data)
		}
		for i, p := range pending {
			waitWrite(t, p, "WRITE "+string(rune('0'+i%10)))
		}
		got, _ := os.ReadFile(filepath.Join(dir, "disk.img"))
		if !bytes.Equal(got, model) {
			i := 0
			for got[i] == model[i] {
				i++
			}
			t.Fatalf("round %d: the file differs from the writes applied in the order sent, first at byte %d (%d, want %d)", round, i, got[i], model[i])
		}
	}
}

// chmodCountFS counts Chmod calls.
type chmodCountFS struct {
	billyFS
	chmods *atomic.Int64
}

func (f chmodCountFS) Chmod(name string, mode os.FileMode) error {
	f.chmods.Add(1)
	return f.billyFS.(interface {
		Chmod(string, os.FileMode) error
	}).Chmod(name, mode)
}

// TestCreateMakesTheFileWithItsMode: a CREATE that sets a mode makes the
// file with it, so no SETATTR (a second metadata sync in an overlay)
// follows.
func TestCreateMakesTheFileWithItsMode(t *testing.T) {
	dir := t.TempDir()
	fs := chmodCountFS{billyFS: osfs.New(dir), chmods: new(atomic.Int64)}
	ts := startServer(t, Config{StateDir: t.TempDir()}, Export{Path: "/rekindle", FS: fs, ID: 7})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	e := &rpc.Encoder{}
	e.Opaque(root)
	e.String("new.txt")
	e.Uint32(0) // UNCHECKED
	e.Uint32(1) // set mode
	e.Uint32(0o640)
	e.Raw(make([]byte, 4*5)) // uid, gid, size, atime, mtime: not set
	if st, _ := n.call(procCreate, e.Bytes()); st != nfs.NFSStatusOk {
		t.Fatalf("CREATE: %v", st)
	}
	fi, err := os.Stat(filepath.Join(dir, "new.txt"))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("created file: %v, %v; want mode 0640", fi, err)
	}
	if c := fs.chmods.Load(); c != 0 {
		t.Fatalf("CREATE with a mode took %d Chmod calls after the create, want none", c)
	}
}

// cachedFS is slowFS whose files named in cached open without I/O
// (CachedOpener), their bytes held in memory (CachedSliceReader).
type cachedFS struct {
	*slowFS
	cached map[string]bool
	served *atomic.Int64 // READs answered from CachedSlices
}

func (f cachedFS) OpenCached(name string) (billyFile, bool) {
	if !f.cached[filepath.Base(name)] {
		return nil, false
	}
	file, err := f.slowFS.Open(name)
	if err != nil {
		return nil, false
	}
	b, err := os.ReadFile(filepath.Join(f.dir, name))
	if err != nil {
		return nil, false
	}
	return cachedFile{billyFile: file, b: b, served: f.served}, true
}

type cachedFile struct {
	billyFile
	b      []byte
	served *atomic.Int64
}

func (f cachedFile) CachedSlices(off int64, n int) ([][]byte, int, bool, error) {
	f.served.Add(1)
	end := min(off+int64(n), int64(len(f.b)))
	if off >= end {
		return nil, 0, true, io.EOF
	}
	return [][]byte{f.b[off:end]}, int(end - off), true, nil
}

// TestCachedReadIsAnsweredInline: with a READ held in the filesystem, READs
// of a file whose bytes are at hand are answered from CachedSlices on the
// same connection, with the file's bytes.
func TestCachedReadIsAnsweredInline(t *testing.T) {
	dir, _ := exportDir(t)
	if err := os.WriteFile(filepath.Join(dir, "slow.bin"), []byte("slow data"), 0o644); err != nil {
		t.Fatal(err)
	}
	slow := &slowFS{billyFS: osfs.New(dir), slow: "slow.bin", entered: make(chan struct{}, 1), release: make(chan struct{})}
	slow.dir = dir
	fs := cachedFS{slowFS: slow, cached: map[string]bool{"hello.txt": true}, served: new(atomic.Int64)}
	ts := startServer(t, Config{StateDir: t.TempDir()}, Export{Path: "/rekindle", FS: fs, ID: 7, ReadOnly: true})
	released := false
	t.Cleanup(func() {
		if !released {
			close(slow.release)
		}
	})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	slowFH, helloFH := n.mustLookup(root, "slow.bin"), n.mustLookup(root, "hello.txt")
	pSlow, err := n.c.Start(progNFS, 3, procRead, readArgs(slowFH, 0, 100))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-slow.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the slow READ never reached the filesystem")
	}
	for i := range 3 {
		st, data := n.read(helloFH, uint64(i), 100)
		if st != nfs.NFSStatusOk || string(data) != "hello, world\n"[i:] {
			t.Fatalf("READ %d of the cached file: %v %q", i, st, data)
		}
	}
	if got := fs.served.Load(); got != 3 {
		t.Fatalf("%d READs answered from CachedSlices, want 3", got)
	}
	close(slow.release)
	released = true
	if _, err := pSlow.Wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// TestCreateUncheckedKeepsAnExistingFile: a CREATE UNCHECKED of a file that
// exists (libnfs sends one for every open with O_CREAT, fio among its users)
// applies the call's attributes and nothing else: the bytes stay, the mode
// is set; with a size of 0 among the attributes the file is emptied.
func TestCreateUncheckedKeepsAnExistingFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "disk-flat.vmdk"), []byte("the VM's disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{StateDir: t.TempDir()}, Export{Path: "/rekindle", FS: osfs.New(dir), ID: 7})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	create := func(size bool) {
		t.Helper()
		e := &rpc.Encoder{}
		e.Opaque(root)
		e.String("disk-flat.vmdk")
		e.Uint32(0) // UNCHECKED
		e.Uint32(1) // set mode
		e.Uint32(0o640)
		e.Raw(make([]byte, 4*2)) // uid, gid: not set
		if size {
			e.Uint32(1)
			e.Uint64(0)
		} else {
			e.Uint32(0)
		}
		e.Raw(make([]byte, 4*2)) // atime, mtime: not set
		if st, _ := n.call(procCreate, e.Bytes()); st != nfs.NFSStatusOk {
			t.Fatalf("CREATE UNCHECKED of an existing file: %v", st)
		}
	}
	create(false)
	b, err := os.ReadFile(filepath.Join(dir, "disk-flat.vmdk"))
	fi, serr := os.Stat(filepath.Join(dir, "disk-flat.vmdk"))
	if err != nil || serr != nil || string(b) != "the VM's disk" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("after CREATE UNCHECKED with a mode: %q %v, mode %v %v; want the bytes kept and mode 0640", b, err, fi.Mode(), serr)
	}
	create(true)
	if fi, err := os.Stat(filepath.Join(dir, "disk-flat.vmdk")); err != nil || fi.Size() != 0 {
		t.Fatalf("after CREATE UNCHECKED with size 0: %v %v; want it empty", fi.Size(), err)
	}
}
