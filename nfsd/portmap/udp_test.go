package portmap

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// TestUDPNoAmplificationNoOutsiders (issue 12, item 6): over UDP the
// portmapper answers only admitted clients, and never with more than
// UDPReplyFactor times the request: an rpcbind DUMP (40 bytes) used to get
// 1068 bytes back, a 27x reflection amplifier. GETPORT still works over UDP
// and DUMP over TCP.
func TestUDPNoAmplificationNoOutsiders(t *testing.T) {
	s, err := Listen("127.0.0.1:0", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(s.TCPAddr().(*net.TCPAddr).Port)
	var mappings []Mapping
	for _, p := range []uint32{100003, 100005} {
		for v := uint32(1); v <= 3; v++ {
			mappings = append(mappings, Mapping{Prog: p, Vers: v, Prot: ProtoTCP, Port: 2049})
		}
	}
	for v := uint32(2); v <= 4; v++ {
		mappings = append(mappings, Mapping{Prog: Prog, Vers: v, Prot: ProtoTCP, Port: port}, Mapping{Prog: Prog, Vers: v, Prot: ProtoUDP, Port: port})
	}
	s.SetTable(NewTable(mappings))
	admitted := netip.MustParseAddr("127.0.0.1")
	s.Admit = func(a netip.Addr) bool { return a == admitted }
	refused := map[string]int{}
	refusedC := make(chan string, 16)
	s.OnRefuse = func(r string) { refusedC <- r }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	ask := func(from string, xid, vers, proc uint32, args []byte) (sent int, reply []byte, err error) {
		t.Helper()
		conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, s.UDPAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		req := rpc.CallRecord(xid, Prog, vers, proc, rpc.Auth{}, args)
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 9000)
		n, err := conn.Read(buf)
		return len(req), buf[:n], err
	}

	for _, v := range []uint32{2, 3, 4} {
		sent, reply, err := ask("127.0.0.1", 10+v, v, 4, nil) // DUMP
		if err != nil {
			t.Fatalf("DUMP v%d over UDP: no answer: %v", v, err)
		}
		if len(reply) > UDPReplyFactor*sent {
			t.Errorf("DUMP v%d over UDP: %d-byte request got a %d-byte reply, more than %dx", v, sent, len(reply), UDPReplyFactor)
		}
		if r, err := rpc.ParseReply(reply); err != nil || r.XID != 10+v || r.Stat != rpc.SystemErr {
			t.Errorf("DUMP v%d over UDP: %+v, %v; want SYSTEM_ERR", v, r, err)
		}
		refused[<-refusedC]++
	}
	if refused[RefusedAmplification] != 3 {
		t.Errorf("refusals counted: %v, want 3 %q", refused, RefusedAmplification)
	}
	// GETPORT stays within the factor and works.
	_, reply, err := ask("127.0.0.1", 20, 2, 3, getportArgs(100005, 3, ProtoTCP))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := rpc.ParseReply(reply); err != nil || r.Stat != rpc.Success || rpc.NewDecoder(r.Body).Uint32() != 2049 {
		t.Fatalf("GETPORT over UDP: %+v, %v", r, err)
	}
	// An outsider gets nothing at all.
	if _, reply, err := ask("127.0.0.9", 21, 2, 3, getportArgs(100005, 3, ProtoTCP)); err == nil || len(reply) > 0 {
		t.Fatalf("GETPORT over UDP from an outsider answered with %d bytes", len(reply))
	} else if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("outsider: %v, want no answer (timeout)", err)
	}
	if r := <-refusedC; r != "client" {
		t.Errorf("outsider's datagram refused as %q, want client", r)
	}
	// DUMP over TCP is whole.
	c, err := rpc.Dial(ctx, s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Call(ctx, Prog, 3, 4, nil)
	if err != nil || len(r.Body) < 1000 {
		t.Fatalf("rpcbind DUMP over TCP: %d bytes, %v; want the whole list", len(r.Body), err)
	}
}
