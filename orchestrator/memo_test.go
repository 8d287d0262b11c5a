package orchestrator

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// TestMemoize: within a memo, a key is looked up once, by one caller while
// the others of the moment wait for it; a failed look is not kept; Forget
// drops a key; a memo inside a memo is the outer one; with none, every
// call looks.
func TestMemoize(t *testing.T) {
	var looks atomic.Int32
	look := func() (string, error) { looks.Add(1); return "ref-1", nil }

	ctx := context.Background()
	for range 3 {
		if v, err := Memoize(ctx, "host", look); err != nil || v != "ref-1" {
			t.Fatalf("without a memo: %q, %v", v, err)
		}
	}
	if n := looks.Swap(0); n != 3 {
		t.Errorf("without a memo: %d looks for 3 calls, want 3", n)
	}

	ctx = WithMemo(ctx)
	if inner := WithMemo(ctx); inner != ctx {
		t.Error("a memo inside a memo: a new one, want the outer one")
	}
	release := make(chan struct{})
	slow := func() (string, error) { <-release; return look() }
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if v, err := Memoize(ctx, "host", slow); err != nil || v != "ref-1" {
				t.Errorf("concurrent callers: %q, %v", v, err)
			}
		})
	}
	close(release)
	wg.Wait()
	if v, _ := Memoize(ctx, "host", look); v != "ref-1" {
		t.Errorf("later caller: %q", v)
	}
	if n := looks.Swap(0); n != 1 {
		t.Errorf("with a memo: %d looks for 9 calls of one key, want 1", n)
	}

	fail := errors.New("not found")
	if _, err := Memoize(ctx, "net", func() (string, error) { looks.Add(1); return "", fail }); !errors.Is(err, fail) {
		t.Errorf("failed look: %v", err)
	}
	if v, err := Memoize(ctx, "net", look); err != nil || v != "ref-1" {
		t.Errorf("after a failed look: %q, %v (the failure was kept)", v, err)
	}
	if n := looks.Swap(0); n != 2 {
		t.Errorf("a failed look, then another: %d looks, want 2", n)
	}

	Forget(ctx, "host")
	Memoize(ctx, "host", look)
	if n := looks.Swap(0); n != 1 {
		t.Errorf("after Forget: %d looks, want 1", n)
	}
}
