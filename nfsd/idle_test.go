package nfsd

import (
	"net"
	"testing"
	"time"

	nfs "github.com/willscott/go-nfs"
)

// TestIdleTimeoutClosesOnlyQuietConnections: with the idle deadline moved
// only now and then (armedReader.recordDone), a connection that makes a call
// every IdleTimeout/4 stays open through 3 IdleTimeouts, and one that sends
// nothing is given at least IdleTimeout, then closed.
func TestIdleTimeoutClosesOnlyQuietConnections(t *testing.T) {
	const idle = 400 * time.Millisecond
	_, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir(), Limits: Limits{IdleTimeout: idle}}, exp)
	quiet, err := net.Dial("tcp", ts.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	opened := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		quiet.SetReadDeadline(time.Now().Add(30 * time.Second))
		quiet.Read(make([]byte, 1))
		closed <- time.Since(opened)
	}()

	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	hello := n.mustLookup(root, "hello.txt")
	for i := 0; time.Since(opened) < 3*idle; i++ {
		if st, data := n.read(hello, 0, 5); st != nfs.NFSStatusOk || string(data) != "hello" {
			t.Fatalf("READ %d of a busy connection, %v after it opened: %v %q", i, time.Since(opened), st, data)
		}
		time.Sleep(idle / 4)
	}
	select {
	case d := <-closed:
		if d < idle {
			t.Fatalf("the quiet connection was closed %v after it opened; IdleTimeout is %v", d, idle)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the quiet connection is still open")
	}
}
