package main

import (
	"bytes"
	"context"
	le "encoding/binary"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/rekindle/rekindle/internal/httpapi"
	"github.com/rekindle/rekindle/nfsd/datastore"
	"github.com/rekindle/rekindle/nfsd/nfstest"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// testClient is an API client with the token of the server on api, found
// as the CLI finds it: through the locator the server leaves for its user.
func testClient(api string) *datastore.Client {
	c := datastore.NewClient(api)
	_, port, _ := net.SplitHostPort(api)
	if f := httpapi.FindLocalToken(port); f != "" {
		if tok, err := httpapi.ReadToken(f); err == nil {
			c.HTTP = &http.Client{Transport: httpapi.Bearer(nil, tok)}
		}
	}
	return c
}

// server is a `rekindle serve` process.
type server struct {
	t    *testing.T
	args []string
	api  string
	cmd  *exec.Cmd
	log  *lockedBuffer
}

// lockedBuffer is the server's output, read by a test (on a failure, say)
// while the server still writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (s *server) start() {
	s.t.Helper()
	s.cmd = exec.Command(binary, s.args...)
	s.log = &lockedBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := testClient(s.api).Status(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.kill() // no stray server outlives the test
			s.t.Fatalf("server did not come up: %v\n%s", err, s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor waits up to 2 minutes for ok, polling, and fails the test with the
// server's log if it does not come.
func (s *server) waitFor(what string, ok func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			s.t.Fatalf("serve: %s not within 2 minutes\n%s", what, s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) kill() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// TestKillDashNine kills the server with SIGKILL while a client writes,
// starts it again, and checks that the client's old file handle still works
// and that every write the server acknowledged is there.
func TestKillDashNine(t *testing.T) {
	nfstest.LockPortmap(t, 5*time.Minute)
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "db01", Seed: 8,
		Disks: []vmgen.DiskSpec{{Size: 4 << 20, Fill: vmgen.FillMixed, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, false, "backup", "import", "--repo", repoDir, folder)
	api := freePort(t)
	s := &server{t: t, api: api, args: []string{"serve", "--repo", repoDir, "--nfs", freePort(t),
		"--portmap", "127.0.0.1:111", "--api", api, "--metrics", "off"}}
	s.start()
	defer func() { s.kill() }()
	info, err := testClient(api).Publish(context.Background(), datastore.PublishRequest{VMs: []datastore.PublishVM{{VM: "db01"}}})
	if err != nil {
		t.Fatal(err)
	}
	mount := func() *nfsc.Target {
		m := nfstest.DialMount(t, "127.0.0.1")
		v, err := m.Mount("/rekindle/"+info.ID, rpc.NewAuthUnix("esx01", 0, 0).Auth())
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := mount()
	if _, err := v.Create("db01/journal.bin", 0o644); err != nil {
		t.Fatal(err)
	}
	_, fh, err := v.Lookup("db01/journal.bin")
	if err != nil {
		t.Fatal(err)
	}
	block := func(i int) []byte {
		b := bytes.Repeat([]byte{byte(i%251 + 1)}, 4096)
		le.LittleEndian.PutUint64(b, uint64(i))
		return b
	}
	var acked atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		f, err := v.OpenFile("db01/journal.bin", 0o644)
		if err != nil {
			return
		}
		for i := 0; ; i++ {
			if _, err := f.Seek(int64(i)*4096, io.SeekStart); err != nil {
				return
			}
			if _, err := f.Write(block(i)); err != nil {
				return // the server is gone
			}
			acked.Store(int64(i + 1))
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for acked.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s.kill() // SIGKILL in the middle of the writes
	select {
	case <-writerDone:
	case <-time.After(60 * time.Second):
		t.Fatal("client writer did not notice the server died")
	}
	n := acked.Load()
	if n < 200 {
		t.Fatalf("only %d writes acknowledged before the kill", n)
	}
	s.start()
	v2 := mount()
	attr, err := v2.GetAttr(fh)
	if err != nil {
		t.Fatalf("handle from before the kill: %v", err)
	}
	if int64(attr.Filesize) < n*4096 {
		t.Fatalf("file holds %d bytes, %d writes of 4096 were acknowledged", attr.Filesize, n)
	}
	f, err := v2.Open("db01/journal.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < int(n); i++ {
		if !bytes.Equal(got[i*4096:(i+1)*4096], block(i)) {
			t.Fatalf("acknowledged write %d of %d lost after kill -9", i, n)
		}
	}
	t.Logf("%d acknowledged writes survived kill -9", n)
	out, _ := run(t, false, "sessions", "show", "--server", api, info.ID)
	if !strings.Contains(out, "running") {
		t.Fatalf("session after restart:\n%s", out)
	}
}

// TestServeConfigFile: settings come from a YAML file and from REKINDLE_*
// variables, and flags win over both.
func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	api, nfs := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "rekindle.yaml")
	os.WriteFile(cfg, []byte("repo: "+repoDir+"\nnfs: "+nfs+"\nportmap: \"off\"\nmetrics: \"off\"\napi: 127.0.0.1:1\nserver-name: nfs1.example.com\n"), 0o644)
	s := &server{t: t, api: api, args: []string{"serve", "--config", cfg, "--api", api}}
	s.start()
	defer s.kill()
	st, err := testClient(api).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.NFS != nfs || st.Server != "nfs1.example.com" || st.Portmap != "" {
		t.Fatalf("config file not applied: %+v", st)
	}
	s.kill()

	// The environment works too.
	api2 := freePort(t)
	s2 := &server{t: t, api: api2, args: []string{"serve", "--portmap", "off", "--metrics", "off", "--api", api2, "--nfs", freePort(t)}}
	os.Setenv("REKINDLE_REPO", repoDir)
	os.Setenv("REKINDLE_SERVER_NAME", "nfs2.example.com")
	defer os.Unsetenv("REKINDLE_REPO")
	defer os.Unsetenv("REKINDLE_SERVER_NAME")
	s2.start()
	defer s2.kill()
	st, err = testClient(api2).Status(context.Background())
	if err != nil || st.Server != "nfs2.example.com" {
		t.Fatalf("environment not applied: %+v %v", st, err)
	}
}

// TestBuildInfoMetric scrapes a running server's /metrics for the build.
func TestBuildInfoMetric(t *testing.T) {
	repoDir := filepath.Join(t.TempDir(), "repo")
	run(t, false, "init", "--repo", repoDir)
	api, metrics := freePort(t), freePort(t)
	s := &server{t: t, api: api, args: []string{"serve", "--repo", repoDir, "--portmap", "off", "--metrics", metrics,
		"--api", api, "--nfs", freePort(t)}}
	s.start()
	defer s.kill()
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `rekindle_build_info{goversion="`+runtime.Version()+`",version="dev"} 1`) {
		t.Fatalf("no rekindle_build_info in /metrics:\n%.2000s", b)
	}
}
