package datastore

import (
	"io"
	"net"
	"strconv"
	"testing"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
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
