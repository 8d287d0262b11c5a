package nfsd

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// sendXID sends an NFS call with a chosen XID, as a client that sends a call
// again does, and returns the reply's results.
func sendXID(t *testing.T, c *rpc.Client, xid, proc uint32, args []byte) []byte {
	t.Helper()
	cred := rpc.Auth{Flavor: rpc.AuthUnix, Body: rpc.UnixCredBody(rpc.UnixCred{MachineName: "esx01"})}
	p, err := c.StartRecord(xid, rpc.CallRecord(xid, progNFS, 3, proc, cred, args))
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.Wait(testCtx(t))
	if err != nil {
		t.Fatalf("%s xid %#x: %v", nfsProcName(proc), xid, err)
	}
	return r.Body
}

func statusOf(body []byte) nfs.NFSStatus {
	d := rpc.NewDecoder(body)
	return nfs.NFSStatus(d.Uint32())
}

func guardedCreateArgs(dir []byte, name string) []byte {
	e := &rpc.Encoder{}
	e.Opaque(dir)
	e.String(name)
	e.Uint32(1)              // GUARDED: fails if the file exists
	e.Raw(make([]byte, 4*6)) // sattr3: nothing set
	return e.Bytes()
}

// TestCallSentAgainGetsTheFirstReply: a CREATE, REMOVE or RENAME sent again
// after a reconnect (same client, same XID, same arguments) gets the reply of
// the first, not EXIST or NOENT; a new call (new XID) runs.
func TestCallSentAgainGetsTheFirstReply(t *testing.T) {
	dir, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	sub := n.mustLookup(root, "sub")

	calls := []struct {
		name string
		proc uint32
		args []byte
		want nfs.NFSStatus // of a new call doing the same again
	}{
		{"CREATE", procCreate, guardedCreateArgs(root, "new.txt"), nfs.NFSStatusExist},
		{"RENAME", procRename, append(dirOpArgs(root, "new.txt"), dirOpArgs(sub, "moved.txt")...), nfs.NFSStatusNoEnt},
		{"REMOVE", procRemove, dirOpArgs(sub, "moved.txt"), nfs.NFSStatusNoEnt},
	}
	for i, c := range calls {
		xid := uint32(0x7000 + i)
		first := sendXID(t, dial(t, ts.Addr()), xid, c.proc, c.args)
		if st := statusOf(first); st != nfs.NFSStatusOk {
			t.Fatalf("%s: %v", c.name, st)
		}
		// The reply was lost; the client reconnects and sends the call again.
		again := sendXID(t, dial(t, ts.Addr()), xid, c.proc, c.args)
		if !bytes.Equal(again, first) {
			t.Errorf("%s sent again after a reconnect: status %v, want the first reply (OK)", c.name, statusOf(again))
		}
		// A new call with the same arguments is a new call.
		if st := statusOf(sendXID(t, dial(t, ts.Addr()), xid+0x100, c.proc, c.args)); st != c.want {
			t.Errorf("%s as a new call: %v, want %v", c.name, st, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "sub", "moved.txt")); !os.IsNotExist(err) {
		t.Errorf("after CREATE, RENAME, REMOVE: %v", err)
	}

	// The cache is bounded.
	c := dial(t, ts.Addr())
	for i := 0; i < drcEntries+50; i++ {
		sendXID(t, c, uint32(0x10000+i), procRemove, dirOpArgs(root, fmt.Sprintf("nope%d", i)))
	}
	if got := ts.drc.len(); got > drcEntries {
		t.Errorf("the duplicate request cache holds %d calls, more than %d", got, drcEntries)
	}
}

// slowCreateFS blocks Create of one name until released: a stand-in for a
// slow disk.
type slowCreateFS struct {
	billyFS
	slow    string
	entered chan struct{}
	release chan struct{}
}

func (f *slowCreateFS) Create(name string) (billyFile, error) {
	if filepath.Base(name) == f.slow {
		f.entered <- struct{}{}
		<-f.release
	}
	return f.billyFS.Create(name)
}

// TestCallSentAgainWhileAtWorkWaitsForIt: a duplicate that arrives while the
// first call is still at work gets the first call's reply once it is there,
// and the call runs once.
func TestCallSentAgainWhileAtWorkWaitsForIt(t *testing.T) {
	dir, _ := exportDir(t)
	fs := &slowCreateFS{billyFS: osfs.New(dir), slow: "slow.txt", entered: make(chan struct{}, 2), release: make(chan struct{})}
	ts := startServer(t, Config{StateDir: t.TempDir()}, Export{Path: "/rekindle", FS: fs, ID: 7})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	args := guardedCreateArgs(root, "slow.txt")
	cred := rpc.Auth{Flavor: rpc.AuthUnix, Body: rpc.UnixCredBody(rpc.UnixCred{MachineName: "esx01"})}
	const xid = 0x7777
	first, err := dial(t, ts.Addr()).StartRecord(xid, rpc.CallRecord(xid, progNFS, 3, procCreate, cred, args))
	if err != nil {
		t.Fatal(err)
	}
	<-fs.entered // the first CREATE is at work
	c2 := dial(t, ts.Addr())
	again, err := c2.StartRecord(xid, rpc.CallRecord(xid, progNFS, 3, procCreate, cred, args))
	if err != nil {
		t.Fatal(err)
	}
	// The duplicate is answered only with the first call's reply: a call
	// behind it on its connection is answered, it is not.
	if _, err := c2.Call(testCtx(t), progNFS, 3, procGetattr, handleArg(root)); err != nil {
		t.Fatal(err)
	}
	if again.Ready() {
		t.Fatal("the duplicate was answered while the first call was at work")
	}
	close(fs.release)
	r1, err := first.Wait(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := again.Wait(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if statusOf(r1.Body) != nfs.NFSStatusOk || !bytes.Equal(r1.Body, r2.Body) {
		t.Errorf("first CREATE %v, duplicate %v: want the same OK reply", statusOf(r1.Body), statusOf(r2.Body))
	}
	select {
	case <-fs.entered:
		t.Error("the duplicate ran the CREATE again")
	default:
	}
}
