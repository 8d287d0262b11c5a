package guestfs

import (
	"io"

	"github.com/go-git/go-billy/v5"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/view"
)

// guestFile is an open guest file. Its READs over NFS are answered as the
// restore point export's are: where the file's bytes lie in place on the
// disk (its extents, through the partition or logical volume: gfs.Resolve),
// the chunk cache's own bytes are lent to the reply (nfsd.SliceReader), the
// disk's reader sees the sequential access and reads ahead, and a READ
// whose bytes are decoded already is answered without waiting
// (nfsd.CachedSliceReader). Anything else (inline or compressed data, a
// damaged extent map, a short disk) is read with ReadAt, which says what
// is wrong.
type guestFile struct {
	billy.File             // the read-only file over ra
	ra         io.ReaderAt // the tree's reader of the file
	size       int64
}

func newFile(name string, ra io.ReaderAt, size int64) *guestFile {
	return &guestFile{File: view.NewReadOnlyFile(name, ra, size, errReadOnly), ra: ra, size: size}
}

// ReadSlices returns the n bytes at off (fewer and io.EOF past the end),
// lent from the chunk cache where they lie in place, copied otherwise.
func (f *guestFile) ReadSlices(off int64, n int) ([][]byte, int, error) {
	if parts, got, ok, err := f.lend(off, n, false); ok {
		return parts, got, err
	}
	b := make([]byte, n)
	m, err := f.File.ReadAt(b, off)
	return [][]byte{b[:m]}, m, err
}

// CachedSlices is ReadSlices when every byte is decoded in the cache (or a
// hole); ok false, having done nothing, otherwise.
func (f *guestFile) CachedSlices(off int64, n int) ([][]byte, int, bool, error) {
	return f.lend(off, n, true)
}

// zeros backs the holes lent to READs: never written.
var zeros [256 << 10]byte

// lend returns the n bytes at off as slices of the cache's frames, ok false
// when they cannot be lent (or, cachedOnly, are not all at hand).
func (f *guestFile) lend(off int64, n int, cachedOnly bool) (parts [][]byte, got int, ok bool, err error) {
	defer func() {
		if recover() != nil { // ReadAt reports the reader's failure
			parts, got, ok, err = nil, 0, false, nil
		}
	}()
	if off < 0 {
		return nil, 0, false, nil
	}
	if off >= f.size {
		return nil, 0, true, io.EOF
	}
	want := min(int64(n), f.size-off)
	var eof error
	if want < int64(n) {
		eof = io.EOF
	}
	if want == 0 {
		return nil, 0, true, eof
	}
	pieces, m, err := gfs.Resolve(f.ra, off, want)
	if err != nil || m != want {
		return nil, 0, false, nil
	}
	for _, p := range pieces {
		if p.R == nil {
			for left := p.Len; left > 0; {
				k := min(left, int64(len(zeros)))
				parts = append(parts, zeros[:k:k])
				left -= k
			}
			continue
		}
		dr, isDisk := p.R.(*repo.DiskReader)
		if !isDisk {
			return nil, 0, false, nil
		}
		var ps [][]byte
		var k int
		if cachedOnly {
			var hit bool
			ps, k, hit, err = dr.CachedSlices(p.Off, int(p.Len))
			if !hit {
				return nil, 0, false, nil
			}
		} else {
			ps, k, err = dr.ReadSlices(p.Off, int(p.Len))
		}
		if k < int(p.Len) || (err != nil && err != io.EOF) {
			return nil, 0, false, nil
		}
		parts = append(parts, ps...)
	}
	return parts, int(want), true, eof
}

// OpenCached opens a guest file when that needs no I/O: its volume open,
// the folders on its path listed and the file opened before. ok is false
// otherwise (then OpenFile). See nfsd.CachedOpener.
func (fs *FS) OpenCached(p string) (billy.File, bool) {
	l := split(p)
	if l.depth < 4 || l.inner == "/" {
		return nil, false
	}
	lay, ok := fs.layouts.Get(l.point)
	if !ok || lay.pt.VM.Name != l.vm {
		return nil, false
	}
	o, ok := fs.trees.Get(l.point + "/" + l.disk + "/" + l.vol)
	if !ok {
		return nil, false
	}
	e, ra, ok := o.tree.OpenCached(l.inner)
	if !ok {
		return nil, false
	}
	return newFile(l.clean, ra, e.Size), true
}
