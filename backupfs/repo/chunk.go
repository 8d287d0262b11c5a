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

// Chunk file layout (little endian):
//
//	0  4  magic "RKC1"
//	4  1  codec: 0 stored as is, 1 zstd
//	5  3  reserved, zero
//	8  4  uncompressed length
//	12 32 SHA-256 of the uncompressed bytes (the chunk's name)
//	44 8  xxhash64 of the uncompressed bytes
//	52 .. payload
//
// Readers check the digest in the header against the name they asked for (a
// chunk stored under the wrong name is caught) and the xxhash64 of what they
// decoded (damage is caught), at a fraction of the cost of re-hashing with
// SHA-256 on every read. VerifyChunk, behind `rekindle verify`, re-hashes.
const (
	chunkMagic      = "RKC1"
	chunkHeaderSize = 52
	codecStored     = 0
	codecZstd       = 1
)

var (
	zstdOnce sync.Once
	zstdEnc  *zstd.Encoder
	zstdDec  *zstd.Decoder
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
		zstdDec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(n),
			zstd.WithDecoderMaxMemory(MaxChunkSize), zstd.WithDecoderMaxWindow(MaxChunkSize))
		if err != nil {
			panic(err)
		}
	})
	return zstdEnc, zstdDec
}

// EncodeChunk returns the stored form of data, whose SHA-256 is d: zstd when
// that saves at least 1/32 of the size, else the bytes as they are (random
// data does not compress and reads faster stored).
func EncodeChunk(d Digest, data []byte) []byte {
	enc, _ := zstdCodecs()
	out := make([]byte, chunkHeaderSize, chunkHeaderSize+len(data)/2)
	copy(out, chunkMagic)
	binary.LittleEndian.PutUint32(out[8:], uint32(len(data)))
	copy(out[12:44], d[:])
	binary.LittleEndian.PutUint64(out[44:], xxhash.Sum64(data))
	out = enc.EncodeAll(data, out)
	if len(out)-chunkHeaderSize < len(data)-len(data)/32 {
		out[4] = codecZstd
		return out
	}
	out = append(out[:chunkHeaderSize], data...)
	out[4] = codecStored
	return out
}

// DecodeChunk checks and decodes a stored chunk that should hold the bytes
// whose digest is want: the header must name want and the decoded bytes must
// match the header's xxhash64. Damage is an error, never wrong bytes.
func DecodeChunk(want Digest, raw []byte) ([]byte, error) {
	data, err := decodeChunkPayload(raw)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w: %v", want, ErrCorrupt, err)
	}
	if got := Digest(raw[12:44]); got != want {
		return nil, fmt.Errorf("chunk %s: %w: the file holds chunk %s", want, ErrCorrupt, got)
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

func decodeChunkPayload(raw []byte) ([]byte, error) {
	if len(raw) < chunkHeaderSize || !bytes.Equal(raw[:4], []byte(chunkMagic)) {
		return nil, errors.New("bad header")
	}
	if raw[5] != 0 || raw[6] != 0 || raw[7] != 0 {
		return nil, errors.New("reserved header bytes set")
	}
	n := binary.LittleEndian.Uint32(raw[8:])
	if n == 0 || n > MaxChunkSize {
		return nil, fmt.Errorf("length %d out of range", n)
	}
	payload := raw[chunkHeaderSize:]
	switch raw[4] {
	case codecStored:
		if uint32(len(payload)) != n {
			return nil, fmt.Errorf("stored length %d, header says %d", len(payload), n)
		}
		return checkSum(raw, payload)
	case codecZstd:
		_, dec := zstdCodecs()
		out, err := dec.DecodeAll(payload, make([]byte, 0, n))
		if err != nil {
			return nil, fmt.Errorf("zstd: %v", err)
		}
		if uint32(len(out)) != n {
			return nil, fmt.Errorf("decompressed length %d, header says %d", len(out), n)
		}
		return checkSum(raw, out)
	default:
		return nil, fmt.Errorf("unknown codec %d", raw[4])
	}
}

func checkSum(raw, data []byte) ([]byte, error) {
	if xxhash.Sum64(data) != binary.LittleEndian.Uint64(raw[44:52]) {
		return nil, errors.New("checksum mismatch")
	}
	return data, nil
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
