package nfsd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	billy "github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

func TestRefusedClientGetsClosedSocketNotHang(t *testing.T) {
	_, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir(), Allow: []netip.Prefix{mustPrefix("10.0.0.0/8")}}, exp)

	// A client outside every allow-list costs the server a closed socket: no
	// answer to anything, not even MOUNT NULL.
	expectRefusedAtConnect(t, "127.0.0.1", ts.Addr())

	// Admitting the client lets it connect; admission applies to open
	// connections at their next call.
	ts.SetAllow([]netip.Prefix{mustPrefix("127.0.0.0/8")})
	n := newNFSClient(t, ts.Addr())
	if _, err := n.c.Call(testCtx(t), progMount, 3, mountNull, nil); err != nil {
		t.Fatalf("MOUNT NULL once admitted: %v", err)
	}
	ts.SetAllow([]netip.Prefix{mustPrefix("10.0.0.0/8")})
	if st, _ := n.mount("/rekindle"); st != mnt3ErrAcces {
		t.Fatalf("MNT from a client no longer admitted: status %d, want MNT3ERR_ACCES (13)", st)
	}
	// MOUNT EXPORT and DUMP answer, with nothing in them.
	r, err := n.c.Call(testCtx(t), progMount, 3, mountExport, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Body, []byte{0, 0, 0, 0}) {
		t.Fatalf("EXPORT for a refused client: %x, want an empty list", r.Body)
	}
	// NFS calls are denied with AUTH_ERROR, and the connection stays usable.
	r, err = n.c.Call(testCtx(t), progNFS, 3, procNull, nil)
	if !errors.Is(err, rpc.ErrDenied) || r.AuthStat != rpc.AuthTooWeak {
		t.Fatalf("NFS NULL from a refused client: %+v, %v; want AUTH_ERROR/AUTH_TOOWEAK", r, err)
	}
	if _, err := n.c.Call(testCtx(t), progMount, 3, mountNull, nil); err != nil {
		t.Fatalf("connection unusable after a refusal: %v", err)
	}

	// Admitting the client applies to the open connection.
	ts.SetAllow([]netip.Prefix{mustPrefix("127.0.0.0/8")})
	root := n.mustMount("/rekindle")
	if st := n.getattr(root); st != nfs.NFSStatusOk {
		t.Fatalf("GETATTR after admission: %v", st)
	}
	// And refusing it again applies to its handles at once.
	ts.SetAllow(nil)
	if _, err := n.c.Call(testCtx(t), progNFS, 3, procGetattr, handleArg(root)); !errors.Is(err, rpc.ErrDenied) {
		t.Fatalf("GETATTR after the allow-list was emptied: %v, want denied", err)
	}
}

func handleArg(fh []byte) []byte {
	e := &rpc.Encoder{}
	e.Opaque(fh)
	return e.Bytes()
}

func TestMountExportDumpUmnt(t *testing.T) {
	_, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp,
		Export{Path: "/points", FS: osfs.New(t.TempDir()), ReadOnly: true, ID: 8},
		Export{Path: "/hidden", FS: osfs.New(t.TempDir()), ID: 9, Allow: []netip.Prefix{mustPrefix("192.0.2.0/24")}})
	n := newNFSClient(t, ts.Addr())

	r, err := n.c.Call(testCtx(t), progMount, 3, mountExport, nil)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	d := rpc.NewDecoder(r.Body)
	for d.Bool() {
		dirs = append(dirs, d.String(1024))
		for d.Bool() {
			d.String(1024)
		}
	}
	if d.Err() != nil {
		t.Fatal(d.Err())
	}
	if strings.Join(dirs, ",") != "/points,/rekindle" {
		t.Fatalf("EXPORT lists %v, want /points and /rekindle (not /hidden)", dirs)
	}

	if st, _ := n.mount("/hidden"); st != mnt3ErrAcces {
		t.Fatalf("MNT of an export whose allow-list excludes the client: %d", st)
	}
	if st, _ := n.mount("/nope"); st != mnt3ErrNoEnt {
		t.Fatalf("MNT of no export: %d", st)
	}
	if st, _ := n.mount("/rekindle/hello.txt"); st != mnt3ErrNotDir {
		t.Fatalf("MNT of a file: %d", st)
	}
	if st, _ := n.mount("/rekindle/../etc"); st != mnt3ErrNoEnt {
		t.Fatalf("MNT of /rekindle/../etc: %d", st)
	}
	n.mustMount("/rekindle")
	n.mustMount("/rekindle/sub")

	dump := func() []string {
		r, err := n.c.Call(testCtx(t), progMount, 3, mountDump, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		d := rpc.NewDecoder(r.Body)
		for d.Bool() {
			out = append(out, d.String(1024)+":"+d.String(1024))
		}
		return out
	}
	if got := strings.Join(dump(), ","); got != "127.0.0.1:/rekindle,127.0.0.1:/rekindle/sub" {
		t.Fatalf("DUMP: %s", got)
	}
	e := &rpc.Encoder{}
	e.String("/rekindle/sub")
	if _, err := n.c.Call(testCtx(t), progMount, 3, mountUmnt, e.Bytes()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dump(), ","); got != "127.0.0.1:/rekindle" {
		t.Fatalf("DUMP after UMNT: %s", got)
	}
	if _, err := n.c.Call(testCtx(t), progMount, 3, mountUmntAll, nil); err != nil {
		t.Fatal(err)
	}
	if got := dump(); len(got) != 0 {
		t.Fatalf("DUMP after UMNTALL: %v", got)
	}

	// MOUNT v1 answers with a 32-byte fhstatus.
	e = &rpc.Encoder{}
	e.String("/rekindle")
	r, err = n.c.Call(testCtx(t), progMount, 1, mountMnt, e.Bytes())
	if err != nil || len(r.Body) != 4+32 || binary.BigEndian.Uint32(r.Body) != 0 {
		t.Fatalf("MOUNT v1 MNT: %x, %v", r.Body, err)
	}
}

func TestBogusHandles(t *testing.T) {
	_, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")

	flipped := append([]byte{}, root...)
	flipped[10] ^= 0xff
	otherExport := encodeHandle(99, 1)
	unknownFile := encodeHandle(exp.ID, 0xdeadbeef)
	cases := []struct {
		name string
		fh   []byte
		want nfs.NFSStatus
	}{
		{"empty", nil, nfs.NFSStatusBadHandle},
		{"short", root[:8], nfs.NFSStatusBadHandle},
		{"long", append(append([]byte{}, root...), 0, 0, 0, 0), nfs.NFSStatusBadHandle},
		{"too long for the wire", make([]byte, 200), nfs.NFSStatusBadHandle},
		{"corrupt", flipped, nfs.NFSStatusBadHandle},
		{"random", []byte("0123456789abcdefghij"), nfs.NFSStatusBadHandle},
		{"other export", otherExport, nfs.NFSStatusStale},
		{"unknown file", unknownFile, nfs.NFSStatusStale},
	}
	for _, c := range cases {
		for _, proc := range []uint32{procGetattr, procRead, procLookup, procWrite, procReaddirplus, procRename} {
			var args []byte
			switch proc {
			case procRead:
				args = readArgs(c.fh, 0, 10)
			case procWrite:
				args = writeArgs(c.fh, 0, []byte("x"))
			case procLookup:
				args = dirOpArgs(c.fh, "hello.txt")
			case procReaddirplus:
				e := &rpc.Encoder{}
				e.Opaque(c.fh)
				e.Uint64(0)
				e.Uint64(0)
				e.Uint32(4096)
				e.Uint32(8192)
				args = e.Bytes()
			case procRename:
				args = append(dirOpArgs(c.fh, "a"), dirOpArgs(root, "b")...)
			default:
				args = handleArg(c.fh)
			}
			if st, _ := n.call(proc, args); st != c.want {
				t.Errorf("%s handle, %s: %v, want %v", c.name, nfsProcName(proc), st, c.want)
			}
		}
	}
	// The server is still there.
	if st := n.getattr(root); st != nfs.NFSStatusOk {
		t.Fatalf("GETATTR of the root after bogus handles: %v", st)
	}
}

func TestRemovedFileIsStale(t *testing.T) {
	dir, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	fh := n.mustLookup(root, "hello.txt")
	if err := os.Remove(filepath.Join(dir, "hello.txt")); err != nil {
		t.Fatal(err)
	}
	if st := n.getattr(fh); st != nfs.NFSStatusStale {
		t.Fatalf("GETATTR of a removed file: %v, want STALE", st)
	}

	// Removal through NFS forgets the handle too.
	sub := n.mustLookup(root, "sub")
	inner := n.mustLookup(sub, "inner.txt")
	if st, _ := n.call(procRemove, dirOpArgs(sub, "inner.txt")); st != nfs.NFSStatusOk {
		t.Fatalf("REMOVE: %v", st)
	}
	if st := n.getattr(inner); st != nfs.NFSStatusStale {
		t.Fatalf("GETATTR after REMOVE: %v, want STALE", st)
	}

	// A removed export's handles are stale.
	ts.RemoveExport("/rekindle")
	if st := n.getattr(root); st != nfs.NFSStatusStale {
		t.Fatalf("GETATTR after RemoveExport: %v, want STALE", st)
	}
	if st, _ := n.mount("/rekindle"); st != mnt3ErrNoEnt {
		t.Fatalf("MNT after RemoveExport: %d", st)
	}
}

func TestNamesCannotLeaveTheExport(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "export")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(parent, "secret"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{StateDir: t.TempDir()}, Export{Path: "/x", FS: osfs.New(dir), ID: 1})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/x")
	sub := n.mustLookup(root, "sub")

	lookups := []struct {
		name string
		want nfs.NFSStatus
	}{
		{"", nfs.NFSStatusInval},
		{"../secret", nfs.NFSStatusInval},
		{"sub/../../secret", nfs.NFSStatusInval},
		{"/etc", nfs.NFSStatusInval},
		{"a\x00b", nfs.NFSStatusInval},
		{strings.Repeat("n", 256), nfs.NFSStatusNameTooLong},
		{"..", nfs.NFSStatusAccess}, // ".." of the export root
		{"secret", nfs.NFSStatusNoEnt},
	}
	for _, c := range lookups {
		if st, _ := n.lookup(root, c.name); st != c.want {
			t.Errorf("LOOKUP %q in the root: %v, want %v", c.name, st, c.want)
		}
	}
	// ".." below the root is the parent, and "." is the directory.
	if st, fh := n.lookup(sub, ".."); st != nfs.NFSStatusOk || !bytes.Equal(fh, root) {
		t.Errorf("LOOKUP .. in sub: %v, handle %x, want the root's %x", st, fh, root)
	}
	if st, fh := n.lookup(sub, "."); st != nfs.NFSStatusOk || !bytes.Equal(fh, sub) {
		t.Errorf("LOOKUP . in sub: %v", st)
	}

	for _, name := range []string{"..", "../evil", "a/b", "", ".", "x\x00"} {
		if st, _ := n.call(procCreate, createArgs(root, name)); st != nfs.NFSStatusInval {
			t.Errorf("CREATE %q: %v, want INVAL", name, st)
		}
		e := &rpc.Encoder{}
		e.Raw(dirOpArgs(root, name))
		e.Raw(make([]byte, 24))
		if st, _ := n.call(procMkdir, e.Bytes()); st != nfs.NFSStatusInval {
			t.Errorf("MKDIR %q: %v, want INVAL", name, st)
		}
		if st, _ := n.call(procRemove, dirOpArgs(root, name)); st != nfs.NFSStatusInval {
			t.Errorf("REMOVE %q: %v, want INVAL", name, st)
		}
		if st, _ := n.call(procRename, append(dirOpArgs(sub, "x"), dirOpArgs(root, name)...)); st != nfs.NFSStatusInval {
			t.Errorf("RENAME to %q: %v, want INVAL", name, st)
		}
	}
	// Symlinks that point out of the export are not supported.
	for _, target := range []string{"/etc/passwd", "../secret", "sub/../../secret"} {
		e := &rpc.Encoder{}
		e.Raw(dirOpArgs(root, "link"))
		e.Raw(make([]byte, 24))
		e.String(target)
		if st, _ := n.call(procSymlink, e.Bytes()); st != nfs.NFSStatusNotSupp {
			t.Errorf("SYMLINK to %q: %v, want NOTSUPP", target, st)
		}
	}
	// Device nodes are never made.
	e := &rpc.Encoder{}
	e.Raw(dirOpArgs(root, "dev"))
	e.Uint32(3) // NF3BLK
	e.Raw(make([]byte, 24))
	e.Uint32(8)
	e.Uint32(0)
	if st, _ := n.call(procMknod, e.Bytes()); st != nfs.NFSStatusNotSupp {
		t.Errorf("MKNOD: %v, want NOTSUPP", st)
	}

	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "export" && e.Name() != "secret" {
			t.Errorf("a call created %q outside the export", e.Name())
		}
	}
	if b, _ := os.ReadFile(filepath.Join(parent, "secret")); string(b) != "outside" {
		t.Error("the file outside the export changed")
	}
}

func TestSubtreeAllowSeparatesSessions(t *testing.T) {
	_, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	bDir := n.mustLookup(root, "session-b")
	bFile := n.mustLookup(bDir, "vm.vmx")

	// session-b now belongs to other clients; session-a to us.
	if err := ts.SetSubtreeAllow("/rekindle", "/session-b", []netip.Prefix{mustPrefix("192.0.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := ts.SetSubtreeAllow("/rekindle", "session-a", []netip.Prefix{mustPrefix("127.0.0.1/32")}); err != nil {
		t.Fatal(err)
	}
	if st, _ := n.lookup(root, "session-b"); st != nfs.NFSStatusAccess {
		t.Errorf("LOOKUP of another session's folder: %v, want ACCES", st)
	}
	if st := n.getattr(bFile); st != nfs.NFSStatusAccess {
		t.Errorf("GETATTR with a handle into another session: %v, want ACCES", st)
	}
	if st, _ := n.read(bFile, 0, 100); st != nfs.NFSStatusAccess {
		t.Errorf("READ with a handle into another session: %v, want ACCES", st)
	}
	if st, _ := n.lookup(bDir, "vm.vmx"); st != nfs.NFSStatusAccess {
		t.Errorf("LOOKUP inside another session: %v, want ACCES", st)
	}
	if st, _ := n.mount("/rekindle/session-b"); st != mnt3ErrAcces {
		t.Errorf("MNT of another session's folder: %d, want MNT3ERR_ACCES", st)
	}
	if st, _ := n.call(procRename, append(dirOpArgs(root, "hello.txt"), dirOpArgs(bDir, "stolen")...)); st != nfs.NFSStatusAccess {
		t.Errorf("RENAME into another session: %v, want ACCES", st)
	}
	aDir := n.mustLookup(root, "session-a")
	if st, _ := n.read(n.mustLookup(aDir, "vm.vmx"), 0, 100); st != nfs.NFSStatusOk {
		t.Errorf("READ in our own session: %v", st)
	}
	n.mustMount("/rekindle/session-a")

	// The Authorize hook sees every path.
	var seen []string
	ts2 := startServer(t, Config{StateDir: t.TempDir(), Authorize: func(c netip.Addr, export, p string) bool {
		seen = append(seen, export+":"+p)
		return !strings.HasPrefix(p, "/sub")
	}}, Export{Path: "/rekindle", FS: exp.FS, ID: 7})
	n2 := newNFSClient(t, ts2.Addr())
	root2 := n2.mustMount("/rekindle")
	if st, _ := n2.lookup(root2, "sub"); st != nfs.NFSStatusAccess {
		t.Errorf("LOOKUP refused by Authorize: %v", st)
	}
	if st, _ := n2.lookup(root2, "hello.txt"); st != nfs.NFSStatusOk {
		t.Errorf("LOOKUP admitted by Authorize: %v", st)
	}
	if !strings.Contains(strings.Join(seen, " "), "/rekindle:/hello.txt") {
		t.Errorf("Authorize saw %v", seen)
	}
}

func TestHandlesStableAcrossRestart(t *testing.T) {
	dir, _ := exportDir(t)
	state := t.TempDir()
	exp := func() Export { return Export{Path: "/rekindle", FS: osfs.New(dir), ID: 7} }

	ts := startServer(t, Config{StateDir: state}, exp())
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	sub := n.mustLookup(root, "sub")
	inner := n.mustLookup(sub, "inner.txt")
	// READDIRPLUS mints handles for every entry; they must survive too.
	e := &rpc.Encoder{}
	e.Opaque(n.mustLookup(root, "session-b"))
	e.Uint64(0)
	e.Uint64(0)
	e.Uint32(8192)
	e.Uint32(65536)
	st, d := n.call(procReaddirplus, e.Bytes())
	if st != nfs.NFSStatusOk {
		t.Fatalf("READDIRPLUS: %v", st)
	}
	plus := readdirplusHandles(t, d)
	if plus["disk.fl"] == nil {
		t.Fatalf("READDIRPLUS gave no handle for disk.fl: %v", plus)
	}
	n.c.Close()
	ts.stop()

	ts = startServer(t, Config{StateDir: state}, exp())
	n = newNFSClient(t, ts.Addr())
	st, data := n.read(inner, 0, 100)
	if st != nfs.NFSStatusOk || string(data) != "inside\n" {
		t.Fatalf("READ with a handle from before the restart: %v %q", st, data)
	}
	st, data = n.read(plus["disk.fl"], 0, 100)
	if st != nfs.NFSStatusOk || string(data) != "disk\n" {
		t.Fatalf("READ with a READDIRPLUS handle from before the restart: %v %q", st, data)
	}
	if got := n.mustMount("/rekindle"); !bytes.Equal(got, root) {
		t.Fatalf("root handle changed across restart: %x, then %x", root, got)
	}
	if got := n.mustLookup(root, "sub"); !bytes.Equal(got, sub) {
		t.Fatalf("handle of sub changed across restart")
	}
}

func readdirplusHandles(t *testing.T, d *rpc.Decoder) map[string][]byte {
	t.Helper()
	if d.Bool() {
		d.Fixed(fattr3Len)
	}
	d.Uint64() // verifier
	out := map[string][]byte{}
	for d.Bool() {
		d.Uint64()
		name := d.String(255)
		d.Uint64()
		if d.Bool() {
			d.Fixed(fattr3Len)
		}
		if d.Bool() {
			out[name] = d.Opaque(64)
		}
	}
	if d.Err() != nil {
		t.Fatalf("READDIRPLUS reply: %v", d.Err())
	}
	return out
}

// slowFS blocks Open of one file until released.
type slowFS struct {
	billyFS
	dir     string // for tests that read the files beside it
	slow    string
	entered chan struct{}
	release chan struct{}
}

func (f *slowFS) Open(name string) (billyFile, error) {
	if filepath.Base(name) == f.slow {
		f.entered <- struct{}{}
		<-f.release
	}
	return f.billyFS.Open(name)
}

func TestSlowReadDoesNotBlockOthersOnTheSameConnection(t *testing.T) {
	dir, _ := exportDir(t)
	if err := os.WriteFile(filepath.Join(dir, "slow.bin"), []byte("slow data"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := &slowFS{billyFS: osfs.New(dir), slow: "slow.bin", entered: make(chan struct{}, 1), release: make(chan struct{})}
	ts := startServer(t, Config{StateDir: t.TempDir()}, Export{Path: "/rekindle", FS: fs, ID: 7})
	released := false
	t.Cleanup(func() { // before the server stops, which waits for the blocked call
		if !released {
			close(fs.release)
		}
	})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	slow := n.mustLookup(root, "slow.bin")
	fast := n.mustLookup(root, "hello.txt")

	pSlow, err := n.c.Start(progNFS, 3, procRead, readArgs(slow, 0, 100))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-fs.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the slow READ never reached the filesystem")
	}
	// With the slow READ stuck in the filesystem, another READ on the same
	// connection completes.
	pFast, err := n.c.Start(progNFS, 3, procRead, readArgs(fast, 0, 100))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pFast.Wait(testCtx(t))
	if err != nil {
		t.Fatalf("second READ: %v", err)
	}
	d := rpc.NewDecoder(r.Body)
	if st := nfs.NFSStatus(d.Uint32()); st != nfs.NFSStatusOk {
		t.Fatalf("second READ: %v", st)
	}
	if data, _ := decodeRead(d); string(data) != "hello, world\n" {
		t.Fatalf("second READ returned %q", data)
	}
	if pSlow.Ready() {
		t.Fatal("the slow READ was answered while its filesystem call was blocked")
	}
	close(fs.release)
	released = true
	r, err = pSlow.Wait(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	d = rpc.NewDecoder(r.Body)
	d.Uint32()
	if data, _ := decodeRead(d); string(data) != "slow data" {
		t.Fatalf("slow READ returned %q", data)
	}
}

func TestWritesOfOneFileKeepTheirOrder(t *testing.T) {
	dir, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir(), PipesPerConn: 8}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	fh := n.mustLookup(root, "hello.txt")
	// Many overlapping writes in flight at once: the last one sent must win.
	var pending []*rpc.Pending
	for i := 0; i < 64; i++ {
		p, err := n.c.Start(progNFS, 3, procWrite, writeArgs(fh, 0, []byte{byte('a' + i%26), byte('0' + i/26)}))
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	for _, p := range pending {
		if _, err := p.Wait(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "hello.txt"))
	if string(b[:2]) != "l2" {
		t.Fatalf("after 64 ordered writes the file starts %q, want the last write's \"l2\"", b[:2])
	}
}

func TestMalformedInputClosesOrAnswers(t *testing.T) {
	_, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)

	closes := map[string][]byte{
		"garbage":             []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"oversized fragment":  {0xff, 0xff, 0xff, 0xff},
		"huge non-last frags": bytes.Repeat([]byte{0x00, 0x08, 0x00, 0x00}, 1),
		"reply not call":      rpc.Frame(rpc.AcceptedReply(1, rpc.Success).Bytes()),
		"short header":        rpc.Frame([]byte{0, 0, 0, 1, 0, 0, 0, 0}),
		"cred too long":       rpc.Frame(rpc.CallRecord(1, progNFS, 3, 0, rpc.Auth{Flavor: 1, Body: make([]byte, 500)}, nil)),
	}
	for name, in := range closes {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", ts.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(DefaultRecordTimeout))
			conn.Write(in)
			if name == "huge non-last frags" {
				// Keep sending fragments without a last one: the total limit closes it.
				chunk := make([]byte, 0x80000)
				for i := 0; i < 4; i++ {
					if _, err := conn.Write(chunk); err != nil {
						break
					}
					conn.Write([]byte{0x00, 0x08, 0x00, 0x00})
				}
			}
			if _, err := io.ReadAll(conn); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("server neither answered nor closed the connection")
				}
			}
		})
	}

	c := dial(t, ts.Addr())
	answers := []struct {
		name  string
		check func() error
	}{
		{"RPC version 3", func() error {
			rec := rpc.CallRecord(77, progNFS, 3, 0, rpc.Auth{}, nil)
			binary.BigEndian.PutUint32(rec[8:], 3)
			p, err := sendRaw(c, 77, rec)
			if err != nil {
				return err
			}
			r, err := p.Wait(testCtx(t))
			if err == nil && (r.Accepted || r.RejectStat != 0) {
				err = errors.New("not RPC_MISMATCH")
			}
			return err
		}},
		{"unknown program", func() error {
			_, err := c.Call(testCtx(t), 100021, 4, 0, nil)
			if !errors.Is(err, rpc.ErrNotSuccess) {
				return errors.New("NLM did not get PROG_UNAVAIL")
			}
			return nil
		}},
		{"NFS v4", func() error {
			r, err := c.Call(testCtx(t), progNFS, 4, 0, nil)
			if r.Stat != rpc.ProgMismatch {
				return errors.New("NFSv4 did not get PROG_MISMATCH: " + errString(err))
			}
			return nil
		}},
		{"NFS proc 99", func() error {
			r, _ := c.Call(testCtx(t), progNFS, 3, 99, nil)
			if r.Stat != rpc.ProcUnavail {
				return errors.New("unknown procedure did not get PROC_UNAVAIL")
			}
			return nil
		}},
		{"truncated args", func() error {
			r, _ := c.Call(testCtx(t), progNFS, 3, procRead, []byte{0, 0, 0, 20, 1})
			if r.Stat != rpc.GarbageArgs {
				return errors.New("truncated READ args did not get GARBAGE_ARGS")
			}
			return nil
		}},
		{"opaque longer than the record", func() error {
			r, _ := c.Call(testCtx(t), progNFS, 3, procWrite, append(writeArgs(encodeHandle(7, 1), 0, nil)[:40], 0x7f, 0xff, 0xff, 0xff))
			if r.Stat != rpc.GarbageArgs {
				return errors.New("WRITE declaring 2 GiB of data did not get GARBAGE_ARGS")
			}
			return nil
		}},
		{"AUTH_DES", func() error {
			p, err := c.StartWithCred(progNFS, 3, 0, rpc.Auth{Flavor: 3, Body: []byte{1, 2, 3, 4}}, nil)
			if err != nil {
				return err
			}
			r, err := p.Wait(testCtx(t))
			if err != nil || r.Accepted || r.AuthStat != rpc.AuthBadCred {
				return errors.New("AUTH_DES was not refused with AUTH_BADCRED")
			}
			return nil
		}},
	}
	for _, a := range answers {
		if err := a.check(); err != nil {
			t.Errorf("%s: %v", a.name, err)
		}
	}
	if _, err := c.Call(testCtx(t), progNFS, 3, procNull, nil); err != nil {
		t.Fatalf("NULL after odd calls: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// sendRaw sends a hand-made call record, registering its XID with the client.
func sendRaw(c *rpc.Client, xid uint32, rec []byte) (*rpc.Pending, error) {
	return c.StartRecord(xid, rec)
}

func TestReadOnlyExport(t *testing.T) {
	dir, exp := exportDir(t)
	exp.ReadOnly = true
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	fh := n.mustLookup(root, "hello.txt")
	if st, _ := n.call(procWrite, writeArgs(fh, 0, []byte("X"))); st != nfs.NFSStatusROFS {
		t.Errorf("WRITE on a read-only export: %v", st)
	}
	if st, _ := n.call(procCreate, createArgs(root, "new")); st != nfs.NFSStatusROFS {
		t.Errorf("CREATE on a read-only export: %v", st)
	}
	if st, _ := n.call(procRemove, dirOpArgs(root, "hello.txt")); st != nfs.NFSStatusROFS {
		t.Errorf("REMOVE on a read-only export: %v", st)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "hello.txt")); string(b) != "hello, world\n" {
		t.Error("a read-only export changed")
	}
}

func TestReadCountAndFSInfoCappedAtMaxIO(t *testing.T) {
	dir, exp := exportDir(t)
	big := bytes.Repeat([]byte("z"), 3*MaxIO)
	if err := os.WriteFile(filepath.Join(dir, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	st, data := n.read(n.mustLookup(root, "big"), 0, 16<<20)
	if st != nfs.NFSStatusOk || len(data) != MaxIO {
		t.Fatalf("READ of 16 MiB: %v, %d bytes; want %d", st, len(data), MaxIO)
	}
	st, d := n.call(procFsinfo, handleArg(root))
	if st != nfs.NFSStatusOk {
		t.Fatal(st)
	}
	if d.Bool() {
		d.Fixed(fattr3Len)
	}
	rtmax, rtpref, _, wtmax, wtpref := d.Uint32(), d.Uint32(), d.Uint32(), d.Uint32(), d.Uint32()
	for _, v := range []uint32{rtmax, rtpref, wtmax, wtpref} {
		if v > MaxIO {
			t.Fatalf("FSINFO announces %d/%d/%d/%d, above MaxIO", rtmax, rtpref, wtmax, wtpref)
		}
	}
}

// idFS is a filesystem that implements FileIDer with a fixed table.
type idFS struct {
	billyFS
	ids map[string]uint64
}

func (f *idFS) FileID(p string) (uint64, error) {
	if id, ok := f.ids[p]; ok {
		return id, nil
	}
	return 0, os.ErrNotExist
}

func (f *idFS) PathOf(id uint64) (string, error) {
	for p, i := range f.ids {
		if i == id {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

func TestFileIDerGivesTheHandles(t *testing.T) {
	dir, _ := exportDir(t)
	fs := &idFS{billyFS: osfs.New(dir), ids: map[string]uint64{"/": 1, "/sub": 2, "/sub/inner.txt": 3}}
	// No StateDir: a FileIDer needs none.
	ts := startServer(t, Config{}, Export{Path: "/rekindle", FS: fs, ID: 5})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	if !bytes.Equal(root, encodeHandle(5, 1)) {
		t.Fatalf("root handle %x, want export 5 file 1", root)
	}
	inner := n.mustLookup(n.mustLookup(root, "sub"), "inner.txt")
	if !bytes.Equal(inner, encodeHandle(5, 3)) {
		t.Fatalf("inner.txt handle %x, want export 5 file 3", inner)
	}
	if st, data := n.read(encodeHandle(5, 3), 0, 100); st != nfs.NFSStatusOk || string(data) != "inside\n" {
		t.Fatalf("READ by a computed handle: %v %q", st, data)
	}
	if st := n.getattr(encodeHandle(5, 42)); st != nfs.NFSStatusStale {
		t.Fatalf("GETATTR of an id PathOf does not know: %v", st)
	}
}

func TestAddExportRules(t *testing.T) {
	s, err := New(Config{Listen: "127.0.0.1:0", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fs := osfs.New(t.TempDir())
	if err := s.AddExport(Export{Path: "/a", FS: fs, ID: 1}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []Export{
		{Path: "/a", FS: fs, ID: 2},
		{Path: "/a/b", FS: fs, ID: 2},
		{Path: "/", FS: fs, ID: 2},
		{Path: "/c", FS: fs, ID: 1},
		{Path: "relative", FS: fs, ID: 3},
		{Path: "/d/../e", FS: fs, ID: 3},
		{Path: "/f", ID: 3},
	} {
		if err := s.AddExport(e); err == nil {
			t.Errorf("AddExport(%q, id %d) accepted", e.Path, e.ID)
		}
	}
	noState, err := New(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer noState.Close()
	if err := noState.AddExport(Export{Path: "/a", FS: fs, ID: 1}); err == nil {
		t.Error("an export without file ids was accepted without a StateDir")
	}
}

type (
	billyFS   = billy.Filesystem
	billyFile = billy.File
)
