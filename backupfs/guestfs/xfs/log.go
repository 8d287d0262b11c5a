package xfs

import (
	"errors"
	"fmt"
	"io"
)

// The log (journal) of an XFS volume, read only to tell whether it is
// clean. Written from the on-disk format ("XFS Algorithms & Data
// Structures", the log chapter); nothing is replayed.
//
// Words: the log is a ring of 512-byte basic blocks (BBs). It is written in
// records; each opens with a header (magic 0xFEEDBABE, the cycle, the
// record's data length, its number of log operations, the first word of
// each of its data BBs) and, for records over 32 KiB, extended header BBs.
// The first word of every other BB written is replaced by the cycle number
// of the pass that wrote it (its own first word saved in a header), which
// counts the times the writer went round the ring: the head, where the next
// record goes, is where the cycle number drops. A volume unmounted cleanly
// ends its log with an unmount record: one operation, flagged unmount.

const (
	bbSize         = 512
	logMagic       = 0xFEEDBABE
	hdrCycleSize   = 32 << 10 // the data bytes one header BB's cycle words cover
	opUnmount      = 0x20     // an operation header's flag: the unmount record
	maxRecordBBs   = 1024     // one record: at most 256 KiB of data and 8 header BBs (520 BBs), generously
	headWindowBBs  = 4096     // past the first old BB, records in flight (8 of 256 KiB) may have landed
	logReadChunkBB = 128      // BBs read at a time (64 KiB)
	maxLogRead     = 4 << 20  // what finding the head and the last record may read: about 2.7 MiB
)

// Log states.
const (
	logClean   = iota // the last record is an unmount record
	logDirty          // transactions after the last unmount: not replayed
	logUnknown        // the log's structures could not be read
)

// errLog marks a log whose structures contradict themselves.
var errLog = errors.New("log structures unreadable")

func logErrf(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), errLog)
}

// logReader reads the log: bbs basic blocks through r (offset 0 is the
// log's first BB), at most left bytes in all.
type logReader struct {
	r    io.ReaderAt
	bbs  int64
	left int64
}

func (l *logReader) read(bb, n int64) ([]byte, error) {
	if bb < 0 || n <= 0 || bb+n > l.bbs {
		return nil, logErrf("read of %d BBs at %d outside the log of %d", n, bb, l.bbs)
	}
	if l.left -= n * bbSize; l.left < 0 {
		return nil, logErrf("reading the log took more than its read bound")
	}
	b := make([]byte, n*bbSize)
	if m, err := l.r.ReadAt(b, bb*bbSize); int64(m) < n*bbSize {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("log BB %d: %w", bb, err)
	}
	return b, nil
}

// cycleOf is the cycle number of BB b: a header's h_cycle, else the
// stamped first word.
func cycleOf(b []byte) uint32 {
	if be.Uint32(b) == logMagic {
		return be.Uint32(b[4:])
	}
	return be.Uint32(b)
}

func (l *logReader) cycle(bb int64) (uint32, error) {
	b, err := l.read(bb, 1)
	if err != nil {
		return 0, err
	}
	return cycleOf(b), nil
}

// logHead is where the next record would go.
type logHead struct {
	bb    int64 // 1..bbs: BBs [0, bb) were written by the head's pass
	cycle uint32
}

func (h logHead) String() string { return fmt.Sprintf("BB %d, cycle %d", h.bb, h.cycle) }

// head finds the head: the BB after the last one written, and the cycle
// that wrote it. The BBs before it carry cycle c, those after it c-1
// (or the whole log carries c: the head is its end).
func (l *logReader) head() (logHead, error) {
	first, err := l.cycle(0)
	if err != nil {
		return logHead{}, err
	}
	if first == 0 {
		return logHead{}, logErrf("the log's first block was never written (cycle 0)")
	}
	last, err := l.cycle(l.bbs - 1)
	if err != nil {
		return logHead{}, err
	}
	if last == first {
		return logHead{l.bbs, first}, nil
	}
	if last != first-1 {
		return logHead{}, logErrf("the log's first block has cycle %d, its last %d", first, last)
	}
	// Bisect for the first BB of the older pass: [lo] is new, [hi] old.
	lo, hi := int64(0), l.bbs-1
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		c, err := l.cycle(mid)
		if err != nil {
			return logHead{}, err
		}
		switch c {
		case first:
			lo = mid
		case last:
			hi = mid
		default:
			return logHead{}, logErrf("log BB %d has cycle %d, between passes %d and %d", mid, c, first, last)
		}
	}
	// Records in flight when the volume stopped may have landed out of
	// order: a BB of the new pass past the first old one moves the head.
	h := hi
	for at := hi; at < min(hi+headWindowBBs, l.bbs); at += logReadChunkBB {
		n := min(logReadChunkBB, l.bbs-at, hi+headWindowBBs-at)
		b, err := l.read(at, n)
		if err != nil {
			return logHead{}, err
		}
		for i := range n {
			if cycleOf(b[i*bbSize:]) == first {
				h = at + i + 1
			}
		}
	}
	return logHead{h, first}, nil
}

// logRecord is a record header's fields this reader uses.
type logRecord struct {
	bb      int64 // where its header lies
	cycle   uint32
	version uint32
	length  int64 // data bytes
	lsnBB   int64 // the block its log sequence number names
	ops     uint32
	hdrBBs  int64 // header BBs, extended ones included
	word0   uint32
}

func parseRecord(b []byte, bb int64) (logRecord, error) {
	if len(b) < bbSize || be.Uint32(b) != logMagic {
		return logRecord{}, logErrf("BB %d: no record header", bb)
	}
	r := logRecord{bb: bb, cycle: be.Uint32(b[4:]), version: be.Uint32(b[8:]), length: int64(be.Uint32(b[12:])),
		lsnBB: int64(uint32(be.Uint64(b[16:]))), ops: be.Uint32(b[40:]), hdrBBs: 1, word0: be.Uint32(b[44:])}
	lsnCycle := uint32(be.Uint64(b[16:]) >> 32)
	switch r.version {
	case 1:
	case 2:
		if size := int64(be.Uint32(b[320:])); size > hdrCycleSize {
			r.hdrBBs = (size + hdrCycleSize - 1) / hdrCycleSize
		}
	default:
		return logRecord{}, logErrf("record at BB %d: version %d", bb, r.version)
	}
	if lsnCycle != r.cycle || r.lsnBB != bb {
		return logRecord{}, logErrf("record at BB %d: its sequence number says cycle %d BB %d", bb, lsnCycle, r.lsnBB)
	}
	if r.length <= 0 || r.length > maxRecordBBs*bbSize || r.hdrBBs > 8 {
		return logRecord{}, logErrf("record at BB %d: %d data bytes, %d header blocks", bb, r.length, r.hdrBBs)
	}
	return r, nil
}

func (r logRecord) bbs() int64 { return r.hdrBBs + (r.length+bbSize-1)/bbSize }

// logStateOf tells whether the log of bbs BBs read through r ends with an
// unmount record, and says why when it does not; maxRead bounds what it
// reads.
func logStateOf(r io.ReaderAt, bbs, maxRead int64) (state int, why string) {
	if bbs < 2 {
		return logUnknown, fmt.Sprintf("the log is %d blocks long", bbs)
	}
	l := &logReader{r: r, bbs: bbs, left: maxRead}
	h, err := l.head()
	if err != nil {
		return logUnknown, err.Error()
	}
	rec, err := l.lastRecord(h)
	if err != nil {
		return logUnknown, err.Error()
	}
	// In unwrapped BBs: a record written in the previous pass lies past
	// the head's BB and ends past the ring's end.
	end, headAt := rec.bb+rec.bbs(), h.bb
	if rec.bb >= h.bb {
		headAt += bbs
	}
	switch {
	case end > headAt:
		return logDirty, fmt.Sprintf("the last record (BB %d, %d blocks) runs past the head (%v): it was cut short", rec.bb, rec.bbs(), h)
	case end < headAt:
		return logDirty, fmt.Sprintf("blocks %d..%d were written after the last whole record (BB %d): a record cut short", end%bbs, h.bb-1, rec.bb)
	case rec.ops != 1:
		return logDirty, fmt.Sprintf("the last record (BB %d) holds %d operations, not an unmount record", rec.bb, rec.ops)
	}
	data, err := l.read((rec.bb+rec.hdrBBs)%bbs, 1)
	if err != nil {
		return logUnknown, err.Error()
	}
	be.PutUint32(data, rec.word0) // the op header's first word, saved under the cycle stamp
	if flags := data[9]; flags&opUnmount == 0 {
		return logDirty, fmt.Sprintf("the last record (BB %d) is a transaction (operation flags %#x), not an unmount record", rec.bb, flags)
	}
	return logClean, ""
}

// lastRecord finds the record before the head: the nearest header BB
// (data BBs start with a cycle number, never the magic), of the head's
// pass when it lies before the head's BB, of the pass before when the
// ring wraps between them.
func (l *logReader) lastRecord(h logHead) (logRecord, error) {
	for back := int64(0); back < min(maxRecordBBs, l.bbs); {
		// The chunk [at, at+n) ends at the head's BB minus back, not
		// across the ring's start.
		endBB := (h.bb-back+l.bbs-1)%l.bbs + 1
		n := min(logReadChunkBB, endBB, min(maxRecordBBs, l.bbs)-back)
		at := endBB - n
		b, err := l.read(at, n)
		if err != nil {
			return logRecord{}, err
		}
		for i := n - 1; i >= 0; i-- {
			bb := at + i
			if be.Uint32(b[i*bbSize:]) != logMagic {
				continue
			}
			rec, err := parseRecord(b[i*bbSize:(i+1)*bbSize], bb)
			if err != nil {
				return logRecord{}, err
			}
			want := h.cycle
			if bb >= h.bb {
				want--
			}
			if rec.cycle != want {
				return logRecord{}, logErrf("the last record (BB %d) has cycle %d, want %d (head %v)", bb, rec.cycle, want, h)
			}
			return rec, nil
		}
		back += n
	}
	return logRecord{}, logErrf("no record header within %d blocks before the head (%v)", maxRecordBBs, h)
}
