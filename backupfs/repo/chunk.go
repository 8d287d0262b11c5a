package repo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
)

// ErrCorrupt marks data that failed a checksum or does not decode. Callers
// test for it with errors.Is; the message names the object.
var ErrCorrupt = errors.New("corrupt")

// Two chunk file layouts exist; a reader tells them apart by the magic, so
// one repository may hold both (docs/repository-format.md, "Chunk files").
//
// Version 1, "RKC1" (little endian), one payload for the whole chunk:
//
//	0  4  magic "RKC1"
//	4  1  codec: 0 stored as is, 1 zstd
//	5  3  reserved, zero
//	8  4  uncompressed length
//	12 32 SHA-256 of the uncompressed bytes (the chunk's name)
//	44 8  xxhash64 of the uncompressed bytes
//	52 .. payload
//
// Version 2, "RKC2", the chunk cut into frames of 2^shift bytes, each
// compressed and checked on its own, so a small read decodes one frame:
//
//	0  4  magic "RKC2"
//	4  1  log2 of the frame size
//	5  3  reserved, zero
//	8  4  uncompressed length n
//	12 32 SHA-256 of the uncompressed bytes (the chunk's name)
//	44 4  frame count k = ceil(n / frame size)
//	48 16k frame table: stored length (4), codec (1), reserved (3), xxhash64 of
//	       the frame's uncompressed bytes (8)
//	48+16k 8 xxhash64 of bytes [0, 48+16k): header and table
//	56+16k .. the frames' stored bytes, in order
//
// Readers check the digest in the header against the name they asked for (a
// chunk stored under the wrong name is caught) and the xxhash64 of every
// frame they decode (damage is caught), at a fraction of the cost of
// re-hashing with SHA-256 on every read. VerifyChunk, behind `rekindle
// verify`, re-hashes.
const (
	chunkMagicV1      = "RKC1"
	chunkMagicV2      = "RKC2"
	chunkHeaderSize   = 52 // version 1
	chunkHeaderV2     = 48 // version 2, before the frame table
	frameEntrySize    = 16
	codecStored       = 0
	codecZstd         = 1
	minFrameShift     = 12
	maxFrameShift     = 24
	DefaultFrameShift = 15 // 32 KiB frames: see docs/repository-format.md
	// RawFrameShift is the frame size of a chunk that does not compress (4 KiB
	// frames): a small random read then reads and checks 4 KiB from storage,
	// not the 32 KiB frame around it (EncodeChunk).
	RawFrameShift = minFrameShift
)

var (
	zstdOnce     sync.Once
	zstdEnc      *zstd.Encoder // version 1: zstd's own frame checksum on
	zstdFrameEnc *zstd.Encoder // version 2: our per-frame xxhash64 instead
	zstdDec      *zstd.Decoder
)

func zstdCodecs() (*zstd.Encoder, *zstd.Decoder) {
	zstdOnce.Do(func() {
		n := runtime.GOMAXPROCS(0) * 2
		var err error
		zstdEnc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(n), zstd.WithZeroFrames(true))
		if err != nil {
			panic(err) // only on invalid static options
		}
		zstdFrameEnc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(n), zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false))
		if err != nil {
			panic(err)
		}
		zstdDec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(n),
			zstd.WithDecoderMaxMemory(MaxChunkSize), zstd.WithDecoderMaxWindow(MaxChunkSize))
		if err != nil {
			panic(err)
		}
	})
	return zstdEnc, zstdDec
}

// compresses reports whether zstd output of size z for n input bytes is worth
// keeping: it must save at least 1/32 (random data does not compress and
// reads faster stored).
func compresses(z, n int) bool { return z < n-n/32 }

// EncodeChunk returns the stored form of data, whose SHA-256 is d, in the
// current layout (version 2), with the frame size chosen per chunk: 32 KiB
// frames (DefaultFrameShift), or 4 KiB frames (RawFrameShift) when those
// store the chunk in at most 1/64 more bytes. A chunk that does not compress
// (random data, encrypted or already compressed files) is stored raw either
// way, and 4 KiB frames cost it only their longer frame table (0.3 % of a
// 256 KiB chunk) while a cold 4 KiB read of it then reads 4 KiB from storage
// instead of 32; a chunk that compresses keeps the 32 KiB frames zstd needs
// to find its repeats. Any version 2 reader reads both: the frame size is
// recorded in each chunk.
func EncodeChunk(d Digest, data []byte) []byte {
	wide := encodeChunkFrames(d, data, DefaultFrameShift, nil)
	stored := storedFrames(wide)
	if stored == nil {
		return wide // every frame compresses: keep zstd's 32 KiB window
	}
	// A 4 KiB frame inside a 32 KiB frame that did not save 1/32 is stored
	// as it is without trying zstd on it (it cannot save much either).
	ratio := 1 << (DefaultFrameShift - RawFrameShift)
	narrow := encodeChunkFrames(d, data, RawFrameShift, func(i int) bool { return stored[i/ratio] })
	if len(narrow) <= len(wide)+len(wide)/64 {
		return narrow
	}
	return wide
}

// storedFrames reports, for a layout 2 chunk just encoded, which frames are
// stored as they are; nil when none is.
func storedFrames(enc []byte) []bool {
	k := int(binary.LittleEndian.Uint32(enc[44:]))
	var stored []bool
	for i := range k {
		if enc[chunkHeaderV2+i*frameEntrySize+4] == codecStored {
			if stored == nil {
				stored = make([]bool, k)
			}
			stored[i] = true
		}
	}
	return stored
}

// EncodeChunkV1 returns the stored form of data in the version 1 layout, the
// one repositories of format version 1 keep getting so that older rekindle
// releases still read them.
func EncodeChunkV1(d Digest, data []byte) []byte {
	enc, _ := zstdCodecs()
	out := make([]byte, chunkHeaderSize, chunkHeaderSize+len(data)/2)
	copy(out, chunkMagicV1)
	binary.LittleEndian.PutUint32(out[8:], uint32(len(data)))
	copy(out[12:44], d[:])
	binary.LittleEndian.PutUint64(out[44:], xxhash.Sum64(data))
	out = enc.EncodeAll(data, out)
	if compresses(len(out)-chunkHeaderSize, len(data)) {
		out[4] = codecZstd
		return out
	}
	out = append(out[:chunkHeaderSize], data...)
	out[4] = codecStored
	return out
}

// encodeChunkFrames encodes data in layout 2 with frames of 2^shift bytes;
// raw, when not nil, names frames to store as they are without trying zstd.
func encodeChunkFrames(d Digest, data []byte, shift uint, raw func(i int) bool) []byte {
	zstdCodecs()
	fs := 1 << shift
	k := (len(data) + fs - 1) / fs
	tab := chunkHeaderV2 + frameEntrySize*k
	// Room for every frame stored as it is (the most a chunk can take): no
	// append ever grows it, which for a chunk that does not compress copied
	// it several times over.
	out := make([]byte, tab+8, tab+8+len(data))
	copy(out, chunkMagicV2)
	out[4] = byte(shift)
	binary.LittleEndian.PutUint32(out[8:], uint32(len(data)))
	copy(out[12:44], d[:])
	binary.LittleEndian.PutUint32(out[44:], uint32(k))
	for i := range k {
		frame := data[i*fs : min(len(data), (i+1)*fs)]
		start := len(out)
		codec := byte(codecZstd)
		if raw != nil && raw(i) {
			out = append(out, frame...)
			codec = codecStored
		} else if z := zeroFrame(shift); len(frame) == 1<<shift && IsZero(frame) {
			out = append(out, z...) // what the encoder makes of it, without the call
		} else if out = zstdFrameEnc.EncodeAll(frame, out); !compresses(len(out)-start, len(frame)) {
			out = append(out[:start], frame...)
			codec = codecStored
		}
		e := out[chunkHeaderV2+i*frameEntrySize:]
		binary.LittleEndian.PutUint32(e, uint32(len(out)-start))
		e[4] = codec
		binary.LittleEndian.PutUint64(e[8:], xxhash.Sum64(frame))
	}
	binary.LittleEndian.PutUint64(out[tab:], xxhash.Sum64(out[:tab]))
	return out
}

// zeroFrames holds, per frame shift, the zstd encoding of a whole frame of
// zeros: zero runs inside chunks are common (a disk's unused blocks) and a
// zstd call per 4 KiB frame of them cost more than the rest of the chunk.
var zeroFrames [maxFrameShift + 1]struct {
	once sync.Once
	enc  []byte
}

// zeroFrame returns the zstd encoding (as zstdFrameEnc writes it) of 2^shift
// zero bytes.
func zeroFrame(shift uint) []byte {
	z := &zeroFrames[shift]
	z.once.Do(func() { z.enc = zstdFrameEnc.EncodeAll(make([]byte, 1<<shift), nil) })
	return z.enc
}

// frameRef locates one frame in a chunk file.
type frameRef struct {
	off, size int64 // stored bytes in the file
	codec     byte
	sum       uint64 // xxhash64 of the uncompressed bytes
}

// chunkLayout is a chunk file's parsed header: its length, its frames (one
// frame covering the whole chunk for version 1) and where the payload starts.
type chunkLayout struct {
	name      Digest // the digest the header names
	n         int    // uncompressed length
	frameSize int
	frames    []frameRef
}

// frameSpan is the uncompressed byte range of frame i.
func (l *chunkLayout) frameSpan(i int) (lo, hi int) {
	return i * l.frameSize, min(l.n, (i+1)*l.frameSize)
}

// chunkHeaderLen is how many leading bytes of a chunk file parseLayout
// needs, given at least its first 48 bytes; 0 when the header is damaged
// beyond telling.
func chunkHeaderLen(head []byte) int {
	if len(head) < chunkHeaderV2 {
		return 0
	}
	switch string(head[:4]) {
	case chunkMagicV1:
		return chunkHeaderSize
	case chunkMagicV2:
		k := binary.LittleEndian.Uint32(head[44:])
		if k == 0 || k > MaxChunkSize>>minFrameShift {
			return 0
		}
		return chunkHeaderV2 + frameEntrySize*int(k) + 8
	}
	return 0
}

// parseLayout parses the header of a chunk file of fileSize bytes from its
// first bytes (at least chunkHeaderLen of them). fileSize -1 means unknown
// (version 2 only): the frames' ends are then checked when they are read. Errors say what is wrong;
// callers wrap them with the chunk's name and ErrCorrupt.
func parseLayout(head []byte, fileSize int64) (*chunkLayout, error) {
	hl := chunkHeaderLen(head)
	if hl == 0 || len(head) < hl || (fileSize >= 0 && fileSize < int64(hl)) {
		return nil, errors.New("bad header")
	}
	if head[5] != 0 || head[6] != 0 || head[7] != 0 {
		return nil, errors.New("reserved header bytes set")
	}
	n := binary.LittleEndian.Uint32(head[8:])
	if n == 0 || n > MaxChunkSize {
		return nil, fmt.Errorf("length %d out of range", n)
	}
	l := &chunkLayout{name: Digest(head[12:44]), n: int(n)}
	if string(head[:4]) == chunkMagicV1 {
		codec := head[4]
		size := fileSize - chunkHeaderSize
		switch {
		case codec == codecStored && size != int64(n):
			return nil, fmt.Errorf("stored length %d, header says %d", size, n)
		case codec != codecStored && codec != codecZstd:
			return nil, fmt.Errorf("unknown codec %d", codec)
		}
		l.frameSize = int(n)
		l.frames = []frameRef{{off: chunkHeaderSize, size: size, codec: codec, sum: binary.LittleEndian.Uint64(head[44:])}}
		return l, nil
	}
	tab := hl - 8
	if xxhash.Sum64(head[:tab]) != binary.LittleEndian.Uint64(head[tab:]) {
		return nil, errors.New("header checksum mismatch")
	}
	shift := head[4]
	if shift < minFrameShift || shift > maxFrameShift {
		return nil, fmt.Errorf("frame size 2^%d out of range", shift)
	}
	l.frameSize = 1 << shift
	k := (tab - chunkHeaderV2) / frameEntrySize
	if k != (l.n+l.frameSize-1)/l.frameSize {
		return nil, fmt.Errorf("%d frames for %d bytes of frame size %d", k, n, l.frameSize)
	}
	l.frames = make([]frameRef, k)
	off := int64(hl)
	for i := range l.frames {
		e := head[chunkHeaderV2+i*frameEntrySize:]
		f := frameRef{off: off, size: int64(binary.LittleEndian.Uint32(e)), codec: e[4], sum: binary.LittleEndian.Uint64(e[8:])}
		lo, hi := l.frameSpan(i)
		switch {
		case e[5] != 0 || e[6] != 0 || e[7] != 0:
			return nil, fmt.Errorf("frame %d: reserved bytes set", i)
		case f.codec == codecStored && f.size != int64(hi-lo):
			return nil, fmt.Errorf("frame %d: stored length %d, frame is %d bytes", i, f.size, hi-lo)
		case f.size > int64(hi-lo): // a writer keeps zstd only when it is smaller
			return nil, fmt.Errorf("frame %d: compressed length %d exceeds the frame's %d bytes", i, f.size, hi-lo)
		case f.codec != codecStored && f.codec != codecZstd:
			return nil, fmt.Errorf("frame %d: unknown codec %d", i, f.codec)
		case f.size == 0:
			return nil, fmt.Errorf("frame %d: empty", i)
		}
		l.frames[i] = f
		off += f.size
	}
	if fileSize >= 0 && off != fileSize {
		return nil, fmt.Errorf("frames end at %d, file is %d bytes", off, fileSize)
	}
	return l, nil
}

// decodeFrame decodes frame i, whose stored bytes are src, into dst (exactly
// the frame's uncompressed length) and checks its xxhash64.
func (l *chunkLayout) decodeFrame(i int, src, dst []byte) error {
	f := l.frames[i]
	switch f.codec {
	case codecStored:
		copy(dst, src)
	case codecZstd:
		if decodeFlatZstd(src, dst) {
			break
		}
		_, dec := zstdCodecs()
		out, err := dec.DecodeAll(src, dst[:0])
		if err != nil {
			return l.frameErr(i, fmt.Errorf("zstd: %v", err))
		}
		if len(out) != len(dst) {
			return l.frameErr(i, fmt.Errorf("decompressed length %d, want %d", len(out), len(dst)))
		}
		if len(out) > 0 && &out[0] != &dst[0] {
			copy(dst, out)
		}
	}
	if xxhash.Sum64(dst) != f.sum {
		return l.frameErr(i, errors.New("checksum mismatch"))
	}
	return nil
}

// decodeFlatZstd decodes a zstd frame (RFC 8878) made only of raw and RLE
// blocks, as the encoder writes a frame of zeros or of one repeated byte, and
// reports whether src was one. klauspost/compress fills an RLE block a byte
// at a time: a 32 KiB frame of zeros took 6 times as long per byte as a
// 1 MiB one (whose blocks are matches), which made 1 MiB chunks of 32 KiB
// frames read slower than one payload. Anything else, or anything that does
// not add up to exactly len(dst) bytes, is left to the zstd decoder; the
// caller checks the xxhash64 of what either wrote.
func decodeFlatZstd(src, dst []byte) bool {
	if len(src) < 6 || binary.LittleEndian.Uint32(src) != 0xFD2FB528 {
		return false
	}
	fhd := src[4]
	if fhd&0x08 != 0 { // reserved bit
		return false
	}
	p := 5
	single := fhd&0x20 != 0
	if !single {
		p++ // window descriptor
	}
	p += [4]int{0, 1, 2, 4}[fhd&3] // dictionary id
	fcs := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcs == 0 && single {
		fcs = 1
	}
	p += fcs
	out := 0
	for {
		if p+3 > len(src) {
			return false
		}
		h := uint32(src[p]) | uint32(src[p+1])<<8 | uint32(src[p+2])<<16
		p += 3
		last, typ, size := h&1 != 0, (h>>1)&3, int(h>>3)
		if out+size > len(dst) {
			return false
		}
		switch typ {
		case 0: // raw
			if p+size > len(src) {
				return false
			}
			copy(dst[out:out+size], src[p:p+size])
			p += size
		case 1: // RLE: one byte, size times
			if p >= len(src) {
				return false
			}
			fill(dst[out:out+size], src[p])
			p++
		default:
			return false
		}
		out += size
		if last {
			break
		}
	}
	if fhd&0x04 != 0 {
		p += 4 // content checksum: the caller checks its own
	}
	return p == len(src) && out == len(dst)
}

// fill sets every byte of b to v.
func fill(b []byte, v byte) {
	if v == 0 {
		clear(b)
		return
	}
	if len(b) == 0 {
		return
	}
	b[0] = v
	for n := 1; n < len(b); n *= 2 {
		copy(b[n:], b[:n])
	}
}

func (l *chunkLayout) frameErr(i int, err error) error {
	if len(l.frames) == 1 && l.frameSize == l.n {
		return err // a version 1 chunk has no frames to name
	}
	lo, hi := l.frameSpan(i)
	return fmt.Errorf("frame %d (bytes %d–%d): %w", i, lo, hi-1, err)
}

// decodeChunkPayload decodes a whole chunk file, checking every frame.
func decodeChunkPayload(raw []byte) (*chunkLayout, []byte, error) {
	l, err := parseLayout(raw, int64(len(raw)))
	if err != nil {
		return nil, nil, err
	}
	out := make([]byte, l.n)
	for i, f := range l.frames {
		lo, hi := l.frameSpan(i)
		if err := l.decodeFrame(i, raw[f.off:f.off+f.size], out[lo:hi]); err != nil {
			return l, nil, err
		}
	}
	return l, out, nil
}

// DecodeChunk checks and decodes a stored chunk (either layout) that should
// hold the bytes whose digest is want: the header must name want and every
// frame's decoded bytes must match its xxhash64. Damage is an error, never
// wrong bytes.
func DecodeChunk(want Digest, raw []byte) ([]byte, error) {
	l, data, err := decodeChunkPayload(raw)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w: %v", want, ErrCorrupt, err)
	}
	if l.name != want {
		return nil, fmt.Errorf("chunk %s: %w: the file holds chunk %s", want, ErrCorrupt, l.name)
	}
	return data, nil
}

// VerifyChunk is DecodeChunk plus a SHA-256 of the decoded bytes: proof that
// the chunk holds exactly the bytes its name promises.
func VerifyChunk(want Digest, raw []byte) ([]byte, error) {
	data, err := DecodeChunk(want, raw)
	if err != nil {
		return nil, err
	}
	if Sum(data) != want {
		return nil, fmt.Errorf("chunk %s: %w: SHA-256 mismatch", want, ErrCorrupt)
	}
	return data, nil
}

// ChunkLayoutVersion reports which layout (1 or 2) a stored chunk uses, or 0
// when its magic is neither.
func ChunkLayoutVersion(raw []byte) int {
	switch {
	case bytes.HasPrefix(raw, []byte(chunkMagicV1)):
		return 1
	case bytes.HasPrefix(raw, []byte(chunkMagicV2)):
		return 2
	}
	return 0
}

// IsZero reports whether b holds only zero bytes.
func IsZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
