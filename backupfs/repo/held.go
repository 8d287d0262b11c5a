package repo

import (
	"container/list"
	"sync"
	"sync/atomic"
)

// Held is memory that something other than chunks keeps because of the
// repository's data (an opened guest volume's metadata), charged against
// the same bound as the chunk cache: while it is held the cache keeps
// fewer chunks, and when holdings pass half the bound the least recently
// used ones are released (their owner drops what it held, to open it
// again when needed).
type Held struct {
	c       *Cache
	bytes   int64
	release func()
	elem    *list.Element // nil once released
}

// holdings is a Cache's list of Held, most recently used first.
type holdings struct {
	mu    sync.Mutex
	order list.List
	bytes atomic.Int64 // changed under mu; read by trim without it
}

// Hold charges bytes to the cache's bound on behalf of an owner, who is
// told to let go by release (called without locks held, from whichever
// goroutine's Hold needed the room; it must not call Hold). Other
// holdings are released first to make room; the new one is kept even
// when it alone passes half the bound.
func (c *Cache) Hold(bytes int64, release func()) *Held {
	h := &Held{c: c, bytes: bytes, release: release}
	c.held.mu.Lock()
	h.elem = c.held.order.PushFront(h)
	c.held.bytes.Add(bytes)
	var victims []*Held
	for c.held.bytes.Load() > c.maxBytes/2 {
		back := c.held.order.Back()
		if back == nil || back.Value == h {
			break
		}
		v := back.Value.(*Held)
		c.held.order.Remove(back)
		v.elem = nil
		c.held.bytes.Add(-v.bytes)
		victims = append(victims, v)
	}
	c.held.mu.Unlock()
	c.trim()
	for _, v := range victims {
		v.release()
	}
	return h
}

// Touch marks the holding as used now.
func (h *Held) Touch() {
	h.c.held.mu.Lock()
	if h.elem != nil {
		h.c.held.order.MoveToFront(h.elem)
	}
	h.c.held.mu.Unlock()
}

// Release gives the bytes back (the owner let go itself); release is not
// called. Releasing twice is harmless.
func (h *Held) Release() {
	h.c.held.mu.Lock()
	if h.elem == nil {
		h.c.held.mu.Unlock()
		return
	}
	h.c.held.order.Remove(h.elem)
	h.elem = nil
	h.c.held.bytes.Add(-h.bytes)
	h.c.held.mu.Unlock()
}
