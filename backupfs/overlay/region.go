package overlay

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
)

// The record region: a write that redirects new blocks becomes durable
// with one fdatasync, of its data file. Its bits are not written to the
// bitmap file at once (that would be a second fdatasync, which may only
// start once the data is durable); the sync appends a record naming the
// blocks, with a CRC-32C of each block's content, to a region of the data
// file past the file's end, and that one fdatasync makes data and record
// durable together. Since the disk may keep the record and lose the data
// (pages reach it in any order), a record counts, when the file is opened
// again, only for the blocks whose content matches their CRC. The bitmap
// file becomes a checkpoint, written off the hot path (see
// content.checkpoint). The format is in the package comment.
const (
	bitmapMagic2     = "RKOVBM02"
	bitmapHeaderLen2 = 64
	// regionAlign aligns the region's start, so records share no page
	// with the file's bytes.
	regionAlign = 4096
	// checkpointAt is the region size past which a sync writes a
	// checkpoint instead of a record.
	checkpointAt = 4 << 20
	// maxRecordBlocks is the most blocks one record names: a sync that
	// would name more writes a checkpoint (a huge COMMIT, rare).
	maxRecordBlocks = 1 << 16
	// maxRegionRead bounds the bytes read from a region at open.
	maxRegionRead = checkpointAt + 16 + 32 + 16*maxRecordBlocks
	recordHeadLen = 8  // length and CRC
	recordFixed   = 28 // epoch, seq, confirmed, run count
)

// bitmapHeader is what a version 2 bitmap file's header says.
type bitmapHeader struct {
	// epoch numbers the region's records: those of the file's epoch are
	// not in the bitmap yet, older ones are.
	epoch uint64
	// region is the data file offset of the record region, 0 for none.
	region int64
	// size is the file's size while it has a region (the data file is
	// longer: it holds the records too).
	size int64
}

func encodeBitmapHeader(bs int64, h bitmapHeader) []byte {
	b := make([]byte, bitmapHeaderLen2)
	copy(b, bitmapMagic2)
	binary.LittleEndian.PutUint32(b[8:], uint32(bs))
	binary.LittleEndian.PutUint64(b[16:], h.epoch)
	binary.LittleEndian.PutUint64(b[24:], uint64(h.region))
	binary.LittleEndian.PutUint64(b[32:], uint64(h.size))
	binary.LittleEndian.PutUint32(b[40:], crc32.Checksum(b[:40], castagnoli))
	return b
}

// decodeBitmapHeader reads a version 2 header (b starts with bitmapMagic2).
func decodeBitmapHeader(b []byte, bs int64) (bitmapHeader, error) {
	if len(b) < bitmapHeaderLen2 {
		return bitmapHeader{}, fmt.Errorf("%w: bitmap header cut short (%d bytes)", ErrCorruptMeta, len(b))
	}
	if crc32.Checksum(b[:40], castagnoli) != binary.LittleEndian.Uint32(b[40:]) {
		return bitmapHeader{}, fmt.Errorf("%w: bitmap header checksum mismatch", ErrCorruptMeta)
	}
	if got := binary.LittleEndian.Uint32(b[8:]); int64(got) != bs {
		return bitmapHeader{}, fmt.Errorf("%w: bitmap block size %d, overlay uses %d", ErrCorruptMeta, got, bs)
	}
	h := bitmapHeader{
		epoch:  binary.LittleEndian.Uint64(b[16:]),
		region: int64(binary.LittleEndian.Uint64(b[24:])),
		size:   int64(binary.LittleEndian.Uint64(b[32:])),
	}
	if h.region < 0 || h.size < 0 || (h.region > 0 && (h.region < h.size || h.region%regionAlign != 0)) {
		return bitmapHeader{}, fmt.Errorf("%w: bitmap header: region at %d, size %d", ErrCorruptMeta, h.region, h.size)
	}
	return h, nil
}

// blockSum is a redirected block and the CRC-32C of its content.
type blockSum struct {
	block int64
	sum   uint32
}

// record is one sync's entry in the region.
type record struct {
	epoch, seq uint64
	// confirmed is the last record of the epoch known durable when this
	// one was written: its blocks count whatever their content is now.
	confirmed uint64
	blocks    []blockSum // by block number
}

// appendRecord appends r, encoded, to dst. Consecutive blocks share a run:
// first block, count, then one CRC per block.
func appendRecord(dst []byte, r *record) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, recordHeadLen)...)
	dst = binary.LittleEndian.AppendUint64(dst, r.epoch)
	dst = binary.LittleEndian.AppendUint64(dst, r.seq)
	dst = binary.LittleEndian.AppendUint64(dst, r.confirmed)
	nruns := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	runs := uint32(0)
	for i := 0; i < len(r.blocks); {
		j := i + 1
		for j < len(r.blocks) && r.blocks[j].block == r.blocks[j-1].block+1 {
			j++
		}
		dst = binary.LittleEndian.AppendUint64(dst, uint64(r.blocks[i].block))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(j-i))
		for _, b := range r.blocks[i:j] {
			dst = binary.LittleEndian.AppendUint32(dst, b.sum)
		}
		runs++
		i = j
	}
	binary.LittleEndian.PutUint32(dst[nruns:], runs)
	payload := dst[start+recordHeadLen:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, castagnoli))
	return dst
}

// decodeRecords reads the records of epoch at the start of b, numbered
// 1, 2, ... The first record cut short, failing its CRC or of another
// epoch ends them (a torn tail, or a record of an epoch already in the
// bitmap); one that passes its CRC but does not decode, or breaks the
// numbering, is corruption. nblocks bounds the block numbers.
func decodeRecords(b []byte, epoch uint64, nblocks int64) ([]record, error) {
	var recs []record
	for off := 0; len(b)-off >= recordHeadLen; {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if n == 0 || n > len(b)-off-recordHeadLen {
			break
		}
		p := b[off+recordHeadLen : off+recordHeadLen+n]
		if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(b[off+4:]) {
			break
		}
		if len(p) < recordFixed {
			return nil, fmt.Errorf("%w: region record of %d bytes", ErrCorruptMeta, len(p))
		}
		r := record{
			epoch:     binary.LittleEndian.Uint64(p),
			seq:       binary.LittleEndian.Uint64(p[8:]),
			confirmed: binary.LittleEndian.Uint64(p[16:]),
		}
		if r.epoch != epoch {
			break
		}
		if r.seq != uint64(len(recs))+1 || r.confirmed >= r.seq {
			return nil, fmt.Errorf("%w: region record %d (confirming %d) after %d", ErrCorruptMeta, r.seq, r.confirmed, len(recs))
		}
		runs := binary.LittleEndian.Uint32(p[24:])
		q := p[recordFixed:]
		for range runs {
			if len(q) < 12 {
				return nil, fmt.Errorf("%w: region record %d cut short", ErrCorruptMeta, r.seq)
			}
			first, count := int64(binary.LittleEndian.Uint64(q)), int64(binary.LittleEndian.Uint32(q[8:]))
			q = q[12:]
			if count == 0 || int64(len(q)) < 4*count || first < 0 || first >= nblocks || count > nblocks-first {
				return nil, fmt.Errorf("%w: region record %d: blocks %d+%d of %d", ErrCorruptMeta, r.seq, first, count, nblocks)
			}
			for i := range count {
				r.blocks = append(r.blocks, blockSum{first + i, binary.LittleEndian.Uint32(q[4*i:])})
			}
			q = q[4*count:]
		}
		if len(q) != 0 {
			return nil, fmt.Errorf("%w: region record %d: %d bytes left over", ErrCorruptMeta, r.seq, len(q))
		}
		recs = append(recs, r)
		off += recordHeadLen + n
	}
	return recs, nil
}

// pendingSet is the blocks marked since the last record, each with its
// CRC: a bit per block says which, and the entries are kept in the order
// they were added (a block written again adds an entry; its last counts),
// so a write adds without hashing.
type pendingSet struct {
	bits      []byte
	list      []blockSum
	compacted int // len(list) after the last compaction
}

func (p *pendingSet) has(b int64) bool { return p.bits[b>>3]&(1<<(b&7)) != 0 }

func (p *pendingSet) add(b int64, sum uint32) {
	p.bits[b>>3] |= 1 << (b & 7)
	p.list = append(p.list, blockSum{b, sum})
}

// count is at least the number of blocks (entries of rewritten blocks
// count again).
func (p *pendingSet) count() int { return len(p.list) }

// take empties the set and returns its blocks in order, each once with
// its last CRC.
func (p *pendingSet) take() []blockSum {
	out := p.sorted()
	for _, s := range out {
		p.bits[s.block>>3] &^= 1 << (s.block & 7)
	}
	p.list, p.compacted = nil, 0
	return out
}

// compactIfLong drops the entries a later one of the same block
// overrides once the list is long (and twice what the last compaction
// left), so blocks rewritten many times between syncs do not grow it.
func (p *pendingSet) compactIfLong() {
	if n := len(p.list); n >= 1<<20 && n >= 2*p.compacted {
		p.list = p.sorted()
		p.compacted = len(p.list)
	}
}

// sorted returns the entries in block order, each block's last only, in
// the list's own array.
func (p *pendingSet) sorted() []blockSum {
	l := p.list
	slices.SortStableFunc(l, func(a, b blockSum) int { return cmp.Compare(a.block, b.block) })
	out := l[:0]
	for i, s := range l {
		if i+1 < len(l) && l[i+1].block == s.block {
			continue
		}
		out = append(out, s)
	}
	return out
}

func (p *pendingSet) reset() {
	clear(p.bits)
	p.list, p.compacted = nil, 0
}

// unconfSet is the blocks of records not confirmed yet, by record (in
// the order written): a bit per block, and each record's blocks in order.
type unconfSet struct {
	bits []byte
	recs []unconfRec
}

type unconfRec struct {
	seq    uint64
	blocks []blockSum
}

// seqOf returns the record that names block b, if it is not confirmed.
func (u *unconfSet) seqOf(b int64) (uint64, bool) {
	if u.bits[b>>3]&(1<<(b&7)) == 0 {
		return 0, false
	}
	for _, r := range u.recs {
		if _, ok := slices.BinarySearchFunc(r.blocks, b, func(s blockSum, b int64) int { return cmp.Compare(s.block, b) }); ok {
			return r.seq, true
		}
	}
	return 0, false
}

func (u *unconfSet) add(seq uint64, blocks []blockSum) {
	for _, s := range blocks {
		u.bits[s.block>>3] |= 1 << (s.block & 7)
	}
	u.recs = append(u.recs, unconfRec{seq, blocks})
}

// drop forgets the records at or below seq (confirm) or, with only, just
// record seq (a record that was not written).
func (u *unconfSet) drop(seq uint64, only bool) {
	keep := u.recs[:0]
	for _, r := range u.recs {
		if r.seq == seq || (!only && r.seq < seq) {
			for _, s := range r.blocks {
				u.bits[s.block>>3] &^= 1 << (s.block & 7)
			}
			continue
		}
		keep = append(keep, r)
	}
	clear(u.recs[len(keep):])
	u.recs = keep
}

func (u *unconfSet) reset() {
	clear(u.bits)
	u.recs = nil
}
