package nfsd

import (
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// Every 127.0.0.0/8 address is this machine's own, so tests play clients with
// distinct addresses by binding the client end of the connection.

func dialFrom(t testing.TB, local string, addr net.Addr) *rpc.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := d.DialContext(testCtx(t), "tcp", addr.String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, local, err)
	}
	c := rpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return c
}

func newNFSClientFrom(t testing.TB, local string, addr net.Addr) *nfsClient {
	return &nfsClient{t: t, c: dialFrom(t, local, addr)}
}

// exportList decodes MOUNT EXPORT's reply: "dir=group,group" per export.
func (n *nfsClient) exportList() []string {
	n.t.Helper()
	r, err := n.c.Call(testCtx(n.t), progMount, 3, mountExport, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	d := rpc.NewDecoder(r.Body)
	for d.Bool() {
		dir := d.String(1024)
		var groups []string
		for d.Bool() {
			groups = append(groups, d.String(1024))
		}
		out = append(out, dir+"="+strings.Join(groups, ","))
	}
	if d.Err() != nil {
		n.t.Fatal(d.Err())
	}
	return out
}

func (n *nfsClient) dumpList() []string {
	n.t.Helper()
	r, err := n.c.Call(testCtx(n.t), progMount, 3, mountDump, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	d := rpc.NewDecoder(r.Body)
	for d.Bool() {
		out = append(out, d.String(1024)+":"+d.String(1024))
	}
	return out
}

// readdirNames lists a directory with READDIR or READDIRPLUS, following
// cookies to the end, without "." and "..".
func (n *nfsClient) readdirNames(proc uint32, dir []byte) (nfs.NFSStatus, []string) {
	n.t.Helper()
	var names []string
	var cookie, verf uint64
	for {
		e := &rpc.Encoder{}
		e.Opaque(dir)
		e.Uint64(cookie)
		e.Uint64(verf)
		if proc == procReaddirplus {
			e.Uint32(1024)
			e.Uint32(4096)
		} else {
			e.Uint32(1024)
		}
		st, d := n.call(proc, e.Bytes())
		if st != nfs.NFSStatusOk {
			return st, nil
		}
		if d.Bool() {
			d.Fixed(fattr3Len)
		}
		verf = d.Uint64()
		for d.Bool() {
			d.Uint64()
			name := d.String(255)
			cookie = d.Uint64()
			if proc == procReaddirplus {
				if d.Bool() {
					d.Fixed(fattr3Len)
				}
				if d.Bool() {
					d.Opaque(64)
				}
			}
			if name != "." && name != ".." {
				names = append(names, name)
			}
		}
		eof := d.Bool()
		if d.Err() != nil {
			n.t.Fatalf("%s reply: %v", nfsProcName(proc), d.Err())
		}
		if eof {
			sort.Strings(names)
			return st, names
		}
	}
}

// TestClientsSeeOnlyTheirOwnSessions: a client admitted to one session learns
// nothing of the others, by any of the ways there are to look.
func TestClientsSeeOnlyTheirOwnSessions(t *testing.T) {
	requireTool(t, "nfs-ls")
	_, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir(), Allow: []netip.Prefix{mustPrefix("127.0.0.0/8")}}, exp)
	// The folder of sessions admits the admin (127.0.0.1); session-a admits
	// the admin and host A (127.0.0.2), session-b host B (127.0.0.3) only.
	for _, r := range []struct {
		p     string
		allow []netip.Prefix
	}{
		{"/", []netip.Prefix{mustPrefix("127.0.0.1/32")}},
		{"/session-a", []netip.Prefix{mustPrefix("127.0.0.1/32"), mustPrefix("127.0.0.2/32")}},
		{"/session-b", []netip.Prefix{mustPrefix("127.0.0.3/32"), mustPrefix("198.51.100.0/24")}},
	} {
		if err := ts.SetSubtreeAllow("/rekindle", r.p, r.allow); err != nil {
			t.Fatal(err)
		}
	}
	admin := newNFSClientFrom(t, "127.0.0.1", ts.Addr())
	a := newNFSClientFrom(t, "127.0.0.2", ts.Addr())
	b := newNFSClientFrom(t, "127.0.0.3", ts.Addr())

	// Host A may mount its session, not the folder that holds the others.
	if st, _ := a.mount("/rekindle"); st != mnt3ErrAcces {
		t.Errorf("host A: MNT /rekindle: %d, want MNT3ERR_ACCES", st)
	}
	aRoot := a.mustMount("/rekindle/session-a")
	b.mustMount("/rekindle/session-b")
	if st, _ := a.lookup(aRoot, ".."); st != nfs.NFSStatusAccess {
		t.Errorf("host A: LOOKUP .. from its session's root: %v, want ACCES", st)
	}
	if st, _ := a.lookup(aRoot, "vm.vmx"); st != nfs.NFSStatusOk {
		t.Errorf("host A: LOOKUP in its own session: %v", st)
	}

	// The admin's listing of the folder leaves out session-b, by READDIR and
	// READDIRPLUS alike, and so does a real client's.
	root := admin.mustMount("/rekindle")
	for _, proc := range []uint32{procReaddir, procReaddirplus} {
		st, names := admin.readdirNames(proc, root)
		if st != nfs.NFSStatusOk || !slices.Equal(names, []string{"hello.txt", "session-a", "sub"}) {
			t.Errorf("admin: %s of /rekindle: %v %v, want hello.txt session-a sub", nfsProcName(proc), st, names)
		}
	}
	if out := string(mustRun(t, "nfs-ls", ts.nfsURL("/rekindle"))); strings.Contains(out, "session-b") || !strings.Contains(out, "session-a") {
		t.Errorf("nfs-ls /rekindle as the admin:\n%s\nwant session-a and not session-b", out)
	}
	// Inside a session, a listing is whole.
	if st, names := b.readdirNames(procReaddirplus, b.mustMount("/rekindle/session-b")); st != nfs.NFSStatusOk || !slices.Equal(names, []string{"disk.fl", "vm.vmx"}) {
		t.Errorf("host B: READDIRPLUS of its session: %v %v", st, names)
	}

	// EXPORT names what each may mount, with its own networks only.
	if got := strings.Join(a.exportList(), " "); got != "/rekindle/session-a=127.0.0.2/32" {
		t.Errorf("host A: EXPORT %q, want only /rekindle/session-a=127.0.0.2/32", got)
	}
	if got := strings.Join(b.exportList(), " "); got != "/rekindle/session-b=127.0.0.3/32" {
		t.Errorf("host B: EXPORT %q, want only /rekindle/session-b=127.0.0.3/32", got)
	}
	if got := strings.Join(admin.exportList(), " "); got != "/rekindle=127.0.0.1/32" {
		t.Errorf("admin: EXPORT %q", got)
	}

	// DUMP shows a client its own mounts.
	if got := strings.Join(a.dumpList(), " "); got != "127.0.0.2:/rekindle/session-a" {
		t.Errorf("host A: DUMP %q, want its own mount only", got)
	}
}
