package nfsd

import (
	"net/netip"
	"testing"

	"github.com/go-git/go-billy/v5/memfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// FuzzNFSCall feeds arbitrary arguments to what the front decodes itself before
// go-nfs sees a call: NFS arguments (handles, names, lengths), the access checks
// that resolve them, MOUNT calls, and the reply inspection; and READ and WRITE
// arguments to the fast path, whose replies must be well formed. None of it may
// panic.
func FuzzNFSCall(f *testing.F) {
	fs := memfs.New()
	fs.MkdirAll("/dir/sub", 0o755)
	w, _ := fs.Create("/dir/file")
	w.Write([]byte("data"))
	w.Close()
	s, err := New(Config{Listen: "127.0.0.1:0", StateDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	if err := s.AddExport(Export{Path: "/x", FS: fs, ID: 7}); err != nil {
		f.Fatal(err)
	}
	s.SetSubtreeAllow("/x", "/dir/sub", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	exp := s.exportByID(7)
	root, _ := exp.fileID(nil)
	dir, _ := exp.fileID([]string{"dir"})
	file, _ := exp.fileID([]string{"dir", "file"})
	rootFH, dirFH, fileFH := encodeHandle(7, root), encodeHandle(7, dir), encodeHandle(7, file)

	f.Add(uint32(procGetattr), handleArg(rootFH))
	f.Add(uint32(procSetattr), setattrArgs(fileFH, u32(0o600), u32(0)))
	f.Add(uint32(procCreate), guardedCreateArgs(dirFH, "new"))
	f.Add(uint32(procAccess), append(handleArg(fileFH), 0, 0, 0, 0x3f))
	f.Add(uint32(procRemove), dirOpArgs(dirFH, "file"))
	f.Add(uint32(procLookup), dirOpArgs(dirFH, "file"))
	f.Add(uint32(procLookup), dirOpArgs(dirFH, ".."))
	f.Add(uint32(procLookup), dirOpArgs(dirFH, "sub"))
	f.Add(uint32(procRead), readArgs(dirFH, 0, 1<<30))
	f.Add(uint32(procWrite), writeArgs(rootFH, 0, []byte("abc")))
	f.Add(uint32(procRename), append(dirOpArgs(rootFH, "a"), dirOpArgs(dirFH, "b")...))
	f.Add(uint32(procLink), append(handleArg(dirFH), dirOpArgs(rootFH, "l")...))
	f.Add(uint32(procSymlink), append(append(dirOpArgs(rootFH, "s"), make([]byte, 24)...), 0, 0, 0, 1, 'x', 0, 0, 0))
	f.Add(uint32(procMnt()), []byte{0, 0, 0, 6, '/', 'x', '/', 'd', 'i', 'r', 0, 0})
	f.Add(uint32(procRead), readArgs(fileFH, 1, 4096))
	f.Add(uint32(procRead), readArgs(fileFH, 4, 0))
	f.Add(uint32(procRead), readArgs(fileFH, 0, 7)[:30])
	f.Add(uint32(procWrite), writeArgs(fileFH, 2, []byte("xyz")))
	f.Add(uint32(procWrite), writeArgsHow(fileFH, 0, 5, 2, []byte("abc")))
	f.Add(uint32(procWrite), writeArgsHow(fileFH, 0, 3, 9, []byte("abc")))
	f.Add(uint32(procWrite), writeArgs(dirFH, 0, []byte("x")))
	client := netip.MustParseAddr("127.0.0.1")
	user := rpc.Auth{Flavor: rpc.AuthUnix, Body: rpc.UnixCredBody(rpc.UnixCred{UID: 1000, GID: 1000, GIDs: []uint32{10}})}
	f.Fuzz(func(t *testing.T, proc uint32, args []byte) {
		if proc <= procCommit {
			a, err := parseNFSArgs(proc, args)
			if err == nil {
				s.checkNFS(client, user, proc, &a)
				if a.readCount >= 0 && a.readCount+4 > len(args) {
					t.Fatalf("READ count offset %d outside %d bytes of arguments", a.readCount, len(args))
				}
			}
			inspectReply(proc, append([]byte{}, args...))
		}
		if proc == procRead || proc == procWrite {
			fuzzFastPath(t, s, proc, args)
		}
		s.handleMount(client, rpc.Call{XID: 1, Prog: progMount, Vers: 1 + proc%3, Proc: proc % 7, Args: args})
	})
}

func procMnt() uint32 { return mountMnt }

// fuzzFastPath runs the fast path on args, if it takes them, and checks the
// reply.
func fuzzFastPath(t *testing.T, s *Server, proc uint32, args []byte) {
	a, ok := parseIOArgs(proc, args)
	if !ok {
		return
	}
	if proc == procRead && a.count > MaxIO {
		t.Fatalf("READ count %d above MaxIO", a.count)
	}
	if proc == procWrite && int64(len(a.data)) != int64(a.count) {
		t.Fatalf("WRITE of %d bytes taken with count %d", len(a.data), a.count)
	}
	if proc == procWrite && a.offset > 1<<20 && a.offset < 1<<63 {
		return // memfs would fill the gap of a far WRITE in memory
	}
	var r fastReply
	if proc == procRead {
		r = s.fastRead(0x55, &a)
	} else {
		r = s.fastWrite(0x55, &a)
	}
	defer r.free()
	rec := append(append(append([]byte{}, r.head[4:]...), r.data...), r.pad...)
	if len(rec)%4 != 0 {
		t.Fatalf("reply of %d bytes is not XDR-aligned", len(rec))
	}
	reply, err := rpc.ParseReply(rec)
	if err != nil || reply.XID != 0x55 || !reply.Accepted || reply.Stat != rpc.Success {
		t.Fatalf("fast-path reply %x: %+v, %v", rec, reply, err)
	}
	d := rpc.NewDecoder(reply.Body)
	st := d.Uint32()
	switch {
	case st != 0:
		d.Fixed(errBodyLen[proc])
	case proc == procRead:
		if d.Bool() {
			d.Fixed(fattr3Len)
		}
		n := d.Uint32()
		d.Bool()
		if data := d.Opaque(MaxIO); d.Err() == nil && uint32(len(data)) != n {
			t.Fatalf("READ reply counts %d bytes and carries %d", n, len(data))
		}
	default:
		if d.Bool() {
			d.Fixed(wccAttrLen)
		}
		if d.Bool() {
			d.Fixed(fattr3Len)
		}
		if n := d.Uint32(); n != a.count {
			t.Fatalf("WRITE reply counts %d bytes of %d", n, a.count)
		}
		d.Uint32()
		d.Fixed(8)
	}
	if d.Err() != nil || d.Remaining() != 0 {
		t.Fatalf("fast-path reply body %x: %v, %d bytes left", reply.Body, d.Err(), d.Remaining())
	}
}
