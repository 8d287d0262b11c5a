package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// Client is a minimal ONC RPC client over one TCP connection. Calls may be in
// flight concurrently; replies are matched to calls by XID. It exists for tests
// and diagnostics, and sends AUTH_UNIX credentials for uid 0.
type Client struct {
	conn net.Conn
	wmu  sync.Mutex

	mu      sync.Mutex
	xid     uint32
	pending map[uint32]chan result
	err     error
	done    chan struct{}
}

type result struct {
	reply Reply
	err   error
}

// Dial connects to addr over TCP.
func Dial(ctx context.Context, addr string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewClient(conn), nil
}

// NewClient runs a client over conn, which it owns from now on.
func NewClient(conn net.Conn) *Client {
	c := &Client{conn: conn, xid: 0x1000, pending: map[uint32]chan result{}, done: make(chan struct{})}
	go c.readLoop()
	return c
}

// Close closes the connection; calls in flight fail.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

func (c *Client) readLoop() {
	defer close(c.done)
	var err error
	for {
		var rec []byte
		rec, err = ReadRecord(c.conn, 64<<20, nil)
		if err != nil {
			break
		}
		r, perr := ParseReply(rec)
		if perr != nil {
			err = perr
			break
		}
		c.mu.Lock()
		ch := c.pending[r.XID]
		delete(c.pending, r.XID)
		c.mu.Unlock()
		if ch != nil {
			ch <- result{reply: r}
		}
	}
	c.mu.Lock()
	c.err = fmt.Errorf("rpc client: connection lost: %w", err)
	for x, ch := range c.pending {
		ch <- result{err: c.err}
		delete(c.pending, x)
	}
	c.mu.Unlock()
}

// Pending is a call in flight.
type Pending struct {
	XID uint32
	ch  chan result
}

// Wait waits for the reply.
func (p *Pending) Wait(ctx context.Context) (Reply, error) {
	select {
	case r := <-p.ch:
		return r.reply, r.err
	case <-ctx.Done():
		return Reply{}, ctx.Err()
	}
}

// Ready reports whether the reply has arrived, without waiting.
func (p *Pending) Ready() bool { return len(p.ch) > 0 }

// Start sends a call and returns without waiting for its reply.
func (c *Client) Start(prog, vers, proc uint32, args []byte) (*Pending, error) {
	cred := Auth{Flavor: AuthUnix, Body: UnixCredBody(UnixCred{MachineName: "rekindle-test"})}
	return c.StartWithCred(prog, vers, proc, cred, args)
}

// StartWithCred is Start with the given credential.
func (c *Client) StartWithCred(prog, vers, proc uint32, cred Auth, args []byte) (*Pending, error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.xid++
	xid := c.xid
	ch := make(chan result, 1)
	c.pending[xid] = ch
	c.mu.Unlock()
	if err := c.SendRaw(Frame(CallRecord(xid, prog, vers, proc, cred, args))); err != nil {
		c.mu.Lock()
		delete(c.pending, xid)
		c.mu.Unlock()
		return nil, err
	}
	return &Pending{XID: xid, ch: ch}, nil
}

// StartRecord sends a ready-made call record (for tests of odd headers) and
// waits for a reply with the given XID.
func (c *Client) StartRecord(xid uint32, rec []byte) (*Pending, error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	ch := make(chan result, 1)
	c.pending[xid] = ch
	c.mu.Unlock()
	if err := c.SendRaw(Frame(rec)); err != nil {
		c.mu.Lock()
		delete(c.pending, xid)
		c.mu.Unlock()
		return nil, err
	}
	return &Pending{XID: xid, ch: ch}, nil
}

// SendRaw writes bytes to the connection as they are: for tests of malformed input.
func (c *Client) SendRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.conn.Write(b)
	return err
}

// Call sends a call and waits for its reply. A reply that is not accepted with
// SUCCESS is returned together with an error.
func (c *Client) Call(ctx context.Context, prog, vers, proc uint32, args []byte) (Reply, error) {
	p, err := c.Start(prog, vers, proc, args)
	if err != nil {
		return Reply{}, err
	}
	r, err := p.Wait(ctx)
	if err != nil {
		return r, err
	}
	if !r.Accepted {
		return r, fmt.Errorf("%w: reject status %d, auth status %d", ErrDenied, r.RejectStat, r.AuthStat)
	}
	if r.Stat != Success {
		return r, fmt.Errorf("%w: accept status %d", ErrNotSuccess, r.Stat)
	}
	return r, nil
}

var (
	// ErrDenied is returned by Call for MSG_DENIED replies.
	ErrDenied = errors.New("rpc: call denied")
	// ErrNotSuccess is returned by Call for accepted replies other than SUCCESS.
	ErrNotSuccess = errors.New("rpc: call not successful")
)
