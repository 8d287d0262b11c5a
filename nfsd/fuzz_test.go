package nfsd

import (
	"net/netip"
	"testing"

	"github.com/go-git/go-billy/v5/memfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// FuzzNFSCall feeds arbitrary arguments to what the front decodes itself before
// go-nfs sees a call: NFS arguments (handles, names, lengths), the access checks
// that resolve them, MOUNT calls, and the reply inspection. None of it may panic.
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
	rootFH, dirFH := encodeHandle(7, root), encodeHandle(7, dir)

	f.Add(uint32(procGetattr), handleArg(rootFH))
	f.Add(uint32(procLookup), dirOpArgs(dirFH, "file"))
	f.Add(uint32(procLookup), dirOpArgs(dirFH, ".."))
	f.Add(uint32(procLookup), dirOpArgs(dirFH, "sub"))
	f.Add(uint32(procRead), readArgs(dirFH, 0, 1<<30))
	f.Add(uint32(procWrite), writeArgs(rootFH, 0, []byte("abc")))
	f.Add(uint32(procRename), append(dirOpArgs(rootFH, "a"), dirOpArgs(dirFH, "b")...))
	f.Add(uint32(procLink), append(handleArg(dirFH), dirOpArgs(rootFH, "l")...))
	f.Add(uint32(procSymlink), append(append(dirOpArgs(rootFH, "s"), make([]byte, 24)...), 0, 0, 0, 1, 'x', 0, 0, 0))
	f.Add(uint32(procMnt()), []byte{0, 0, 0, 6, '/', 'x', '/', 'd', 'i', 'r', 0, 0})
	client := netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, proc uint32, args []byte) {
		if proc <= procCommit {
			a, err := parseNFSArgs(proc, args)
			if err == nil {
				s.checkNFS(client, proc, &a)
				if a.readCount >= 0 && a.readCount+4 > len(args) {
					t.Fatalf("READ count offset %d outside %d bytes of arguments", a.readCount, len(args))
				}
			}
			inspectReply(proc, append([]byte{}, args...))
		}
		s.handleMount(client, rpc.Call{XID: 1, Prog: progMount, Vers: 1 + proc%3, Proc: proc % 7, Args: args})
	})
}

func procMnt() uint32 { return mountMnt }
