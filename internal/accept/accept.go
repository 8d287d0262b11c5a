// Package accept keeps a server's listener accepting through the errors a busy
// or attacked server meets.
//
// Vocabulary: a transient accept error is any error of Accept other than the
// listener being closed: out of file descriptors (EMFILE, ENFILE), out of
// kernel memory (ENOBUFS, ENOMEM), a connection aborted before it was taken.
// A Listener retries those after a backoff (Backoff doubling up to MaxBackoff)
// and logs them, at most one line per LogEvery while they last, and one when
// accepting works again. Its Accept returns only connections, or net.ErrClosed
// once the listener is closed, so the loop above it (the NFS front, the
// portmapper, net/http's Serve) never ends because of a transient error.
//
// A Gate is the admission decision taken the moment a connection is accepted,
// from the peer's address alone: outside the allow-lists, or over the total or
// per-client connection limit, and the connection is closed before the server
// allocates anything for it.
package accept

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Backoff bounds.
const (
	Backoff    = 5 * time.Millisecond
	MaxBackoff = time.Second
	LogEvery   = 10 * time.Second
)

// Listener is a net.Listener whose Accept retries transient errors.
type Listener struct {
	net.Listener
	name string
	log  *slog.Logger
	// OnError, when set, is told of every transient error (for a metric).
	OnError func(error)

	closeOnce sync.Once
	closed    chan struct{}
}

// New wraps ln. name says which listener it is in logs ("nfs", "portmap",
// "api"); log may be nil.
func New(ln net.Listener, name string, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{Listener: ln, name: name, log: log, closed: make(chan struct{})}
}

// Accept waits for the next connection. Transient errors are retried, never
// returned; after Close it returns an error wrapping net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	var (
		delay   time.Duration
		errs    int
		logged  time.Time
		lastErr error
	)
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if errs > 0 {
				l.log.Info("accept: accepting again", "listener", l.name, "errors", errs, "last_err", lastErr)
			}
			return c, nil
		}
		if errors.Is(err, net.ErrClosed) || l.isClosed() {
			return nil, err
		}
		errs++
		lastErr = err
		if l.OnError != nil {
			l.OnError(err)
		}
		delay = min(max(2*delay, Backoff), MaxBackoff)
		if now := time.Now(); now.Sub(logged) >= LogEvery {
			l.log.Warn("accept: failing, retrying (connections wait in the backlog)",
				"listener", l.name, "err", err, "errors", errs, "retry_in", delay)
			logged = now
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

// Close closes the listener and ends a backoff under way.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *Listener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// Gate admits connections within limits, decided from the peer's address
// alone before anything is allocated for the connection: at most Max in all
// and PerClient per address (zero: no limit), and only addresses Admit accepts
// (nil: all). A refused connection is closed at once; refusals are logged at
// most once per LogEvery per reason, with how many there were.
type Gate struct {
	Max, PerClient int
	Admit          func(netip.Addr) bool
	// OnRefuse, when set, is told of every refusal and its reason.
	OnRefuse func(reason string)

	name string
	log  *slog.Logger

	mu      sync.Mutex
	n       int
	per     map[netip.Addr]int
	refused map[string]*refusals
}

type refusals struct {
	logged time.Time
	n      int
}

// Reasons a Gate refuses a connection.
const (
	RefusedClient    = "client"     // Admit refused the address
	RefusedConns     = "conns"      // Max connections open
	RefusedPerClient = "per_client" // PerClient connections open from the address
)

// NewGate returns a gate named name in logs.
func NewGate(name string, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gate{name: name, log: log, per: map[netip.Addr]int{}, refused: map[string]*refusals{}}
}

// Enter counts a connection from a in, or says why it is refused; the caller
// closes a refused connection and calls Leave for an admitted one when it ends.
func (g *Gate) Enter(a netip.Addr) (ok bool, reason string) {
	if g.Admit != nil && !g.Admit(a) {
		g.refuse(a, RefusedClient)
		return false, RefusedClient
	}
	g.mu.Lock()
	switch {
	case g.Max > 0 && g.n >= g.Max:
		reason = RefusedConns
	case g.PerClient > 0 && g.per[a] >= g.PerClient:
		reason = RefusedPerClient
	default:
		g.n++
		g.per[a]++
		g.mu.Unlock()
		return true, ""
	}
	g.mu.Unlock()
	g.refuse(a, reason)
	return false, reason
}

// Leave counts a connection Enter admitted out.
func (g *Gate) Leave(a netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.per[a]--; g.per[a] <= 0 {
		delete(g.per, a)
	}
}

// Open is how many admitted connections are open.
func (g *Gate) Open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

func (g *Gate) refuse(a netip.Addr, reason string) {
	if g.OnRefuse != nil {
		g.OnRefuse(reason)
	}
	g.mu.Lock()
	r := g.refused[reason]
	if r == nil {
		r = &refusals{}
		g.refused[reason] = r
	}
	r.n++
	now := time.Now()
	if now.Sub(r.logged) < LogEvery {
		g.mu.Unlock()
		return
	}
	n := r.n
	r.n, r.logged = 0, now
	g.mu.Unlock()
	g.log.Warn("connections refused", "listener", g.name, "reason", refusalText(reason, g.Max, g.PerClient),
		"last_client", a, "refused", n, "within", LogEvery)
}

func refusalText(reason string, max, per int) string {
	switch reason {
	case RefusedClient:
		return "client outside every allow-list"
	case RefusedConns:
		return "connection limit reached (" + strconv.Itoa(max) + " open)"
	case RefusedPerClient:
		return "per-client connection limit reached (" + strconv.Itoa(per) + " from this address)"
	}
	return reason
}
