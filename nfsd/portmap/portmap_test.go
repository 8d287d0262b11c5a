package portmap

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

func serve(t *testing.T) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(s.TCPAddr().(*net.TCPAddr).Port)
	s.SetTable(NewTable([]Mapping{
		{Prog: 100003, Vers: 3, Prot: ProtoTCP, Port: 2049},
		{Prog: 100005, Vers: 3, Prot: ProtoTCP, Port: 2049},
		{Prog: Prog, Vers: 2, Prot: ProtoTCP, Port: port},
		{Prog: Prog, Vers: 2, Prot: ProtoUDP, Port: port},
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func getportArgs(prog, vers, prot uint32) []byte {
	e := &rpc.Encoder{}
	e.Uint32(prog)
	e.Uint32(vers)
	e.Uint32(prot)
	e.Uint32(0)
	return e.Bytes()
}

func rpcbArgs(prog, vers uint32, netid string) []byte {
	e := &rpc.Encoder{}
	e.Uint32(prog)
	e.Uint32(vers)
	e.String(netid)
	e.String("")
	e.String("")
	return e.Bytes()
}

func TestGetportOverTCP(t *testing.T) {
	s := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := rpc.Dial(ctx, s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	cases := []struct {
		prog, vers, prot uint32
		want             uint32
	}{
		{100003, 3, ProtoTCP, 2049},
		{100005, 3, ProtoTCP, 2049},
		{100003, 3, ProtoUDP, 0}, // not served over UDP
		{100003, 4, ProtoTCP, 0},
		{100021, 4, ProtoTCP, 0},
	}
	for _, tc := range cases {
		r, err := c.Call(ctx, Prog, 2, 3, getportArgs(tc.prog, tc.vers, tc.prot))
		if err != nil {
			t.Fatal(err)
		}
		d := rpc.NewDecoder(r.Body)
		if got := d.Uint32(); got != tc.want || d.Err() != nil {
			t.Errorf("GETPORT(%d, %d, %d) = %d, want %d", tc.prog, tc.vers, tc.prot, got, tc.want)
		}
	}

	r, err := c.Call(ctx, Prog, 2, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := rpc.NewDecoder(r.Body)
	n := 0
	for d.Bool() {
		d.Uint32()
		d.Uint32()
		d.Uint32()
		d.Uint32()
		n++
	}
	if n != 4 || d.Err() != nil {
		t.Errorf("DUMP listed %d mappings (%v), want 4", n, d.Err())
	}

	for _, vers := range []uint32{3, 4} {
		r, err := c.Call(ctx, Prog, vers, 3, rpcbArgs(100003, 3, "tcp"))
		if err != nil {
			t.Fatal(err)
		}
		d := rpc.NewDecoder(r.Body)
		ua := d.String(128)
		if ua != "127.0.0.1.8.1" {
			t.Errorf("rpcbind v%d GETADDR = %q, want 127.0.0.1.8.1", vers, ua)
		}
		ap, err := ParseUniversalAddr(ua)
		if err != nil || ap != netip.MustParseAddrPort("127.0.0.1:2049") {
			t.Errorf("ParseUniversalAddr(%q) = %v, %v", ua, ap, err)
		}
		r, err = c.Call(ctx, Prog, vers, 3, rpcbArgs(100003, 3, "udp"))
		if err != nil {
			t.Fatal(err)
		}
		if d := rpc.NewDecoder(r.Body); d.String(128) != "" {
			t.Errorf("rpcbind v%d GETADDR over udp should be empty", vers)
		}
	}
	r, err = c.Call(ctx, Prog, 4, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	d = rpc.NewDecoder(r.Body)
	n = 0
	for d.Bool() {
		d.Uint32()
		d.Uint32()
		d.String(64)
		d.String(128)
		d.String(64)
		n++
	}
	if n == 0 || d.Err() != nil {
		t.Errorf("rpcbind DUMP listed %d entries (%v)", n, d.Err())
	}
	if _, err := c.Call(ctx, Prog, 5, 0, nil); err == nil {
		t.Error("portmapper version 5 accepted")
	}
}

func TestGetportOverUDP(t *testing.T) {
	s := serve(t)
	conn, err := net.Dial("udp", s.UDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	ask := func(xid, vers, proc uint32, args []byte) *rpc.Decoder {
		t.Helper()
		if _, err := conn.Write(rpc.CallRecord(xid, Prog, vers, proc, rpc.Auth{}, args)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 9000)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		r, err := rpc.ParseReply(buf[:n])
		if err != nil || r.XID != xid || !r.Accepted || r.Stat != rpc.Success {
			t.Fatalf("reply %+v, %v", r, err)
		}
		return rpc.NewDecoder(r.Body)
	}
	if port := ask(1, 2, 3, getportArgs(100005, 3, ProtoTCP)).Uint32(); port != 2049 {
		t.Errorf("GETPORT over UDP = %d", port)
	}
	if ua := ask(2, 3, 3, rpcbArgs(100005, 3, "tcp")).String(128); ua != "127.0.0.1.8.1" {
		t.Errorf("GETADDR over UDP = %q (the datagram's destination should name the host)", ua)
	}
	// Garbage is dropped and the socket keeps answering.
	conn.Write([]byte("garbage"))
	if port := ask(3, 2, 3, getportArgs(100003, 3, ProtoTCP)).Uint32(); port != 2049 {
		t.Errorf("GETPORT after garbage = %d", port)
	}
}

func TestUniversalAddr(t *testing.T) {
	for _, s := range []string{"10.1.2.3:111", "[::1]:2049", "0.0.0.0:65535"} {
		ap := netip.MustParseAddrPort(s)
		u := UniversalAddr(ap)
		back, err := ParseUniversalAddr(u)
		if err != nil || back != ap {
			t.Errorf("%s -> %q -> %v, %v", s, u, back, err)
		}
	}
	for _, bad := range []string{"", "1.2.3.4", "1.2.3.4.5", "x.1.2", "1.2.3.4.300.1"} {
		if _, err := ParseUniversalAddr(bad); err == nil {
			t.Errorf("ParseUniversalAddr(%q) accepted", bad)
		}
	}
}
