package datastore

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/view"
	"github.com/rekindle/rekindle/nfsd/rpc"
)

// rawClient makes MOUNT and NFS calls from a chosen loopback address (every
// 127.0.0.0/8 address is this machine's), as a hypervisor with that address
// would.
type rawClient struct {
	t *testing.T
	c *rpc.Client
}

func dialFrom(t *testing.T, local string, addr net.Addr) *rawClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, local, err)
	}
	c := rpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c}
}

func (r *rawClient) call(prog, vers, proc uint32, args []byte) *rpc.Decoder {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := r.c.Call(ctx, prog, vers, proc, args)
	if err != nil {
		r.t.Fatalf("call %d.%d: %v", prog, proc, err)
	}
	return rpc.NewDecoder(rep.Body)
}

// mount returns MNT's status and the handle.
func (r *rawClient) mount(dir string) (uint32, []byte) {
	e := &rpc.Encoder{}
	e.String(dir)
	d := r.call(100005, 3, 1, e.Bytes())
	if st := d.Uint32(); st != 0 {
		return st, nil
	}
	return 0, d.Opaque(64)
}

// nfs3 makes an NFSv3 call and returns its status.
func (r *rawClient) nfs3(proc uint32, args []byte) (uint32, *rpc.Decoder) {
	d := r.call(100003, 3, proc, args)
	return d.Uint32(), d
}

func (r *rawClient) lookup(dir []byte, name string) (uint32, []byte) {
	e := &rpc.Encoder{}
	e.Opaque(dir)
	e.String(name)
	st, d := r.nfs3(3, e.Bytes())
	if st != 0 {
		return st, nil
	}
	return 0, d.Opaque(64)
}

func (r *rawClient) getattr(fh []byte) uint32 {
	e := &rpc.Encoder{}
	e.Opaque(fh)
	st, _ := r.nfs3(1, e.Bytes())
	return st
}

func (r *rawClient) exports() []string {
	d := r.call(100005, 3, 5, nil)
	var out []string
	for d.Bool() {
		out = append(out, d.String(1024))
		for d.Bool() {
			d.String(1024)
		}
	}
	return out
}

// readdir lists a directory's names (one READDIR, without "." and "..").
func (r *rawClient) readdir(dir []byte) []string {
	e := &rpc.Encoder{}
	e.Opaque(dir)
	e.Uint64(0)
	e.Uint64(0)
	e.Uint32(65536)
	st, d := r.nfs3(16, e.Bytes())
	if st != 0 {
		r.t.Fatalf("READDIR: %d", st)
	}
	if d.Bool() {
		d.Fixed(84)
	}
	d.Uint64()
	var out []string
	for d.Bool() {
		d.Uint64()
		if n := d.String(255); n != "." && n != ".." {
			out = append(out, n)
		}
		d.Uint64()
	}
	return out
}

const (
	mntAcces  = 13
	nfsAcces  = 13
	nfsStale  = 70
	nfsStatOK = 0
)

// TestSessionsAreTenants: each hypervisor sees its own session and nothing of
// the others, the folder of sessions is the admin's, and a discarded session's
// id is retired for good.
func TestSessionsAreTenants(t *testing.T) {
	e := newEnv(t, "")
	e.stop()
	e.pointsAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	e.start()
	ctx := context.Background()
	sa, err := e.svc.Publish(ctx, PublishRequest{VMs: []PublishVM{{VM: "web01"}}, Allow: []string{"127.0.0.2"}})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := e.svc.Publish(ctx, PublishRequest{VMs: []PublishVM{{VM: "web01"}}, Allow: []string{"127.0.0.3"}})
	if err != nil {
		t.Fatal(err)
	}
	a := dialFrom(t, "127.0.0.2", e.svc.NFSAddr())
	if st, _ := a.mount("/rekindle"); st != mntAcces {
		t.Errorf("host A: MNT /rekindle: %d, want MNT3ERR_ACCES", st)
	}
	st, aRoot := a.mount("/rekindle/" + sa.ID)
	if st != 0 {
		t.Fatalf("host A: MNT of its session: %d", st)
	}
	if st, _ := a.lookup(aRoot, ".."); st != nfsAcces {
		t.Errorf("host A: LOOKUP .. from its session: %d, want ACCES", st)
	}
	if st, _ := a.mount("/rekindle/" + sb.ID); st != mntAcces {
		t.Errorf("host A: MNT of B's session: %d, want MNT3ERR_ACCES", st)
	}
	if got := strings.Join(a.exports(), " "); got != "/rekindle/"+sa.ID {
		t.Errorf("host A: EXPORT lists %q, want its session only", got)
	}
	// The admin lists the folder and sees neither session: it is admitted to
	// none of them.
	admin := dialFrom(t, "127.0.0.1", e.svc.NFSAddr())
	st, root := admin.mount("/rekindle")
	if st != 0 {
		t.Fatalf("admin: MNT /rekindle: %d", st)
	}
	if names := admin.readdir(root); len(names) != 0 {
		t.Errorf("admin: READDIR /rekindle lists %v, sessions it is not admitted to", names)
	}
	if out := mustRun(t, "nfs-ls", e.url("/rekindle")); strings.Contains(out, sa.ID) || strings.Contains(out, sb.ID) {
		t.Errorf("nfs-ls /rekindle as the admin lists sessions it is not admitted to:\n%s", out)
	}

	st, vmx := a.lookup(mustLookupPath(t, a, aRoot, "web01"), "web01.vmx")
	if st != nfsStatOK {
		t.Fatalf("host A: LOOKUP web01.vmx: %d", st)
	}
	if err := e.svc.Discard(ctx, sa.ID); err != nil {
		t.Fatal(err)
	}
	// Host A is in no allow-list now; the admin holds the old handle, and
	// tries to bring the session back for itself.
	if _, err := e.svc.Publish(ctx, PublishRequest{ID: sa.ID, VMs: []PublishVM{{VM: "web01"}}, Allow: []string{"127.0.0.1"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("publishing a discarded session's id again: %v, want ErrInvalid", err)
	}
	if st := admin.getattr(vmx); st != nfsStale {
		t.Errorf("GETATTR of a discarded session's file: %d, want STALE", st)
	}
	e.stop()
	e.start()
	admin = dialFrom(t, "127.0.0.1", e.svc.NFSAddr())
	if st := admin.getattr(vmx); st != nfsStale {
		t.Errorf("after a restart, GETATTR of a discarded session's file: %d, want STALE", st)
	}
	if _, err := e.svc.Publish(ctx, PublishRequest{ID: sa.ID, VMs: []PublishVM{{VM: "web01"}}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("after a restart, publishing a discarded session's id again: %v, want ErrInvalid", err)
	}
	info, err := e.svc.Session(ctx, sa.ID)
	if err != nil || info.State != "stopped" || info.Exported {
		t.Errorf("discarded session: %+v, %v; want stopped, not exported", info, err)
	}
}

func mustLookupPath(t *testing.T, r *rawClient, dir []byte, name string) []byte {
	t.Helper()
	st, fh := r.lookup(dir, name)
	if st != nfsStatOK {
		t.Fatalf("LOOKUP %s: %d", name, st)
	}
	return fh
}

// TestSessionSquash: a session published with squash "root" treats root as
// nobody, across a restart, while another session trusts root.
func TestSessionSquash(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	sq, err := e.svc.Publish(ctx, PublishRequest{VMs: []PublishVM{{VM: "web01"}}, Squash: "root"})
	if err != nil {
		t.Fatal(err)
	}
	if sq.Squash != "root" {
		t.Errorf("published session says squash %q, want root", sq.Squash)
	}
	trusted, err := e.svc.Publish(ctx, PublishRequest{VMs: []PublishVM{{VM: "web01"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Publish(ctx, PublishRequest{VMs: []PublishVM{{VM: "web01"}}, Squash: "some"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("squash \"some\": %v, want ErrInvalid", err)
	}
	check := func(when string) {
		c := dialFrom(t, "127.0.0.1", e.svc.NFSAddr()) // rpc.Client calls as uid 0
		for _, s := range []struct {
			id   string
			want uint32
		}{{sq.ID, nfsAcces}, {trusted.ID, nfsStatOK}} {
			st, root := c.mount("/rekindle/" + s.id)
			if st != 0 {
				t.Fatalf("%s: MNT: %d", when, st)
			}
			vm := mustLookupPath(t, c, root, "web01")
			if st, _ := c.nfs3(procCreate, createArgs(vm, "by-root-"+when)); st != s.want {
				t.Errorf("%s: root CREATE in session %s: %d, want %d", when, s.id, st, s.want)
			}
		}
	}
	check("before")
	e.stop()
	e.start()
	check("after-restart")
}

// TestFolderWithoutRuleIsNobodys: a session folder that is there before its
// allow-list (as while it is being published) is invisible to every client,
// the admin included, and cannot be mounted.
func TestFolderWithoutRuleIsNobodys(t *testing.T) {
	e := newEnv(t, "")
	if err := e.svc.root.Mount("rk-norule", view.NewMountFS("norule")); err != nil {
		t.Fatal(err)
	}
	admin := dialFrom(t, "127.0.0.1", e.svc.NFSAddr())
	st, root := admin.mount("/rekindle")
	if st != 0 {
		t.Fatalf("admin: MNT /rekindle: %d", st)
	}
	if names := admin.readdir(root); len(names) != 0 {
		t.Errorf("admin: READDIR /rekindle lists %v, a folder without its rule", names)
	}
	if st, _ := admin.lookup(root, "rk-norule"); st != nfsAcces {
		t.Errorf("admin: LOOKUP of a folder without its rule: %d, want ACCES", st)
	}
	if st, _ := admin.mount("/rekindle/rk-norule"); st != mntAcces {
		t.Errorf("admin: MNT of a folder without its rule: %d, want MNT3ERR_ACCES", st)
	}
}

// TestCreateReplyHasAttributes: a CREATE in a session folder answers with
// the new file's attributes (RFC 1813 post_op_attr), whether the client
// mounted the session or the folder of sessions above it. go-nfs looks the
// new file up by the name the open file gives; a session's overlay names
// it without the session's folder, so the lookup failed (and logged a
// warning per CREATE) until the server's file answered with the export's
// path.
func TestCreateReplyHasAttributes(t *testing.T) {
	e := newEnv(t, "")
	s, err := e.svc.Publish(context.Background(), PublishRequest{VMs: []PublishVM{{VM: "web01"}}})
	if err != nil {
		t.Fatal(err)
	}
	c := dialFrom(t, "127.0.0.1", e.svc.NFSAddr())
	_, sessions := c.mount("/rekindle")
	_, session := c.mount("/rekindle/" + s.ID)
	for i, m := range []struct {
		name string
		vm   []byte
	}{
		{"/rekindle", mustLookupPath(t, c, mustLookupPath(t, c, sessions, s.ID), "web01")},
		{"/rekindle/" + s.ID, mustLookupPath(t, c, session, "web01")},
	} {
		name := "new" + strconv.Itoa(i) + ".log"
		st, d := c.nfs3(procCreate, createArgs(m.vm, name))
		if st != nfsStatOK {
			t.Fatalf("CREATE under a mount of %s: %d", m.name, st)
		}
		if d.Bool() { // post_op_fh3
			d.Opaque(64)
		}
		if !d.Bool() {
			t.Errorf("CREATE under a mount of %s: no attributes of the new file in the reply", m.name)
			continue
		}
		if typ := d.Uint32(); typ != 1 { // fattr3.type: NF3REG
			t.Errorf("CREATE under a mount of %s: attributes of type %d, want a regular file (1)", m.name, typ)
		}
		if st, _ := c.lookup(m.vm, name); st != nfsStatOK {
			t.Errorf("LOOKUP of the new file under a mount of %s: %d", m.name, st)
		}
	}
}
