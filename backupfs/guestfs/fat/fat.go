// Package fat reads FAT12, FAT16 and FAT32 filesystems, read-only, from an
// io.ReaderAt.
//
// Vocabulary (Microsoft's FAT specification): the boot sector's BIOS
// parameter block gives the sector and cluster sizes and where the file
// allocation tables (FATs), the root directory and the data area lie; a
// file's bytes are a chain of clusters, each FAT entry naming the next; a
// directory is a file of 32-byte entries, long names (VFAT) kept in extra
// entries before the short one. FAT has no owners, permissions, links or
// file numbers: files read as mode 0644 (0444 when read-only), folders 0755,
// and a file's number is the byte offset of its directory entry.
package fat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
	"unicode/utf16"

	"golang.org/x/text/encoding/charmap"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// FS is a FAT filesystem.
type FS struct {
	r        io.ReaderAt
	bits     int // 12, 16 or 32
	bps      int64
	clusSize int64
	fatOff   int64
	rootOff  int64 // FAT12/16 fixed root directory
	rootSize int64
	rootClus uint32
	dataOff  int64
	clusters uint32
}

type ref struct {
	first uint32
	dir   bool
	root  bool
}

// Open reads the boot sector of the FAT filesystem in r.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("fat boot sector: %w", err)
	}
	le := binary.LittleEndian
	bps := int64(le.Uint16(b[11:]))
	spc := int64(b[13])
	reserved := int64(le.Uint16(b[14:]))
	nfats := int64(b[16])
	rootEnt := int64(le.Uint16(b[17:]))
	tot := int64(le.Uint16(b[19:]))
	if tot == 0 {
		tot = int64(le.Uint32(b[32:]))
	}
	fatSz := int64(le.Uint16(b[22:]))
	if fatSz == 0 {
		fatSz = int64(le.Uint32(b[36:]))
	}
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 || spc == 0 || spc&(spc-1) != 0 || reserved == 0 || nfats == 0 || fatSz == 0 {
		return nil, gfs.Corruptf("fat boot sector: %d bytes a sector, %d sectors a cluster, %d reserved, %d FATs of %d sectors", bps, spc, reserved, nfats, fatSz)
	}
	rootSecs := (rootEnt*32 + bps - 1) / bps
	first := reserved + nfats*fatSz + rootSecs
	if tot <= first || tot*bps > size+bps {
		return nil, gfs.Corruptf("fat boot sector: %d sectors, data from sector %d, volume of %d bytes", tot, first, size)
	}
	fs := &FS{r: r, bps: bps, clusSize: bps * spc, fatOff: reserved * bps,
		rootOff: (reserved + nfats*fatSz) * bps, rootSize: rootSecs * bps, dataOff: first * bps}
	fs.clusters = uint32((tot - first) / spc)
	switch {
	case fs.clusters < 4085:
		fs.bits = 12
	case fs.clusters < 65525:
		fs.bits = 16
	default:
		fs.bits = 32
		fs.rootClus = le.Uint32(b[44:])
	}
	if int64(fs.clusters+2)*int64(fs.bits)/8 > fatSz*bps {
		return nil, gfs.Corruptf("fat: %d clusters do not fit a FAT of %d sectors", fs.clusters, fatSz)
	}
	return fs, nil
}

// next returns the FAT entry of cluster c.
func (fs *FS) next(c uint32) (uint32, bool, error) {
	var b [4]byte
	le := binary.LittleEndian
	switch fs.bits {
	case 12:
		off := int64(c) + int64(c)/2
		if _, err := fs.r.ReadAt(b[:2], fs.fatOff+off); err != nil {
			return 0, false, err
		}
		v := uint32(le.Uint16(b[:]))
		if c&1 == 1 {
			v >>= 4
		} else {
			v &= 0xFFF
		}
		return v, v >= 0xFF8, nil
	case 16:
		if _, err := fs.r.ReadAt(b[:2], fs.fatOff+2*int64(c)); err != nil {
			return 0, false, err
		}
		v := uint32(le.Uint16(b[:]))
		return v, v >= 0xFFF8, nil
	}
	if _, err := fs.r.ReadAt(b[:], fs.fatOff+4*int64(c)); err != nil {
		return 0, false, err
	}
	v := le.Uint32(b[:]) & 0x0FFFFFFF
	return v, v >= 0x0FFFFFF8, nil
}

// chain returns the runs of a cluster chain from first.
func (fs *FS) chain(first uint32) ([]run, error) {
	var runs []run
	c := first
	for n := uint32(0); ; n++ {
		if c < 2 || c >= fs.clusters+2 {
			return nil, gfs.Corruptf("fat: cluster %d outside 2..%d", c, fs.clusters+1)
		}
		if n > fs.clusters {
			return nil, gfs.Corruptf("fat: cluster chain from %d loops", first)
		}
		if k := len(runs) - 1; k >= 0 && runs[k].first+runs[k].n == c {
			runs[k].n++
		} else {
			runs = append(runs, run{first: c, n: 1})
		}
		nx, end, err := fs.next(c)
		if err != nil {
			return nil, fmt.Errorf("fat entry %d: %w", c, err)
		}
		if end {
			return runs, nil
		}
		c = nx
	}
}

type run struct{ first, n uint32 }

// Root is the root folder.
func (fs *FS) Root() (gfs.Entry, error) {
	return gfs.Entry{Name: "/", Ino: 1, Mode: os.ModeDir | 0o755, Nlink: 2, Ref: ref{first: fs.rootClus, dir: true, root: true}}, nil
}

type chainReader struct {
	fs   *FS
	runs []run
	size int64
}

func (c *chainReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= c.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), c.size-off))
	done := 0
	// runs are in file order: find the one holding off
	pos := int64(0)
	i := 0
	for i < len(c.runs) && pos+int64(c.runs[i].n)*c.fs.clusSize <= off {
		pos += int64(c.runs[i].n) * c.fs.clusSize
		i++
	}
	for done < want && i < len(c.runs) {
		r := c.runs[i]
		at := off + int64(done) - pos
		n := int(min(int64(r.n)*c.fs.clusSize-at, int64(want-done)))
		disk := c.fs.dataOff + int64(r.first-2)*c.fs.clusSize + at
		m, err := c.fs.r.ReadAt(p[done:done+n], disk)
		done += m
		if m < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = gfs.Corruptf("fat: cluster data at %d beyond the volume", disk)
			}
			return done, err
		}
		pos += int64(r.n) * c.fs.clusSize
		i++
	}
	if done < want {
		return done, gfs.Corruptf("fat: cluster chain shorter than the file's %d bytes", c.size)
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

func (fs *FS) dirBytes(r ref) ([]byte, int64, error) {
	if r.root && fs.bits != 32 {
		b := make([]byte, fs.rootSize)
		if _, err := fs.r.ReadAt(b, fs.rootOff); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, err
		}
		return b, fs.rootOff, nil
	}
	runs, err := fs.chain(r.first)
	if err != nil {
		return nil, 0, err
	}
	var total int64
	for _, x := range runs {
		total += int64(x.n) * fs.clusSize
	}
	if total > 64<<20 {
		return nil, 0, gfs.Corruptf("fat: folder of %d bytes", total)
	}
	b := make([]byte, total)
	if _, err := (&chainReader{fs: fs, runs: runs, size: total}).ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	return b, fs.dataOff + int64(runs[0].first-2)*fs.clusSize, nil
}

// ReadDir lists a folder.
func (fs *FS) ReadDir(dir gfs.Entry) ([]gfs.Entry, error) {
	r, ok := dir.Ref.(ref)
	if !ok || !r.dir {
		return nil, fmt.Errorf("fat: %q is not a folder of this filesystem", dir.Name)
	}
	b, base, err := fs.dirBytes(r)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	var out []gfs.Entry
	var lfn []uint16
	var lfnParts map[int][]uint16
	for off := 0; off+32 <= len(b); off += 32 {
		e := b[off : off+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xE5 {
			lfnParts = nil
			continue
		}
		attr := e[11]
		if attr&0x3F == 0x0F {
			ord := int(e[0] & 0x1F)
			if e[0]&0x40 != 0 {
				lfnParts = map[int][]uint16{}
			}
			if lfnParts != nil {
				var u []uint16
				for _, o := range []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
					u = append(u, le.Uint16(e[o:]))
				}
				lfnParts[ord] = u
			}
			continue
		}
		if attr&0x08 != 0 { // volume label
			lfnParts = nil
			continue
		}
		name := shortName(e)
		if lfnParts != nil {
			lfn = lfn[:0]
			keys := make([]int, 0, len(lfnParts))
			for k := range lfnParts {
				keys = append(keys, k)
			}
			sort.Ints(keys)
			for _, k := range keys {
				lfn = append(lfn, lfnParts[k]...)
			}
			for i, c := range lfn {
				if c == 0 {
					lfn = lfn[:i]
					break
				}
			}
			name = string(utf16.Decode(lfn))
			lfnParts = nil
		}
		if name == "." || name == ".." {
			continue
		}
		first := uint32(le.Uint16(e[20:]))<<16 | uint32(le.Uint16(e[26:]))
		if fs.bits != 32 {
			first &= 0xFFFF
		}
		ent := gfs.Entry{Name: name, Ino: uint64(base) + uint64(off) + 2, Nlink: 1,
			Mtime: fatTime(le.Uint16(e[24:]), le.Uint16(e[22:]))}
		if attr&0x10 != 0 {
			ent.Mode = os.ModeDir | 0o755
			ent.Size = fs.clusSize
			ent.Nlink = 2
			ent.Ref = ref{first: first, dir: true}
		} else {
			ent.Mode = 0o644
			if attr&0x01 != 0 {
				ent.Mode = 0o444
			}
			ent.Size = int64(le.Uint32(e[28:]))
			ent.Ref = ref{first: first}
		}
		out = append(out, ent)
	}
	return out, nil
}

// shortName decodes an 8.3 name. Its bytes are in the OEM code page of
// the system that wrote it; code page 850 (mtools' and western Windows'
// default) is assumed.
func shortName(e []byte) string {
	raw := append([]byte(nil), e[0:11]...)
	if raw[0] == 0x05 {
		raw[0] = 0xE5
	}
	dec, err := charmap.CodePage850.NewDecoder().Bytes(raw)
	if err != nil {
		dec = raw
	}
	d := []rune(string(dec))
	if len(d) != 11 {
		d = []rune(string(raw))
	}
	base := strings.TrimRight(string(d[0:8]), " ")
	ext := strings.TrimRight(string(d[8:11]), " ")
	if e[12]&0x08 != 0 {
		base = strings.ToLower(base)
	}
	if e[12]&0x10 != 0 {
		ext = strings.ToLower(ext)
	}
	if ext != "" {
		return base + "." + ext
	}
	return base
}

// fatTime decodes a FAT date and time (local time of the guest; read as UTC).
func fatTime(d, t uint16) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return time.Date(1980+int(d>>9), time.Month(d>>5&0xF), int(d&0x1F), int(t>>11), int(t>>5&0x3F), int(t&0x1F)*2, 0, time.UTC)
}

// Open returns a file's bytes.
func (fs *FS) Open(f gfs.Entry) (io.ReaderAt, error) {
	r, ok := f.Ref.(ref)
	if !ok || r.dir {
		return nil, fmt.Errorf("fat: %q is not a file of this filesystem", f.Name)
	}
	if f.Size == 0 {
		return &chainReader{fs: fs}, nil
	}
	runs, err := fs.chain(r.first)
	if err != nil {
		return nil, err
	}
	return &chainReader{fs: fs, runs: runs, size: f.Size}, nil
}

// Readlink: FAT has no symlinks.
func (fs *FS) Readlink(l gfs.Entry) (string, error) {
	return "", fmt.Errorf("fat has no symlinks: %w", gfs.ErrUnsupported)
}
