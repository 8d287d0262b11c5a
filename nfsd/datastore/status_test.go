package datastore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// inMountNamespace re-runs the calling test in a private mount namespace
// (unshare -m) and reports whether the caller is that re-run, which may mount
// what it likes. CI and developers run the suite as root.
func inMountNamespace(t *testing.T) bool {
	if os.Getenv("REKINDLE_TEST_MOUNTNS") == "1" {
		return true
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private",
		os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "REKINDLE_TEST_MOUNTNS=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a private mount namespace:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("the test in a private mount namespace failed (unshare -m needs root): %v", err)
	}
	return false
}

// NFS3 statuses and procedures the test names.
const (
	nfsROFS    = 30
	nfsNoSpc   = 28
	nfsFBig    = 27
	nfsXDev    = 18
	nfsNotSupp = 10004

	procWrite   = 7
	procCreate  = 8
	procSymlink = 10
	procRename  = 14
	procCommit  = 21
)

func createArgs(dir []byte, name string) []byte {
	e := &rpc.Encoder{}
	e.Opaque(dir)
	e.String(name)
	e.Uint32(1)              // GUARDED
	e.Raw(make([]byte, 4*6)) // sattr3: nothing set
	return e.Bytes()
}

// TestStatusesSayWhatFailed: a failed call answers with the status of what
// went wrong, as a real NFS server would, not a guess.
func TestStatusesSayWhatFailed(t *testing.T) {
	if !inMountNamespace(t) {
		return
	}
	e := newEnv(t, "")
	e.stop()
	// The state folder (session overlays) on a small disk of its own.
	if err := syscall.Mount("tmpfs", e.state, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(e.state, syscall.MNT_DETACH) })
	e.start()
	ctx := context.Background()
	sa, err := e.svc.Publish(ctx, PublishRequest{VMs: []PublishVM{{VM: "web01"}}})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := e.svc.Publish(ctx, PublishRequest{VMs: []PublishVM{{VM: "web01"}}})
	if err != nil {
		t.Fatal(err)
	}
	c := dialFrom(t, "127.0.0.1", e.svc.NFSAddr())
	_, aRoot := c.mount("/rekindle/" + sa.ID)
	_, bRoot := c.mount("/rekindle/" + sb.ID)
	aVM := mustLookupPath(t, c, aRoot, "web01")
	bVM := mustLookupPath(t, c, bRoot, "web01")
	vmx := mustLookupPath(t, c, aVM, "web01.vmx")

	// RENAME from one session into another: two filesystems.
	args := append(append([]byte{}, dirOp(aVM, "web01.vmx")...), dirOp(bVM, "stolen.vmx")...)
	if st, _ := c.nfs3(procRename, args); st != nfsXDev {
		t.Errorf("RENAME across sessions: %d, want NFS3ERR_XDEV (18)", st)
	}
	// SYMLINK: the overlay makes no links.
	s := &rpc.Encoder{}
	s.Raw(dirOp(aVM, "link"))
	s.Raw(make([]byte, 24))
	s.String("web01.vmx")
	if st, _ := c.nfs3(procSymlink, s.Bytes()); st != nfsNotSupp {
		t.Errorf("SYMLINK: %d, want NFS3ERR_NOTSUPP (10004)", st)
	}
	// WRITE past the largest offset a file can have.
	w := &rpc.Encoder{}
	w.Opaque(vmx)
	w.Uint64(1<<63 - 1)
	w.Uint32(2)
	w.Uint32(2)
	w.Opaque([]byte("xx"))
	if st, _ := c.nfs3(procWrite, w.Bytes()); st != nfsFBig {
		t.Errorf("WRITE at 2^63-1: %d, want NFS3ERR_FBIG (27)", st)
	}
	// COMMIT on the read-only export of restore points.
	st, points := c.mount("/points")
	if st != 0 {
		t.Fatalf("MNT /points: %d", st)
	}
	pvmx := mustLookupPath(t, c, mustLookupPath(t, c, mustLookupPath(t, c, points, "web01"), e.point.ID), "web01.vmx")
	cm := &rpc.Encoder{}
	cm.Opaque(pvmx)
	cm.Uint64(0)
	cm.Uint32(0)
	if st, _ := c.nfs3(procCommit, cm.Bytes()); st != nfsROFS {
		t.Errorf("COMMIT on /points: %d, want NFS3ERR_ROFS (30)", st)
	}

	// CREATE on a full disk.
	filler := filepath.Join(e.state, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	// The session's log has zeros written ahead of its records (64 KiB
	// or more), room for a few hundred CREATEs more: create until one
	// finds no room.
	const tries = 2000
	failed := ""
	for i := 0; i < tries && failed == ""; i++ {
		name := fmt.Sprintf("new%04d", i)
		switch st, _ := c.nfs3(procCreate, createArgs(aVM, name)); st {
		case 0:
		case nfsNoSpc:
			failed = name
		default:
			t.Fatalf("CREATE on a full disk: %d, want NFS3ERR_NOSPC (28)", st)
		}
	}
	if failed == "" {
		t.Fatalf("%d CREATEs on a full disk all succeeded", tries)
	}
	// Freed space makes the same call succeed.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.nfs3(procCreate, createArgs(aVM, failed)); st != 0 {
		t.Errorf("CREATE %s after space was freed: %d, want OK", failed, st)
	}
}

func dirOp(dir []byte, name string) []byte {
	e := &rpc.Encoder{}
	e.Opaque(dir)
	e.String(name)
	return e.Bytes()
}
