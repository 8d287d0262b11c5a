// Package nfstest holds helpers for tests that run real NFS clients against
// rekindle's NFS service.
//
// QEMU's nfs:// driver only asks the portmapper on port 111, so tests that use it
// must own 127.0.0.1:111. They run in a private network namespace (make test runs
// the whole suite in one), where the port is free, but `go test ./...` runs the
// test binaries of several packages at once in that namespace. LockPortmap makes
// such tests take turns.
package nfstest

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"

	"golang.org/x/sys/unix"
)

// LockPortmap waits until no other test process holds the well-known portmapper
// port, up to wait, and holds it for tb until tb's cleanup: call it before
// binding port 111, so that the release comes after the server has stopped.
func LockPortmap(tb testing.TB, wait time.Duration) {
	tb.Helper()
	name := filepath.Join(os.TempDir(), "rekindle-portmap-111.lock")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		tb.Fatalf("portmap lock %s: %v", name, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) {
			f.Close()
			tb.Fatalf("portmap lock %s: another test held port 111 for %v: %v", name, wait, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Cleanup(func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	})
}

// DialMount connects go-nfs-client's MOUNT client to the portmapper at addr.
// go-nfs-client binds a random source port itself and gives up when that port
// is taken (by a socket in TIME_WAIT, say): DialMount tries again, with other
// ports, for up to ten seconds, and fails tb with the last error.
func DialMount(tb testing.TB, addr string) *nfsc.Mount {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := nfsc.DialMount(addr, 0)
		if err == nil {
			tb.Cleanup(func() { m.Close() })
			return m
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			tb.Fatalf("dial the NFS MOUNT service at %s: %v", addr, err)
		}
		time.Sleep(time.Millisecond)
	}
}
