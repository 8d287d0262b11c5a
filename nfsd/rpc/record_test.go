package rpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
)

// fragmented encodes body as n fragments of one byte (the last one carrying
// the rest).
func fragmented(body []byte) []byte {
	var out []byte
	for i, b := range body {
		m := uint32(1)
		if i == len(body)-1 {
			m |= 1 << 31
		}
		out = binary.BigEndian.AppendUint32(out, m)
		out = append(out, b)
	}
	return out
}

// TestOneByteFragmentsLinear (issue 12, item 4): a record sent as 20 000
// one-byte fragments allocates memory linear in its size (the reader used to
// grow the buffer by each fragment, copying the record every time: N²/2
// bytes, 200 MB here), and MaxFragments refuses it outright.
func TestOneByteFragmentsLinear(t *testing.T) {
	const n = 20000
	body := bytes.Repeat([]byte{7}, n)
	stream := fragmented(body)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rec, err := (&RecordReader{R: bytes.NewReader(stream), MaxSize: 1 << 20}).Append(nil)
	runtime.ReadMemStats(&after)
	if err != nil || !bytes.Equal(rec, body) {
		t.Fatalf("record of %d one-byte fragments: %d bytes, %v", n, len(rec), err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*n+64<<10 {
		t.Errorf("reading a %d-byte record in %d fragments allocated %d bytes; want linear (under %d)", n, n, alloc, 8*n+64<<10)
	}
	_, err = (&RecordReader{R: bytes.NewReader(stream), MaxSize: 1 << 20, MaxFragments: 1024}).Append(nil)
	if !errors.Is(err, ErrTooManyFragments) {
		t.Fatalf("record of %d fragments with MaxFragments 1024: %v, want ErrTooManyFragments", n, err)
	}
}

// TestBufferFollowsArrivedBytes (item 5): a mark announcing a megabyte
// followed by one byte makes the reader hold a buffer of a few KiB, not the
// megabyte announced.
func TestBufferFollowsArrivedBytes(t *testing.T) {
	stream := binary.BigEndian.AppendUint32(nil, 1<<31|1<<20)
	stream = append(stream, 1)
	rec, err := (&RecordReader{R: bytes.NewReader(stream), MaxSize: 2 << 20}).Append(nil)
	if err == nil {
		t.Fatal("a truncated record was read whole")
	}
	if cap(rec) > 2*minGrow {
		t.Fatalf("1 byte of an announced 1 MiB record holds a %d-byte buffer; want at most %d", cap(rec), 2*minGrow)
	}
}

// TestArrivedGrowsOnce: a 1 MiB record whose bytes have all arrived (Arrived
// says so) is read into one buffer grown once, not copied through every
// doubling; one that has not arrived still follows the arrived bytes.
func TestArrivedGrowsOnce(t *testing.T) {
	body := bytes.Repeat([]byte{9}, 1<<20)
	stream := append(binary.BigEndian.AppendUint32(nil, 1<<31|uint32(len(body))), body...)
	for _, tc := range []struct {
		name      string
		arrived   bool
		maxGrows  int
		maxCopied int
	}{
		{"all arrived", true, 1, 0},
		{"no hint", false, 64, 2 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bytes.NewReader(stream)
			grows, copied := 0, 0
			rr := &RecordReader{R: r, MaxSize: 2 << 20, Grow: func(b []byte, n, _ int) ([]byte, error) {
				grows++
				copied += len(b)
				g := make([]byte, len(b), n)
				copy(g, b)
				return g, nil
			}}
			if tc.arrived {
				rr.Arrived = func() int { return r.Len() }
			}
			rec, err := rr.Append(nil)
			if err != nil || !bytes.Equal(rec, body) {
				t.Fatalf("read %d bytes, %v", len(rec), err)
			}
			if grows > tc.maxGrows || copied > tc.maxCopied {
				t.Errorf("grew %d times copying %d bytes; want at most %d and %d", grows, copied, tc.maxGrows, tc.maxCopied)
			}
			if !tc.arrived && grows < 8 {
				t.Errorf("without the hint the buffer grew %d times: the doubling this test compares with is gone", grows)
			}
		})
	}
	// A mark announcing 1 MiB and 1 byte arrived: the hint does not make
	// the reader take the announced size.
	short := append(binary.BigEndian.AppendUint32(nil, 1<<31|1<<20), 1)
	r := bytes.NewReader(short)
	rec, err := (&RecordReader{R: r, MaxSize: 2 << 20, Arrived: func() int { return r.Len() }}).Append(nil)
	if err == nil {
		t.Fatal("a truncated record was read whole")
	}
	if cap(rec) > 2*minGrow {
		t.Fatalf("1 byte of an announced 1 MiB record holds a %d-byte buffer; want at most %d", cap(rec), 2*minGrow)
	}
}
