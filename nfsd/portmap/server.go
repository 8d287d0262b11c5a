package portmap

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rekindle/rekindle/internal/accept"
	"github.com/rekindle/rekindle/nfsd/rpc"
)

// maxRecord bounds a portmapper call: the largest legal one is a few hundred bytes.
const maxRecord = 8 << 10

// idleTimeout closes a TCP portmapper connection that has gone quiet, unless
// Server.IdleTimeout is shorter.
const idleTimeout = 2 * time.Minute

// maxFragments bounds the fragments of one call over TCP.
const maxFragments = 64

// UDPReplyFactor bounds a UDP reply to this many times its request's size: a
// larger answer (a DUMP, mostly) is replaced by a bare SYSTEM_ERR reply,
// which is shorter than any call. The portmapper is never a reflection
// amplifier; DUMP works over TCP.
const UDPReplyFactor = 2

// Server serves a Table over TCP and UDP on one address.
type Server struct {
	table *Table
	tcp   *accept.Listener
	udp   *net.UDPConn
	log   *slog.Logger
	// Observe, when set, is told of every answered call.
	Observe func(proc string, d time.Duration)
	// Garbage, when set, is told of every undecodable call.
	Garbage func()
	// Admit, when set, decides which clients are answered at all: a TCP
	// connection from any other is closed at once, a datagram dropped.
	Admit func(netip.Addr) bool
	// MaxConns and MaxConnsPerClient bound the open TCP connections (zero: no
	// bound); IdleTimeout, when shorter than two minutes, closes quiet ones
	// sooner.
	MaxConns, MaxConnsPerClient int
	IdleTimeout                 time.Duration
	// OnAcceptError, when set, is told of every transient accept error
	// (retried with backoff, see package accept).
	OnAcceptError func(error)
	// OnRefuse, when set, is told of every connection or datagram refused, by
	// reason: the accept gate's, and "amplification" for a UDP answer
	// replaced because it was too large.
	OnRefuse func(reason string)

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Listen binds TCP and UDP on addr (host:port; port 0 picks a TCP port and binds
// UDP to the same number). Serve starts answering.
func Listen(addr string, table *Table, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("portmap: listen tcp %s: %w", addr, err)
	}
	ta := l.Addr().(*net.TCPAddr)
	ua := &net.UDPAddr{IP: ta.IP, Port: ta.Port, Zone: ta.Zone}
	u, err := net.ListenUDP("udp", ua)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("portmap: listen udp %s: %w", ua, err)
	}
	enablePktinfo(u)
	return &Server{table: table, tcp: accept.New(l, "portmap", log), udp: u, log: log, conns: map[net.Conn]struct{}{}}, nil
}

// SetTable replaces the table answered from; call it before Serve.
func (s *Server) SetTable(t *Table) { s.table = t }

// TCPAddr is the bound TCP address.
func (s *Server) TCPAddr() net.Addr { return s.tcp.Addr() }

// UDPAddr is the bound UDP address.
func (s *Server) UDPAddr() net.Addr { return s.udp.LocalAddr() }

// Close stops listening and drops open connections.
func (s *Server) Close() error {
	err := errors.Join(s.tcp.Close(), s.udp.Close())
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return err
}

// Serve answers until ctx is cancelled, then closes everything and returns.
func (s *Server) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.serveUDP() }()
	go func() { defer wg.Done(); s.serveTCP(&wg) }()
	<-ctx.Done()
	s.Close()
	wg.Wait()
	return nil
}

func (s *Server) serveTCP(wg *sync.WaitGroup) {
	s.tcp.OnError = s.OnAcceptError
	gate := accept.NewGate("portmap", s.log)
	gate.Max, gate.PerClient, gate.Admit, gate.OnRefuse = s.MaxConns, s.MaxConnsPerClient, s.Admit, s.OnRefuse
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return // closed: transient errors are retried by the listener
		}
		client := rpc.HostOf(c.RemoteAddr())
		if ok, _ := gate.Enter(client); !ok {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
			continue
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer gate.Leave(client)
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *Server) serveConn(c net.Conn) {
	local := rpc.HostOf(c.LocalAddr())
	timeout := idleTimeout
	if s.IdleTimeout > 0 && s.IdleTimeout < timeout {
		timeout = s.IdleTimeout
	}
	rr := rpc.RecordReader{R: c, MaxSize: maxRecord, MaxFragments: maxFragments}
	buf := make([]byte, 0, 512)
	for {
		c.SetReadDeadline(time.Now().Add(timeout))
		rec, err := rr.Append(buf[:0])
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Debug("portmap: tcp connection ends", "client", c.RemoteAddr(), "err", err)
			}
			return
		}
		buf = rec
		reply, ok := s.answer(rec, local)
		if !ok {
			return
		}
		c.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := c.Write(rpc.Frame(reply)); err != nil {
			return
		}
	}
}

// answer decodes and answers one call; ok is false when the input is garbage and
// the caller should give up on the transport.
func (s *Server) answer(rec []byte, local netip.Addr) ([]byte, bool) {
	start := time.Now()
	call, err := rpc.ParseCall(rec)
	if errors.Is(err, rpc.ErrRPCVersion) {
		return rpc.RPCMismatchReply(call.XID), true
	}
	if err != nil {
		if s.Garbage != nil {
			s.Garbage()
		}
		return nil, false
	}
	table := s.table
	if table == nil {
		table = NewTable(nil)
	}
	reply, name := table.Handle(call, local)
	if s.Observe != nil {
		s.Observe(name, time.Since(start))
	}
	return reply, true
}

// RefusedAmplification is the refusal reason of a UDP answer replaced because
// it was more than UDPReplyFactor times its request.
const RefusedAmplification = "amplification"

func (s *Server) refuse(reason string) {
	if s.OnRefuse != nil {
		s.OnRefuse(reason)
	}
}

func (s *Server) serveUDP() {
	buf := make([]byte, maxRecord)
	oob := make([]byte, 256)
	fallback := rpc.HostOf(s.udp.LocalAddr())
	for {
		n, oobn, _, from, err := s.udp.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if s.Admit != nil && !s.Admit(from.Addr().Unmap()) {
			s.refuse(accept.RefusedClient)
			continue
		}
		local := pktinfoDst(oob[:oobn])
		if !local.IsValid() {
			local = fallback
		}
		reply, ok := s.answer(buf[:n], local)
		if !ok {
			continue
		}
		if len(reply) > UDPReplyFactor*n {
			// An answer larger than the question would make the portmapper a
			// reflection amplifier for spoofed sources: answer SYSTEM_ERR.
			s.refuse(RefusedAmplification)
			reply = rpc.AcceptedReply(binary.BigEndian.Uint32(buf[:4]), rpc.SystemErr).Bytes()
		}
		s.udp.WriteToUDPAddrPort(reply, from)
	}
}
