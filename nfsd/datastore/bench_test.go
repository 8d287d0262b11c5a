package datastore

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"runtime"
	"strconv"
	"syscall"
	"testing"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	nrpc "github.com/rekindle/rekindle/nfsd/rpc"
)

// BenchmarkNFSSequentialRead reads the served restore point extent in 1 MiB
// requests through a real NFS client (go-nfs-client), warm cache. For
// profiling the server's per-request cost:
//
//	go test -run '^$' -bench NFSSequentialRead -cpuprofile cpu.out ./nfsd/datastore/
func BenchmarkNFSSequentialRead(b *testing.B) {
	e := newEnv(b, "")
	host, port, _ := net.SplitHostPort(e.svc.NFSAddr().String())
	p, _ := strconv.Atoi(port)
	client, err := nfsc.DialServiceAtPort(host, p)
	if err != nil {
		b.Fatal(err)
	}
	m := &nfsc.Mount{Client: client}
	v, err := m.Mount("/points", rpc.NewAuthUnix("bench", 0, 0).Auth())
	if err != nil {
		b.Fatal(err)
	}
	path := "web01/" + e.point.ID + "/web01-flat.vmdk"
	f, err := v.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	size := int64(len(e.extent))
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}

// readClient sends 4 KiB READs of e's restore point extent on one
// connection, from a minimal client that reuses its buffers.
type readClient struct {
	conn   net.Conn
	br     *bufio.Reader
	buf    []byte
	seq    [][]byte // a READ of every block, in order
	random [][]byte // as many READs at random blocks
}

const readClientSize = 4 << 10

func newReadClient(tb testing.TB, e *env) *readClient {
	tb.Helper()
	addr := e.svc.NFSAddr().String()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	client, err := nfsc.DialServiceAtPort(host, p)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close() })
	m := &nfsc.Mount{Client: client}
	v, err := m.Mount("/points", rpc.NewAuthUnix("bench", 0, 0).Auth())
	if err != nil {
		tb.Fatal(err)
	}
	_, fh, err := v.Lookup("web01/" + e.point.ID + "/web01-flat.vmdk")
	if err != nil {
		tb.Fatal(err)
	}
	blocks := len(e.extent) / readClientSize
	cred := nrpc.Auth{Flavor: nrpc.AuthUnix, Body: nrpc.UnixCredBody(nrpc.UnixCred{MachineName: "bench"})}
	call := func(i int) []byte {
		a := &nrpc.Encoder{}
		a.Opaque(fh)
		a.Uint64(uint64(i * readClientSize))
		a.Uint32(readClientSize)
		return nrpc.Frame(nrpc.CallRecord(uint32(i+1), 100003, 3, 6, cred, a.Bytes()))
	}
	c := &readClient{seq: make([][]byte, blocks), random: make([][]byte, blocks), buf: make([]byte, 1<<20)}
	for i := range blocks {
		c.seq[i] = call(i)
		c.random[i] = call(mrand.IntN(blocks))
	}
	if c.conn, err = net.Dial("tcp", addr); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.conn.Close() })
	c.br = bufio.NewReaderSize(c.conn, 256<<10)
	return c
}

// run makes n READs of calls (cycling), depth of them in flight.
func (c *readClient) run(calls [][]byte, n, depth int) error {
	sent := 0
	for ; sent < min(depth, n); sent++ {
		if _, err := c.conn.Write(calls[sent%len(calls)]); err != nil {
			return err
		}
	}
	for range n {
		rec, err := nrpc.ReadRecord(c.br, len(c.buf), c.buf)
		if err != nil {
			return err
		}
		r, err := nrpc.ParseReply(rec)
		if err != nil {
			return err
		}
		if !r.Accepted || r.Stat != nrpc.Success || len(r.Body) < 4 || binary.BigEndian.Uint32(r.Body) != 0 {
			return fmt.Errorf("READ failed: %+v", r)
		}
		if sent < n {
			if _, err := c.conn.Write(calls[sent%len(calls)]); err != nil {
				return err
			}
			sent++
		}
	}
	return nil
}

// BenchmarkNFSRandomRead4K sends 4 KiB READs of the served restore point
// extent at random offsets, warm (every block read once first), with depth
// calls in flight on one connection (readClient): allocs/op and cpu-ns/op
// (the process's CPU time per READ, user and system, the client's small
// share included) are the server's cost of a warm small READ, which load on
// the machine does not change (allocs) or changes less than throughput (CPU).
//
//	go test -run '^$' -bench NFSRandomRead4K -benchmem ./nfsd/datastore/
func BenchmarkNFSRandomRead4K(b *testing.B) {
	e := newEnv(b, "")
	c := newReadClient(b, e)
	if err := c.run(c.seq, len(c.seq), 8); err != nil { // warm: every block once
		b.Fatal(err)
	}
	for _, depth := range []int{1, 32} {
		b.Run(fmt.Sprintf("qd%d", depth), func(b *testing.B) {
			b.SetBytes(readClientSize)
			b.ReportAllocs()
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			if err := c.run(c.random, b.N, depth); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// TestWarmReadAllocs: a warm 4 KiB READ of a restore point costs the
// process (server and this test's client) at most maxWarmReadAllocs
// allocations: the handle's path is used as the view keeps it, the bytes are
// lent from one chunk without a closure, the reply goes out through the
// connection's own vector, the attributes are the view's own (29 before
// those); the call is read into the connection's spare record buffer, the
// reply's head built in the connection's own, the READ is not copied to the
// heap, the credential is checked without copying its machine name (14
// before those). See BenchmarkNFSRandomRead4K.
func TestWarmReadAllocs(t *testing.T) {
	const maxWarmReadAllocs = 8
	e := newEnv(t, "")
	c := newReadClient(t, e)
	if err := c.run(c.seq, len(c.seq), 8); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	if err := c.run(c.random, n, 1); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&m1)
	// Half an allocation per READ is left for the rest of the process.
	if per := float64(m1.Mallocs-m0.Mallocs) / n; per > maxWarmReadAllocs+0.5 {
		t.Fatalf("a warm 4 KiB READ costs %.1f allocations, want at most %d", per, maxWarmReadAllocs)
	} else {
		t.Logf("a warm 4 KiB READ costs %.1f allocations", per)
	}
}
