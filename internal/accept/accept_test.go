package accept

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a log sink safe for the accept goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAcceptSurvivesEMFILE runs a real listener out of file descriptors (a
// soft RLIMIT_NOFILE below the descriptors already open) with a client in its
// backlog: Accept must log, back off and retry, and hand over the connection
// once descriptors are available again, instead of returning EMFILE (which
// ends the loop of every server above it).
func TestAcceptSurvivesEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	l := New(ln, "test", slog.New(slog.NewTextHandler(&logs, nil)))
	defer l.Close()
	sawEMFILE := make(chan struct{})
	var once sync.Once
	l.OnError = func(err error) {
		if errors.Is(err, syscall.EMFILE) {
			once.Do(func() { close(sawEMFILE) })
		}
	}
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	low := saved
	low.Cur = 3 // below every descriptor the process holds: any new one fails
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()

	type result struct {
		c   net.Conn
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		got <- result{c, err}
	}()
	select {
	case <-sawEMFILE:
	case r := <-got:
		restore()
		t.Fatalf("Accept returned (%v, %v) while out of descriptors; want it to wait", r.c, r.err)
	case <-time.After(30 * time.Second):
		restore()
		t.Fatal("Accept never met EMFILE under a soft limit of 3 descriptors")
	}
	restore()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("Accept after descriptors were freed: %v, want the waiting connection", r.err)
		}
		r.c.Close()
	case <-time.After(30 * time.Second):
		t.Fatal("Accept did not recover within 30s of descriptors being available again")
	}
	out := logs.String()
	if !strings.Contains(out, "too many open files") || !strings.Contains(out, "listener=test") {
		t.Errorf("no warning naming the listener and the error was logged:\n%s", out)
	}
	if !strings.Contains(out, "accepting again") {
		t.Errorf("recovery was not logged:\n%s", out)
	}
}

// TestCloseEndsBackoff: a listener closed while backing off returns
// net.ErrClosed at once, so a server can stop while out of descriptors.
func TestCloseEndsBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(ln, "test", nil)
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return within 10s of Close")
	}
}
