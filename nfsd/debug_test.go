package nfsd

import (
	"github.com/rekindle/rekindle/nfsd/rpc"
	"testing"
)

func TestDebugAccess(t *testing.T) {
	_, exp := exportDir(t)
	ts := startServer(t, Config{StateDir: t.TempDir()}, exp)
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/rekindle")
	fh := n.mustLookup(root, "hello.txt")
	e := &rpc.Encoder{}
	e.Opaque(fh)
	e.Uint32(0x3f)
	st, d := n.call(procAccess, e.Bytes())
	t.Logf("status %v remaining %d", st, d.Remaining())
	if d.Bool() {
		b := d.Fixed(84)
		t.Logf("attr %x", b)
	}
	t.Logf("mask %x err %v", d.Uint32(), d.Err())
}
