package nfsd

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"

	"github.com/rekindle/rekindle/nfsd/portmap"
	"github.com/rekindle/rekindle/nfsd/rpc"
)

// FuzzFront drives the whole front with a client's byte stream: the record
// reader (marks, fragments, limits), the dispatcher, MOUNT, the portmapper,
// the fast path and go-nfs behind the pipes, on a connection of an admitted
// client. Whatever the bytes, nothing may panic, the connection must end once
// the client hangs up, and every byte of record memory must be given back.
func FuzzFront(f *testing.F) {
	// A real folder: memfs would fill the gap of a far WRITE in memory.
	fs := osfs.New(f.TempDir())
	fs.MkdirAll("/dir", 0o755)
	w, _ := fs.Create("/dir/file")
	w.Write([]byte("data"))
	w.Close()
	ts := startServer(f, Config{StateDir: f.TempDir(), Limits: Limits{MaxFragments: 64, RecordTimeout: 5 * time.Second}},
		Export{Path: "/x", FS: fs, ID: 7})
	exp := ts.exportByID(7)
	root, _ := exp.fileID(nil)
	file, _ := exp.fileID([]string{"dir", "file"})
	rootFH, fileFH := encodeHandle(7, root), encodeHandle(7, file)
	call := func(xid, prog, vers, proc uint32, args []byte) []byte {
		return rpc.Frame(rpc.CallRecord(xid, prog, vers, proc, rpc.Auth{Flavor: rpc.AuthUnix, Body: rpc.UnixCredBody(rpc.UnixCred{MachineName: "fuzz"})}, args))
	}
	mnt := &rpc.Encoder{}
	mnt.String("/x")
	getport := &rpc.Encoder{}
	for _, v := range []uint32{progNFS, 3, portmap.ProtoTCP, 0} {
		getport.Uint32(v)
	}
	f.Add(call(1, progNFS, 3, procNull, nil))
	f.Add(append(call(1, progMount, 3, mountMnt, mnt.Bytes()), call(2, progMount, 3, mountExport, nil)...))
	f.Add(call(3, portmap.Prog, 2, 3, getport.Bytes()))
	f.Add(call(4, portmap.Prog, 3, 4, nil))
	f.Add(append(call(5, progNFS, 3, procGetattr, handleArg(rootFH)), call(6, progNFS, 3, procRead, readArgs(fileFH, 0, 4096))...))
	f.Add(call(7, progNFS, 3, procWrite, writeArgs(fileFH, 1, []byte("xyz"))))
	f.Add(append(call(8, progNFS, 3, procLookup, dirOpArgs(rootFH, "dir")), call(9, progNFS, 3, procWrite, writeArgs(fileFH, 0, []byte("a")))...))
	// A call in two fragments, one in many, a partial record, garbage.
	c := call(10, progNFS, 3, procNull, nil)[4:]
	f.Add(append(append([]byte{0, 0, 0, 8}, c[:8]...), append([]byte{0x80, 0, 0, byte(len(c) - 8)}, c[8:]...)...))
	var many []byte
	for i, b := range c {
		m := byte(0)
		if i == len(c)-1 {
			m = 0x80
		}
		many = append(many, m, 0, 0, 1, b)
	}
	f.Add(many)
	f.Add([]byte{0x80, 0x10, 0, 0, 1, 2, 3})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	client := netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		c := ts.newClientConn(a)
		c.client, c.local = client, client
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{})
		go func() { c.serve(ctx); close(done) }()
		go io.Copy(io.Discard, b)
		b.SetWriteDeadline(time.Now().Add(10 * time.Second))
		b.Write(in)
		b.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("connection did not end within 30s of the client hanging up on %x", in)
		}
		if used := ts.budget.used.Load(); used != 0 {
			t.Fatalf("%d bytes of record memory still charged after the connection ended", used)
		}
	})
}
