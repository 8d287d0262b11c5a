package datastore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/overlay"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/nfsd/nfstest"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

type env struct {
	t       testing.TB
	repo    *repo.Repo
	cat     *catalog.Catalog
	state   string
	svc     *Service
	cancel  context.CancelFunc
	done    chan error
	point   *repo.RestorePoint
	extent  []byte // the source disk's bytes
	portmap string
	// pointsAllow, if set, is Config.PointsAllow at the next start.
	pointsAllow []netip.Prefix
}

// newEnv imports a VM into a new repository and starts a service on it.
func newEnv(t testing.TB, portmap string) *env {
	t.Helper()
	for _, tool := range []string{"nfs-ls", "nfs-cat", "nfs-cp", "qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run `make deps` first", tool)
		}
	}
	if portmap != "" {
		// Other packages' tests bind port 111 in the same namespace.
		nfstest.LockPortmap(t, 5*time.Minute)
	}
	dir := t.TempDir()
	r, err := repo.Init(filepath.Join(dir, "repo"), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 4,
		Disks: []vmgen.DiskSpec{{Size: 5<<20 + 512, Fill: vmgen.FillMixed, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := ingest.Import(context.Background(), r, folder, ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(context.Background(), filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	if _, err := cat.Rebuild(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	extent, _ := os.ReadFile(filepath.Join(folder, "web01-flat.vmdk"))
	e := &env{t: t, repo: r, cat: cat, state: filepath.Join(dir, "state"), point: p, extent: extent, portmap: portmap}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *env) start() {
	e.t.Helper()
	svc, err := New(context.Background(), Config{Repo: e.repo, Catalog: e.cat, StateDir: e.state,
		NFSListen: "127.0.0.1:0", PortmapAddr: e.portmap, PointsAllow: e.pointsAllow})
	if err != nil {
		if e.portmap != "" && strings.Contains(err.Error(), "address already in use") {
			e.t.Fatalf("port 111 is taken: run this test in a private network namespace (make test does)")
		}
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.svc, e.cancel, e.done = svc, cancel, make(chan error, 1)
	go func() { e.done <- svc.Serve(ctx) }()
}

func (e *env) stop() {
	if e.svc == nil {
		return
	}
	e.cancel()
	e.svc.Close()
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		e.t.Error("service did not stop")
	}
	e.svc = nil
}

// url is a libnfs URL that skips the portmapper.
func (e *env) url(path string) string {
	_, port, _ := net.SplitHostPort(e.svc.NFSAddr().String())
	return fmt.Sprintf("nfs://127.0.0.1%s?version=3&nfsport=%s&mountport=%s", path, port, port)
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: hung", name, strings.Join(args, " "))
	}
	return string(out), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func TestServeWithLibnfs(t *testing.T) {
	e := newEnv(t, "")
	pdir := "/points/web01/" + e.point.ID
	ls := mustRun(t, "nfs-ls", e.url(pdir))
	for _, f := range []string{"web01.vmx", "web01.nvram", "web01.vmdk", "web01-flat.vmdk"} {
		if !strings.Contains(ls, f) {
			t.Fatalf("restore point folder lacks %s:\n%s", f, ls)
		}
	}
	got := mustRun(t, "nfs-cat", e.url(pdir+"/web01-flat.vmdk"))
	if !bytes.Equal([]byte(got), e.extent) {
		t.Fatalf("served extent (%d bytes) differs from the source (%d bytes)", len(got), len(e.extent))
	}
	local := filepath.Join(t.TempDir(), "x")
	os.WriteFile(local, []byte("not allowed"), 0o644)
	if out, err := run(t, "nfs-cp", local, e.url(pdir+"/x")); err == nil {
		t.Fatalf("write into a restore point succeeded: %s", out)
	}

	info, err := e.svc.Publish(context.Background(), PublishRequest{VMs: []PublishVM{{VM: "web01"}}})
	if err != nil {
		t.Fatal(err)
	}
	if info.NFSPath != "127.0.0.1:/rekindle/"+info.ID || len(info.VMs) != 1 || info.VMs[0].Point != e.point.ID {
		t.Fatalf("publish: %+v", info)
	}
	sdir := "/rekindle/" + info.ID + "/web01"
	if ls := mustRun(t, "nfs-ls", e.url(sdir)); !strings.Contains(ls, "web01-flat.vmdk") {
		t.Fatalf("session folder: %s", ls)
	}
	logData := bytes.Repeat([]byte("vmx| power on\n"), 5000)
	os.WriteFile(local, logData, 0o644)
	mustRun(t, "nfs-cp", local, e.url(sdir+"/vmware.log"))
	if got := mustRun(t, "nfs-cat", e.url(sdir+"/vmware.log")); got != string(logData) {
		t.Fatal("file written into the session reads back different")
	}
	if _, err := os.Stat(filepath.Join(e.state, "sessions", info.ID)); err != nil {
		t.Fatalf("overlay not under the state folder: %v", err)
	}

	// A restart keeps the session and what was written to it.
	e.stop()
	e.start()
	if got := mustRun(t, "nfs-cat", e.url(sdir+"/vmware.log")); got != string(logData) {
		t.Fatal("write lost across a restart")
	}

	if err := e.svc.Discard(context.Background(), info.ID); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "nfs-ls", e.url(sdir)); err == nil {
		t.Fatalf("discarded session still listed: %s", out)
	}
	if _, err := os.Stat(filepath.Join(e.state, "sessions", info.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("overlay left behind: %v", err)
	}
	cs, _ := e.cat.Session(context.Background(), info.ID)
	if cs.State != catalog.SessionStopped || cs.NFSPath != "" {
		t.Fatalf("catalog after discard: %+v", cs)
	}
	if err := e.svc.Discard(context.Background(), "rk-nothere"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("discard of unknown session: %v", err)
	}
}

// TestSessionBlockSize: a session's overlay gets blocks as small as its
// largest disk allows (4 KiB for this 5 MiB one, overlay.BlockSizeFor), so
// a guest's aligned 4 KiB write copies nothing from the backup, and a
// write of part of a block fills only the rest of that 4 KiB block; after a
// restart the session keeps its block size and what was written.
func TestSessionBlockSize(t *testing.T) {
	e := newEnv(t, "")
	info, err := e.svc.Publish(context.Background(), PublishRequest{VMs: []PublishVM{{VM: "web01"}}})
	if err != nil {
		t.Fatal(err)
	}
	sessionOverlay := func() *overlay.Overlay {
		e.svc.mu.Lock()
		defer e.svc.mu.Unlock()
		return e.svc.sessions[info.ID].overlay
	}
	ov := sessionOverlay()
	if bs := ov.BlockSize(); bs != 4<<10 {
		t.Fatalf("block size of a session of a 5 MiB disk: %d, want 4096", bs)
	}
	// The writes go to the session's overlay as the NFS server's WRITEs
	// do (WriteAt, then Sync as a stable WRITE's); read back over NFS.
	f, err := ov.OpenFile("/web01/web01-flat.vmdk", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	write := func(off int64, b byte, n int) {
		t.Helper()
		if _, err := f.(io.WriterAt).WriteAt(bytes.Repeat([]byte{b}, n), off); err != nil {
			t.Fatal(err)
		}
		if err := f.(interface{ Sync() error }).Sync(); err != nil {
			t.Fatal(err)
		}
	}
	write(8192, 0xab, 4096)
	if s := ov.Stats(); s.BlocksRedirected != 1 || s.BytesFilled != 0 {
		t.Fatalf("an aligned 4 KiB write: %d blocks redirected, %d bytes filled from the backup; want 1, 0", s.BlocksRedirected, s.BytesFilled)
	}
	write(20000, 0xcd, 100)
	if s := ov.Stats(); s.BlocksRedirected != 2 || s.BytesFilled != 4096-100 {
		t.Fatalf("a 100-byte write: %d blocks redirected, %d bytes filled; want 2, %d", s.BlocksRedirected, s.BytesFilled, 4096-100)
	}
	f.Close()
	want := bytes.Clone(e.extent)
	copy(want[8192:], bytes.Repeat([]byte{0xab}, 4096))
	copy(want[20000:], bytes.Repeat([]byte{0xcd}, 100))
	e.stop()
	e.start()
	if bs := sessionOverlay().BlockSize(); bs != 4<<10 {
		t.Fatalf("block size after a restart: %d", bs)
	}
	if got := mustRun(t, "nfs-cat", e.url("/rekindle/"+info.ID+"/web01/web01-flat.vmdk")); got != string(want) {
		t.Fatal("the session's disk after a restart differs from the backup with the two writes")
	}
}

func TestPublishErrors(t *testing.T) {
	e := newEnv(t, "")
	for _, tc := range []struct {
		name string
		req  PublishRequest
		want error
	}{
		{"no vms", PublishRequest{}, ErrInvalid},
		{"unknown vm", PublishRequest{VMs: []PublishVM{{VM: "nope"}}}, ErrNotFound},
		{"unknown point", PublishRequest{VMs: []PublishVM{{VM: "web01", Point: "20990101T000000Z-000000"}}}, ErrNotFound},
		{"bad allow", PublishRequest{VMs: []PublishVM{{VM: "web01"}}, Allow: []string{"everyone"}}, ErrInvalid},
		{"clashing folders", PublishRequest{VMs: []PublishVM{{VM: "web01"}, {VM: "web01"}}}, ErrInvalid},
		{"folder trick", PublishRequest{VMs: []PublishVM{{VM: "web01", As: "../x"}}}, ErrInvalid},
	} {
		if _, err := e.svc.Publish(context.Background(), tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if list, _ := e.svc.Sessions(context.Background()); len(list) != 0 {
		t.Fatalf("failed publishes left %d sessions", len(list))
	}
}

// TestSessionAllowList: a session published for another network refuses
// this client at MOUNT, while a session for loopback admits it.
func TestSessionAllowList(t *testing.T) {
	e := newEnv(t, "")
	other, err := e.svc.Publish(context.Background(), PublishRequest{VMs: []PublishVM{{VM: "web01"}}, Allow: []string{"192.0.2.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	mine, err := e.svc.Publish(context.Background(), PublishRequest{VMs: []PublishVM{{VM: "web01", As: "web01-clone"}}})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "nfs-ls", e.url("/rekindle/"+other.ID+"/web01")); err == nil {
		t.Fatalf("client outside the session's allow-list listed it: %s", out)
	}
	if out := mustRun(t, "nfs-ls", e.url("/rekindle/"+mine.ID+"/web01-clone")); !strings.Contains(out, "web01.vmx") {
		t.Fatalf("own session: %s", out)
	}
}

// TestQemuThroughPortmapper uses QEMU's nfs:// driver, which always asks the
// portmapper on port 111 and calls MOUNT EXPORT: run in a private network
// namespace (make test does).
func TestQemuThroughPortmapper(t *testing.T) {
	e := newEnv(t, "127.0.0.1:111")
	src := filepath.Join(t.TempDir(), "src.raw")
	os.WriteFile(src, e.extent, 0o644)
	served := "nfs://127.0.0.1/points/web01/" + e.point.ID + "/web01-flat.vmdk"
	mustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", served, src)

	info, err := e.svc.Publish(context.Background(), PublishRequest{VMs: []PublishVM{{VM: "web01"}}})
	if err != nil {
		t.Fatal(err)
	}
	disk := "nfs://127.0.0.1/rekindle/" + info.ID + "/web01/web01-flat.vmdk"
	mustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 1048576 65536", "-c", "write -P 0xcd 4097 3000", disk)
	out := mustRun(t, "qemu-io", "-f", "raw", "-c", "read -P 0xab 1048576 65536", "-c", "read -P 0xcd 4097 3000", disk)
	if strings.Contains(out, "fail") {
		t.Fatalf("written pattern does not read back:\n%s", out)
	}
	// The session differs from the backup exactly where QEMU wrote...
	if out, err := run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", disk, src); err == nil || !strings.Contains(out, "mismatch at offset 4096") {
		t.Fatalf("session disk still equals the backup after writes: %v %s", err, out)
	}
	// ...and the restore point has not changed at all.
	mustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", served, src)
	rep, err := e.repo.Verify(context.Background(), []*repo.RestorePoint{e.point}, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify after session writes: %+v %v", rep, err)
	}
}

func TestHTTPAPI(t *testing.T) {
	e := newEnv(t, "")
	srv := httptest.NewServer(e.svc.Handler("test"))
	defer srv.Close()
	c := NewClient(srv.URL)
	ctx := context.Background()
	info, err := c.Publish(ctx, PublishRequest{VMs: []PublishVM{{VM: "web01", Point: e.point.ID}}, Allow: []string{"10.1.2.3"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Allow) != 1 || info.Allow[0] != "10.1.2.3/32" || !info.Exported {
		t.Fatalf("publish reply: %+v", info)
	}
	list, err := c.Sessions(ctx)
	if err != nil || len(list) != 1 || list[0].ID != info.ID {
		t.Fatalf("list: %+v %v", list, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Sessions != 1 || st.Version != "test" {
		t.Fatalf("status: %+v %v", st, err)
	}
	if err := c.Discard(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	got, err := c.Session(ctx, info.ID)
	if err != nil || got.State != "stopped" || got.Exported {
		t.Fatalf("after discard: %+v %v", got, err)
	}
	if _, err := c.Session(ctx, "rk-missing"); !errors.Is(err, ErrNotFound) || strings.Count(err.Error(), "not found") != 1 {
		t.Fatalf("unknown session: %v", err)
	}
	if _, err := c.Publish(ctx, PublishRequest{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty publish: %v", err)
	}
	resp, err := http.Post(srv.URL+"/v1/sessions", "application/json", strings.NewReader(`{"vms":[{"vm":"web01"}],"bogus":1}`))
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown field: %v %v", resp.Status, err)
	}
}

// TestHealth: /healthz answers while the process lives; /readyz says ready
// only while the repository can be read and the NFS listener is up, in
// words that name no path.
func TestHealth(t *testing.T) {
	e := newEnv(t, "")
	srv := httptest.NewServer(e.svc.Handler("test"))
	defer srv.Close()
	get := func(path string) (int, Health, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var h Health
		if err := json.Unmarshal(b, &h); err != nil {
			t.Fatalf("%s: %v: %s", path, err, b)
		}
		return resp.StatusCode, h, string(b)
	}
	if code, h, _ := get("/healthz"); code != 200 || h.Status != "ok" {
		t.Fatalf("healthz: %d %+v", code, h)
	}
	if code, h, _ := get("/readyz"); code != 200 || h.Status != "ready" {
		t.Fatalf("readyz: %d %+v", code, h)
	}
	moved := e.repo.Dir + ".moved"
	if err := os.Rename(e.repo.Dir, moved); err != nil {
		t.Fatal(err)
	}
	code, h, body := get("/readyz")
	os.Rename(moved, e.repo.Dir)
	if code != http.StatusServiceUnavailable || h.Checks["repository"] != "unavailable" || h.Checks["nfs"] != "ok" {
		t.Fatalf("readyz with the repository gone: %d %s", code, body)
	}
	if strings.Contains(body, "/") {
		t.Fatalf("readyz names a path: %s", body)
	}
	if code, _, _ := get("/readyz"); code != 200 {
		t.Fatalf("readyz once the repository is back: %d", code)
	}
	e.stop() // the handler keeps the stopped service
	if code, h, body := get("/readyz"); code != http.StatusServiceUnavailable || h.Checks["nfs"] != "stopped" {
		t.Fatalf("readyz after Close: %d %s", code, body)
	}
	if code, _, _ := get("/healthz"); code != 200 {
		t.Fatalf("healthz after Close: %d", code)
	}
}
