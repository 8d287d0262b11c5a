package nfsd

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"net/netip"

	"github.com/go-git/go-billy/v5/osfs"

	"github.com/rekindle/rekindle/nfsd/nfstest"
)

// run runs a real client with a deadline: a hang is a failure, not a stuck test.
func run(t *testing.T, name string, args ...string) (stdout []byte, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: hung for 60s (stderr: %s)", name, strings.Join(args, " "), errb.String())
	}
	return out.Bytes(), errb.String(), err
}

func mustRun(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, stderr, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr: %s", name, strings.Join(args, " "), err, stderr)
	}
	return out
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// exportDir makes a folder with a few files and exports it at /rekindle.
func exportDir(t *testing.T) (string, Export) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"hello.txt":         "hello, world\n",
		"sub/inner.txt":     "inside\n",
		"session-a/vm.vmx":  "config\n",
		"session-b/vm.vmx":  "other config\n",
		"session-b/disk.fl": "disk\n",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, Export{Path: "/rekindle", FS: osfs.New(dir), ID: 7}
}

func TestNfsLsListsExport(t *testing.T) {
	requireTool(t, "nfs-ls")
	_, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	out := string(mustRun(t, "nfs-ls", ts.nfsURL("/rekindle")))
	for _, want := range []string{"hello.txt", "sub", "session-a", "session-b"} {
		if !strings.Contains(out, want) {
			t.Errorf("nfs-ls output lacks %q:\n%s", want, out)
		}
	}
	out = string(mustRun(t, "nfs-ls", ts.nfsURL("/rekindle/sub")))
	if !strings.Contains(out, "inner.txt") {
		t.Errorf("nfs-ls of a subdirectory mount lacks inner.txt:\n%s", out)
	}
}

func TestNfsCatLargeFile(t *testing.T) {
	requireTool(t, "nfs-cat")
	dir, exp := exportDir(t)
	want := randomBytes(t, 6<<20+12345)
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	got := mustRun(t, "nfs-cat", ts.nfsURL("/rekindle/big.bin"))
	if !bytes.Equal(got, want) {
		t.Fatalf("nfs-cat returned %d bytes, want %d identical bytes", len(got), len(want))
	}
}

func TestNfsCpRoundTrip(t *testing.T) {
	requireTool(t, "nfs-cp", "nfs-cat")
	dir, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	want := randomBytes(t, 3<<20+777)
	local := filepath.Join(t.TempDir(), "in.bin")
	if err := os.WriteFile(local, want, 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "nfs-cp", local, ts.nfsURL("/rekindle/session-a/copied.bin"))
	onDisk, err := os.ReadFile(filepath.Join(dir, "session-a", "copied.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, want) {
		t.Fatalf("file written through nfs-cp has %d bytes on disk, want %d identical", len(onDisk), len(want))
	}
	got := mustRun(t, "nfs-cat", ts.nfsURL("/rekindle/session-a/copied.bin"))
	if !bytes.Equal(got, want) {
		t.Fatalf("reading back gave %d bytes, want %d identical", len(got), len(want))
	}
}

func TestNfsLsRefusedClient(t *testing.T) {
	requireTool(t, "nfs-ls")
	_, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir(), Allow: []netip.Prefix{mustPrefix("10.0.0.0/8")}}, exp)
	_, stderr, err := run(t, "nfs-ls", ts.nfsURL("/rekindle"))
	if err == nil {
		t.Fatal("nfs-ls succeeded for a client outside the allow-list")
	}
	// The server closes the connection of a client outside every allow-list
	// at once: libnfs sees it drop before any reply.
	if !strings.Contains(strings.ToLower(stderr), "mount") && !strings.Contains(strings.ToLower(stderr), "socket") {
		t.Fatalf("nfs-ls failed without saying it could not mount: %s", stderr)
	}
}

func TestNfsLsRefusedByExportAllowList(t *testing.T) {
	requireTool(t, "nfs-ls")
	_, exp := exportDir(t)
	exp.Allow = []netip.Prefix{mustPrefix("192.0.2.0/24")}
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	_, stderr, err := run(t, "nfs-ls", ts.nfsURL("/rekindle"))
	if err == nil {
		t.Fatal("nfs-ls succeeded for a client outside the export's allow-list")
	}
	// The server closes the connection of a client outside every allow-list
	// at once: libnfs sees it drop before any reply.
	if !strings.Contains(strings.ToLower(stderr), "mount") && !strings.Contains(strings.ToLower(stderr), "socket") {
		t.Fatalf("nfs-ls failed without saying it could not mount: %s", stderr)
	}
	if err := ts.SetExportAllow("/rekindle", nil); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "nfs-ls", ts.nfsURL("/rekindle"))
}

// bindPortmap starts a server whose portmapper owns 127.0.0.1:111, as QEMU needs.
func bindPortmap(t *testing.T, cfg Config, exports ...Export) *testServer {
	t.Helper()
	nfstest.LockPortmap(t, 5*time.Minute)
	l, err := net.Listen("tcp", "127.0.0.1:111")
	if err != nil {
		t.Fatalf("port 111 is taken or needs root (%v): run the tests in a private network namespace: unshare -n sh -c 'ip link set lo up && exec go test ./nfsd/...'", err)
	}
	l.Close()
	cfg.PortmapAddr = "127.0.0.1:111"
	return startServer(t, cfg, exports...)
}

func TestQemuImgThroughPortmapper(t *testing.T) {
	requireTool(t, "qemu-img")
	dir, exp := exportDir(t)
	disk := randomBytes(t, 4<<20)
	if err := os.WriteFile(filepath.Join(dir, "session-a", "disk-flat.vmdk"), disk, 0o644); err != nil {
		t.Fatal(err)
	}
	bindPortmap(t, Config{StateDir: t.TempDir()}, exp)

	url := "nfs://127.0.0.1/rekindle/session-a/disk-flat.vmdk"
	info := string(mustRun(t, "qemu-img", "info", "-f", "raw", url))
	if !strings.Contains(info, "4 MiB") && !strings.Contains(info, "4194304") {
		t.Errorf("qemu-img info does not show the disk size:\n%s", info)
	}

	out := filepath.Join(t.TempDir(), "out.raw")
	mustRun(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, disk) {
		t.Fatalf("qemu-img convert copied %d bytes, want %d identical", len(got), len(disk))
	}

	// And the other way: QEMU writes an image into the export.
	src := filepath.Join(t.TempDir(), "src.raw")
	written := randomBytes(t, 2<<20)
	if err := os.WriteFile(src, written, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "session-a", "target.raw"), make([]byte, len(written)), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, "nfs://127.0.0.1/rekindle/session-a/target.raw")
	onDisk, err := os.ReadFile(filepath.Join(dir, "session-a", "target.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, written) {
		t.Fatal("image written by qemu-img through NFS differs on disk")
	}
}
