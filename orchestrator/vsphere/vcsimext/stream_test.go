package vcsimext_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/rekindle/rekindle/backupfs/vmfolder"
	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
)

// The stand-in's stream is a streamOptimized VMDK that rekindle's own VMDK
// reader (backupfs/vmfolder, which follows the grain directory rather than
// the markers) opens and reads back byte for byte.
func TestWriteStreamOptimizedReadable(t *testing.T) {
	const size = 3<<20 + 4096 // a last grain shorter than the others
	disk := make([]byte, size)
	var key [32]byte
	r := rand.NewChaCha8(key)
	for _, a := range []struct{ off, n int }{{0, 100}, {65536*3 - 7, 20}, {1 << 20, 300 << 10}, {size - 10, 10}} {
		_, _ = r.Read(disk[a.off : a.off+a.n])
	}
	copy(disk[2<<20:], bytes.Repeat([]byte("compressible "), 4000))
	var out bytes.Buffer
	if err := vcsimext.WriteStreamOptimized(&out, bytes.NewReader(disk), size, "d.vmdk"); err != nil {
		t.Fatal(err)
	}
	if out.Len() >= size/2 {
		t.Fatalf("stream of %d bytes for a mostly empty %d-byte disk: zero grains not left out, or not compressed", out.Len(), size)
	}
	p := filepath.Join(t.TempDir(), "d.vmdk")
	if err := os.WriteFile(p, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := vmfolder.OpenDisk(p)
	if err != nil {
		t.Fatalf("open the stand-in's stream as a VMDK: %v", err)
	}
	defer d.Close()
	if d.Size() != size {
		t.Fatalf("VMDK capacity %d, want %d", d.Size(), size)
	}
	got := make([]byte, size)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, disk) {
		t.Fatal("the stream reads back different from the disk")
	}
}
