package nfsd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// TestSmallRecordsKeepTheirBytes: small calls sent all at once on one
// connection, while the calls before them are still at work, keep their own
// bytes. A connection reads small calls into one spare record buffer while it
// is free (recordMem.spare); a small WRITE's data is written from its record,
// so a record buffer handed to the next call while a WRITE still used it would
// leave another call's bytes in the file.
func TestSmallRecordsKeepTheirBytes(t *testing.T) {
	dir := t.TempDir()
	const files, blocks, size = 4, 24, 40
	for i := range files {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), nil, 0o644)
	}
	ts := startServer(t, Config{StateDir: t.TempDir(), PipesPerConn: 4},
		Export{Path: "/x", FS: jitterFS{osfs.New(dir)}, ID: 2})
	n := newNFSClient(t, ts.Addr())
	root := n.mustMount("/x")
	var fhs [][]byte
	for i := range files {
		fhs = append(fhs, n.mustLookup(root, fmt.Sprintf("f%d", i)))
	}
	data := func(f, b int) []byte {
		s := fmt.Sprintf("file %d block %02d ", f, b)
		return []byte(s + strings.Repeat(string(rune('a'+b%26)), size-len(s)))
	}
	for round := range 3 {
		var pending []*rpc.Pending
		for b := range blocks {
			for f, fh := range fhs {
				p, err := n.c.Start(progNFS, 3, procWrite, writeArgs(fh, uint64(b*size), data(f, b)))
				if err != nil {
					t.Fatal(err)
				}
				pending = append(pending, p)
			}
		}
		waitAllOK(t, pending, fmt.Sprintf("round %d: a WRITE", round))
		for f := range files {
			var want []byte
			for b := range blocks {
				want = append(want, data(f, b)...)
			}
			p := filepath.Join(dir, fmt.Sprintf("f%d", f))
			if got, _ := os.ReadFile(p); string(got) != string(want) {
				t.Fatalf("round %d: f%d holds\n%q\nwant\n%q", round, f, got, want)
			}
			os.Truncate(p, 0)
		}
	}
}
