package nfsd

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/backupfs/overlay"
	"github.com/rekindle/rekindle/internal/durable/powercut"
)

// writeResult is what a WRITE reply says beyond its status.
type writeResult struct {
	status    nfs.NFSStatus
	committed uint32
	verf      [8]byte
}

func (n *nfsClient) write(fh []byte, off uint64, how uint32, data []byte) writeResult {
	n.t.Helper()
	st, d := n.call(procWrite, writeArgsHow(fh, off, uint32(len(data)), how, data))
	r := writeResult{status: st}
	if st != nfs.NFSStatusOk {
		return r
	}
	if d.Bool() {
		d.Fixed(24) // pre-op size, mtime, ctime
	}
	if d.Bool() {
		d.Fixed(fattr3Len)
	}
	d.Uint32() // count
	r.committed = d.Uint32()
	copy(r.verf[:], d.Fixed(8))
	if d.Err() != nil {
		n.t.Fatalf("WRITE reply: %v", d.Err())
	}
	return r
}

func (n *nfsClient) commit(fh []byte) (nfs.NFSStatus, [8]byte) {
	n.t.Helper()
	st, d := n.call(procCommit, commitArgs(fh))
	var verf [8]byte
	if st != nfs.NFSStatusOk {
		return st, verf
	}
	if d.Bool() {
		d.Fixed(24)
	}
	if d.Bool() {
		d.Fixed(fattr3Len)
	}
	copy(verf[:], d.Fixed(8))
	if d.Err() != nil {
		n.t.Fatalf("COMMIT reply: %v", d.Err())
	}
	return st, verf
}

func (n *nfsClient) create(dir []byte, name string) []byte {
	n.t.Helper()
	st, d := n.call(procCreate, createArgs(dir, name))
	if st != nfs.NFSStatusOk || !d.Bool() {
		n.t.Fatalf("CREATE %s: %v", name, st)
	}
	return d.Opaque(64)
}

// pendingWrite is an UNSTABLE write a client keeps until a COMMIT with the
// same verifier covers it, as RFC 1813 asks.
type pendingWrite struct {
	fh   []byte
	off  uint64
	data []byte
}

// TestPowerCut runs the server with its state (a session overlay and the
// handle table of an export without file ids) on a disk that loses every
// unsynced byte and name when the power is cut. It writes as ESXi does
// (FILE_SYNC) and as QEMU does (UNSTABLE, then COMMIT), creates a file, and
// mints a handle; cuts the power; starts a new server on what the disk kept;
// and checks that every write acknowledged as stable or covered by a COMMIT
// reply is there, the handles still work, the restore point (the base) is
// unchanged, and that the new server's verifier differs, so a client that
// re-sends its uncommitted writes loses nothing.
//
// It runs at the overlay's default block size and at the 4 KiB blocks a
// session of a disk up to 64 GiB gets (overlay.BlockSizeFor), where every
// write here lies inside a block it covers only in part.
func TestPowerCut(t *testing.T) {
	for _, bs := range []int{overlay.DefaultBlockSize, 4 << 10} {
		t.Run("block"+strconv.Itoa(bs), func(t *testing.T) { testPowerCut(t, bs) })
	}
}

func testPowerCut(t *testing.T, bs int) {
	baseDir, plainDir := t.TempDir(), t.TempDir()
	base := make([]byte, 256<<10)
	rand.NewChaCha8([32]byte{7}).Read(base)
	if err := os.WriteFile(filepath.Join(baseDir, "disk-flat.vmdk"), base, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(plainDir, "plain.txt"), []byte("plain"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func(disk *powercut.FS) (*testServer, *overlay.Overlay) {
		ov, err := overlay.New(osfs.New(baseDir), "/state/sessions/s", overlay.Options{Salt: "s", FS: disk, BlockSize: bs})
		if err != nil {
			t.Fatalf("overlay after the power cut: %v", err)
		}
		ts := startServer(t, Config{StateDir: "/state/nfs", StateFS: disk},
			Export{Path: "/rekindle", FS: ov, ID: 7}, Export{Path: "/plain", FS: osfs.New(plainDir), ID: 8})
		return ts, ov
	}
	disk := powercut.New()
	ts, ov := start(disk)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	vmdk := n.mustLookup(root, "disk-flat.vmdk")
	want := bytes.Clone(base)
	put := func(off int, s string) { copy(want[off:], s) }

	if r := n.write(vmdk, 0, fileSync, []byte("stable write")); r.status != nfs.NFSStatusOk || r.committed != fileSync {
		t.Fatalf("FILE_SYNC WRITE: %+v", r)
	}
	put(0, "stable write")
	if r := n.write(vmdk, 70000, dataSync, []byte("data-sync write")); r.status != nfs.NFSStatusOk || r.committed != dataSync {
		t.Fatalf("DATA_SYNC WRITE: %+v", r)
	}
	put(70000, "data-sync write")
	r := n.write(vmdk, 8192, unstable, []byte("committed write"))
	if r.status != nfs.NFSStatusOk || r.committed != unstable {
		t.Fatalf("UNSTABLE WRITE: %+v", r)
	}
	verf1 := r.verf
	if st, v := n.commit(vmdk); st != nfs.NFSStatusOk || v != verf1 {
		t.Fatalf("COMMIT: %v, verifier %x, want %x", st, v, verf1)
	}
	put(8192, "committed write")
	newLog := n.create(root, "vmware.log")
	if r := n.write(newLog, 0, fileSync, []byte("a new file")); r.status != nfs.NFSStatusOk {
		t.Fatalf("WRITE to a new file: %v", r.status)
	}
	// Uncommitted: the client keeps it to re-send.
	pending := []pendingWrite{{vmdk, 200000, []byte("uncommitted write")}}
	for _, p := range pending {
		if r := n.write(p.fh, p.off, unstable, p.data); r.status != nfs.NFSStatusOk || r.verf != verf1 {
			t.Fatalf("UNSTABLE WRITE: %+v", r)
		}
	}
	plain := n.mustLookup(n.mustMount("/plain"), "plain.txt")

	// The power cut: the disk keeps what was synced; the old server dies
	// with it.
	disk = disk.Cut()
	ts.once.Do(func() {
		ts.cancel()
		// Closing its handle table on a dead disk fails: expected.
		t.Logf("the server before the cut stopped: %v", <-ts.done)
	})
	ov.Close()
	ts, ov = start(disk)
	defer ov.Close()
	n = newNFSClient(t, ts.Addr())
	n.mustMount("/rekindle")

	// The client's COMMIT finds a new verifier, so it re-sends.
	st, verf2 := n.commit(vmdk)
	if st != nfs.NFSStatusOk || verf2 == verf1 {
		t.Fatalf("COMMIT after the restart: %v, verifier %x, the old one %x: want a new one", st, verf2, verf1)
	}
	for _, p := range pending {
		if r := n.write(p.fh, p.off, unstable, p.data); r.status != nfs.NFSStatusOk || r.verf != verf2 {
			t.Fatalf("re-sent WRITE: %+v, want verifier %x", r, verf2)
		}
		put(int(p.off), string(p.data))
	}
	if st, v := n.commit(vmdk); st != nfs.NFSStatusOk || v != verf2 {
		t.Fatalf("second COMMIT: %v %x", st, v)
	}

	var got []byte
	for off := 0; off < len(base); off += 64 << 10 {
		st, b := n.read(vmdk, uint64(off), 64<<10)
		if st != nfs.NFSStatusOk {
			t.Fatalf("READ after the power cut: %v", st)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Errorf("the disk after the power cut differs from what was acknowledged at byte %d (of %d, read %d)", i, len(want), len(got))
	}
	if st, b := n.read(newLog, 0, 100); st != nfs.NFSStatusOk || string(b) != "a new file" {
		t.Errorf("the new file after the power cut: %v %q (its handle from CREATE)", st, b)
	}
	if st := n.getattr(plain); st != nfs.NFSStatusOk {
		t.Errorf("a handle of the handle table after the power cut: %v", st)
	}
	if b, _ := os.ReadFile(filepath.Join(baseDir, "disk-flat.vmdk")); !bytes.Equal(b, base) {
		t.Error("the restore point (the overlay's base) changed")
	}
}

// TestUnstableWritesSyncOnlyOnCommit counts syncs: UNSTABLE WRITEs make
// none, COMMIT one, each stable WRITE one.
func TestUnstableWritesSyncOnlyOnCommit(t *testing.T) {
	dir, _ := exportDir(t)
	fs := &syncCountingFS{Filesystem: osfs.New(dir)}
	ts := startServer(t, Config{StateDir: t.TempDir()}, Export{Path: "/rekindle", FS: fs, ID: 7})
	n := newNFSClient(t, ts.Addr())
	fh := n.mustLookup(n.mustMount("/rekindle"), "hello.txt")
	for i := range 5 {
		if r := n.write(fh, uint64(i), unstable, []byte("U")); r.status != nfs.NFSStatusOk || r.committed != unstable {
			t.Fatalf("UNSTABLE WRITE: %+v", r)
		}
	}
	if got := fs.syncs.Load(); got != 0 {
		t.Errorf("5 UNSTABLE WRITEs made %d syncs, want 0", got)
	}
	if st, _ := n.commit(fh); st != nfs.NFSStatusOk {
		t.Fatalf("COMMIT: %v", st)
	}
	if got := fs.syncs.Load(); got != 1 {
		t.Errorf("COMMIT made %d syncs, want 1", got)
	}
}

// TestFullStateDiskFailsOneCall serves a session overlay whose upper
// directory is on a 1 MiB tmpfs (in a private mount namespace), fills the
// disk, and checks through a real RPC client that the CREATE finding no room
// is answered NOSPC and fails alone: the session's files stay readable, their
// handles valid, MNT works; once space is freed the same CREATE succeeds.
func TestFullStateDiskFailsOneCall(t *testing.T) {
	if os.Getenv("REKINDLE_TEST_MOUNTNS") != "1" {
		cmd := exec.Command("unshare", "-m", "--propagation", "private",
			os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "REKINDLE_TEST_MOUNTNS=1")
		out, err := cmd.CombinedOutput()
		t.Logf("in a private mount namespace:\n%s", out)
		if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
			t.Fatalf("the test in a private mount namespace failed (unshare -m needs root): %v", err)
		}
		return
	}
	baseDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(baseDir, "vm.vmx"), []byte("displayName = \"web01\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer syscall.Unmount(disk, syscall.MNT_DETACH)
	ov, err := overlay.New(osfs.New(baseDir), filepath.Join(disk, "upper"), overlay.Options{Salt: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	ts := startServer(t, Config{StateDir: t.TempDir()}, Export{Path: "/rekindle", FS: ov, ID: 7})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	vmx := n.mustLookup(root, "vm.vmx")
	before := n.create(root, "before.log")
	if r := n.write(before, 0, fileSync, []byte("before")); r.status != nfs.NFSStatusOk {
		t.Fatalf("WRITE: %v", r.status)
	}
	filler := filepath.Join(disk, "filler")
	ff, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := ff.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	ff.Close()
	// The overlay's log has zeros written ahead of its records (64 KiB
	// when the disk filled), room for a few hundred CREATEs more: create
	// until one finds no room.
	const tries = 2000
	failed := ""
	for i := 0; i < tries && failed == ""; i++ {
		name := "new" + strconv.Itoa(i)
		st, _ := n.call(procCreate, createArgs(root, name))
		switch st {
		case nfs.NFSStatusOk:
		case nfs.NFSStatusNoSPC:
			failed = name
		default:
			t.Fatalf("CREATE on a full disk: %v, want NOSPC", st)
		}
	}
	if failed == "" {
		t.Fatalf("%d CREATEs on a full disk all succeeded", tries)
	}
	// The rest of the session works.
	if st, b := n.read(before, 0, 100); st != nfs.NFSStatusOk || string(b) != "before" {
		t.Errorf("READ after the failed CREATE: %v %q", st, b)
	}
	if st, b := n.read(vmx, 0, 100); st != nfs.NFSStatusOk || len(b) == 0 {
		t.Errorf("READ of a base file after the failed CREATE: %v", st)
	}
	if st, _ := n.lookup(root, failed); st != nfs.NFSStatusNoEnt {
		t.Errorf("LOOKUP of the failed CREATE's name: %v, want NOENT", st)
	}
	if st, _ := n.mount("/rekindle"); st != 0 {
		t.Errorf("MNT after the failed CREATE: %d", st)
	}
	// Room again: the same CREATE succeeds.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	fh := n.create(root, failed)
	if r := n.write(fh, 0, fileSync, []byte("room again")); r.status != nfs.NFSStatusOk {
		t.Errorf("WRITE after space was freed: %v", r.status)
	}
}
