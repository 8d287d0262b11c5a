package nfsd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/semaphore"
)

// Limits bound what clients can hold of the server: connections, time and the
// memory of call records. The zero value of a field takes its default.
//
// A connection from a client outside every allow-list, or over a connection
// limit, is closed as soon as it is accepted, before anything is allocated for
// it (counted in rekindle_nfs_refused_total as "client", "conns" or
// "per_client"). A call record's buffer grows with the bytes that arrived (at
// most twice as many, plus 4 KiB) and is charged to RecordMemory from its
// first byte until its reply leaves; a record that would exceed the budget
// waits for room until its RecordTimeout, then its connection is closed
// ("memory").
type Limits struct {
	// MaxConns bounds the open client connections to the NFS port; the
	// portmapper's TCP connections are bounded by it separately. Default:
	// DefaultMaxConns, or half the process's file-descriptor limit if lower.
	MaxConns int
	// MaxConnsPerClient bounds the open connections from one client address
	// (ESXi opens one or a few per datastore, QEMU one per disk). Default
	// DefaultMaxConnsPerClient.
	MaxConnsPerClient int
	// IdleTimeout closes a connection on which nothing arrived, and no call was
	// at work, for that long (at most IdleTimeout/16 later: the deadline is not
	// moved at every call). Clients reconnect by themselves. Default
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// RecordTimeout is how long a client may take to send a record once its
	// first byte arrived. Default DefaultRecordTimeout.
	RecordTimeout time.Duration
	// RecordMemory bounds the bytes held by call records being read or
	// answered, over all connections. Default DefaultRecordMemory; at least
	// MinRecordMemory.
	RecordMemory int64
	// MaxFragments bounds the fragments of one record. Default
	// DefaultMaxFragments.
	MaxFragments int
}

// Defaults of Limits.
const (
	DefaultMaxConns          = 4096
	DefaultMaxConnsPerClient = 128
	DefaultIdleTimeout       = 10 * time.Minute
	DefaultRecordTimeout     = 30 * time.Second
	DefaultRecordMemory      = 256 << 20
	DefaultMaxFragments      = 1024
	// MinRecordMemory is room for a few of the largest records.
	MinRecordMemory = 4 * (4 + maxCallRecord)
)

// withDefaults fills in the zero fields and checks the others.
func (l Limits) withDefaults() (Limits, error) {
	if l.MaxConns < 0 || l.MaxConnsPerClient < 0 || l.IdleTimeout < 0 || l.RecordTimeout < 0 || l.RecordMemory < 0 || l.MaxFragments < 0 {
		return l, fmt.Errorf("nfsd: limits may not be negative: %+v", l)
	}
	if l.MaxConns == 0 {
		l.MaxConns = DefaultMaxConns
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur/2 < uint64(l.MaxConns) {
			l.MaxConns = max(int(rl.Cur/2), 16)
		}
	}
	if l.MaxConnsPerClient == 0 {
		l.MaxConnsPerClient = DefaultMaxConnsPerClient
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.RecordTimeout == 0 {
		l.RecordTimeout = DefaultRecordTimeout
	}
	if l.RecordMemory == 0 {
		l.RecordMemory = DefaultRecordMemory
	}
	if l.RecordMemory < MinRecordMemory {
		return l, fmt.Errorf("nfsd: record memory %d bytes is below the %d a few of the largest calls need", l.RecordMemory, MinRecordMemory)
	}
	if l.MaxFragments == 0 {
		l.MaxFragments = DefaultMaxFragments
	}
	return l, nil
}

// Limits are the limits in force, defaults filled in.
func (s *Server) Limits() Limits { return s.limits }

// errNoMemory means a record found no room in the record memory budget in time.
var errNoMemory = errors.New("nfsd: record memory budget exhausted")

// recordBudget is RecordMemory: bytes of record buffers handed out and not
// given back. Every connection keeps its own count too, and gives back what
// it still holds when it ends, so a record dropped on an error path costs the
// budget only while its connection lives.
type recordBudget struct {
	sem   *semaphore.Weighted
	limit int64
	used  atomic.Int64
}

func newRecordBudget(limit int64) *recordBudget {
	return &recordBudget{sem: semaphore.NewWeighted(limit), limit: limit}
}

// Large record buffers come from pools by size class, so that a megabyte
// WRITE does not clear a fresh megabyte; smaller ones are left to the
// collector.
const pooledRecordMin = 64 << 10

var recordClasses = [...]int{128 << 10, 256 << 10, 512 << 10, 4 + maxCallRecord}

// recordPools are the pools of recordClasses; they hold only buffers given
// back, which the collector empties.
type recordPools [len(recordClasses)]sync.Pool

func (p *recordPools) get(n int) []byte {
	for i, c := range recordClasses {
		if n <= c {
			if b, ok := p[i].Get().(*[]byte); ok {
				return (*b)[:0]
			}
			return make([]byte, 0, c)
		}
	}
	return make([]byte, 0, n)
}

func (p *recordPools) put(b []byte) {
	for i, c := range recordClasses {
		if cap(b) == c {
			// A fresh pointer here, not &b: taking b's address would move
			// the parameter to the heap on every call, pooled or not.
			bp := new([]byte)
			*bp = b[:0]
			p[i].Put(bp)
			return
		}
	}
}

// spareRecord is the size of a connection's spare record buffer: room for any
// call but a WRITE's or a long name's (readCallRecord asks for 4+min(n, 512)
// bytes first).
const spareRecord = 4 + 512

// recordMem is one connection's share of the budget.
type recordMem struct {
	s    *Server
	held atomic.Int64
	// spare is a record buffer for small calls that the connection reuses
	// from call to call instead of allocating one per call (a warm READ's
	// record is given back before the next call is read). It is charged to
	// the budget like any other while in use; spareUsed says whether it is.
	spare     [spareRecord]byte
	spareUsed atomic.Bool
}

// grow is the connection's rpc.RecordReader.Grow: it charges the budget for a
// buffer of at least n bytes, waiting for room until the record's deadline
// (asked of deadline only if it must wait).
func (m *recordMem) grow(ctx context.Context, deadline func() time.Time, b []byte, n int) ([]byte, error) {
	size := n
	if n > pooledRecordMin {
		// The smallest pooled class that fits n.
		for _, c := range recordClasses {
			if n <= c {
				size = c
				break
			}
		}
	}
	spare := size <= spareRecord && m.spareUsed.CompareAndSwap(false, true)
	if spare {
		size = spareRecord // charged as what it is
	}
	if err := m.charge(ctx, deadline, int64(size)); err != nil {
		if spare {
			m.spareUsed.Store(false)
		}
		return b, err
	}
	var g []byte
	switch {
	case spare:
		g = m.spare[:0]
	case size > pooledRecordMin:
		g = m.s.recPools.get(size)
	default:
		g = make([]byte, 0, size)
	}
	g = append(g, b...)
	m.release(b)
	return g, nil
}

// charge takes n bytes of the budget, waiting for room until deadline()
// (nil: RecordTimeout from now).
func (m *recordMem) charge(ctx context.Context, deadline func() time.Time, n int64) error {
	bud := m.s.budget
	if !bud.sem.TryAcquire(n) {
		d := time.Now().Add(m.s.limits.RecordTimeout)
		if deadline != nil {
			d = deadline()
		}
		wctx, cancel := context.WithDeadline(ctx, d)
		err := bud.sem.Acquire(wctx, n)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: %d of %d bytes in use, %d more wanted", errNoMemory, bud.used.Load(), bud.limit, n)
		}
	}
	bud.used.Add(n)
	m.held.Add(n)
	return nil
}

// release gives back a record buffer the connection's reader handed out, to
// the budget and, if pooled, to its pool.
func (m *recordMem) release(b []byte) {
	n := int64(cap(b))
	if n == 0 {
		return
	}
	m.held.Add(-n)
	m.s.budget.used.Add(-n)
	m.s.budget.sem.Release(n)
	if n == spareRecord && &b[:1][0] == &m.spare[0] {
		m.spareUsed.Store(false) // after every use of it: the next grow may take it
		return
	}
	m.s.recPools.put(b)
}

// close gives back whatever the connection still holds (records dropped when
// it broke); nothing of it may be released after.
func (m *recordMem) close() {
	if n := m.held.Swap(0); n != 0 {
		m.s.budget.used.Add(-n)
		m.s.budget.sem.Release(n)
	}
}
