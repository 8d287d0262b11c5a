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
	ctx    context.Context // the server's; set by serve

	wmu sync.Mutex // one reply at a time on nc
	// Under wmu: the pieces of the reply being written (wbuf, kept from
	// reply to reply) and the vector writev consumes (wvec).
	wbuf, wvec net.Buffers
	wdeadSet   time.Time // when the write deadline was last set

	mu       sync.Mutex
	pipes    []*pipe
	affinity map[string]*affinity
	ordered  map[string]*handleOrder // handles with fast-path calls queued or running
	rr       int

	// inflight holds a token per call accepted onto the fast path (or queued
	// behind one) and not answered yet; running a token per fast-path call at
	// work. They bound a connection's fast-path calls as the pipes bound its
	// go-nfs calls: PipesPerConn at work, PipesPerConn×pipeQueue accepted.
	inflight chan struct{}
	running  chan struct{}

	mem recordMem // the connection's record buffers in the budget

	inlineHead [readHeadLen]byte // the head of a reply readInline builds

	readEnd   chan struct{} // closed when the connection's reading ends
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // pipes, readers and fast-path goroutines
}

// handleOrder holds the ordered calls (WRITE, SETATTR, COMMIT) of one handle
// that arrived while a fast-path call of it was queued or running, in arrival
// order, until each is done. A call starts once no earlier call it conflicts
// with is left (see conflicts), so WRITEs to different bytes of a file run
// together and overlapping ones keep their order.
type handleOrder struct {
	calls []*orderedCall
}

// orderedCall is one call in a handleOrder.
type orderedCall struct {
	queuedCall
	lo, hi  uint64 // a fast-path WRITE's bytes
	kind    int
	started bool
}

// Kinds of ordered calls.
const (
	orderWrite   = iota // a fast-path WRITE: waits only for earlier calls overlapping its bytes
	orderCommit         // a fast-path COMMIT: waits for every earlier call, holds up no later WRITE
	orderBarrier        // anything else (SETATTR, calls for go-nfs): waits for all before, holds up all after
)

func newOrderedCall(fast *fastCall, fwd *fwdCall) *orderedCall {
	oc := &orderedCall{queuedCall: queuedCall{fast: fast, fwd: fwd}, kind: orderBarrier}
	if fast != nil {
		switch fast.proc {
		case procWrite:
			oc.kind, oc.lo = orderWrite, fast.args.offset
			oc.hi = oc.lo + max(uint64(fast.args.count), 1)
		case procCommit:
			oc.kind = orderCommit
		}
	}
	return oc
}

// conflicts reports whether later must wait for earlier, an ordered call of
// the same handle that arrived before it. A COMMIT covers the WRITEs answered
// before it arrived, so it waits for all of them; a WRITE arriving after a
// COMMIT need not be covered by it, so it does not wait.
func conflicts(earlier, later *orderedCall) bool {
	switch {
	case later.kind == orderCommit, earlier.kind == orderBarrier, later.kind == orderBarrier:
		return true
	case earlier.kind == orderCommit:
		return false
	}
	return earlier.lo < later.hi && later.lo < earlier.hi
}

// startable reports whether calls[i] may start: no earlier call left
// conflicts with it. c.mu is held.
func (h *handleOrder) startable(i int) bool {
	for _, e := range h.calls[:i] {
		if conflicts(e, h.calls[i]) {
			return false
		}
	}
	return true
}

// queuedCall is a fast-path call or one for go-nfs.
type queuedCall struct {
	fast *fastCall
	fwd  *fwdCall
}

// fastCall is a READ or WRITE the front answers itself.
type fastCall struct {
	framed []byte // the call record, released once answered
	xid    uint32
	proc   uint32
	args   ioArgs
	start  time.Time
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
	done   chan struct{} // closed once answered, if not nil
	st     *callState    // what go-nfs's filesystems learn of the call (call.go), or nil
	drc    *drcEntry     // the call's place in the duplicate request cache (drc.go), or nil
}

func (s *Server) newClientConn(nc net.Conn) *clientConn {
	return &clientConn{
		s:        s,
		nc:       nc,
		client:   rpc.HostOf(nc.RemoteAddr()),
		local:    rpc.HostOf(nc.LocalAddr()),
		affinity: map[string]*affinity{},
		ordered:  map[string]*handleOrder{},
		inflight: make(chan struct{}, s.pipes*pipeQueue),
		running:  make(chan struct{}, s.pipes),
		readEnd:  make(chan struct{}),
		closed:   make(chan struct{}),
		mem:      recordMem{s: s},
	}
}

func (c *clientConn) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.nc.Close()
		c.mu.Lock()
		for _, p := range c.pipes {
			p.conn.Close()
		}
		c.mu.Unlock()
	})
}

// armedReader keeps a connection's read deadline: IdleTimeout while no record
// is under way, RecordTimeout once a record has started, so that a client may
// idle between calls (up to the idle timeout) but may not stall in the middle
// of one. The deadline is set only when it must change, not twice per call:
// the record deadline is set when a record that has started needs another
// read (or must wait for memory), so a call that arrives whole in one read
// never sets it; and the idle deadline, set IdleTimeout+IdleTimeout/16 ahead,
// is moved at the end of a record only once IdleTimeout/16 has passed since
// it was set (every connection is still given at least IdleTimeout of quiet
// after its last record, and closed by IdleTimeout×17/16).
type armedReader struct {
	nc       net.Conn
	idle     time.Duration
	record   time.Duration
	started  bool      // bytes of a record not finished yet have arrived
	armed    bool      // the record deadline is set
	deadline time.Time // of the record under way, once armed
	idleSet  time.Time // when the idle deadline was last set
}

func (r *armedReader) Read(p []byte) (int, error) {
	if r.started && !r.armed {
		r.arm()
	}
	n, err := r.nc.Read(p)
	if n > 0 {
		r.started = true
	}
	return n, err
}

// arm sets the record deadline, RecordTimeout from now.
func (r *armedReader) arm() {
	r.deadline = time.Now().Add(r.record)
	r.nc.SetReadDeadline(r.deadline)
	r.armed = true
}

// recordDeadline is the deadline of the record under way, which a wait for
// memory keeps to; it arms it if it is not yet.
func (r *armedReader) recordDeadline() time.Time {
	if !r.armed {
		r.arm()
	}
	return r.deadline
}

// recordDone ends a record: the next one starts with the bytes already
// buffered (buffered > 0), or is waited for with the idle deadline.
func (r *armedReader) recordDone(buffered bool) {
	r.started = buffered
	now := time.Now()
	if r.armed || now.Sub(r.idleSet) > r.idle/16 {
		r.setIdle(now)
	}
}

// setIdle sets the idle deadline from now.
func (r *armedReader) setIdle(now time.Time) {
	r.nc.SetReadDeadline(now.Add(r.idle + r.idle/16))
	r.idleSet = now
	r.armed = false
	r.deadline = time.Time{}
}

// readBufSize is the connection's read buffer: room for dozens of small calls;
// large record bodies bypass it. It is a fixed cost of every open connection.
const readBufSize = 8 << 10

func (c *clientConn) serve(ctx context.Context) {
	s := c.s
	s.m.conns.Inc()
	defer s.m.conns.Dec()
	c.ctx = ctx
	defer func() {
		c.close()
		c.wg.Wait()
		c.mem.close()
	}()

	ar := &armedReader{nc: c.nc, idle: s.limits.IdleTimeout, record: s.limits.RecordTimeout}
	ar.setIdle(time.Now())
	r := &callReader{ar: ar, br: bufio.NewReaderSize(ar, readBufSize), deadline: ar.recordDeadline}
	r.rr = rpc.RecordReader{
		R: r.br, MaxSize: maxCallRecord + 4*s.limits.MaxFragments, MaxFragments: s.limits.MaxFragments,
		Grow: func(b []byte, n, _ int) ([]byte, error) { return c.mem.grow(ctx, r.deadline, b, n) },
	}
	if inq := arrivedFunc(c.nc); inq != nil {
		// What has arrived: in the read buffer, then in the socket.
		r.rr.Arrived = func() int { return r.br.Buffered() + inq() }
	}
	c.readCalls(ctx, r)
	<-c.readEnd
}

// callReader is the incoming side of a connection. One goroutine at a time
// reads from it: serve's at first, then the goroutines readCalls hands it to.
type callReader struct {
	ar       *armedReader
	br       *bufio.Reader
	rr       rpc.RecordReader
	deadline func() time.Time // ar.recordDeadline, made once
}

// readCalls reads and handles calls until the connection ends, then closes
// c.readEnd. The goroutine that reads a fast-path call works on it itself,
// after handing the reading on to a new goroutine: the call starts at once,
// without waiting for a goroutine to be scheduled, and the calls behind it are
// read meanwhile.
func (c *clientConn) readCalls(ctx context.Context, r *callReader) {
	s := c.s
	for {
		rec, err := c.readCallRecord(ctx, r)
		if err != nil {
			c.mem.release(rec)
			var ne net.Error
			timeout := errors.As(err, &ne) && ne.Timeout()
			switch {
			case timeout && !r.ar.armed && c.working():
				r.ar.setIdle(time.Now()) // quiet, but waiting for its replies: not idle
				continue
			case timeout && !r.ar.armed:
				s.log.Debug("nfsd: idle connection closed", "client", c.client, "idle", s.limits.IdleTimeout)
			case timeout:
				s.m.refused.WithLabelValues(refusedTimeout).Inc()
				s.log.Info("nfsd: record not finished in time, closing", "client", c.client, "timeout", s.limits.RecordTimeout)
			case errors.Is(err, rpc.ErrRecordTooLarge), errors.Is(err, rpc.ErrTooManyFragments):
				s.m.refused.WithLabelValues(refusedGarbage).Inc()
				s.log.Info("nfsd: record refused, closing", "client", c.client, "err", err)
			case errors.Is(err, errNoMemory):
				s.m.refused.WithLabelValues(refusedMemory).Inc()
				s.log.Warn("nfsd: no room for a record in the record memory budget, closing", "client", c.client, "err", err)
			case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
				s.log.Debug("nfsd: connection ends", "client", c.client, "err", err)
			}
			close(c.readEnd)
			return
		}
		r.ar.recordDone(r.br.Buffered() > 0)
		work, ok := c.handleCall(ctx, rec)
		if !ok {
			close(c.readEnd)
			return
		}
		if work != nil {
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.readCalls(ctx, r)
			}()
			work()
			return
		}
	}
}

// working reports whether some call of the connection is at work.
func (c *clientConn) working() bool {
	if len(c.inflight) > 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.pipes {
		if p.load.Load() > 0 {
			return true
		}
	}
	return false
}

// readCallRecord reads the next call record, behind a 4-byte gap for its mark
// so that it goes to a pipe as is. Nothing is allocated before a mark has
// arrived. On error it returns what the connection must give back.
func (c *clientConn) readCallRecord(ctx context.Context, r *callReader) ([]byte, error) {
	mark, err := r.br.Peek(4)
	if err != nil {
		if len(mark) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(mark) &^ (1 << 31))
	// Room for the bytes that are there already (a 1 MiB WRITE on
	// loopback, mostly), so that they are read into one buffer, not copied
	// through each doubling; at least 512, never more than the mark says.
	// Small calls (READ, GETATTR) fit in 512 and ask nothing.
	first := 512
	if n > first && r.rr.Arrived != nil {
		first = max(first, r.rr.Arrived()-4)
	}
	dst, err := c.mem.grow(ctx, r.deadline, nil, 4+min(n, first))
	if err != nil {
		return nil, err
	}
	return r.rr.Append(dst[:4])
}

// handleCall answers or forwards one call; framed holds a 4-byte gap and the
// record. It returns the work of a fast-path call for the caller to do, if any,
// and false when the connection should close.
func (c *clientConn) handleCall(ctx context.Context, framed []byte) (work func(), ok bool) {
	// A record handed to a pipe or the fast path is released there.
	handed := false
	defer func() {
		if !handed {
			c.mem.release(framed)
		}
	}()
	s := c.s
	start := time.Now()
	call, err := rpc.ParseCall(framed[4:])
	if errors.Is(err, rpc.ErrRPCVersion) {
		s.m.refused.WithLabelValues(refusedGarbage).Inc()
		return nil, c.reply(rpc.RPCMismatchReply(call.XID))
	}
	if err != nil {
		s.m.refused.WithLabelValues(refusedGarbage).Inc()
		s.log.Info("nfsd: not an RPC call, closing", "client", c.client, "err", err)
		return nil, false
	}

	switch call.Prog {
	case portmap.Prog:
		reply, name := s.pmTable.Handle(call, c.local)
		s.observe(name, time.Since(start))
		return nil, c.reply(reply)
	case progMount, progNFS:
	default:
		return nil, c.reply(rpc.AcceptedReply(call.XID, rpc.ProgUnavail).Bytes())
	}

	if st := checkAuth(call); st != rpc.AuthOK {
		s.m.refused.WithLabelValues(refusedAuth).Inc()
		return nil, c.reply(rpc.AuthErrorReply(call.XID, st))
	}

	if call.Prog == progMount {
		reply, reason := s.handleMount(c.client, call)
		if reason != "" {
			s.m.refused.WithLabelValues(reason).Inc()
		}
		s.observe(mountProcName(call.Proc), time.Since(start))
		return nil, c.reply(reply)
	}

	// NFS.
	if call.Vers != 3 {
		return nil, c.reply(rpc.ProgMismatchReply(call.XID, 3, 3))
	}
	if !s.admitsClient(c.client) {
		s.m.refused.WithLabelValues(refusedClient).Inc()
		return nil, c.reply(rpc.AuthErrorReply(call.XID, rpc.AuthTooWeak))
	}
	if call.Proc > procCommit {
		return nil, c.reply(rpc.AcceptedReply(call.XID, rpc.ProcUnavail).Bytes())
	}
	args, err := parseNFSArgs(call.Proc, call.Args)
	if err != nil {
		s.m.refused.WithLabelValues(refusedGarbage).Inc()
		return nil, c.reply(rpc.AcceptedReply(call.XID, rpc.GarbageArgs).Bytes())
	}
	var drc *drcEntry
	if cached(call.Proc, &args) {
		var dup *drcEntry
		if drc, dup = s.drc.begin(c.client, call); dup != nil {
			s.observeNFS(call.Proc, time.Since(start))
			return nil, c.answerDuplicate(dup)
		}
	}
	if st, reason := s.checkNFS(c.client, call.Cred, call.Proc, &args); st != nfs.NFSStatusOk {
		s.m.refused.WithLabelValues(reason).Inc()
		s.observeNFS(call.Proc, time.Since(start))
		rec := nfsErrorReply(call.XID, call.Proc, st)
		s.drc.finish(drc, rec)
		return nil, c.reply(rec)
	}
	if args.readCount >= 0 {
		p := call.Args[args.readCount : args.readCount+4]
		if binary.BigEndian.Uint32(p) > MaxIO {
			binary.BigEndian.PutUint32(p, MaxIO)
		}
	}
	marked, cs := s.prepareForward(c.client, call.ArgsOffset, call.Proc, &args, framed)
	if cap(marked) != cap(framed) || &marked[0] != &framed[0] {
		// A rewritten record: the budget holds the new buffer, not the old.
		if err := c.mem.charge(ctx, nil, int64(cap(marked))); err != nil {
			s.finishCall(cs, nil)
			s.m.refused.WithLabelValues(refusedMemory).Inc()
			return nil, false
		}
		c.mem.release(framed)
		framed = marked
	}
	binary.BigEndian.PutUint32(framed[:4], uint32(len(framed)-4)|1<<31)
	if call.Proc == procRead && !s.cfg.NoFastPath {
		if a, ok := parseIOArgs(call.Proc, call.Args); ok {
			handed = true
			return c.startRead(ctx, fastCall{framed: framed, xid: call.XID, proc: call.Proc, args: a, start: start})
		}
	}
	fc := &fwdCall{framed: framed, xid: call.XID, proc: call.Proc, start: start, st: cs, drc: drc}
	if args.ordered {
		fc.key = string(args.handles[0])
	}
	var fast *fastCall
	if !s.cfg.NoFastPath && (call.Proc == procRead || call.Proc == procWrite || call.Proc == procCommit) {
		if a, ok := parseIOArgs(call.Proc, call.Args); ok {
			fast = &fastCall{framed: framed, xid: call.XID, proc: call.Proc, args: a, start: start}
		}
	}
	handed = true
	return c.dispatch(ctx, fc, fast)
}

// startRead starts a fast-path READ: answered at once on this goroutine
// when its bytes are at hand (readInline), else returned as work. The call
// is a value, copied to the heap only for the work: a warm READ allocates
// nothing here.
func (c *clientConn) startRead(ctx context.Context, fc fastCall) (work func(), ok bool) {
	select {
	case c.inflight <- struct{}{}:
	case <-c.closed:
		c.mem.release(fc.framed)
		return nil, false
	case <-ctx.Done():
		c.mem.release(fc.framed)
		return nil, false
	}
	if c.readInline(&fc) {
		return nil, true
	}
	fast := new(fastCall)
	*fast = fc
	return func() { c.runFast(fast) }, true
}

// dispatch starts a call on the fast path (fast) or forwards it to go-nfs
// (fwd), keeping the ordered calls of one handle in arrival order across both:
// while a fast-path WRITE of a handle is queued or running, the handle's
// ordered calls queue behind it, and a WRITE of a handle with ordered calls in
// go-nfs follows them there. It returns the work to do for the call, if the
// caller must do it, and false when the connection should close.
func (c *clientConn) dispatch(ctx context.Context, fwd *fwdCall, fast *fastCall) (work func(), ok bool) {
	if fast == nil && (fwd.key == "" || c.s.cfg.NoFastPath) {
		return nil, c.forward(ctx, fwd)
	}
	select {
	case c.inflight <- struct{}{}:
	case <-c.closed:
		return nil, false
	case <-ctx.Done():
		return nil, false
	}
	c.mu.Lock()
	h := c.ordered[fwd.key]
	if h == nil {
		if fast == nil || c.affinity[fwd.key] != nil {
			c.mu.Unlock()
			<-c.inflight
			return nil, c.forward(ctx, fwd)
		}
		h = &handleOrder{}
		c.ordered[fwd.key] = h
	}
	oc := newOrderedCall(fast, fwd)
	h.calls = append(h.calls, oc)
	start := h.startable(len(h.calls) - 1)
	oc.started = start
	c.mu.Unlock()
	if !start {
		return nil, true // a call it waits for starts it when done
	}
	return func() { c.runOrdered(fwd.key, h, oc) }, true
}

// runOrdered runs an ordered call of a handle, then starts the calls that
// were waiting only for it: one in this goroutine, the others in their own.
// It forgets the handle's order once no call is left.
func (c *clientConn) runOrdered(key string, h *handleOrder, oc *orderedCall) {
	for oc != nil {
		if oc.fast != nil {
			c.runFast(oc.fast)
		} else {
			c.forwardAndWait(oc.fwd)
		}
		c.mu.Lock()
		for i, e := range h.calls {
			if e == oc {
				h.calls = append(h.calls[:i], h.calls[i+1:]...)
				break
			}
		}
		var next []*orderedCall
		for i, e := range h.calls {
			if !e.started && h.startable(i) {
				e.started = true
				next = append(next, e)
			}
		}
		if len(h.calls) == 0 {
			delete(c.ordered, key)
		}
		c.mu.Unlock()
		oc = nil
		for i, e := range next {
			if i == len(next)-1 {
				oc = e
				break
			}
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.runOrdered(key, h, e)
			}()
		}
	}
}

// forwardAndWait sends a queued call to go-nfs and waits for its reply to
// leave, so that the handle's next call starts after it.
func (c *clientConn) forwardAndWait(fwd *fwdCall) {
	defer func() { <-c.inflight }()
	fwd.done = make(chan struct{})
	if !c.forward(c.ctx, fwd) {
		c.close()
		return
	}
	select {
	case <-fwd.done:
	case <-c.closed:
	}
}

// readInline answers a READ whose bytes are at hand (readFile, cachedOnly) on the
// goroutine that read it: no new goroutine, no switch, for the warm small
// reads that are most of a booted VM's. It returns false, having done
// nothing, when the READ may have to wait.
func (c *clientConn) readInline(fc *fastCall) bool {
	if fc.proc != procRead {
		return false
	}
	select {
	case c.running <- struct{}{}:
	default:
		return false
	}
	// The reply's head is built in the connection's inlineHead: only the
	// goroutine reading calls answers inline, and the reply has left before
	// it reads the next call.
	r, ok := c.s.readFile(fc.xid, &fc.args, true, c.inlineHead[:0])
	<-c.running
	if !ok {
		return false
	}
	c.answerFast(fc, r)
	c.mem.release(fc.framed)
	<-c.inflight
	return true
}

// runFast answers a fast-path call and writes its reply.
func (c *clientConn) runFast(fc *fastCall) {
	defer func() { <-c.inflight }()
	defer c.mem.release(fc.framed)
	select {
	case <-c.closed:
		return // nobody to answer; the client retransmits on its next connection
	default:
	}
	select {
	case c.running <- struct{}{}:
	case <-c.closed:
		return
	}
	s := c.s
	var r fastReply
	switch fc.proc {
	case procRead:
		r = s.fastRead(fc.xid, &fc.args)
	case procCommit:
		r = s.fastCommit(fc.xid, &fc.args)
	default:
		r = s.fastWrite(fc.xid, &fc.args)
	}
	<-c.running
	c.answerFast(fc, r)
}

// answerFast writes a fast-path call's reply.
func (c *clientConn) answerFast(fc *fastCall, r fastReply) {
	s := c.s
	binary.BigEndian.PutUint32(r.head[:4], uint32(r.length())|1<<31)
	switch fc.proc {
	case procRead:
		s.m.readBytes.Add(float64(r.n))
	case procWrite:
		s.m.writeBytes.Add(float64(r.n))
	}
	c.writeReply(&r)
	r.free()
	s.observeNFS(fc.proc, time.Since(fc.start))
}

// checkAuth admits AUTH_NONE and well-formed AUTH_UNIX credentials.
func checkAuth(call rpc.Call) rpc.AuthStat {
	switch call.Cred.Flavor {
	case rpc.AuthNone:
		return rpc.AuthOK
	case rpc.AuthUnix:
		if err := rpc.CheckUnixCred(call.Cred.Body); err != nil {
			return rpc.AuthBadCred
		}
		return rpc.AuthOK
	}
	return rpc.AuthBadCred
}

// reply writes one reply record whole. It returns false if the connection broke.
func (c *clientConn) reply(rec []byte) bool {
	var mark [4]byte
	binary.BigEndian.PutUint32(mark[:], uint32(len(rec))|1<<31)
	return c.write(net.Buffers{mark[:], rec})
}

// write writes a framed reply record, b's pieces in order, with one
// vectored write. It keeps nothing of b.
func (c *clientConn) write(b net.Buffers) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(c.wbuf[:0], b...)
	return c.flushLocked()
}

// writeReply writes a fast-path reply like write: head, lent or read
// data, padding.
func (c *clientConn) writeReply(r *fastReply) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(append(c.wbuf[:0], r.head), r.lent...)
	c.wbuf = append(c.wbuf, r.data, r.pad)
	return c.flushLocked()
}

// flushLocked writes wbuf with one vectored write (wmu held). A reply may
// take writeTimeout to leave, up to writeTimeout×17/16: the write deadline
// is moved only once writeTimeout/16 has passed since it was set, not at
// every reply.
func (c *clientConn) flushLocked() bool {
	if now := time.Now(); now.Sub(c.wdeadSet) > writeTimeout/16 {
		c.nc.SetWriteDeadline(now.Add(writeTimeout + writeTimeout/16))
		c.wdeadSet = now
	}
	c.wvec = c.wbuf // WriteTo consumes the vector it is given, and clears its pieces
	if _, err := c.wvec.WriteTo(c.nc); err != nil {
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
	case <-c.closed:
	}
	c.release(p, fc.key)
	return false
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
	select {
	case <-c.closed: // close has closed the pipes it knew; this one would leak
		return nil, net.ErrClosed
	default:
	}
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

// runPipe sends a pipe's calls to go-nfs one at a time and relays each reply,
// until the connection closes. If the pipe breaks, the whole client connection
// closes: the client reconnects and retransmits, which is how NFS over TCP
// recovers from a lost connection.
func (c *clientConn) runPipe(p *pipe) {
	var buf []byte
	for {
		var fc *fwdCall
		select {
		case fc = <-p.queue:
		case <-c.closed:
			c.abandonQueued(p)
			return
		}
		var ok bool
		buf, ok = c.relay(p, fc, buf)
		c.s.drc.abandon(fc.drc) // unless relay answered it
		c.release(p, fc.key)
		if fc.done != nil {
			close(fc.done)
		}
		if !ok {
			c.close()
			return
		}
	}
}

// relay sends one call to go-nfs and its reply to the client. It returns the
// buffer to read the next reply into, and false if the pipe or the connection
// broke.
func (c *clientConn) relay(p *pipe, fc *fwdCall, buf []byte) ([]byte, bool) {
	s := c.s
	// One Write per record: go-nfs reads a handle with a single Read, which must
	// not see a record split across pipe writes. A pipe has no buffer: once
	// Write returns, go-nfs has taken its copy and the record may be reused.
	_, err := p.conn.Write(fc.framed)
	c.mem.release(fc.framed)
	fc.framed = nil
	if err != nil {
		s.log.Debug("nfsd: pipe broken", "client", c.client, "err", err)
		return buf, false
	}
	rec, err := rpc.ReadRecord(p.conn, maxReplyRecord, buf)
	if err != nil {
		s.log.Debug("nfsd: pipe broken", "client", c.client, "err", err)
		return buf, false
	}
	reply, err := rpc.ParseReply(rec)
	if err != nil || reply.XID != fc.xid {
		s.log.Error("nfsd: go-nfs reply does not match its call", "client", c.client, "xid", fc.xid)
		return rec[:0], false
	}
	if reply.Accepted && reply.Stat == rpc.Success {
		s.finishCall(fc.st, reply.Body)
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
	s.drc.finish(fc.drc, out)
	ok := c.reply(out)
	s.observeNFS(fc.proc, time.Since(fc.start))
	return rec[:0], ok
}
