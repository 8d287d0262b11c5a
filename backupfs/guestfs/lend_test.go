package guestfs

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/rekindle/rekindle/testdata/guestimg"
)

// slicer is what the NFS server's READ fast path asks of a file.
type slicer interface {
	ReadSlices(off int64, n int) ([][]byte, int, error)
	CachedSlices(off int64, n int) ([][]byte, int, bool, error)
}

// checkLent reads every regular file of tree under root as the NFS server
// does (ReadSlices, then CachedSlices of the same bytes), at unaligned
// offsets and sizes, from four goroutines at once, and compares every byte
// with the tree. Huge sparse files are read around their data. Every READ
// of the files named in mustLend (which lie in place on the disk: extents,
// holes) must then be answered again as the server answers a READ inline:
// opened by OpenCached and lent by CachedSlices, both without I/O, which
// only bytes that lie in place and are decoded in the cache can be. Of a
// big folder's files (big/), one in 100 is read.
func checkLent(t *testing.T, fs *FS, root string, tree guestimg.Tree, mustLend ...string) {
	t.Helper()
	must := map[string]bool{}
	for _, p := range mustLend {
		if tree[p] != nil {
			must[p] = true
		}
	}
	var (
		mu   sync.Mutex
		lent int
		wg   sync.WaitGroup
	)
	// One file in 100 of a big folder: its files are alike, and lending
	// each of 10 000 costs tens of seconds under -race (Check reads them).
	var paths []string
	big := 0
	for _, p := range tree.Paths() {
		if strings.HasPrefix(p, "big/") {
			if big++; big%100 != 1 && !must[p] {
				continue
			}
		}
		paths = append(paths, p)
	}
	for w := range 4 {
		wg.Go(func() {
			for i, p := range paths {
				want := tree[p]
				if i%4 != w || want.Dir || want.Link != "" {
					continue
				}
				data := tree.Bytes(p)
				f, err := fs.Open(root + "/" + p)
				if err != nil {
					t.Errorf("%s: %v", p, err)
					return
				}
				s, ok := f.(slicer)
				if !ok {
					t.Errorf("%s: an open guest file (%T) does not lend its bytes", p, f)
					return
				}
				type rng struct{ off, n int64 }
				var rs []rng
				if want.DataAt > 0 {
					rs = []rng{{want.DataAt - 904, 5000}, {want.DataAt + 1, 1 << 20}}
				} else {
					for off := int64(0); off <= int64(len(data)); off += 250_001 {
						rs = append(rs, rng{off, 300_007}, rng{off + 4093, 9})
					}
				}
				for _, r := range rs {
					end := min(r.off+r.n, int64(len(data)))
					exp := []byte{}
					if r.off < end {
						exp = data[r.off:end]
					}
					parts, n, err := s.ReadSlices(r.off, int(r.n))
					got := bytes.Join(parts, nil)
					if (err != nil && !errors.Is(err, io.EOF)) || n != len(exp) || !bytes.Equal(got, exp) {
						t.Errorf("%s: ReadSlices(%d, %d): %d bytes, %v; want %d bytes equal to the source's (equal: %v)", p, r.off, r.n, n, err, len(exp), bytes.Equal(got, exp))
						continue
					}
					// As the server's inline READ: open without I/O, lend
					// without I/O.
					oc, ok := fs.OpenCached(root + "/" + p)
					if !ok {
						// The other goroutines' opens may have pushed it out
						// of the tree's bounded cache of open files: an
						// Open brings it back.
						if f2, err := fs.Open(root + "/" + p); err == nil {
							f2.Close()
							oc, ok = fs.OpenCached(root + "/" + p)
						}
					}
					if !ok {
						if must[p] {
							t.Errorf("%s: not opened without I/O after a READ", p)
						}
						continue
					}
					parts, n, hit, err := oc.(slicer).CachedSlices(r.off, int(r.n))
					if !hit && must[p] {
						t.Errorf("%s: READ of %d bytes at %d not lent from the chunk cache", p, r.n, r.off)
					}
					if hit {
						if got := bytes.Join(parts, nil); (err != nil && !errors.Is(err, io.EOF)) || n != len(exp) || !bytes.Equal(got, exp) {
							t.Errorf("%s: CachedSlices(%d, %d): %d bytes, %v", p, r.off, r.n, n, err)
						}
						mu.Lock()
						lent++
						mu.Unlock()
					}
				}
				f.Close()
			}
		})
	}
	wg.Wait()
	if len(must) == 0 {
		t.Errorf("%s: none of %v in the tree", root, mustLend)
	}
	t.Logf("%s: %d READs lent", root, lent)
}

// inPlace are the files of guestimg's trees whose bytes lie in place on
// every filesystem read here (not inline, not compressed).
var inPlace = []string{"medium.bin", "odd.bin", "sparse.bin", "huge.bin"}
