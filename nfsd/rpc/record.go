package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrTooManyFragments means a record came in more fragments than allowed.
var ErrTooManyFragments = errors.New("rpc: record has too many fragments")

// minGrow is the least a record buffer grows by.
const minGrow = 4 << 10

// RecordReader reads records from a stream within limits, in time and memory
// linear in the bytes that arrived: a record's buffer grows geometrically
// (amortised linear copying, however many fragments it comes in), and never to
// more than twice what arrived plus minGrow, whatever the marks announce, so a
// client that announces a large record and stops pins little memory.
type RecordReader struct {
	R io.Reader
	// MaxSize bounds a record's total size, fragment marks included; a larger
	// record is refused with ErrRecordTooLarge before its body is read.
	MaxSize int
	// MaxFragments bounds a record's fragments (zero: no bound); more are
	// refused with ErrTooManyFragments.
	MaxFragments int
	// Grow, when set, returns a buffer holding b's bytes with a capacity of at
	// least n (the reader's next step) and at most want (what the current
	// fragment still announces), or an error to give up the record (a memory
	// budget refusing). Nil grows with make and copy.
	Grow func(b []byte, n, want int) ([]byte, error)
	// Arrived, when set, returns how many bytes of the stream have arrived
	// and wait to be read (a socket's receive queue): the buffer grows to
	// hold them at once, within what the fragment announces, so a large
	// record that is there already is read into one buffer instead of
	// being copied through each doubling. The bound above holds: those
	// bytes arrived.
	Arrived func() int
}

// Append reads one record, appending it to dst. It returns the buffer it
// grew even when it fails, so that the caller can give it back; its contents
// are then undefined.
func (rr *RecordReader) Append(dst []byte) ([]byte, error) {
	rec := dst
	base := len(dst)
	total, frags := 0, 0
	var mark [4]byte
	for {
		if _, err := io.ReadFull(rr.R, mark[:]); err != nil {
			if err == io.ErrUnexpectedEOF || (err == io.EOF && total > 0) {
				return rec, io.ErrUnexpectedEOF
			}
			return rec, err
		}
		frags++
		if rr.MaxFragments > 0 && frags > rr.MaxFragments {
			return rec, fmt.Errorf("%w: more than %d", ErrTooManyFragments, rr.MaxFragments)
		}
		m := binary.BigEndian.Uint32(mark[:])
		last := m&(1<<31) != 0
		rem := int(m &^ (1 << 31))
		total += 4 + rem
		if total > rr.MaxSize {
			return rec, fmt.Errorf("%w: more than %d bytes", ErrRecordTooLarge, rr.MaxSize)
		}
		for rem > 0 {
			if len(rec) == cap(rec) {
				// Doubling, so that many small fragments cost linear time;
				// the last fragment needs no room past its end.
				step := max(minGrow, len(rec)-base)
				if rr.Arrived != nil {
					step = max(step, min(rr.Arrived(), rem))
				}
				if last {
					step = min(step, rem)
				}
				grown, err := rr.grow(rec, len(rec)+step, len(rec)+rem)
				if err != nil {
					return rec, err
				}
				rec = grown
			}
			n := min(rem, cap(rec)-len(rec))
			start := len(rec)
			rec = rec[:start+n]
			if _, err := io.ReadFull(rr.R, rec[start:]); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return rec, err
			}
			rem -= n
		}
		if last {
			return rec, nil
		}
	}
}

func (rr *RecordReader) grow(b []byte, n, want int) ([]byte, error) {
	if rr.Grow != nil {
		g, err := rr.Grow(b, n, want)
		if err != nil {
			return b, err
		}
		if cap(g) < n || len(g) != len(b) {
			return b, fmt.Errorf("rpc: record buffer grown to %d of %d bytes, want at least %d", len(g), cap(g), n)
		}
		return g, nil
	}
	g := make([]byte, len(b), n)
	copy(g, b)
	return g, nil
}
