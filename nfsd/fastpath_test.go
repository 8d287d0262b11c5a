package nfsd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	billy "github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"
	nfsc "github.com/willscott/go-nfs-client/nfs"
	nfscrpc "github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// stableFS is a filesystem whose files all report one modification time, so
// that two servers over equal copies of it answer byte for byte alike. It
// counts the opens made by the fast path, to tell which path answered.
type stableFS struct {
	billy.Filesystem
	fastOpens atomic.Int32
	lend      bool // files lend their bytes (SliceReader), in 1000-byte pieces
}

// lendingFile lends READ bytes in several pieces, as the restore point view
// lends cached chunks.
type lendingFile struct{ billy.File }

func (f lendingFile) ReadSlices(off int64, n int) ([][]byte, int, error) {
	b := make([]byte, n)
	m, err := f.ReadAt(b, off)
	var parts [][]byte
	for rest := b[:m]; len(rest) > 0; rest = rest[min(len(rest), 1000):] {
		parts = append(parts, rest[:min(len(rest), 1000)])
	}
	return parts, m, err
}

type stableInfo struct{ os.FileInfo }

func (stableInfo) ModTime() time.Time { return time.Unix(1700000000, 123456789) }

func (fs *stableFS) Stat(p string) (os.FileInfo, error) {
	fi, err := fs.Filesystem.Stat(p)
	if err != nil {
		return nil, err
	}
	return stableInfo{fi}, nil
}

func (fs *stableFS) Lstat(p string) (os.FileInfo, error) {
	fi, err := fs.Filesystem.Lstat(p)
	if err != nil {
		return nil, err
	}
	return stableInfo{fi}, nil
}

func (fs *stableFS) Open(p string) (billy.File, error) {
	fs.countFast()
	f, err := fs.Filesystem.Open(p)
	if err == nil && fs.lend {
		return lendingFile{f}, nil
	}
	return f, err
}

func (fs *stableFS) OpenFile(p string, flag int, perm os.FileMode) (billy.File, error) {
	fs.countFast()
	return fs.Filesystem.OpenFile(p, flag, perm)
}

func (fs *stableFS) countFast() {
	pc := make([]uintptr, 32)
	frames := runtime.CallersFrames(pc[:runtime.Callers(2, pc)])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, ".fastRead") || strings.HasSuffix(f.Function, ".fastWrite") {
			fs.fastOpens.Add(1)
			return
		}
		if !more {
			return
		}
	}
}

// newStableFS holds "data" (100003 bytes), "empty", "dir/" and "ro/file".
func newStableFS(t *testing.T) *stableFS {
	fs := &stableFS{Filesystem: memfs.New()}
	data := make([]byte, 100003)
	for i := range data {
		data[i] = byte(i * 31)
	}
	for name, b := range map[string][]byte{"data": data, "empty": nil, "dir/inner": []byte("x"), "other": []byte("other file")} {
		if err := fs.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := fs.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(b)
		f.Close()
	}
	return fs
}

// rawConn sends call records and reads whole reply records, to compare them
// byte for byte.
type rawConn struct {
	t    *testing.T
	conn net.Conn
}

func dialRaw(t *testing.T, addr net.Addr) *rawConn {
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn}
}

func (r *rawConn) call(xid, proc uint32, args []byte) []byte {
	r.t.Helper()
	r.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := r.conn.Write(rpc.Frame(rpc.CallRecord(xid, progNFS, 3, proc, rpc.Auth{Flavor: rpc.AuthNone}, args))); err != nil {
		r.t.Fatal(err)
	}
	rec, err := rpc.ReadRecord(r.conn, 4<<20, nil)
	if err != nil {
		r.t.Fatalf("%s: %v", nfsProcName(proc), err)
	}
	return rec
}

// replyStatus is the NFS status of an accepted reply record, or -1.
func replyStatus(rec []byte) int {
	r, err := rpc.ParseReply(rec)
	if err != nil || !r.Accepted || r.Stat != rpc.Success || len(r.Body) < 4 {
		return -1
	}
	return int(binary.BigEndian.Uint32(r.Body))
}

func writeArgsHow(fh []byte, off uint64, count, how uint32, data []byte) []byte {
	e := &rpc.Encoder{}
	e.Opaque(fh)
	e.Uint64(off)
	e.Uint32(count)
	e.Uint32(how)
	e.Opaque(data)
	return e.Bytes()
}

func setattrSizeArgs(fh []byte, size uint64) []byte {
	e := &rpc.Encoder{}
	e.Opaque(fh)
	e.Uint32(0) // mode
	e.Uint32(0) // uid
	e.Uint32(0) // gid
	e.Uint32(1) // size follows
	e.Uint64(size)
	e.Uint32(0) // atime: don't change
	e.Uint32(0) // mtime: don't change
	e.Uint32(0) // no guard
	return e.Bytes()
}

// TestFastPathRepliesEqualGoNFS sends the same READs and WRITEs to a server with
// the fast path and to one without, over equal filesystems, and compares the
// reply records: they must be identical but for the write verifier.
func TestFastPathRepliesEqualGoNFS(t *testing.T) { fastPathRepliesEqualGoNFS(t, false) }

// TestLentReadsEqualGoNFS: READ replies built from lent slices are the same
// bytes as go-nfs's.
func TestLentReadsEqualGoNFS(t *testing.T) { fastPathRepliesEqualGoNFS(t, true) }

func fastPathRepliesEqualGoNFS(t *testing.T, lend bool) {
	fastFS, slowFS := newStableFS(t), newStableFS(t)
	fastFS.lend = lend
	start := func(fs *stableFS, noFast bool) *testServer {
		return startServer(t, Config{StateDir: t.TempDir(), NoFastPath: noFast},
			Export{Path: "/x", FS: fs, ID: 4},
			Export{Path: "/ro", FS: &stableFS{Filesystem: fs.Filesystem}, ID: 5, ReadOnly: true})
	}
	fastSrv, slowSrv := start(fastFS, false), start(slowFS, true)

	// Handles are computed, so both servers give the same ones.
	n := newNFSClient(t, fastSrv.Addr())
	root := n.mustMount("/x")
	data, empty, dir := n.mustLookup(root, "data"), n.mustLookup(root, "empty"), n.mustLookup(root, "dir")
	roData := n.mustLookup(n.mustMount("/ro"), "data")
	n2 := newNFSClient(t, slowSrv.Addr())
	if h := n2.mustLookup(n2.mustMount("/x"), "data"); !bytes.Equal(h, data) {
		t.Fatalf("the two servers give different handles: %x, %x", h, data)
	}
	n2.mustLookup(root, "empty")
	n2.mustLookup(root, "dir")
	n2.mustLookup(n2.mustMount("/ro"), "data")

	const size = 100003
	bigData := bytes.Repeat([]byte("0123456789abcdef"), MaxIO/16)
	cases := []struct {
		name string
		proc uint32
		args []byte
		want nfs.NFSStatus
	}{
		{"read 4 KiB", procRead, readArgs(data, 0, 4096), nfs.NFSStatusOk},
		{"read odd length", procRead, readArgs(data, 1, 4097), nfs.NFSStatusOk},
		{"read 3 bytes", procRead, readArgs(data, 7, 3), nfs.NFSStatusOk},
		{"read up to the end", procRead, readArgs(data, size-10, 10), nfs.NFSStatusOk},
		{"read short of the end", procRead, readArgs(data, size-10, 5), nfs.NFSStatusOk},
		{"read past the end", procRead, readArgs(data, size-10, 100), nfs.NFSStatusOk},
		{"read whole, larger count", procRead, readArgs(data, 0, 1<<20), nfs.NFSStatusOk},
		{"read count above MaxIO", procRead, readArgs(data, 0, 16<<20), nfs.NFSStatusOk},
		{"read at the end", procRead, readArgs(data, size, 100), nfs.NFSStatusOk},
		{"read beyond the end", procRead, readArgs(data, size+5000, 100), nfs.NFSStatusOk},
		{"read zero bytes", procRead, readArgs(data, 0, 0), nfs.NFSStatusOk},
		{"read zero bytes at the end", procRead, readArgs(data, size, 0), nfs.NFSStatusOk},
		{"read empty file", procRead, readArgs(empty, 0, 100), nfs.NFSStatusOk},
		{"read negative offset", procRead, readArgs(data, 1<<63+5, 100), nfs.NFSStatusIO},
		{"read directory", procRead, readArgs(dir, 0, 100), nfs.NFSStatusAccess},
		{"read read-only export", procRead, readArgs(roData, 0, 100), nfs.NFSStatusOk},
		{"read stale handle", procRead, readArgs(encodeHandle(4, 12345), 0, 100), nfs.NFSStatusStale},
		{"read other export's handle", procRead, readArgs(encodeHandle(99, 1), 0, 100), nfs.NFSStatusStale},
		{"read short handle", procRead, readArgs(data[:12], 0, 100), nfs.NFSStatusBadHandle},
		{"read corrupt handle", procRead, readArgs(append(append([]byte{}, data[:19]...), data[19]^1), 0, 100), nfs.NFSStatusBadHandle},

		{"write 5 bytes", procWrite, writeArgs(data, 0, []byte("hello")), nfs.NFSStatusOk},
		{"write unstable", procWrite, writeArgsHow(data, 10, 4, 0, []byte("unst")), nfs.NFSStatusOk},
		{"write data sync", procWrite, writeArgsHow(data, 20, 3, 1, []byte("dsy")), nfs.NFSStatusOk},
		{"write extends", procWrite, writeArgs(data, size-2, []byte("tail!")), nfs.NFSStatusOk},
		{"write past the end", procWrite, writeArgs(empty, 4000, []byte("sparse")), nfs.NFSStatusOk},
		{"write nothing", procWrite, writeArgs(data, 5, nil), nfs.NFSStatusOk},
		{"write 1 MiB", procWrite, writeArgs(data, 3, bigData), nfs.NFSStatusOk},
		{"read after writes", procRead, readArgs(data, 0, 1<<20), nfs.NFSStatusOk},
		{"read sparse file", procRead, readArgs(empty, 0, 8192), nfs.NFSStatusOk},
		{"write count below data", procWrite, writeArgsHow(data, 0, 2, 2, []byte("abcd")), nfs.NFSStatusOk},
		{"write count above data", procWrite, writeArgsHow(data, 0, 9, 2, []byte("abcd")), nfs.NFSStatusOk},
		{"write bad stable_how", procWrite, writeArgsHow(data, 0, 4, 7, []byte("abcd")), nfs.NFSStatusInval},
		{"write past 2^63", procWrite, writeArgs(data, 1<<63, []byte("x")), nfs.NFSStatusFBig},
		{"write directory", procWrite, writeArgs(dir, 0, []byte("x")), nfs.NFSStatusInval},
		{"write read-only export", procWrite, writeArgs(roData, 0, []byte("x")), nfs.NFSStatusROFS},
		{"write stale handle", procWrite, writeArgs(encodeHandle(4, 12345), 0, []byte("x")), nfs.NFSStatusStale},
		{"write short handle", procWrite, writeArgs(data[:4], 0, []byte("x")), nfs.NFSStatusBadHandle},
		{"read back", procRead, readArgs(data, 0, 64), nfs.NFSStatusOk},
		{"commit", procCommit, commitArgs(data), nfs.NFSStatusOk},
		{"commit empty file", procCommit, commitArgs(empty), nfs.NFSStatusOk},
		{"commit stale handle", procCommit, commitArgs(encodeHandle(4, 12345)), nfs.NFSStatusStale},
		{"commit short handle", procCommit, commitArgs(data[:4]), nfs.NFSStatusBadHandle},
	}
	fast, slow := dialRaw(t, fastSrv.Addr()), dialRaw(t, slowSrv.Addr())
	for i, c := range cases {
		xid := uint32(100 + i)
		got, want := fast.call(xid, c.proc, c.args), slow.call(xid, c.proc, c.args)
		if st := replyStatus(want); st != int(c.want) {
			t.Errorf("%s: go-nfs answered status %d, the test expects %v", c.name, st, c.want)
		}
		if (c.proc == procWrite || c.proc == procCommit) && replyStatus(got) == 0 && replyStatus(want) == 0 {
			// The write verifiers differ between servers.
			if !bytes.Equal(got[len(got)-8:], fastSrv.nfs.ID[:]) {
				t.Errorf("%s: verifier %x, want the server's %x", c.name, got[len(got)-8:], fastSrv.nfs.ID)
			}
			got = append(got[:len(got)-8:len(got)-8], want[len(want)-8:]...)
		}
		if c.proc == procWrite && replyStatus(got) == 0 && replyStatus(want) == 0 {
			// go-nfs says FILE_SYNC to every WRITE; the fast path says what
			// was asked (and done).
			how := uint32(fileSync) // declined by the fast path: go-nfs answers
			if a, ok := parseIOArgs(procWrite, c.args); ok {
				how = a.stable
			}
			if committed := binary.BigEndian.Uint32(got[len(got)-12:]); committed != how {
				t.Errorf("%s: committed %d, want %d as asked", c.name, committed, how)
			}
			copy(got[len(got)-12:len(got)-8], want[len(want)-12:len(want)-8])
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: replies differ\nfast path: %x\ngo-nfs:    %x", c.name, head(got), head(want))
		}
	}
	if fastFS.fastOpens.Load() == 0 || slowFS.fastOpens.Load() != 0 {
		t.Fatalf("fast-path opens: %d with the fast path, %d without; want some and none", fastFS.fastOpens.Load(), slowFS.fastOpens.Load())
	}

}

func commitArgs(fh []byte) []byte {
	e := &rpc.Encoder{}
	e.Opaque(fh)
	e.Uint64(0)
	e.Uint32(0)
	return e.Bytes()
}

func head(b []byte) []byte { return b[:min(len(b), 200)] }

func TestFattr3MatchesGoNFS(t *testing.T) {
	a := &nfs.FileAttribute{Type: nfs.FileTypeRegular, FileMode: 0o100644, Nlink: 3, UID: 1000, GID: 1001,
		Filesize: 1<<40 + 7, Used: 1<<33 + 9, SpecData: [2]uint32{8, 9}, FSID: 0x1122334455667788, Fileid: 0x99aabbccddeeff00,
		Atime: nfs.FileTime{Seconds: 1, Nseconds: 2}, Mtime: nfs.FileTime{Seconds: 3, Nseconds: 4}, Ctime: nfs.FileTime{Seconds: 5, Nseconds: 6}}
	var want bytes.Buffer
	if err := nfs.WritePostOpAttrs(&want, a); err != nil {
		t.Fatal(err)
	}
	got := appendFattr3(binary.BigEndian.AppendUint32(nil, 1), a)
	if !bytes.Equal(got, want.Bytes()) || len(got) != 4+fattr3Len {
		t.Fatalf("fattr3\ngot  %x\nwant %x", got, want.Bytes())
	}
}

// TestFastPathRefusals checks that the fast path sees the same allow-lists,
// subtree rules and Authorize hook as the rest.
func TestFastPathRefusals(t *testing.T) {
	dir, exp := exportDir(t)
	var denyPaths atomic.Value
	denyPaths.Store("")
	ts := startServer(t, Config{StateDir: t.TempDir(), Authorize: func(_ netip.Addr, _, p string) bool {
		d := denyPaths.Load().(string)
		return d == "" || !strings.HasPrefix(p, d)
	}}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	aDir := n.mustLookup(root, "session-a")
	aFile := n.mustLookup(aDir, "vm.vmx")
	hello := n.mustLookup(root, "hello.txt")

	status := func(proc uint32, args []byte) (nfs.NFSStatus, error) {
		r, err := n.c.Call(testCtx(t), progNFS, 3, proc, args)
		if err != nil {
			return 0, err
		}
		return nfs.NFSStatus(binary.BigEndian.Uint32(r.Body)), nil
	}
	expect := func(what string, proc uint32, args []byte, want nfs.NFSStatus) {
		t.Helper()
		if st, err := status(proc, args); err != nil || st != want {
			t.Errorf("%s: %v, %v; want %v", what, st, err, want)
		}
	}
	expect("READ", procRead, readArgs(aFile, 0, 10), nfs.NFSStatusOk)
	expect("WRITE", procWrite, writeArgs(aFile, 0, []byte("C")), nfs.NFSStatusOk)

	// A subtree rule.
	if err := ts.SetSubtreeAllow("/rekindle", "/session-a", []netip.Prefix{mustPrefix("192.0.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	expect("READ under a subtree rule", procRead, readArgs(aFile, 0, 10), nfs.NFSStatusAccess)
	expect("WRITE under a subtree rule", procWrite, writeArgs(aFile, 0, []byte("X")), nfs.NFSStatusAccess)
	expect("READ outside the subtree", procRead, readArgs(hello, 0, 10), nfs.NFSStatusOk)
	ts.SetSubtreeAllow("/rekindle", "/session-a", nil)

	// Authorize.
	denyPaths.Store("/hello")
	expect("READ refused by Authorize", procRead, readArgs(hello, 0, 10), nfs.NFSStatusAccess)
	expect("WRITE refused by Authorize", procWrite, writeArgs(hello, 0, []byte("X")), nfs.NFSStatusAccess)
	denyPaths.Store("")

	// The export's allow-list.
	ts.SetExportAllow("/rekindle", []netip.Prefix{mustPrefix("192.0.2.0/24")})
	expect("READ outside the export's allow-list", procRead, readArgs(hello, 0, 10), nfs.NFSStatusAccess)
	expect("WRITE outside the export's allow-list", procWrite, writeArgs(hello, 0, []byte("X")), nfs.NFSStatusAccess)
	ts.SetExportAllow("/rekindle", nil)

	// The server's allow-list.
	ts.SetAllow(nil)
	for _, c := range []struct {
		proc uint32
		args []byte
	}{{procRead, readArgs(hello, 0, 10)}, {procWrite, writeArgs(hello, 0, []byte("X"))}} {
		if _, err := status(c.proc, c.args); !errors.Is(err, rpc.ErrDenied) {
			t.Errorf("%s from a client outside the allow-list: %v, want denied", nfsProcName(c.proc), err)
		}
	}
	ts.SetAllow([]netip.Prefix{mustPrefix("127.0.0.0/8")})

	// A removed file and a removed export.
	os.Remove(filepath.Join(dir, "hello.txt"))
	expect("READ of a removed file", procRead, readArgs(hello, 0, 10), nfs.NFSStatusStale)
	expect("WRITE of a removed file", procWrite, writeArgs(hello, 0, []byte("X")), nfs.NFSStatusStale)
	ts.RemoveExport("/rekindle")
	expect("READ after RemoveExport", procRead, readArgs(aFile, 0, 10), nfs.NFSStatusStale)

	if b, _ := os.ReadFile(filepath.Join(dir, "session-a", "vm.vmx")); string(b) != "Config\n" {
		t.Errorf("session-a/vm.vmx holds %q after refused writes", b)
	}
}

// jitterFS delays opens a little at random, to shuffle calls that run at once.
type jitterFS struct{ billy.Filesystem }

func (fs jitterFS) OpenFile(p string, flag int, perm os.FileMode) (billy.File, error) {
	time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
	return fs.Filesystem.OpenFile(p, flag, perm)
}

// TestWriteOrderAcrossPaths sends, all at once on one connection, WRITEs that
// take the fast path, WRITEs the fast path declines and SETATTRs (both answered
// by go-nfs), to several files: each file must end as if its calls ran in the
// order sent.
func TestWriteOrderAcrossPaths(t *testing.T) {
	dir := t.TempDir()
	const files = 6
	for i := range files {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), nil, 0o644)
	}
	ts := startServer(t, Config{StateDir: t.TempDir(), PipesPerConn: 4},
		Export{Path: "/x", FS: jitterFS{osfs.New(dir)}, ID: 2})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/x")
	var fhs [][]byte
	for i := range files {
		fhs = append(fhs, n.mustLookup(root, fmt.Sprintf("f%d", i)))
	}
	type call struct {
		proc uint32
		args func(fh []byte) []byte
	}
	seq := []call{
		{procWrite, func(fh []byte) []byte { return writeArgs(fh, 0, []byte("AAAAAAAA")) }},
		{procSetattr, func(fh []byte) []byte { return setattrSizeArgs(fh, 4) }},
		{procWrite, func(fh []byte) []byte { return writeArgs(fh, 6, []byte("BB")) }},
		{procWrite, func(fh []byte) []byte { return writeArgsHow(fh, 0, 1, 2, []byte("CC")) }}, // declined: go-nfs writes "C"
		{procWrite, func(fh []byte) []byte { return writeArgs(fh, 1, []byte("D")) }},
		{procSetattr, func(fh []byte) []byte { return setattrSizeArgs(fh, 9) }},
		{procWrite, func(fh []byte) []byte { return writeArgs(fh, 2, []byte("E")) }},
	}
	const want = "CDEA\x00\x00BB\x00"
	for round := range 5 {
		var pending []*rpc.Pending
		for _, c := range seq {
			for _, fh := range fhs {
				p, err := n.c.Start(progNFS, 3, c.proc, c.args(fh))
				if err != nil {
					t.Fatal(err)
				}
				pending = append(pending, p)
			}
		}
		waitAllOK(t, pending, fmt.Sprintf("round %d: a call", round))
		for i := range files {
			b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%d", i)))
			if string(b) != want {
				t.Fatalf("round %d: f%d holds %q, want %q", round, i, b, want)
			}
			os.Truncate(filepath.Join(dir, fmt.Sprintf("f%d", i)), 0)
		}
	}
}

// blockingFS blocks OpenFile of one file until released.
type blockingFS struct {
	billy.Filesystem
	slow    string
	entered chan struct{}
	release chan struct{}
}

func (fs *blockingFS) OpenFile(p string, flag int, perm os.FileMode) (billy.File, error) {
	if filepath.Base(p) == fs.slow && flag&os.O_RDWR != 0 {
		fs.entered <- struct{}{}
		<-fs.release
	}
	return fs.Filesystem.OpenFile(p, flag, perm)
}

// TestSlowWriteBlocksOnlyItsFile: while a WRITE is stuck in the filesystem, the
// next WRITE of the same file waits for it, and calls for other files do not.
func TestSlowWriteBlocksOnlyItsFile(t *testing.T) {
	dir, _ := exportDir(t)
	os.WriteFile(filepath.Join(dir, "slow.bin"), nil, 0o644)
	fs := &blockingFS{Filesystem: osfs.New(dir), slow: "slow.bin", entered: make(chan struct{}, 2), release: make(chan struct{})}
	ts := startServer(t, Config{StateDir: t.TempDir()}, Export{Path: "/rekindle", FS: fs, ID: 7})
	released := false
	t.Cleanup(func() { // before the server stops, which waits for the blocked call
		if !released {
			close(fs.release)
		}
	})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	slow, hello := n.mustLookup(root, "slow.bin"), n.mustLookup(root, "hello.txt")

	first, err := n.c.Start(progNFS, 3, procWrite, writeArgs(slow, 0, []byte("first")))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-fs.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the slow WRITE never reached the filesystem")
	}
	second, err := n.c.Start(progNFS, 3, procWrite, writeArgs(slow, 0, []byte("2nd")))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := n.call(procWrite, writeArgs(hello, 0, []byte("H"))); st != nfs.NFSStatusOk {
		t.Fatalf("WRITE of another file: %v", st)
	}
	if st, data := n.read(hello, 0, 5); st != nfs.NFSStatusOk || string(data) != "Hello" {
		t.Fatalf("READ of another file: %v %q", st, data)
	}
	if first.Ready() || second.Ready() {
		t.Fatal("a WRITE of the blocked file was answered")
	}
	if len(fs.entered) != 0 {
		t.Fatal("the second WRITE of the blocked file reached the filesystem before the first finished")
	}
	close(fs.release)
	released = true
	for _, p := range []*rpc.Pending{first, second} {
		if _, err := p.Wait(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "slow.bin")); string(b) != "2ndst" {
		t.Fatalf("slow.bin holds %q, want the second write over the first", b)
	}
}

// TestFastPathThroughRealClients reads and writes through go-nfs-client and
// libnfs with and without the fast path, and compares what they see.
func TestFastPathThroughRealClients(t *testing.T) {
	requireTool(t, "nfs-cat", "nfs-cp")
	content := randomBytes(t, 3<<20+12345)
	for _, noFast := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoFastPath=%v", noFast), func(t *testing.T) {
			dir, exp := exportDir(t)
			if err := os.WriteFile(filepath.Join(dir, "big.bin"), content, 0o644); err != nil {
				t.Fatal(err)
			}
			ts := startServer(t, Config{StateDir: t.TempDir(), NoFastPath: noFast}, exp)

			// libnfs.
			if got := mustRun(t, "nfs-cat", ts.nfsURL("/rekindle/big.bin")); !bytes.Equal(got, content) {
				t.Fatalf("nfs-cat returned %d bytes, want %d identical", len(got), len(content))
			}
			local := filepath.Join(t.TempDir(), "in.bin")
			os.WriteFile(local, content[:2<<20+3], 0o644)
			mustRun(t, "nfs-cp", local, ts.nfsURL("/rekindle/session-a/copied.bin"))
			if b, _ := os.ReadFile(filepath.Join(dir, "session-a", "copied.bin")); !bytes.Equal(b, content[:2<<20+3]) {
				t.Fatalf("nfs-cp wrote %d bytes, want %d identical", len(b), 2<<20+3)
			}

			// go-nfs-client.
			client, err := nfsc.DialServiceAtPort("127.0.0.1", ts.port())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			m := &nfsc.Mount{Client: client}
			v, err := m.Mount("/rekindle", nfscrpc.NewAuthUnix("test", 0, 0).Auth())
			if err != nil {
				t.Fatal(err)
			}
			f, err := v.Open("big.bin")
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			var got []byte
			for off := int64(0); ; {
				n, err := f.ReadAt(buf, off)
				got = append(got, buf[:n]...)
				off += int64(n)
				if err != nil || n == 0 {
					break
				}
			}
			if !bytes.Equal(got, content) {
				t.Fatalf("go-nfs-client read %d bytes, want %d identical", len(got), len(content))
			}
			w, err := v.OpenFile("session-b/written.bin", 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(content[:1<<20+5]); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "session-b", "written.bin")); !bytes.Equal(b, content[:1<<20+5]) {
				t.Fatalf("go-nfs-client wrote %d bytes, want %d identical", len(b), 1<<20+5)
			}
		})
	}
}
