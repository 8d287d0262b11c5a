package datastore

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/nfsd/nfstest"
	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// mountSession mounts a session over NFS as ESXi does: AUTH_SYS as root,
// through the portmapper.
func mountSession(t *testing.T, id string) *nfsc.Target {
	t.Helper()
	m := nfstest.DialMount(t, "127.0.0.1")
	v, err := m.Mount("/rekindle/"+id, rpc.NewAuthUnix("esx01", 0, 0).Auth())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func readAll(t *testing.T, v *nfsc.Target, path string) []byte {
	t.Helper()
	f, err := v.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

func write(t *testing.T, v *nfsc.Target, path string, off int64, data []byte) {
	t.Helper()
	f, err := v.OpenFile(path, 0o644)
	if err != nil {
		t.Fatalf("open %s for writing: %v", path, err)
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Write(data); err != nil || n != len(data) {
		t.Fatalf("write %s: %d %v", path, n, err)
	}
}

// TestESXiFileSequence replays what ESXi does in a VM folder when it powers
// a VM on and runs it, through a real NFS client.
func TestESXiFileSequence(t *testing.T) {
	e := newEnv(t, "127.0.0.1:111")
	info, err := e.svc.Publish(context.Background(), PublishRequest{VMs: []PublishVM{{VM: "web01"}}})
	if err != nil {
		t.Fatal(err)
	}
	v := mountSession(t, info.ID)
	origVMX := readAll(t, v, "web01/web01.vmx")

	// Lock files come and go.
	if _, err := v.Create("web01/.lck-3f00000000000000", 0o644); err != nil {
		t.Fatalf("create lock: %v", err)
	}
	if err := v.Remove("web01/.lck-3f00000000000000"); err != nil {
		t.Fatalf("remove lock: %v", err)
	}
	if _, _, err := v.Lookup("web01/.lck-3f00000000000000"); err == nil {
		t.Fatal("removed lock file still there")
	}
	// The swap file is created, then sized to the VM's memory.
	if _, err := v.Create("web01/web01-1a2b.vswp", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.Setattr("web01/web01-1a2b.vswp", nfsc.Sattr3{Size: nfsc.SetSize{SetIt: true, Size: 64 << 20}}); err != nil {
		t.Fatalf("size the swap file: %v", err)
	}
	if fi, _, err := v.Lookup("web01/web01-1a2b.vswp"); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("swap file size: %v %v", fi, err)
	}
	// The config is rewritten as .vmx~ and renamed over .vmx.
	newVMX := append(bytes.Clone(origVMX), []byte("sched.swap.derivedName = \"web01-1a2b.vswp\"\n")...)
	if _, err := v.Create("web01/web01.vmx~", 0o644); err != nil {
		t.Fatal(err)
	}
	write(t, v, "web01/web01.vmx~", 0, newVMX)
	if err := v.Rename("web01/web01.vmx~", "web01/web01.vmx"); err != nil {
		t.Fatalf("rename .vmx~ over .vmx: %v", err)
	}
	if got := readAll(t, v, "web01/web01.vmx"); !bytes.Equal(got, newVMX) {
		t.Fatalf("vmx after rename:\n%s", got)
	}
	// The log is appended to.
	if _, err := v.Create("web01/vmware.log", 0o644); err != nil {
		t.Fatal(err)
	}
	write(t, v, "web01/vmware.log", 0, []byte("line 1\n"))
	write(t, v, "web01/vmware.log", 7, []byte("line 2\n"))
	if got := string(readAll(t, v, "web01/vmware.log")); got != "line 1\nline 2\n" {
		t.Fatalf("log: %q", got)
	}
	// The guest writes into its disk.
	block := bytes.Repeat([]byte{0x5a}, 8192)
	write(t, v, "web01/web01-flat.vmdk", 1<<20+100, block)
	disk := readAll(t, v, "web01/web01-flat.vmdk")
	want := bytes.Clone(e.extent)
	copy(want[1<<20+100:], block)
	if !bytes.Equal(disk, want) {
		t.Fatal("disk after the guest's write is not the backup plus the write")
	}
	_, diskFH, err := v.Lookup("web01/web01-flat.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	_, logFH, err := v.Lookup("web01/vmware.log") // a file the session created
	if err != nil {
		t.Fatal(err)
	}

	// Restart the server: the client's old handle still names the disk.
	e.stop()
	e.start()
	v2 := mountSession(t, info.ID)
	attr, err := v2.GetAttr(diskFH)
	if err != nil {
		t.Fatalf("handle from before the restart: %v", err)
	}
	if attr.Filesize != uint64(len(e.extent)) {
		t.Fatalf("old handle names a file of %d bytes", attr.Filesize)
	}
	if attr, err := v2.GetAttr(logFH); err != nil || attr.Filesize != 14 {
		t.Fatalf("handle of a file created in the session, after the restart: %+v %v", attr, err)
	}
	if got := readAll(t, v2, "web01/web01-flat.vmdk"); !bytes.Equal(got, want) {
		t.Fatal("disk content lost across the restart")
	}
	if got := readAll(t, v2, "web01/web01.vmx"); !bytes.Equal(got, newVMX) {
		t.Fatal("renamed vmx lost across the restart")
	}

	// Names that try to leave the folder are refused; the backup never changed.
	for _, bad := range []string{"web01/../../points/x", "../x", "web01/a\x00b"} {
		if _, err := v2.Create(bad, 0o644); err == nil {
			t.Errorf("create %q succeeded", bad)
		}
	}
	pt := e.point
	f, _ := e.svc.points.Open("/web01/" + pt.ID + "/web01.vmx")
	if b, _ := io.ReadAll(f); !bytes.Equal(b, origVMX) {
		t.Fatal("the restore point's vmx changed")
	}
	if rep, err := e.repo.Verify(context.Background(), []*repo.RestorePoint{pt}, nil); err != nil || !rep.OK() {
		t.Fatalf("verify: %v", err)
	}
}
