package vcbackup

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
)

// FuzzStreamReader feeds the streamOptimized parser arbitrary streams: it
// must end with EOS or an error, never panic, never return a grain outside
// the disk or out of order, and allocate only bounded buffers.
func FuzzStreamReader(f *testing.F) {
	const size = 1 << 20
	disk := make([]byte, size)
	copy(disk[70000:], bytes.Repeat([]byte("rekindle"), 2000))
	disk[size-1] = 1
	var s bytes.Buffer
	if err := vcsimext.WriteStreamOptimized(&s, bytes.NewReader(disk), size, "f.vmdk"); err != nil {
		f.Fatal(err)
	}
	f.Add(s.Bytes())
	f.Add(s.Bytes()[:1500])
	f.Add(s.Bytes()[:512])
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := newStreamReader(bytes.NewReader(b), size)
		if err != nil {
			return
		}
		next := int64(0)
		for range 1 << 12 {
			off, data, err := r.nextGrain()
			if err == io.EOF {
				return
			}
			if err != nil {
				return
			}
			if off < next || off+int64(len(data)) > size {
				t.Fatalf("grain at %d (%d bytes) after %d in a %d-byte disk", off, len(data), next, size)
			}
			next = off + int64(len(data))
		}
	})
}

// The parser reads the stand-in's stream back to the disk.
func TestStreamReaderRoundTrip(t *testing.T) {
	const size = 2<<20 + 4096
	disk := make([]byte, size)
	copy(disk[1<<20-5:], bytes.Repeat([]byte{7, 1, 9}, 30000))
	disk[size-1] = 3
	var s bytes.Buffer
	if err := vcsimext.WriteStreamOptimized(&s, bytes.NewReader(disk), size, "r.vmdk"); err != nil {
		t.Fatal(err)
	}
	r, err := newStreamReader(&s, size)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	grains := 0
	for {
		off, data, err := r.nextGrain()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		copy(got[off:], data)
		grains++
	}
	if !bytes.Equal(got, disk) || grains != 4 {
		t.Fatalf("round trip: equal %v, %d grains, want equal and 4 (zero grains left out)", bytes.Equal(got, disk), grains)
	}
}

// A grain marker whose LBA is beyond the disk is refused, also when the
// LBA times the sector size wraps round to an offset inside the disk.
func TestStreamReaderRefusesWrappingLBA(t *testing.T) {
	const size = 1 << 20
	disk := make([]byte, size)
	copy(disk[size/2:], bytes.Repeat([]byte("rekindle"), 100))
	var s bytes.Buffer
	if err := vcsimext.WriteStreamOptimized(&s, bytes.NewReader(disk), size, "w.vmdk"); err != nil {
		t.Fatal(err)
	}
	b := s.Bytes()
	marker := binary.LittleEndian.Uint64(b[64:]) * 512 // overhead: the first marker
	lba := binary.LittleEndian.Uint64(b[marker:])
	if lba != size/2/512 {
		t.Fatalf("first grain at LBA %d, want %d", lba, size/2/512)
	}
	for _, bad := range []uint64{lba + 1<<55, lba + 1<<62, lba + 3<<62} {
		binary.LittleEndian.PutUint64(b[marker:], bad)
		r, err := newStreamReader(bytes.NewReader(b), size)
		if err != nil {
			t.Fatal(err)
		}
		if off, _, err := r.nextGrain(); err == nil || !strings.Contains(err.Error(), "LBA") {
			t.Fatalf("grain marker with LBA %#x: grain at disk offset %d, err %v; want a refusal naming the LBA", bad, off, err)
		}
	}
}
