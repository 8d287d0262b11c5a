package orchestrator

import (
	"context"
	"sync"
)

// A memo keeps what a driver looked up (a host's, pool's or network's
// reference by name) for the calls of one run: a restore session's steps,
// or a whole site recovery. Only what was found is kept; a lookup that
// failed is made again on the next call. What the run itself creates is
// found by later lookups, since nothing missing is kept; what another
// party removes or renames meanwhile is seen by the next run (a resume).
type memo struct {
	mu sync.Mutex
	m  map[any]*memoEntry
}

type memoEntry struct {
	done chan struct{}
	val  any
	err  error
}

type memoKey struct{}

// WithMemo returns ctx with a memo for drivers' lookups (Memoize), or ctx
// itself when it has one already: a run inside a run shares the outer
// run's.
func WithMemo(ctx context.Context) context.Context {
	if _, ok := ctx.Value(memoKey{}).(*memo); ok {
		return ctx
	}
	return context.WithValue(ctx, memoKey{}, &memo{m: map[any]*memoEntry{}})
}

// Memoize returns what look returns for key, once per memo of ctx
// (WithMemo): callers of the same key meanwhile wait for the first one's
// look, and later ones get its value. A failed look is not kept. Without a
// memo in ctx, look runs every time.
func Memoize[T any](ctx context.Context, key any, look func() (T, error)) (T, error) {
	m, _ := ctx.Value(memoKey{}).(*memo)
	if m == nil {
		return look()
	}
	for {
		m.mu.Lock()
		e, ok := m.m[key]
		if !ok {
			e = &memoEntry{done: make(chan struct{})}
			m.m[key] = e
			m.mu.Unlock()
			v, err := look()
			e.val, e.err = v, err
			if err != nil {
				m.mu.Lock()
				delete(m.m, key)
				m.mu.Unlock()
			}
			close(e.done)
			return v, err
		}
		m.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
		if e.err == nil {
			return e.val.(T), nil
		}
		// The first look failed: look again (perhaps its context ended).
	}
}

// Forget drops key from ctx's memo: what was found there is gone or
// changed (a driver learns it from a call that used it).
func Forget(ctx context.Context, key any) {
	if m, _ := ctx.Value(memoKey{}).(*memo); m != nil {
		m.mu.Lock()
		delete(m.m, key)
		m.mu.Unlock()
	}
}
