package repo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Index file layout (little endian):
//
//	0  4  magic "RKI1"
//	4  4  chunk size in bytes
//	8  8  size in bytes of the disk or file
//	16 8  entry count, = ceil(size / chunk size)
//	24 .. entries, 32 bytes each: the chunk's digest, all zero for a zero chunk
//
// The file is named by the SHA-256 of all its bytes.
const (
	indexMagic      = "RKI1"
	indexHeaderSize = 24
)

// Index is the flat chunk list of one disk or file version.
type Index struct {
	ChunkSize int
	Size      int64
	Chunks    []Digest
}

// NewIndex returns an index of size bytes with every chunk zero.
func NewIndex(chunkSize int, size int64) *Index {
	n := (size + int64(chunkSize) - 1) / int64(chunkSize)
	return &Index{ChunkSize: chunkSize, Size: size, Chunks: make([]Digest, n)}
}

// ChunkLen is the length of chunk i (the last one may be short).
func (x *Index) ChunkLen(i int) int {
	start := int64(i) * int64(x.ChunkSize)
	if rest := x.Size - start; rest < int64(x.ChunkSize) {
		return int(rest)
	}
	return x.ChunkSize
}

// Encode returns the index file bytes.
func (x *Index) Encode() []byte {
	b := make([]byte, indexHeaderSize, indexHeaderSize+32*len(x.Chunks))
	copy(b, indexMagic)
	binary.LittleEndian.PutUint32(b[4:], uint32(x.ChunkSize))
	binary.LittleEndian.PutUint64(b[8:], uint64(x.Size))
	binary.LittleEndian.PutUint64(b[16:], uint64(len(x.Chunks)))
	for _, d := range x.Chunks {
		b = append(b, d[:]...)
	}
	return b
}

// DecodeIndex parses an index file. It checks the header against the length
// before allocating, so hostile input cannot make it allocate more than the
// input's size.
func DecodeIndex(b []byte) (*Index, error) {
	if len(b) < indexHeaderSize || !bytes.Equal(b[:4], []byte(indexMagic)) {
		return nil, errors.New("index: bad header")
	}
	cs := int(binary.LittleEndian.Uint32(b[4:]))
	if err := validChunkSize(cs); err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	size := binary.LittleEndian.Uint64(b[8:])
	if size > MaxDiskSize {
		return nil, fmt.Errorf("index: size %d exceeds maximum %d", size, int64(MaxDiskSize))
	}
	count := binary.LittleEndian.Uint64(b[16:])
	if want := (size + uint64(cs) - 1) / uint64(cs); count != want {
		return nil, fmt.Errorf("index: %d entries for size %d at chunk size %d, want %d", count, size, cs, want)
	}
	if uint64(len(b)-indexHeaderSize) != count*32 {
		return nil, fmt.Errorf("index: %d entry bytes, header says %d entries", len(b)-indexHeaderSize, count)
	}
	x := &Index{ChunkSize: cs, Size: int64(size), Chunks: make([]Digest, count)}
	for i := range x.Chunks {
		copy(x.Chunks[i][:], b[indexHeaderSize+32*i:])
	}
	return x, nil
}
