package nfsd

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/backupfs/overlay"
	"github.com/rekindle/rekindle/backupfs/view"
)

// sessionStack serves what the datastore serves for a session: a MountFS of
// overlays, each over a MountFS of view.Writable bases, with 4 KiB blocks.
// It returns the server, the export's root handle and the overlay.
func sessionStack(t testing.TB, disk []byte) (*testServer, *nfsClient, []byte, *overlay.Overlay) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "disk"), disk, 0o644); err != nil {
		t.Fatal(err)
	}
	base := view.NewMountFS("base:s")
	if err := base.Mount("vm", view.Writable(osfs.New(dir))); err != nil {
		t.Fatal(err)
	}
	ov, err := overlay.New(base, filepath.Join(t.TempDir(), "s"), overlay.Options{Salt: "s", BlockSize: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ov.Close() })
	root := view.NewMountFS("sessions")
	if err := root.Mount("s", ov); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{StateDir: t.TempDir()}, Export{Path: "/rekindle", FS: root, ID: 5})
	n := newNFSClient(t, ts.Addr())
	return ts, n, n.mustMount("/rekindle"), ov
}

// TestWriteAttributesFromOpenFile checks that a WRITE (a READ, a COMMIT) whose
// attributes come from the open file (OpenStater) answers byte for byte
// what the path Stat before it and the path Lstat after it give: for a
// base file's first write, a session file before and after it has a data
// file, stable writes into blocks not written yet (their bits in a record
// region: the data file is longer than the file), and a file truncated
// shorter and longer.
func TestWriteAttributesFromOpenFile(t *testing.T) {
	disk := make([]byte, 256<<10)
	rand.NewChaCha8([32]byte{3}).Read(disk)
	ts, n, root, ov := sessionStack(t, disk)
	s := ts.Server
	sdir := n.mustLookup(root, "s")
	vm := n.mustLookup(sdir, "vm")
	diskFH := n.mustLookup(vm, "disk")
	newFH := n.create(sdir, "new.log")

	xid := uint32(100)
	check := func(what string, fh []byte, off uint64, stable uint32, data []byte) {
		t.Helper()
		efs, parts, err := s.fileOf(fh)
		if err != nil {
			t.Fatal(err)
		}
		full := efs.Join(parts...)
		preInfo, err := efs.Stat(full)
		if err != nil {
			t.Fatal(err)
		}
		pre := nfs.ToFileAttribute(preInfo, full)
		xid++
		r := s.fastWrite(xid, &ioArgs{fh: fh, offset: off, count: uint32(len(data)), stable: stable, data: data})
		post, err := efs.Lstat(full)
		if err != nil {
			t.Fatal(err)
		}
		// The fast path must be the one under test (a base file has a node
		// once written).
		f, err := efs.Open(full)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := efs.statOpen(full, f); !ok {
			t.Fatalf("%s: the export's filesystem does not describe its open file", what)
		}
		f.Close()
		be := binary.BigEndian
		want := appendReplyHeader(make([]byte, 4), xid)
		want = be.AppendUint32(want, uint32(nfs.NFSStatusOk))
		want = be.AppendUint32(want, 1)
		want = be.AppendUint64(want, pre.Filesize)
		want = be.AppendUint32(want, pre.Mtime.Seconds)
		want = be.AppendUint32(want, pre.Mtime.Nseconds)
		want = be.AppendUint32(want, pre.Ctime.Seconds)
		want = be.AppendUint32(want, pre.Ctime.Nseconds)
		want = be.AppendUint32(want, 1)
		want = appendFattr3(want, nfs.ToFileAttribute(post, full))
		want = be.AppendUint32(want, uint32(len(data)))
		want = be.AppendUint32(want, stable)
		want = append(want, s.nfs.ID[:]...)
		if !bytes.Equal(r.head, want) {
			t.Errorf("%s: WRITE reply\n got %x\nwant %x\n(pre %+v, post size %d)", what, r.head, want, pre, post.Size())
		}

		// A READ of the file: its attributes are the path Stat's too.
		xid++
		r = s.fastRead(xid, &ioArgs{fh: fh, offset: off, count: uint32(len(data))})
		if r.buf != nil {
			defer putReadBuf(r.buf)
		}
		info, err := efs.Stat(full)
		if err != nil {
			t.Fatal(err)
		}
		want = appendReplyHeader(make([]byte, 4), xid)
		want = be.AppendUint32(want, uint32(nfs.NFSStatusOk))
		want = be.AppendUint32(want, 1)
		want = appendFattr3(want, nfs.ToFileAttribute(info, full))
		if len(r.head) < len(want) || !bytes.Equal(r.head[:len(want)], want) {
			t.Errorf("%s: READ reply\n got %x\nwant %x...", what, r.head, want)
		}

		xid++
		r = s.fastCommit(xid, &ioArgs{fh: fh})
		post, err = efs.Lstat(full)
		if err != nil {
			t.Fatal(err)
		}
		want = appendReplyHeader(make([]byte, 4), xid)
		want = be.AppendUint32(want, uint32(nfs.NFSStatusOk))
		want = be.AppendUint32(want, 0)
		want = be.AppendUint32(want, 1)
		want = appendFattr3(want, nfs.ToFileAttribute(post, full))
		want = append(want, s.nfs.ID[:]...)
		if !bytes.Equal(r.head, want) {
			t.Errorf("%s: COMMIT reply\n got %x\nwant %x", what, r.head, want)
		}
	}
	block := bytes.Repeat([]byte("w"), 4096)

	// A base file's first write: the pre-op attributes are the base's.
	check("base file, unstable", diskFH, 8192, unstable, []byte("first"))
	// Stable writes into blocks not written yet: records in a region past
	// the file's end.
	check("base file, stable, new block", diskFH, 64<<10, fileSync, block)
	check("base file, stable, another new block", diskFH, 100<<10+17, fileSync, []byte("second"))
	if fi, err := ov.Stat("/vm/disk"); err != nil || fi.Size() != int64(len(disk)) {
		t.Fatalf("Stat of the disk with records: %v, %v, want %d bytes", fi, err, len(disk))
	}
	check("base file, growing stable write", diskFH, uint64(len(disk))+10, fileSync, block)

	// A session file: no data file yet, then one.
	check("session file, first write", newFH, 0, unstable, []byte("hello"))
	check("session file, second write", newFH, 5, fileSync, block)

	// Truncated shorter, then longer, through the overlay.
	for _, size := range []int64{100, 1 << 20} {
		f, err := ov.OpenFile("/new.log", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		check("session file, truncated", newFH, 50, unstable, []byte("after truncate"))
	}
	f, err := ov.OpenFile("/vm/disk", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(10000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	check("base file, truncated", diskFH, 20000, fileSync, []byte("past the cut"))

	// A mode and an mtime set since: the node's.
	if err := ov.Chmod("/new.log", 0o600); err != nil {
		t.Fatal(err)
	}
	check("session file, chmod", newFH, 0, unstable, []byte("x"))
}
