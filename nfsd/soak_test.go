//go:build soak

package nfsd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// TestSoak is issue 12's soak (make soak; not part of the test suite): 16
// clients, each on its own export, do mixed 64 KiB READs and WRITEs for
// SOAK_DURATION, first alone, then while hostile clients run against the same
// server (1000 idle connections, fragment floods, partial records). It prints
// the legitimate throughput of both runs and their ratio, the process's RSS,
// and checks zero errors and that every acknowledged write is there.
func TestSoak(t *testing.T) {
	dur, err := time.ParseDuration(os.Getenv("SOAK_DURATION"))
	if err != nil {
		dur = 30 * time.Second
	}
	const clients, fileSize, io64 = 16, 8 << 20, 64 << 10
	var exports []Export
	for i := range clients {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "disk"), make([]byte, fileSize), 0o644)
		exports = append(exports, Export{Path: fmt.Sprintf("/s%d", i), FS: osfs.New(dir), ID: uint32(10 + i)})
	}
	ts := startServer(t, Config{StateDir: t.TempDir(), Unsafe: true}, exports...)

	type client struct {
		n     *nfsClient
		fh    []byte
		acked map[uint64]byte
	}
	cs := make([]*client, clients)
	for i := range cs {
		n := newNFSClientFrom(t, fmt.Sprintf("127.0.1.%d", i+1), ts.Addr())
		root := n.mustMount(fmt.Sprintf("/s%d", i))
		cs[i] = &client{n: n, fh: n.mustLookup(root, "disk"), acked: map[uint64]byte{}}
	}
	var errs atomic.Int64
	run := func(d time.Duration) float64 {
		var moved atomic.Int64
		var wg sync.WaitGroup
		end := time.Now().Add(d)
		for i, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				seq := byte(0)
				for k := 0; time.Now().Before(end); k++ {
					off := uint64((k*7+i)%(fileSize/io64)) * io64
					if k%2 == 0 {
						seq++
						if st, _ := c.n.call(procWrite, writeArgs(c.fh, off, bytes.Repeat([]byte{seq}, io64))); st != 0 {
							errs.Add(1)
							continue
						}
						c.acked[off] = seq
					} else if st, data := c.n.read(c.fh, off, io64); st != 0 || len(data) != io64 {
						errs.Add(1)
						continue
					}
					moved.Add(io64)
				}
			}()
		}
		wg.Wait()
		return float64(moved.Load()) / d.Seconds() / (1 << 20)
	}

	alone := run(dur)
	rssAlone := rss()

	// Hostiles.
	stop := make(chan struct{})
	var hw sync.WaitGroup
	var idle []net.Conn
	for i := range 1000 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.2.%d", 1+i%10))}}
		if c, err := d.Dial("tcp", ts.Addr().String()); err == nil {
			idle = append(idle, c)
		}
	}
	null := rpc.CallRecord(1, progNFS, 3, procNull, rpc.Auth{}, nil)
	var flood []byte
	for j, b := range null {
		m := uint32(1)
		if j == len(null)-1 {
			m |= 1 << 31
		}
		flood = binary.BigEndian.AppendUint32(flood, m)
		flood = append(flood, b)
	}
	for i := range 8 {
		hw.Add(1)
		go func() { // fragment flood: NULL calls in one-byte fragments
			defer hw.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.3.%d", i+1))}}
			for {
				c, err := d.Dial("tcp", ts.Addr().String())
				if err != nil {
					return
				}
				go io.Copy(io.Discard, c)
				for {
					select {
					case <-stop:
						c.Close()
						return
					default:
					}
					if _, err := c.Write(flood); err != nil {
						break
					}
				}
				c.Close()
			}
		}()
	}
	for i := range 100 {
		hw.Add(1)
		go func() { // partial records, reopened when the server closes them
			defer hw.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.4.%d", 1+i%10))}}
			for {
				c, err := d.Dial("tcp", ts.Addr().String())
				if err != nil {
					return
				}
				c.Write(append([]byte{0x80, 0x10, 0, 0}, make([]byte, 1000)...))
				done := make(chan struct{})
				go func() { io.Copy(io.Discard, c); close(done) }()
				select {
				case <-stop:
					c.Close()
					return
				case <-done:
				}
			}
		}()
	}
	hostile := run(dur)
	rssHostile := rss()
	open := ts.gate.Open()
	close(stop)
	for _, c := range idle {
		c.Close()
	}
	hw.Wait()

	for i, c := range cs {
		for off, seq := range c.acked {
			st, data := c.n.read(c.fh, off, io64)
			if st != 0 || !bytes.Equal(data, bytes.Repeat([]byte{seq}, io64)) {
				t.Errorf("client %d: acknowledged write at %d not there", i, off)
			}
		}
	}
	t.Logf("soak %s per run, %d clients, 64 KiB READ/WRITE alternating, unsafe writes (the front is measured, not the disk)", dur, clients)
	t.Logf("legitimate throughput alone: %.1f MiB/s; with hostiles (1000 idle, 8 fragment floods, 100 partial records): %.1f MiB/s; ratio %.2f (goal >= 0.9)", alone, hostile, hostile/alone)
	t.Logf("process RSS (server and all clients): %s alone, %s with hostiles; record budget %d MiB, connections open under attack %d (limit %d)",
		rssAlone, rssHostile, ts.limits.RecordMemory>>20, open, ts.limits.MaxConns)
	t.Logf("errors: %d", errs.Load())
	if errs.Load() != 0 {
		t.Errorf("%d legitimate calls failed", errs.Load())
	}
}

func rss() string {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	return "?"
}
