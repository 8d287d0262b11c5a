package gfs

import (
	"errors"
	"fmt"
	"io"
)

// Piece is Len bytes of a file or volume as they lie elsewhere: at Off of R,
// or zeros (a hole, an unwritten extent) when R is nil.
type Piece struct {
	R   io.ReaderAt
	Off int64
	Len int64
}

// Mapper is implemented by an io.ReaderAt whose bytes lie in place in
// another one: a file's extents on its volume, a partition on its disk, a
// logical volume on its physical volumes. Map returns the pieces holding
// bytes [off, off+n) in order; they cover fewer than n bytes only at the
// end of the file. It does no I/O the reader's ReadAt would not do, and a
// file whose bytes do not lie in place (compressed, inline) does not
// implement it, or returns ErrNotMapped.
//
// The NFS server uses it to lend the chunk cache's own bytes to a READ of a
// guest file instead of copying them (see guestfs).
type Mapper interface {
	Map(off, n int64) ([]Piece, error)
}

// ErrNotMapped: the bytes asked for are not in place anywhere (read them
// with ReadAt).
var ErrNotMapped = fmt.Errorf("bytes not in place: %w", ErrUnsupported)

// maxDepth bounds Resolve's descent: file, volume, logical volume, disk.
const maxDepth = 8

// Resolve maps bytes [off, off+n) of r down through every Mapper on the way
// to the readers that hold them (a repository disk, in rekindle): pieces
// whose R is not a Mapper, or nil for zeros. Pieces of zeros or of the same
// reader that follow each other are merged. It returns the pieces and how
// many bytes they hold (fewer than n at the end of r).
func Resolve(r io.ReaderAt, off, n int64) ([]Piece, int64, error) {
	var out []Piece
	got, err := resolve(r, off, n, 0, &out)
	return out, got, err
}

func resolve(r io.ReaderAt, off, n int64, depth int, out *[]Piece) (int64, error) {
	m, ok := r.(Mapper)
	if !ok {
		add(out, Piece{R: r, Off: off, Len: n})
		return n, nil
	}
	if depth >= maxDepth {
		return 0, fmt.Errorf("pieces nested more than %d deep: %w", maxDepth, ErrCorrupt)
	}
	ps, err := m.Map(off, n)
	if err != nil {
		return 0, err
	}
	var got int64
	for _, p := range ps {
		if p.Len < 0 || got+p.Len > n {
			return got, fmt.Errorf("a reader mapped %d bytes where %d were asked: %w", got+p.Len, n, ErrCorrupt)
		}
		if p.R == nil {
			add(out, p)
			got += p.Len
			continue
		}
		k, err := resolve(p.R, p.Off, p.Len, depth+1, out)
		got += k
		if err != nil {
			return got, err
		}
		if k < p.Len { // the lower reader ended early: the end of what is mapped
			return got, nil
		}
	}
	return got, nil
}

// add appends p to out, merging it into the last piece when they follow
// each other.
func add(out *[]Piece, p Piece) {
	if p.Len == 0 {
		return
	}
	if k := len(*out) - 1; k >= 0 {
		last := &(*out)[k]
		if last.R == p.R && (p.R == nil || last.Off+last.Len == p.Off) {
			last.Len += p.Len
			return
		}
	}
	*out = append(*out, p)
}

// ReadPieces fills p from pieces in order (zeros for holes) and returns how
// many bytes they held. A piece its reader ends before is an error wrapping
// ErrCorrupt (the map points past the end of the volume); a read error is
// returned wrapped.
func ReadPieces(p []byte, pieces []Piece) (int, error) {
	done := 0
	for _, pc := range pieces {
		if pc.Len > int64(len(p)-done) {
			return done, fmt.Errorf("a map of %d bytes where %d were asked: %w", int64(done)+pc.Len, len(p), ErrCorrupt)
		}
		dst := p[done : done+int(pc.Len)]
		if pc.R == nil {
			clear(dst)
		} else if m, err := pc.R.ReadAt(dst, pc.Off); m < len(dst) {
			if err == nil || errors.Is(err, io.EOF) {
				return done + m, fmt.Errorf("data at %d beyond the volume: %w", pc.Off+int64(m), ErrCorrupt)
			}
			return done + m, fmt.Errorf("read at %d: %w", pc.Off+int64(m), err)
		}
		done += len(dst)
	}
	return done, nil
}
