package nfsd

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	nfsc "github.com/willscott/go-nfs-client/nfs"
	nfscrpc "github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// The benchmarks read and write a 64 MiB file of an osfs export (warm: the
// page cache holds it) through the fast path and through go-nfs
// (Config.NoFastPath), at several queue depths:
//
//	go test -run '^$' -bench 'Read|Write' -benchmem ./nfsd/
//
// BenchmarkRead and BenchmarkWrite drive the server with a minimal pipelining
// client that reuses its buffers, so allocs/op, cpu-ns/op (the process's CPU
// time per call) and most of ns/op are the server's. BenchmarkReadGoNFSClient reads through go-nfs-client, a real
// (sequential) client.

const benchFileSize = 64 << 20

// benchServer serves a folder holding "data" (benchFileSize bytes) and returns
// the server and the file's handle.
func benchServer(b *testing.B, noFast bool) (*testServer, []byte) {
	b.Helper()
	dir := b.TempDir()
	data := make([]byte, benchFileSize)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	ts := startServer(b, Config{StateDir: b.TempDir(), NoFastPath: noFast, Unsafe: true},
		Export{Path: "/bench", FS: osfs.New(dir), ID: 3})
	n := newNFSClient(b, ts.Addr())
	fh := n.mustLookup(n.mustMount("/bench"), "data")
	n.c.Close()
	return ts, fh
}

// pipeClient sends pre-encoded calls on one connection, keeping depth of them
// in flight, and reads the replies into one reused buffer.
type pipeClient struct {
	conn net.Conn
	br   *bufio.Reader
	buf  []byte
}

func dialPipeClient(b *testing.B, addr net.Addr) *pipeClient {
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return &pipeClient{conn: conn, br: bufio.NewReaderSize(conn, 256<<10), buf: make([]byte, 2*MaxIO)}
}

// benchCall frames an NFS call; every call has the same XID, which this client
// does not need.
func benchCall(proc uint32, args []byte) []byte {
	return rpc.Frame(rpc.CallRecord(1, progNFS, 3, proc, rpc.Auth{Flavor: rpc.AuthNone}, args))
}

// benchWriteCall frames a WRITE as a host with an AUTH_UNIX credential
// (root): an AUTH_NONE caller is squashed to nobody, which may not write the
// benchmark's file (the WRITEs were answered ACCES).
func benchWriteCall(args []byte) []byte {
	cred := rpc.Auth{Flavor: rpc.AuthUnix, Body: rpc.UnixCredBody(rpc.UnixCred{MachineName: "bench"})}
	return rpc.Frame(rpc.CallRecord(1, progNFS, 3, procWrite, cred, args))
}

// recv reads one reply and checks its NFS status.
func (p *pipeClient) recv() error {
	rec, err := rpc.ReadRecord(p.br, len(p.buf), p.buf)
	if err != nil {
		return err
	}
	r, err := rpc.ParseReply(rec)
	if err != nil {
		return err
	}
	if !r.Accepted || r.Stat != rpc.Success || len(r.Body) < 4 || binary.BigEndian.Uint32(r.Body) != 0 {
		return fmt.Errorf("call failed: %+v", r)
	}
	return nil
}

// runBench makes b.N calls with depth in flight and reports the process's CPU
// time per call (user and system, client included: it is small).
func (p *pipeClient) runBench(b *testing.B, depth int, call func(i int) []byte) {
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	if err := p.run(b.N, depth, call); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// run makes n calls with depth in flight; call(i) is the i-th framed call.
func (p *pipeClient) run(n, depth int, call func(i int) []byte) error {
	sent := 0
	for ; sent < min(depth, n); sent++ {
		if _, err := p.conn.Write(call(sent)); err != nil {
			return err
		}
	}
	for done := 0; done < n; done++ {
		if err := p.recv(); err != nil {
			return err
		}
		if sent < n {
			if _, err := p.conn.Write(call(sent)); err != nil {
				return err
			}
			sent++
		}
	}
	return nil
}

var benchPaths = []struct {
	name   string
	noFast bool
}{{"fast", false}, {"gonfs", true}}

func BenchmarkRead(b *testing.B) {
	cases := []struct {
		name   string
		size   int
		random bool
		depths []int
	}{
		{"seq1MiB", 1 << 20, false, []int{1, 8}},
		{"rand4KiB", 4 << 10, true, []int{1, 32}},
	}
	for _, path := range benchPaths {
		ts, fh := benchServer(b, path.noFast)
		for _, c := range cases {
			// Arguments are encoded ahead: the loop measures the server.
			blocks := benchFileSize / c.size
			args := make([][]byte, blocks)
			for i := range args {
				off := i
				if c.random {
					off = rand.IntN(blocks)
				}
				args[i] = benchCall(procRead, readArgs(fh, uint64(off*c.size), uint32(c.size)))
			}
			for _, depth := range c.depths {
				b.Run(fmt.Sprintf("%s/%s/qd%d", c.name, path.name, depth), func(b *testing.B) {
					p := dialPipeClient(b, ts.Addr())
					b.SetBytes(int64(c.size))
					p.runBench(b, depth, func(i int) []byte { return args[i%blocks] })
				})
			}
		}
	}
}

// BenchmarkWrite writes 1 MiB blocks in sequence (Config.Unsafe: no sync, so
// the figure is the server's cost, not the disk's).
func BenchmarkWrite(b *testing.B) {
	const size = 1 << 20
	data := make([]byte, size)
	for _, path := range benchPaths {
		ts, fh := benchServer(b, path.noFast)
		blocks := benchFileSize / size
		args := make([][]byte, blocks)
		for i := range args {
			args[i] = benchWriteCall(writeArgs(fh, uint64(i*size), data))
		}
		for _, depth := range []int{1, 8} {
			b.Run(fmt.Sprintf("seq1MiB/%s/qd%d", path.name, depth), func(b *testing.B) {
				p := dialPipeClient(b, ts.Addr())
				b.SetBytes(size)
				p.runBench(b, depth, func(i int) []byte { return args[i%blocks] })
			})
		}
	}
}

// BenchmarkReadGoNFSClient reads sequentially through go-nfs-client, one call
// at a time.
func BenchmarkReadGoNFSClient(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		for _, path := range benchPaths {
			b.Run(fmt.Sprintf("%dKiB/%s", size>>10, path.name), func(b *testing.B) {
				ts, _ := benchServer(b, path.noFast)
				client, err := nfsc.DialServiceAtPort("127.0.0.1", ts.port())
				if err != nil {
					b.Fatal(err)
				}
				defer client.Close()
				m := &nfsc.Mount{Client: client}
				v, err := m.Mount("/bench", nfscrpc.NewAuthUnix("bench", 0, 0).Auth())
				if err != nil {
					b.Fatal(err)
				}
				f, err := v.Open("data")
				if err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				off := int64(0)
				for range b.N {
					if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
					off = (off + int64(size)) % benchFileSize
				}
			})
		}
	}
}

// BenchmarkWriteSession writes into a session's base file through the
// datastore's stack (sessionStack: MountFS, overlay, MountFS, Writable),
// UNSTABLE (the cost is the server's, no sync) and FILE_SYNC 4 KiB, with
// the WRITE's attributes from the open file (openstat) and from path
// Stats (pathstat), one after the other in one run.
func BenchmarkWriteSession(b *testing.B) {
	disk := make([]byte, benchFileSize)
	rand.NewChaCha8([32]byte{4}).Read(disk)
	ts, n, root, _ := sessionStack(b, disk)
	fh := n.mustLookup(n.mustLookup(n.mustLookup(root, "s"), "vm"), "disk")
	n.c.Close()
	defer pathStats.Store(false)
	for _, c := range []struct {
		name   string
		size   int
		stable uint32
	}{{"unstable4KiB", 4 << 10, unstable}, {"unstable1MiB", 1 << 20, unstable}, {"filesync4KiB", 4 << 10, fileSync}} {
		data := make([]byte, c.size)
		blocks := benchFileSize / c.size
		args := make([][]byte, blocks)
		for i := range args {
			args[i] = benchWriteCall(writeArgsHow(fh, uint64(i*c.size), uint32(c.size), c.stable, data))
		}
		for _, attrs := range []string{"openstat", "pathstat"} {
			b.Run(c.name+"/"+attrs, func(b *testing.B) {
				pathStats.Store(attrs == "pathstat")
				p := dialPipeClient(b, ts.Addr())
				b.SetBytes(int64(c.size))
				p.runBench(b, 1, func(i int) []byte { return args[i%blocks] })
			})
		}
	}
}
