package nfsd

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// as is an nfsClient whose calls carry an AUTH_SYS credential of its own.
type as struct {
	*nfsClient
	cred rpc.Auth
}

func (n *nfsClient) as(uid, gid uint32, gids ...uint32) *as {
	return &as{n, rpc.Auth{Flavor: rpc.AuthUnix, Body: rpc.UnixCredBody(rpc.UnixCred{MachineName: "host", UID: uid, GID: gid, GIDs: gids})}}
}

func (a *as) call(proc uint32, args []byte) (nfs.NFSStatus, *rpc.Decoder) {
	a.t.Helper()
	p, err := a.c.StartWithCred(progNFS, 3, proc, a.cred, args)
	if err != nil {
		a.t.Fatal(err)
	}
	r, err := p.Wait(testCtx(a.t))
	if err != nil || !r.Accepted || r.Stat != rpc.Success {
		a.t.Fatalf("NFS %s: %+v %v", nfsProcName(proc), r, err)
	}
	d := rpc.NewDecoder(r.Body)
	return nfs.NFSStatus(d.Uint32()), d
}

func (a *as) lookup(dir []byte, name string) (nfs.NFSStatus, []byte) {
	st, d := a.call(procLookup, dirOpArgs(dir, name))
	if st != nfs.NFSStatusOk {
		return st, nil
	}
	return st, d.Opaque(64)
}

// access asks ACCESS for want and returns the bits granted.
func (a *as) access(fh []byte, want uint32) uint32 {
	a.t.Helper()
	e := &rpc.Encoder{}
	e.Opaque(fh)
	e.Uint32(want)
	st, d := a.call(procAccess, e.Bytes())
	if st != nfs.NFSStatusOk {
		a.t.Fatalf("ACCESS: %v", st)
	}
	if d.Bool() {
		d.Fixed(fattr3Len)
	}
	return d.Uint32()
}

func setattrArgs(fh []byte, mode, uid *uint32) []byte {
	e := &rpc.Encoder{}
	e.Opaque(fh)
	for _, v := range []*uint32{mode, uid, nil} {
		if v != nil {
			e.Bool(true)
			e.Uint32(*v)
		} else {
			e.Bool(false)
		}
	}
	e.Bool(false) // size
	e.Uint32(0)   // atime
	e.Uint32(0)   // mtime
	e.Bool(false) // no guard
	return e.Bytes()
}

func u32(v uint32) *uint32 { return &v }

// identityTree makes a folder whose modes say who may do what.
func identityTree(t *testing.T) (string, Export) {
	dir := t.TempDir()
	mk := func(name string, mode os.FileMode, uid, gid int, data string) {
		p := filepath.Join(dir, name)
		if data == "" {
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("locked", 0, 0, 0, "")                     // nobody but root
	mk("shared", 0o777, 0, 0, "")                 // anyone may create
	mk("tmp", 0o777|os.ModeSticky, 0, 0, "")      // anyone, but only their own entries
	mk("tmp/roots", 0o666, 0, 0, "root's file\n") // in the sticky folder
	mk("secret", 0o600, 0, 0, "root only\n")      // root's
	mk("team", 0o640, 0, 1234, "team only\n")     // group 1234 may read
	mk("mine", 0o600, 1000, 1000, "uid 1000's\n") // uid 1000's
	return dir, Export{Path: "/rekindle", FS: osfs.New(dir), ID: 7}
}

func diskOwner(t *testing.T, p string) (uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// TestModeBitsBindEveryUidButRoot: AUTH_SYS identities count, as on any NFS
// server: mode bits for users and groups, root for root, chown for root only.
func TestModeBitsBindEveryUidButRoot(t *testing.T) {
	requireTool(t, "nfs-cp", "nfs-cat")
	dir, exp := identityTree(t)
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	nobody, alice, root0 := n.as(Nobody, Nobody), n.as(1000, 1000), n.as(0, 0)
	teamMate := n.as(2000, 2000, 1234)
	locked := n.mustLookup(root, "locked")
	shared := n.mustLookup(root, "shared")
	tmp := n.mustLookup(root, "tmp")
	secret := n.mustLookup(root, "secret")
	team := n.mustLookup(root, "team")
	mine := n.mustLookup(root, "mine")

	// A mode-000 folder: nobody may create or look in it; root may.
	if st, _ := nobody.call(procCreate, createArgs(locked, "x")); st != nfs.NFSStatusAccess {
		t.Errorf("uid 65534 CREATE in a mode-000 folder: %v, want ACCES", st)
	}
	if st, _ := nobody.lookup(locked, "anything"); st != nfs.NFSStatusAccess {
		t.Errorf("uid 65534 LOOKUP in a mode-000 folder: %v, want ACCES", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "locked", "x")); err == nil {
		t.Error("a refused CREATE made the file")
	}
	if st, _ := root0.call(procCreate, createArgs(locked, "byroot")); st != nfs.NFSStatusOk {
		t.Errorf("root CREATE in a mode-000 folder: %v, want OK", st)
	}

	// Files: owner, group and other bits, READ and WRITE (the fast path's).
	if st, _ := nobody.call(procRead, readArgs(secret, 0, 100)); st != nfs.NFSStatusAccess {
		t.Errorf("uid 65534 READ of a 0600 root file: %v, want ACCES", st)
	}
	if st, _ := nobody.call(procWrite, writeArgs(secret, 0, []byte("pwned"))); st != nfs.NFSStatusAccess {
		t.Errorf("uid 65534 WRITE of a 0600 root file: %v, want ACCES", st)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "secret")); string(b) != "root only\n" {
		t.Errorf("a refused WRITE changed the file: %q", b)
	}
	if st, _ := teamMate.call(procRead, readArgs(team, 0, 100)); st != nfs.NFSStatusOk {
		t.Errorf("a member of group 1234 (auxiliary) READ of a 0640 :1234 file: %v, want OK", st)
	}
	if st, _ := alice.call(procRead, readArgs(team, 0, 100)); st != nfs.NFSStatusAccess {
		t.Errorf("a non-member READ of a 0640 :1234 file: %v, want ACCES", st)
	}
	if st, _ := alice.call(procWrite, writeArgs(mine, 0, []byte("UID"))); st != nfs.NFSStatusOk {
		t.Errorf("the owner WRITE of its 0600 file: %v, want OK", st)
	}

	// Owners: only root gives a file away; the owner changes its mode.
	if st, _ := nobody.call(procSetattr, setattrArgs(secret, nil, u32(Nobody))); st != nfs.NFSStatusPerm {
		t.Errorf("uid 65534 chown of root's file to itself: %v, want PERM", st)
	}
	if st, _ := alice.call(procSetattr, setattrArgs(mine, nil, u32(0))); st != nfs.NFSStatusPerm {
		t.Errorf("uid 1000 chown of its file to root: %v, want PERM", st)
	}
	if uid, _ := diskOwner(t, filepath.Join(dir, "secret")); uid != 0 {
		t.Errorf("a refused chown changed the owner to %d", uid)
	}
	if st, _ := nobody.call(procSetattr, setattrArgs(secret, u32(0o666), nil)); st != nfs.NFSStatusPerm {
		t.Errorf("uid 65534 chmod of root's file: %v, want PERM", st)
	}
	if st, _ := alice.call(procSetattr, setattrArgs(mine, u32(0o640), nil)); st != nfs.NFSStatusOk {
		t.Errorf("the owner chmod of its file: %v, want OK", st)
	}
	if st, _ := root0.call(procSetattr, setattrArgs(mine, nil, u32(2000))); st != nfs.NFSStatusOk {
		t.Errorf("root chown: %v, want OK", st)
	}

	// A new file is its creator's.
	if st, _ := alice.call(procCreate, createArgs(shared, "alices")); st != nfs.NFSStatusOk {
		t.Fatalf("uid 1000 CREATE in a 0777 folder: %v", st)
	}
	if uid, gid := diskOwner(t, filepath.Join(dir, "shared", "alices")); uid != 1000 || gid != 1000 {
		t.Errorf("uid 1000's new file belongs to %d:%d, want 1000:1000", uid, gid)
	}
	// In a sticky folder, only one's own entries go.
	if st, _ := alice.call(procRemove, dirOpArgs(tmp, "roots")); st != nfs.NFSStatusAccess {
		t.Errorf("uid 1000 REMOVE of root's file in a sticky folder: %v, want ACCES", st)
	}

	// ACCESS tells the truth.
	const rw = access3Read | access3Modify | access3Extend
	if got := nobody.access(secret, rw|access3Execute); got != 0 {
		t.Errorf("uid 65534 ACCESS of a 0600 root file: %#x, want 0", got)
	}
	if got := root0.access(secret, rw|access3Execute); got != rw {
		t.Errorf("root ACCESS of a 0600 file: %#x, want %#x (no execute)", got, rw)
	}
	if got := teamMate.access(team, rw); got != access3Read {
		t.Errorf("group member ACCESS of a 0640 file: %#x, want READ", got)
	}
	if got := nobody.access(locked, access3Read|access3Lookup|access3Modify); got != 0 {
		t.Errorf("uid 65534 ACCESS of a mode-000 folder: %#x, want 0", got)
	}

	// A real client with a chosen uid: libnfs's uid= and gid=.
	local := filepath.Join(t.TempDir(), "f")
	os.WriteFile(local, []byte("data"), 0o644)
	if _, stderr, err := run(t, "nfs-cp", local, ts.nfsURL("/rekindle/locked/fromnobody")+"&uid=65534&gid=65534"); err == nil {
		t.Errorf("nfs-cp as uid 65534 into a mode-000 folder succeeded")
	} else {
		t.Logf("nfs-cp as uid 65534 refused: %s", stderr)
	}
	if out, _, err := run(t, "nfs-cat", ts.nfsURL("/rekindle/secret")+"&uid=65534&gid=65534"); err == nil {
		t.Errorf("nfs-cat as uid 65534 of a 0600 root file: %q", out)
	}
	mustRun(t, "nfs-cp", local, ts.nfsURL("/rekindle/locked/fromroot")+"&uid=0&gid=0")
}

// TestSquash: squashed clients are nobody, per server and per subtree.
func TestSquash(t *testing.T) {
	_, exp := identityTree(t)
	ts := startServer(t, Config{StateDir: t.TempDir(), Squash: SquashRoot}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	locked := n.mustLookup(root, "locked")
	if st, _ := n.as(0, 0).call(procCreate, createArgs(locked, "x")); st != nfs.NFSStatusAccess {
		t.Errorf("squashed root CREATE in a mode-000 folder: %v, want ACCES", st)
	}

	_, exp2 := identityTree(t)
	ts2 := startServer(t, Config{StateDir: t.TempDir()}, exp2)
	if err := ts2.SetSubtreeSquash("/rekindle", "/shared", SquashAll); err != nil {
		t.Fatal(err)
	}
	n2 := newNFSClient(t, ts2.Addr())
	root2 := n2.mustMount("/rekindle")
	shared := n2.mustLookup(root2, "shared")
	if st, _ := n2.as(1000, 1000).call(procCreate, createArgs(shared, "f")); st != nfs.NFSStatusOk {
		t.Fatalf("CREATE in a squash-all subtree: %v", st)
	}
	// The new file is nobody's, whoever sent the call.
	e := &rpc.Encoder{}
	e.Opaque(n2.mustLookup(shared, "f"))
	st, d := n2.call(procGetattr, e.Bytes())
	if st != nfs.NFSStatusOk {
		t.Fatal(st)
	}
	attrs := d.Fixed(fattr3Len)
	if uid := binary.BigEndian.Uint32(attrs[12:16]); uid != Nobody {
		t.Errorf("a file made in a squash-all subtree belongs to %d, want %d", uid, Nobody)
	}
	// Outside the subtree root is root.
	if st, _ := n2.as(0, 0).call(procCreate, createArgs(n2.mustLookup(root2, "locked"), "x")); st != nfs.NFSStatusOk {
		t.Errorf("root outside the squashed subtree: %v, want OK", st)
	}
}

// TestIdentityOfRootShortcut: the quick reading of root credentials agrees
// with the full one.
func TestIdentityOfRootShortcut(t *testing.T) {
	for _, name := range []string{"", "a", "esx", "esx1", "esx01-host.example"} {
		for _, uid := range []uint32{0, 1, 1000, Nobody} {
			u := rpc.UnixCred{MachineName: name, UID: uid, GID: 7, GIDs: []uint32{1, 2}}
			id := identityOf(rpc.Auth{Flavor: rpc.AuthUnix, Body: rpc.UnixCredBody(u)}, SquashNone)
			if id.uid != uid || id.gid != 7 || (uid != 0 && len(id.gids) != 2) {
				t.Errorf("name %q uid %d: %+v", name, uid, id)
			}
			if sq := identityOf(rpc.Auth{Flavor: rpc.AuthUnix, Body: rpc.UnixCredBody(u)}, SquashRoot); uid == 0 && sq.uid != Nobody {
				t.Errorf("squashed root: %+v", sq)
			}
		}
	}
	if id := identityOf(rpc.Auth{Flavor: rpc.AuthNone}, SquashNone); id.uid != Nobody {
		t.Errorf("AUTH_NONE: %+v, want nobody", id)
	}
}
