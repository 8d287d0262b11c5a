package nfsd

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// The duplicate request cache. A client whose reply was lost (the connection
// broke, or the reply came too late) sends the call again, with the same XID,
// often on a new connection. Calls that are not idempotent would then fail
// where the first one succeeded: a CREATE again finds the file (EXIST), a
// REMOVE or RENAME finds nothing (NOENT). So the front remembers the replies of
// CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK and guarded SETATTR,
// keyed by the client's address (not its port: a reconnect has a new one), the
// XID, the procedure and a hash of the credential and arguments, and answers a
// duplicate with the first reply instead of doing the call again. A duplicate
// of a call still at work waits for its reply. The cache holds at most
// drcEntries calls, the least recently used go first, and forgets a call after
// drcTTL.
const (
	drcEntries = 8192
	drcTTL     = 10 * time.Minute
	// drcStuck is how long a call may be at work before its duplicates stop
	// waiting for it and run themselves.
	drcStuck = 2 * time.Minute
	// drcWaiters bounds the duplicates that wait for one call at once; more
	// get no answer (the client sends them again).
	drcWaiters = 4
)

type drcKey struct {
	client netip.Addr
	xid    uint32
	proc   uint32
	sum    [16]byte // credential and arguments
}

type drcEntry struct {
	key  drcKey
	born time.Time
	elem *list.Element
	done chan struct{} // closed once reply is set or the call abandoned
	// reply is the reply record (without its mark), nil until the call is
	// answered, and nil forever if it was abandoned.
	reply   []byte
	waiters atomic.Int32 // duplicates waiting for reply
}

// replyCache is the duplicate request cache of a Server.
type replyCache struct {
	mu  sync.Mutex
	m   map[drcKey]*drcEntry
	lru list.List // of *drcEntry, most recent first
}

// cached reports whether calls of proc go through the cache.
func cached(proc uint32, a *nfsArgs) bool {
	switch proc {
	case procCreate, procMkdir, procSymlink, procMknod, procRemove, procRmdir, procRename, procLink:
		return true
	case procSetattr:
		return a.guarded
	}
	return false
}

// begin looks a call up. It returns the entry to finish once the call is
// answered (nil when the call is not cached), or the earlier call's entry as
// dup when this call is a duplicate.
func (rc *replyCache) begin(client netip.Addr, call rpc.Call) (mine, dup *drcEntry) {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], call.Cred.Flavor)
	binary.BigEndian.PutUint32(b[4:], uint32(len(call.Cred.Body)))
	h.Write(b[:])
	h.Write(call.Cred.Body)
	h.Write(call.Args)
	k := drcKey{client: client, xid: call.XID, proc: call.Proc}
	copy(k.sum[:], h.Sum(nil))
	now := time.Now()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.m == nil {
		rc.m = map[drcKey]*drcEntry{}
	}
	if e := rc.m[k]; e != nil {
		age := now.Sub(e.born)
		select {
		case <-e.done:
			if e.reply != nil && age < drcTTL {
				rc.lru.MoveToFront(e.elem)
				return nil, e
			}
		default:
			if age < drcStuck {
				return nil, e
			}
		}
		rc.removeLocked(e)
	}
	// Make room: forget the oldest answered calls, and any past their time.
	for rc.lru.Len() >= drcEntries {
		rc.removeLocked(rc.lru.Back().Value.(*drcEntry))
	}
	for back := rc.lru.Back(); back != nil && now.Sub(back.Value.(*drcEntry).born) > drcTTL; back = rc.lru.Back() {
		rc.removeLocked(back.Value.(*drcEntry))
	}
	e := &drcEntry{key: k, born: now, done: make(chan struct{})}
	e.elem = rc.lru.PushFront(e)
	rc.m[k] = e
	return e, nil
}

func (rc *replyCache) removeLocked(e *drcEntry) {
	if rc.m[e.key] == e {
		delete(rc.m, e.key)
	}
	if e.elem != nil {
		rc.lru.Remove(e.elem)
		e.elem = nil
	}
}

// finish records the reply of a call (a copy of rec) and releases its
// duplicates.
func (rc *replyCache) finish(e *drcEntry, rec []byte) {
	if e == nil {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	select {
	case <-e.done:
		return
	default:
	}
	e.reply = append([]byte(nil), rec...)
	close(e.done)
}

// abandon forgets a call that got no reply (its connection broke before go-nfs
// answered): a duplicate runs the call itself.
func (rc *replyCache) abandon(e *drcEntry) {
	if e == nil {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	select {
	case <-e.done:
		return
	default:
	}
	rc.removeLocked(e)
	close(e.done)
}

// len is the number of calls remembered.
func (rc *replyCache) len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.lru.Len()
}

// answerDuplicate answers a duplicate call with the first call's reply: at once
// if it is there, else once it comes (on a goroutine of the connection's, so
// that reading goes on). A duplicate of a call that was abandoned meanwhile
// gets no answer; the client sends it again.
func (c *clientConn) answerDuplicate(dup *drcEntry) bool {
	c.s.m.duplicates.Inc()
	select {
	case <-dup.done:
		if dup.reply == nil {
			return true
		}
		return c.reply(dup.reply)
	default:
	}
	if dup.waiters.Add(1) > drcWaiters {
		dup.waiters.Add(-1)
		return true
	}
	// A call that never comes back (its connection closed while it was
	// queued) is given up on after drcStuck, as begin does.
	wait := time.NewTimer(max(time.Until(dup.born.Add(drcStuck)), 0))
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer dup.waiters.Add(-1)
		defer wait.Stop()
		select {
		case <-dup.done:
			if dup.reply != nil {
				c.reply(dup.reply)
			}
		case <-wait.C:
		case <-c.closed:
		}
	}()
	return true
}

// abandonQueued gives up the cached calls still queued on a pipe of a closed
// connection, so that their duplicates run them instead of waiting.
func (c *clientConn) abandonQueued(p *pipe) {
	for {
		select {
		case fc := <-p.queue:
			c.s.drc.abandon(fc.drc)
		default:
			return
		}
	}
}
