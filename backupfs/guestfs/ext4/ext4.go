// Package ext4 reads ext2, ext3 and ext4 filesystems, read-only, from an
// io.ReaderAt.
//
// Vocabulary (the on-disk format of the Linux kernel's ext4 documentation):
// the superblock (1024 bytes at offset 1024) describes block size, block
// groups and features; each block group has a descriptor (32 bytes, 64 with
// the 64bit feature) naming its inode table; an inode holds a file's mode,
// owner, size, times and where its bytes are: an extent tree (ext4), a block
// map of direct and indirect blocks (ext2/3), or inline in the inode itself
// (inline_data). Directories are lists of entries; hashed (htree) directories
// keep their index in entries no reader sees, so reading every block as a
// linear directory lists them completely.
//
// Nothing is written and the journal is not replayed: a filesystem whose
// journal needs recovery is read as it is, and Notes says so.
package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// Feature bits the reader looks at.
const (
	compatHasJournal = 0x4

	incompatFiletype   = 0x2
	incompatRecover    = 0x4
	incompatJournalDev = 0x8
	incompatMetaBG     = 0x10
	incompatExtents    = 0x40
	incompat64bit      = 0x80
	incompatInlineData = 0x8000
	incompatEncrypt    = 0x10000

	// incompatKnown are the incompatible features this reader understands
	// (compression and dirdata are not among them).
	incompatKnown = 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000

	flagIndex      = 0x1000
	flagEncrypt    = 0x800
	flagExtents    = 0x80000
	flagInlineData = 0x10000000
)

const rootIno = 2

// FS is an ext2/3/4 filesystem.
type FS struct {
	r           io.ReaderAt
	size        int64
	bs          int64
	blocks      uint64
	inodes      uint32
	perGroup    uint32 // inodes per group
	blocksPG    uint32
	firstData   uint32
	inodeSize   int64
	descSize    int64
	groups      uint32
	incompat    uint32
	compat      uint32
	firstMetaBG uint32
	state       uint16
	label       string

	mu    sync.Mutex
	descs map[uint32]uint64 // group -> inode table block (loaded lazily)
}

// Probe reports whether b (at least 2048 bytes from the volume's start) holds
// an ext2/3/4 superblock.
func Probe(b []byte) bool {
	return len(b) >= 2048 && binary.LittleEndian.Uint16(b[1024+0x38:]) == 0xEF53
}

// Open reads the superblock of the filesystem in r (size bytes).
func Open(r io.ReaderAt, size int64) (*FS, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return nil, fmt.Errorf("ext superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xEF53 {
		return nil, gfs.Corruptf("ext superblock: bad magic %#04x", le.Uint16(sb[0x38:]))
	}
	fs := &FS{r: r, size: size, descs: map[uint32]uint64{}}
	logBS := le.Uint32(sb[0x18:])
	if logBS > 6 {
		return nil, gfs.Corruptf("ext superblock: block size 2^(10+%d)", logBS)
	}
	fs.bs = 1024 << logBS
	fs.inodes = le.Uint32(sb[0x0:])
	fs.blocks = uint64(le.Uint32(sb[0x4:]))
	fs.firstData = le.Uint32(sb[0x14:])
	fs.blocksPG = le.Uint32(sb[0x20:])
	fs.perGroup = le.Uint32(sb[0x28:])
	fs.state = le.Uint16(sb[0x3A:])
	fs.inodeSize = 128
	if le.Uint32(sb[0x4C:]) >= 1 {
		fs.inodeSize = int64(le.Uint16(sb[0x58:]))
	}
	fs.compat = le.Uint32(sb[0x5C:])
	fs.incompat = le.Uint32(sb[0x60:])
	fs.label = cstr(sb[0x78:0x88])
	fs.firstMetaBG = le.Uint32(sb[0x104:])
	fs.descSize = 32
	if fs.incompat&incompat64bit != 0 {
		fs.blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		fs.descSize = int64(le.Uint16(sb[0xFE:]))
		if fs.descSize < 64 || fs.descSize > 1024 || fs.descSize&(fs.descSize-1) != 0 {
			return nil, gfs.Corruptf("ext superblock: group descriptor size %d", fs.descSize)
		}
	}
	switch {
	case fs.inodeSize < 128 || fs.inodeSize > fs.bs || fs.inodeSize&(fs.inodeSize-1) != 0:
		return nil, gfs.Corruptf("ext superblock: inode size %d", fs.inodeSize)
	case fs.perGroup == 0 || fs.blocksPG == 0:
		return nil, gfs.Corruptf("ext superblock: %d inodes and %d blocks per group", fs.perGroup, fs.blocksPG)
	case fs.blocks == 0 || fs.blocks <= uint64(fs.firstData):
		return nil, gfs.Corruptf("ext superblock: %d blocks", fs.blocks)
	case fs.incompat&incompatJournalDev != 0:
		return nil, fmt.Errorf("ext: this volume is an external journal, not a filesystem: %w", gfs.ErrUnsupported)
	case fs.incompat&^incompatKnown != 0:
		return nil, fmt.Errorf("ext: incompatible features %#x: %w", fs.incompat&^incompatKnown, gfs.ErrUnsupported)
	}
	if size > 0 && int64(fs.blocks) > size/fs.bs+1 {
		return nil, gfs.Corruptf("ext superblock: %d blocks of %d bytes, the volume holds %d bytes (truncated disk?)", fs.blocks, fs.bs, size)
	}
	fs.groups = uint32((fs.blocks - uint64(fs.firstData) + uint64(fs.blocksPG) - 1) / uint64(fs.blocksPG))
	if uint64(fs.groups)*uint64(fs.perGroup) < uint64(fs.inodes) {
		return nil, gfs.Corruptf("ext superblock: %d groups of %d inodes hold fewer than %d inodes", fs.groups, fs.perGroup, fs.inodes)
	}
	// The root must read: a filesystem whose root is gone is damaged.
	if _, err := fs.Root(); err != nil {
		return nil, err
	}
	return fs, nil
}

// Notes says what the reader did not do.
func (fs *FS) Notes() []string {
	var n []string
	if fs.incompat&incompatRecover != 0 {
		n = append(n, "the journal needs recovery and was not replayed (the backup is read-only): files written in the last seconds before the backup may show older content")
	} else if fs.state&1 == 0 && fs.compat&compatHasJournal == 0 {
		n = append(n, "the filesystem was not cleanly unmounted and has no journal: recently written files may be inconsistent")
	}
	if fs.incompat&incompatEncrypt != 0 {
		n = append(n, "some directories may be encrypted (fscrypt): their files cannot be read without the key")
	}
	return n
}

// Label is the volume label.
func (fs *FS) Label() string { return fs.label }

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func (fs *FS) readBlock(blk uint64) ([]byte, error) {
	if blk >= fs.blocks {
		return nil, gfs.Corruptf("ext: block %d beyond the filesystem's %d", blk, fs.blocks)
	}
	b := make([]byte, fs.bs)
	if _, err := fs.r.ReadAt(b, int64(blk)*fs.bs); err != nil && !(errors.Is(err, io.EOF)) {
		return nil, fmt.Errorf("ext: block %d: %w", blk, err)
	}
	return b, nil
}

func (fs *FS) hasSuper(g uint32) bool {
	// sparse_super: groups 0, 1 and powers of 3, 5, 7 (assume it; without it
	// every group has one, which this also accepts by checking both).
	if g <= 1 {
		return true
	}
	for _, p := range []uint32{3, 5, 7} {
		n := p
		for n < g {
			n *= p
		}
		if n == g {
			return true
		}
	}
	return false
}

// inodeTable returns the first block of group g's inode table.
func (fs *FS) inodeTable(g uint32) (uint64, error) {
	fs.mu.Lock()
	t, ok := fs.descs[g]
	fs.mu.Unlock()
	if ok {
		return t, nil
	}
	perBlock := uint32(fs.bs / fs.descSize)
	var blk uint64
	mg := g / perBlock
	if fs.incompat&incompatMetaBG != 0 && mg >= fs.firstMetaBG {
		first := mg * perBlock
		blk = uint64(fs.firstData) + uint64(first)*uint64(fs.blocksPG)
		if fs.hasSuper(first) {
			blk++
		}
	} else {
		blk = uint64(fs.firstData) + 1 + uint64(mg)
	}
	b, err := fs.readBlock(blk)
	if err != nil {
		return 0, fmt.Errorf("group descriptor %d: %w", g, err)
	}
	d := b[int64(g%perBlock)*fs.descSize:]
	t = uint64(binary.LittleEndian.Uint32(d[0x8:]))
	if fs.descSize >= 64 {
		t |= uint64(binary.LittleEndian.Uint32(d[0x28:])) << 32
	}
	if t == 0 || t >= fs.blocks {
		return 0, gfs.Corruptf("ext: group %d: inode table at block %d", g, t)
	}
	fs.mu.Lock()
	fs.descs[g] = t
	fs.mu.Unlock()
	return t, nil
}

// inode is a decoded inode.
type inode struct {
	ino   uint32
	mode  uint16
	flags uint32
	size  int64
	raw   []byte // the whole on-disk inode
}

func (fs *FS) inode(ino uint32) (*inode, error) {
	if ino == 0 || ino > fs.inodes {
		return nil, gfs.Corruptf("ext: inode %d out of range 1..%d", ino, fs.inodes)
	}
	g := (ino - 1) / fs.perGroup
	table, err := fs.inodeTable(g)
	if err != nil {
		return nil, err
	}
	off := int64(table)*fs.bs + int64((ino-1)%fs.perGroup)*fs.inodeSize
	raw := make([]byte, fs.inodeSize)
	if _, err := fs.r.ReadAt(raw, off); err != nil {
		return nil, fmt.Errorf("ext: inode %d: %w", ino, err)
	}
	le := binary.LittleEndian
	in := &inode{ino: ino, mode: le.Uint16(raw[0:]), flags: le.Uint32(raw[0x20:]), raw: raw}
	in.size = int64(uint64(le.Uint32(raw[0x4:])) | uint64(le.Uint32(raw[0x6C:]))<<32)
	if in.size < 0 {
		return nil, gfs.Corruptf("ext: inode %d: size %d", ino, in.size)
	}
	return in, nil
}

func (fs *FS) entry(name string, in *inode) gfs.Entry {
	le := binary.LittleEndian
	raw := in.raw
	e := gfs.Entry{
		Name:  name,
		Ino:   uint64(in.ino),
		Mode:  unixMode(in.mode),
		Size:  in.size,
		UID:   uint32(le.Uint16(raw[0x2:])) | uint32(le.Uint16(raw[0x78:]))<<16,
		GID:   uint32(le.Uint16(raw[0x18:])) | uint32(le.Uint16(raw[0x7A:]))<<16,
		Nlink: uint32(le.Uint16(raw[0x1A:])),
		Ref:   in,
	}
	sec := int64(int32(le.Uint32(raw[0x10:])))
	var nsec int64
	if extra := int64(le.Uint16(raw[0x80:])); fs.inodeSize > 128 && extra >= 0x88+4-0x80 && 0x80+extra <= fs.inodeSize {
		x := le.Uint32(raw[0x88:])
		sec += int64(x&3) << 32
		nsec = int64(x >> 2)
		if nsec > 999999999 {
			nsec = 0
		}
	}
	e.Mtime = time.Unix(sec, nsec).UTC()
	if e.Mode.IsDir() {
		e.Size = fs.bs // directories report one block, as ls does for small ones
		if in.size > 0 {
			e.Size = in.size
		}
	}
	return e
}

// unixMode maps an ext mode to an os.FileMode.
func unixMode(m uint16) os.FileMode {
	mode := os.FileMode(m & 0o777)
	switch m & 0xF000 {
	case 0x4000:
		mode |= os.ModeDir
	case 0xA000:
		mode |= os.ModeSymlink
	case 0x2000:
		mode |= os.ModeDevice | os.ModeCharDevice
	case 0x6000:
		mode |= os.ModeDevice
	case 0x1000:
		mode |= os.ModeNamedPipe
	case 0xC000:
		mode |= os.ModeSocket
	}
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// Root is the root directory.
func (fs *FS) Root() (gfs.Entry, error) {
	in, err := fs.inode(rootIno)
	if err != nil {
		return gfs.Entry{}, fmt.Errorf("root directory: %w", err)
	}
	if in.mode&0xF000 != 0x4000 {
		return gfs.Entry{}, gfs.Corruptf("ext: root inode is not a directory (mode %#o)", in.mode)
	}
	return fs.entry("/", in), nil
}

func inodeOf(e gfs.Entry) (*inode, error) {
	in, ok := e.Ref.(*inode)
	if !ok {
		return nil, fmt.Errorf("ext: entry %q is not of this filesystem", e.Name)
	}
	return in, nil
}

// content returns an io.ReaderAt over the inode's bytes.
func (fs *FS) content(in *inode) (io.ReaderAt, error) {
	if in.flags&flagEncrypt != 0 {
		return nil, fmt.Errorf("ext: inode %d is encrypted (fscrypt): %w", in.ino, gfs.ErrUnsupported)
	}
	if in.flags&flagInlineData != 0 {
		b, err := fs.inlineData(in)
		if err != nil {
			return nil, err
		}
		return &bytesAt{b: b}, nil
	}
	var runs []run
	var err error
	if in.flags&flagExtents != 0 {
		runs, err = fs.extentRuns(in)
	} else {
		runs, err = fs.blockMapRuns(in)
	}
	if err != nil {
		return nil, err
	}
	return &fileReader{fs: fs, runs: runs, size: in.size, ino: in.ino}, nil
}

// ReadDir lists dir.
func (fs *FS) ReadDir(dir gfs.Entry) ([]gfs.Entry, error) {
	in, err := inodeOf(dir)
	if err != nil {
		return nil, err
	}
	var data []byte
	if in.flags&flagInlineData != 0 {
		b, err := fs.inlineData(in)
		if err != nil {
			return nil, err
		}
		if len(b) < 4 {
			return nil, gfs.Corruptf("ext: inline directory %d: %d bytes", in.ino, len(b))
		}
		// The first four bytes are the parent's inode number, the rest
		// entries (the part in the inode and the part in the xattr are each
		// whole runs of entries).
		var ents []gfs.Entry
		for _, part := range [][]byte{b[4:min(len(b), 60)], b[min(len(b), 60):]} {
			if err := fs.parseDirBlock(in, part, &ents); err != nil {
				return nil, err
			}
		}
		return ents, nil
	}
	if in.flags&flagEncrypt != 0 {
		return nil, fmt.Errorf("ext: directory inode %d is encrypted (fscrypt): %w", in.ino, gfs.ErrUnsupported)
	}
	ra, err := fs.content(in)
	if err != nil {
		return nil, err
	}
	if in.size > 1<<30 {
		return nil, gfs.Corruptf("ext: directory inode %d of %d bytes", in.ino, in.size)
	}
	data = make([]byte, in.size)
	if _, err := ra.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var ents []gfs.Entry
	for off := int64(0); off < int64(len(data)); off += fs.bs {
		if err := fs.parseDirBlock(in, data[off:min(off+fs.bs, int64(len(data)))], &ents); err != nil {
			return nil, err
		}
	}
	return ents, nil
}

func (fs *FS) parseDirBlock(dir *inode, b []byte, out *[]gfs.Entry) error {
	le := binary.LittleEndian
	for off := 0; off+8 <= len(b); {
		ino := le.Uint32(b[off:])
		recLen := int(le.Uint16(b[off+4:]))
		nameLen := int(b[off+6])
		if fs.incompat&incompatFiletype == 0 {
			nameLen = int(le.Uint16(b[off+6:]))
		}
		if recLen < 8 || off+recLen > len(b) || 8+nameLen > recLen {
			return gfs.Corruptf("ext: directory inode %d: entry at %d: record length %d, name length %d", dir.ino, off, recLen, nameLen)
		}
		name := string(b[off+8 : off+8+nameLen])
		off += recLen
		if ino == 0 || name == "." || name == ".." {
			continue
		}
		in, err := fs.inode(ino)
		if err != nil {
			return fmt.Errorf("directory inode %d entry %q: %w", dir.ino, name, err)
		}
		*out = append(*out, fs.entry(name, in))
	}
	return nil
}

// Open returns a regular file's bytes.
func (fs *FS) Open(f gfs.Entry) (io.ReaderAt, error) {
	in, err := inodeOf(f)
	if err != nil {
		return nil, err
	}
	return fs.content(in)
}

// Readlink returns a symlink's target.
func (fs *FS) Readlink(l gfs.Entry) (string, error) {
	in, err := inodeOf(l)
	if err != nil {
		return "", err
	}
	if in.size > 4096 {
		return "", gfs.Corruptf("ext: symlink inode %d of %d bytes", in.ino, in.size)
	}
	if in.flags&(flagExtents|flagInlineData) == 0 && in.size < 60 {
		return string(in.raw[0x28 : 0x28+in.size]), nil // fast symlink
	}
	ra, err := fs.content(in)
	if err != nil {
		return "", err
	}
	b := make([]byte, in.size)
	if _, err := ra.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return string(b), nil
}

// inlineData returns the bytes of an inline_data inode: i_block, then the
// value of the system.data extended attribute in the inode's extra space.
func (fs *FS) inlineData(in *inode) ([]byte, error) {
	le := binary.LittleEndian
	out := append([]byte(nil), in.raw[0x28:0x28+60]...)
	if fs.inodeSize > 128 {
		extra := int64(le.Uint16(in.raw[0x80:]))
		start := 128 + extra
		if start+4 <= fs.inodeSize && le.Uint32(in.raw[start:]) == 0xEA020000 {
			base := start + 4
			for off := base; off+16 <= fs.inodeSize; {
				nameLen := int64(in.raw[off])
				idx := in.raw[off+1]
				voff := int64(le.Uint16(in.raw[off+2:]))
				vsize := int64(le.Uint32(in.raw[off+8:]))
				if nameLen == 0 && idx == 0 && voff == 0 {
					break
				}
				if off+16+nameLen > fs.inodeSize {
					break
				}
				name := string(in.raw[off+16 : off+16+nameLen])
				if idx == 7 && name == "data" {
					if base+voff+vsize > fs.inodeSize {
						return nil, gfs.Corruptf("ext: inode %d: inline data attribute beyond the inode", in.ino)
					}
					out = append(out, in.raw[base+voff:base+voff+vsize]...)
					break
				}
				off += (16 + nameLen + 3) &^ 3
			}
		}
	}
	if in.mode&0xF000 != 0x4000 && int64(len(out)) > in.size {
		out = out[:in.size]
	}
	return out, nil
}

// A run maps file blocks [lblk, lblk+n) to disk blocks [pblk, pblk+n); a
// zero pblk with zero set is an uninitialised extent (reads as zeros).
type run struct {
	lblk, pblk, n uint64
	zero          bool
}

const maxRuns = 1 << 22

func (fs *FS) extentRuns(in *inode) ([]run, error) {
	var runs []run
	if err := fs.walkExtents(in, in.raw[0x28:0x28+60], 0, &runs); err != nil {
		return nil, err
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].lblk < runs[j].lblk })
	return runs, nil
}

func (fs *FS) walkExtents(in *inode, node []byte, level int, runs *[]run) error {
	le := binary.LittleEndian
	if len(node) < 12 || le.Uint16(node) != 0xF30A {
		return gfs.Corruptf("ext: inode %d: extent node without magic", in.ino)
	}
	n := int(le.Uint16(node[2:]))
	depth := int(le.Uint16(node[6:]))
	if 12+12*n > len(node) || depth > 5 || level > 5 {
		return gfs.Corruptf("ext: inode %d: extent node of %d entries, depth %d", in.ino, n, depth)
	}
	for i := 0; i < n; i++ {
		e := node[12+12*i:]
		if depth == 0 {
			l := uint64(le.Uint16(e[4:]))
			zero := false
			if l > 32768 {
				l -= 32768
				zero = true
			}
			p := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			if !zero && p+l > fs.blocks {
				return gfs.Corruptf("ext: inode %d: extent at block %d+%d beyond the filesystem", in.ino, p, l)
			}
			if len(*runs) >= maxRuns {
				return gfs.Corruptf("ext: inode %d: more than %d extents", in.ino, maxRuns)
			}
			*runs = append(*runs, run{lblk: uint64(le.Uint32(e)), pblk: p, n: l, zero: zero})
			continue
		}
		leaf := uint64(le.Uint16(e[8:]))<<32 | uint64(le.Uint32(e[4:]))
		b, err := fs.readBlock(leaf)
		if err != nil {
			return fmt.Errorf("inode %d extent index: %w", in.ino, err)
		}
		if err := fs.walkExtents(in, b, level+1, runs); err != nil {
			return err
		}
	}
	return nil
}

func (fs *FS) blockMapRuns(in *inode) ([]run, error) {
	le := binary.LittleEndian
	nblocks := (uint64(in.size) + uint64(fs.bs) - 1) / uint64(fs.bs)
	var runs []run
	add := func(lblk, pblk uint64) error {
		if pblk >= fs.blocks {
			return gfs.Corruptf("ext: inode %d: block %d beyond the filesystem", in.ino, pblk)
		}
		if k := len(runs) - 1; k >= 0 && runs[k].lblk+runs[k].n == lblk && runs[k].pblk+runs[k].n == pblk {
			runs[k].n++
			return nil
		}
		if len(runs) >= maxRuns {
			return gfs.Corruptf("ext: inode %d: more than %d runs", in.ino, maxRuns)
		}
		runs = append(runs, run{lblk: lblk, pblk: pblk, n: 1})
		return nil
	}
	per := uint64(fs.bs / 4)
	// walk visits the pointers of an indirect block of the given depth
	// covering file blocks from lblk.
	var walk func(blk uint64, depth int, lblk uint64) error
	walk = func(blk uint64, depth int, lblk uint64) error {
		b, err := fs.readBlock(blk)
		if err != nil {
			return fmt.Errorf("inode %d indirect block: %w", in.ino, err)
		}
		span := uint64(1)
		for i := 1; i < depth; i++ {
			span *= per
		}
		for i := uint64(0); i < per; i++ {
			l := lblk + i*span
			if l >= nblocks {
				return nil
			}
			p := uint64(le.Uint32(b[4*i:]))
			if p == 0 {
				continue
			}
			if depth == 1 {
				if err := add(l, p); err != nil {
					return err
				}
			} else if err := walk(p, depth-1, l); err != nil {
				return err
			}
		}
		return nil
	}
	for i := uint64(0); i < 12 && i < nblocks; i++ {
		if p := uint64(le.Uint32(in.raw[0x28+4*i:])); p != 0 {
			if err := add(i, p); err != nil {
				return nil, err
			}
		}
	}
	start := uint64(12)
	span := per
	for depth := 1; depth <= 3; depth++ {
		if start >= nblocks {
			break
		}
		if p := uint64(le.Uint32(in.raw[0x28+4*(11+depth):])); p != 0 {
			if err := walk(p, depth, start); err != nil {
				return nil, err
			}
		}
		start += span
		span *= per
	}
	return runs, nil
}

// fileReader reads a file through its runs; what no run covers is a hole.
type fileReader struct {
	fs   *FS
	runs []run
	size int64
	ino  uint32
}

func (f *fileReader) ReadAt(p []byte, off int64) (int, error) {
	pieces, err := f.Map(off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	if len(pieces) == 0 {
		return 0, io.EOF
	}
	done, err := gfs.ReadPieces(p, pieces)
	if err != nil {
		return done, fmt.Errorf("ext: inode %d: %w", f.ino, err)
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

type bytesAt struct{ b []byte }

func (r *bytesAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r.b)) {
		return 0, io.EOF
	}
	n := copy(p, r.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Map returns where bytes [off, off+n) of the file lie on the volume
// (gfs.Mapper): its runs, and zeros for holes and uninitialised extents.
// It checks what ReadAt checks: data beyond the volume is an error.
func (f *fileReader) Map(off, n int64) ([]gfs.Piece, error) {
	if off < 0 {
		return nil, fmt.Errorf("ext: inode %d: negative offset", f.ino)
	}
	if off >= f.size {
		return nil, nil
	}
	end := min(off+n, f.size)
	bs := uint64(f.fs.bs)
	i := sort.Search(len(f.runs), func(i int) bool {
		return (f.runs[i].lblk+f.runs[i].n)*bs > uint64(off)
	})
	var out []gfs.Piece
	for pos := uint64(off); pos < uint64(end); {
		if i >= len(f.runs) || f.runs[i].lblk*bs > pos {
			stop := uint64(end)
			if i < len(f.runs) && f.runs[i].lblk*bs < stop {
				stop = f.runs[i].lblk * bs
			}
			out = append(out, gfs.Piece{Len: int64(stop - pos)})
			pos = stop
			continue
		}
		r := f.runs[i]
		rend := (r.lblk + r.n) * bs
		if rend <= pos { // overlapping runs of a damaged inode
			i++
			continue
		}
		k := min(rend, uint64(end)) - pos
		if r.zero {
			out = append(out, gfs.Piece{Len: int64(k)})
		} else {
			disk := int64(r.pblk*bs + (pos - r.lblk*bs))
			if f.fs.size > 0 && disk+int64(k) > f.fs.size {
				return nil, gfs.Corruptf("ext: inode %d: data at %d beyond the volume", f.ino, disk)
			}
			out = append(out, gfs.Piece{R: f.fs.r, Off: disk, Len: int64(k)})
		}
		pos += k
		i++
	}
	return out, nil
}
