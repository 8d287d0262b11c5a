package nfsd

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// requireTool fails the test when a real client is missing: these tests exist to
// run against real clients, so a missing tool is a broken setup, not a skip.
func requireTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s not found (run make deps: it installs libnfs-utils, qemu-utils and qemu-block-extra): %v", n, err)
		}
	}
}

type testServer struct {
	*Server
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startServer runs a server with cfg (Listen defaults to 127.0.0.1:0) and the
// given exports until the test ends.
func startServer(t testing.TB, cfg Config, exports ...Export) *testServer {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, e := range exports {
		if err := s.AddExport(e); err != nil {
			s.Close()
			t.Fatalf("AddExport %s: %v", e.Path, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx) }()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) stop() {
	ts.once.Do(func() {
		ts.cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				panic("nfsd test server: Serve: " + err.Error())
			}
		case <-time.After(30 * time.Second):
			panic("nfsd test server did not stop within 30s")
		}
	})
}

func (ts *testServer) port() int { return ts.Addr().(*net.TCPAddr).Port }

// nfsURL is a libnfs URL that skips the portmapper: MOUNT and NFS share the port.
func (ts *testServer) nfsURL(exportAndPath string) string {
	p := strconv.Itoa(ts.port())
	return "nfs://127.0.0.1" + exportAndPath + "?version=3&nfsport=" + p + "&mountport=" + p + "&auto-traverse-mounts=0"
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t testing.TB, addr net.Addr) *rpc.Client {
	t.Helper()
	c, err := rpc.Dial(testCtx(t), addr.String())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A minimal NFSv3 client over rpc.Client.

type nfsClient struct {
	t testing.TB
	c *rpc.Client
}

func newNFSClient(t testing.TB, addr net.Addr) *nfsClient {
	return &nfsClient{t: t, c: dial(t, addr)}
}

// mount returns MNT's status and, on success, the root handle.
func (n *nfsClient) mount(dir string) (uint32, []byte) {
	n.t.Helper()
	e := &rpc.Encoder{}
	e.String(dir)
	r, err := n.c.Call(testCtx(n.t), progMount, 3, mountMnt, e.Bytes())
	if err != nil {
		n.t.Fatalf("MNT %s: %v", dir, err)
	}
	d := rpc.NewDecoder(r.Body)
	st := d.Uint32()
	if st != 0 {
		return st, nil
	}
	fh := d.Opaque(64)
	if d.Err() != nil {
		n.t.Fatalf("MNT %s: reply: %v", dir, d.Err())
	}
	return st, fh
}

func (n *nfsClient) mustMount(dir string) []byte {
	n.t.Helper()
	st, fh := n.mount(dir)
	if st != 0 {
		n.t.Fatalf("MNT %s: status %d", dir, st)
	}
	return fh
}

// call makes an NFSv3 call and returns the NFS status and the rest of the results.
func (n *nfsClient) call(proc uint32, args []byte) (nfs.NFSStatus, *rpc.Decoder) {
	n.t.Helper()
	r, err := n.c.Call(testCtx(n.t), progNFS, 3, proc, args)
	if err != nil {
		n.t.Fatalf("NFS %s: %v", nfsProcName(proc), err)
	}
	d := rpc.NewDecoder(r.Body)
	return nfs.NFSStatus(d.Uint32()), d
}

func dirOpArgs(fh []byte, name string) []byte {
	e := &rpc.Encoder{}
	e.Opaque(fh)
	e.String(name)
	return e.Bytes()
}

func (n *nfsClient) lookup(dir []byte, name string) (nfs.NFSStatus, []byte) {
	n.t.Helper()
	st, d := n.call(procLookup, dirOpArgs(dir, name))
	if st != nfs.NFSStatusOk {
		return st, nil
	}
	return st, d.Opaque(64)
}

func (n *nfsClient) mustLookup(dir []byte, name string) []byte {
	n.t.Helper()
	st, fh := n.lookup(dir, name)
	if st != nfs.NFSStatusOk {
		n.t.Fatalf("LOOKUP %q: %v", name, st)
	}
	return fh
}

func (n *nfsClient) getattr(fh []byte) nfs.NFSStatus {
	n.t.Helper()
	e := &rpc.Encoder{}
	e.Opaque(fh)
	st, _ := n.call(procGetattr, e.Bytes())
	return st
}

func readArgs(fh []byte, off uint64, count uint32) []byte {
	e := &rpc.Encoder{}
	e.Opaque(fh)
	e.Uint64(off)
	e.Uint32(count)
	return e.Bytes()
}

// decodeRead takes READ's results after the status.
func decodeRead(d *rpc.Decoder) ([]byte, error) {
	if d.Bool() {
		d.Fixed(fattr3Len)
	}
	d.Uint32() // count
	d.Bool()   // eof
	data := d.Opaque(MaxIO)
	return data, d.Err()
}

func (n *nfsClient) read(fh []byte, off uint64, count uint32) (nfs.NFSStatus, []byte) {
	n.t.Helper()
	st, d := n.call(procRead, readArgs(fh, off, count))
	if st != nfs.NFSStatusOk {
		return st, nil
	}
	data, err := decodeRead(d)
	if err != nil {
		n.t.Fatalf("READ reply: %v", err)
	}
	return st, data
}

func writeArgs(fh []byte, off uint64, data []byte) []byte {
	e := &rpc.Encoder{}
	e.Opaque(fh)
	e.Uint64(off)
	e.Uint32(uint32(len(data)))
	e.Uint32(2) // FILE_SYNC
	e.Opaque(data)
	return e.Bytes()
}

func createArgs(dir []byte, name string) []byte {
	e := &rpc.Encoder{}
	e.Opaque(dir)
	e.String(name)
	e.Uint32(0)              // UNCHECKED
	e.Raw(make([]byte, 4*6)) // sattr3: nothing set
	return e.Bytes()
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var errTimeout = errors.New("timeout")

// waitAllOK waits for every pending NFS call and fails the test, naming what
// (e.g. "round 2: a WRITE"), on the first that fails or answers other than
// NFS3_OK.
func waitAllOK(t *testing.T, pending []*rpc.Pending, what string) {
	t.Helper()
	for _, p := range pending {
		r, err := p.Wait(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if st := binary.BigEndian.Uint32(r.Body); st != 0 {
			t.Fatalf("%s failed: %v", what, nfs.NFSStatus(st))
		}
	}
}
