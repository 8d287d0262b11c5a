package nfsd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/nfsd/portmap"
	"github.com/rekindle/rekindle/nfsd/rpc"
)

// maxReplyRecord bounds a reply read back from go-nfs (a MaxIO READ and change).
const maxReplyRecord = 2 * MaxIO

// pipeQueue is how many calls may wait for one pipe.
const pipeQueue = 16

// clientConn is one client TCP connection and the pipes that serve it.
type clientConn struct {
	s      *Server
	nc     net.Conn
	client netip.Addr
	local  netip.Addr

	wmu sync.Mutex // one reply at a time on nc

	mu       sync.Mutex
	pipes    []*pipe
	affinity map[string]*affinity
	rr       int

	closeOnce sync.Once
	wg        sync.WaitGroup
}

type pipe struct {
	conn  net.Conn
	queue chan *fwdCall
	load  atomic.Int32 // calls queued or in go-nfs
}

type affinity struct {
	p *pipe
	n int
}

type fwdCall struct {
	framed []byte // the call record with its mark, ready for the pipe
	xid    uint32
	proc   uint32
	key    string // affinity key, or ""
	start  time.Time
}

func (s *Server) newClientConn(nc net.Conn) *clientConn {
	return &clientConn{
		s:        s,
		nc:       nc,
		client:   addrOf(nc.RemoteAddr()),
		local:    addrOf(nc.LocalAddr()),
		affinity: map[string]*affinity{},
	}
}

func (c *clientConn) close() {
	c.closeOnce.Do(func() {
		c.nc.Close()
		c.mu.Lock()
		for _, p := range c.pipes {
			p.conn.Close()
		}
		c.mu.Unlock()
	})
}

// armedReader sets a read deadline as soon as a record begins to arrive, so that
// a client may idle between calls for as long as it likes but may not stall in
// the middle of one.
type armedReader struct {
	nc    net.Conn
	armed bool
}

func (r *armedReader) Read(p []byte) (int, error) {
	n, err := r.nc.Read(p)
	if n > 0 && !r.armed {
		r.nc.SetReadDeadline(time.Now().Add(recordTimeout))
		r.armed = true
	}
	return n, err
}

func (r *armedReader) disarm() {
	r.nc.SetReadDeadline(time.Time{})
	r.armed = false
}

func (c *clientConn) serve(ctx context.Context) {
	s := c.s
	s.m.conns.Inc()
	defer s.m.conns.Dec()
	if !s.admitsClient(c.client) {
		s.log.Info("nfsd: connection from a client outside the allow-list", "client", c.client)
	}
	defer func() {
		c.close()
		c.mu.Lock()
		for _, p := range c.pipes {
			close(p.queue)
		}
		c.mu.Unlock()
		c.wg.Wait()
	}()

	ar := &armedReader{nc: c.nc}
	br := bufio.NewReaderSize(ar, 64<<10)
	for {
		if br.Buffered() > 0 {
			ar.nc.SetReadDeadline(time.Now().Add(recordTimeout))
			ar.armed = true
		}
		// Room for the record mark in front, so the record goes to a pipe as is.
		rec, err := rpc.AppendRecord(make([]byte, 4, 4+512), br, maxCallRecord)
		if err != nil {
			if errors.Is(err, rpc.ErrRecordTooLarge) {
				s.m.refused.WithLabelValues(refusedGarbage).Inc()
				s.log.Info("nfsd: record too large, closing", "client", c.client, "err", err)
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("nfsd: connection ends", "client", c.client, "err", err)
			}
			return
		}
		ar.disarm()
		if !c.handleCall(ctx, rec) {
			return
		}
	}
}

// handleCall answers or forwards one call; framed holds a 4-byte gap and the
// record. It returns false when the connection should close.
func (c *clientConn) handleCall(ctx context.Context, framed []byte) bool {
	s := c.s
	start := time.Now()
	call, err := rpc.ParseCall(framed[4:])
	if errors.Is(err, rpc.ErrRPCVersion) {
		s.m.refused.WithLabelValues(refusedGarbage).Inc()
		return c.reply(rpc.RPCMismatchReply(call.XID))
	}
	if err != nil {
		s.m.refused.WithLabelValues(refusedGarbage).Inc()
		s.log.Info("nfsd: not an RPC call, closing", "client", c.client, "err", err)
		return false
	}

	switch call.Prog {
	case portmap.Prog:
		reply, name := s.pmTable.Handle(call, c.local)
		s.observe(name, time.Since(start))
		return c.reply(reply)
	case progMount, progNFS:
	default:
		return c.reply(rpc.AcceptedReply(call.XID, rpc.ProgUnavail).Bytes())
	}

	if st := checkAuth(call); st != rpc.AuthOK {
		s.m.refused.WithLabelValues(refusedAuth).Inc()
		return c.reply(rpc.AuthErrorReply(call.XID, st))
	}

	if call.Prog == progMount {
		reply, reason := s.handleMount(c.client, call)
		if reason != "" {
			s.m.refused.WithLabelValues(reason).Inc()
		}
		s.observe(mountProcName(call.Proc), time.Since(start))
		return c.reply(reply)
	}

	// NFS.
	if call.Vers != 3 {
		return c.reply(rpc.ProgMismatchReply(call.XID, 3, 3))
	}
	if !s.admitsClient(c.client) {
		s.m.refused.WithLabelValues(refusedClient).Inc()
		return c.reply(rpc.AuthErrorReply(call.XID, rpc.AuthTooWeak))
	}
	if call.Proc > procCommit {
		return c.reply(rpc.AcceptedReply(call.XID, rpc.ProcUnavail).Bytes())
	}
	args, err := parseNFSArgs(call.Proc, call.Args)
	if err != nil {
		s.m.refused.WithLabelValues(refusedGarbage).Inc()
		return c.reply(rpc.AcceptedReply(call.XID, rpc.GarbageArgs).Bytes())
	}
	if st, reason := s.checkNFS(c.client, call.Proc, &args); st != nfs.NFSStatusOk {
		s.m.refused.WithLabelValues(reason).Inc()
		s.observe(nfsProcName(call.Proc), time.Since(start))
		return c.reply(nfsErrorReply(call.XID, call.Proc, st))
	}
	if args.readCount >= 0 {
		p := call.Args[args.readCount : args.readCount+4]
		if binary.BigEndian.Uint32(p) > MaxIO {
			binary.BigEndian.PutUint32(p, MaxIO)
		}
	}
	binary.BigEndian.PutUint32(framed[:4], uint32(len(framed)-4)|1<<31)
	fc := &fwdCall{framed: framed, xid: call.XID, proc: call.Proc, start: start}
	if args.ordered {
		fc.key = string(args.handles[0])
	}
	return c.forward(ctx, fc)
}

// checkAuth admits AUTH_NONE and well-formed AUTH_UNIX credentials.
func checkAuth(call rpc.Call) rpc.AuthStat {
	switch call.Cred.Flavor {
	case rpc.AuthNone:
		return rpc.AuthOK
	case rpc.AuthUnix:
		if _, err := rpc.ParseUnixCred(call.Cred.Body); err != nil {
			return rpc.AuthBadCred
		}
		return rpc.AuthOK
	}
	return rpc.AuthBadCred
}

// reply writes one reply record whole. It returns false if the connection broke.
func (c *clientConn) reply(rec []byte) bool {
	framed := rpc.Frame(rec)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.nc.Write(framed); err != nil {
		c.close()
		return false
	}
	return true
}

// forward queues a call on a pipe.
func (c *clientConn) forward(ctx context.Context, fc *fwdCall) bool {
	p, err := c.pick(fc.key)
	if err != nil {
		c.s.log.Debug("nfsd: no pipe", "client", c.client, "err", err)
		return false
	}
	select {
	case p.queue <- fc:
		return true
	case <-ctx.Done():
		c.release(p, fc.key)
		return false
	}
}

// pick chooses the pipe for a call: the pipe already holding a call with the same
// key, else the least loaded one, creating pipes up to the limit as they are
// needed.
func (c *clientConn) pick(key string) (*pipe, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if key != "" {
		if a := c.affinity[key]; a != nil {
			a.n++
			a.p.load.Add(1)
			return a.p, nil
		}
	}
	var best *pipe
	n := len(c.pipes)
	for i := 0; i < n; i++ {
		p := c.pipes[(c.rr+i)%n]
		if best == nil || p.load.Load() < best.load.Load() {
			best = p
		}
	}
	c.rr++
	if (best == nil || best.load.Load() > 0) && n < c.s.pipes {
		p, err := c.newPipe()
		if err != nil {
			if best == nil {
				return nil, err
			}
		} else {
			best = p
		}
	}
	best.load.Add(1)
	if key != "" {
		c.affinity[key] = &affinity{p: best, n: 1}
	}
	return best, nil
}

func (c *clientConn) release(p *pipe, key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p.load.Add(-1)
	if key == "" {
		return
	}
	if a := c.affinity[key]; a != nil && a.p == p {
		a.n--
		if a.n == 0 {
			delete(c.affinity, key)
		}
	}
}

// newPipe connects a new pipe to go-nfs; c.mu is held.
func (c *clientConn) newPipe() (*pipe, error) {
	conn, err := c.s.inmem.dial()
	if err != nil {
		return nil, err
	}
	p := &pipe{conn: conn, queue: make(chan *fwdCall, pipeQueue)}
	c.pipes = append(c.pipes, p)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.runPipe(p)
	}()
	return p, nil
}

// runPipe sends a pipe's calls to go-nfs one at a time and relays each reply.
// If the pipe breaks, the whole client connection closes: the client reconnects
// and retransmits, which is how NFS over TCP recovers from a lost connection.
func (c *clientConn) runPipe(p *pipe) {
	s := c.s
	var buf []byte
	broken := false
	for fc := range p.queue {
		if broken {
			c.release(p, fc.key)
			continue
		}
		rec, err := c.roundTrip(p, fc, buf)
		if err != nil {
			s.log.Debug("nfsd: pipe broken", "client", c.client, "err", err)
			broken = true
			c.release(p, fc.key)
			c.close()
			continue
		}
		buf = rec[:0]
		reply, err := rpc.ParseReply(rec)
		if err != nil || reply.XID != fc.xid {
			s.log.Error("nfsd: go-nfs reply does not match its call", "client", c.client, "xid", fc.xid)
			broken = true
			c.release(p, fc.key)
			c.close()
			continue
		}
		if reply.Accepted && reply.Stat == rpc.Success {
			n := inspectReply(fc.proc, reply.Body)
			switch fc.proc {
			case procRead:
				s.m.readBytes.Add(float64(n))
			case procWrite:
				s.m.writeBytes.Add(float64(n))
			}
		}
		out := rec
		if err := s.syncHandles(); err != nil {
			s.log.Error("nfsd: handle table not durable; failing the call", "err", err)
			out = rpc.AcceptedReply(fc.xid, rpc.SystemErr).Bytes()
		}
		ok := c.reply(out)
		c.release(p, fc.key)
		s.observe(nfsProcName(fc.proc), time.Since(fc.start))
		if !ok {
			broken = true
		}
	}
}

// roundTrip writes a call to the pipe and reads go-nfs's reply to it.
func (c *clientConn) roundTrip(p *pipe, fc *fwdCall, buf []byte) ([]byte, error) {
	// One Write per record: go-nfs reads a handle with a single Read, which must
	// not see a record split across pipe writes.
	if _, err := p.conn.Write(fc.framed); err != nil {
		return nil, err
	}
	return rpc.ReadRecord(p.conn, maxReplyRecord, buf)
}
