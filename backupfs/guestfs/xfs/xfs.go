// Package xfs reads an XFS volume (v5, and v4 where the layout is the same)
// read-only for file-level restore, as a gfs.Reader, from the on-disk format
// (xfsprogs' "XFS Algorithms & Data Structures").
//
// Words: the volume is split into allocation groups (AGs) of agblocks
// blocks; an inode number names its AG, its block in the AG and its slot in
// the block; a filesystem block number is (AG << agblklog) | block in AG.
// An inode's data fork is local (a short directory or symlink target in the
// inode), a list of extents (logical block, disk block, count, unwritten
// flag), or the root of a B+tree of extents. A directory's entries lie in
// its data blocks (block, leaf and node forms share them), below the 32 GiB
// logical offset where its hash index starts.
//
// Open reads the internal log's record headers (log.go) to tell whether
// the volume was unmounted cleanly; a log that needs recovery is not
// replayed (the backup is read-only), and Notes says so.
//
// Reads go straight to the volume's io.ReaderAt with no shared state, so a
// file is safe for concurrent ReadAt. Every walk is bounded (extents per
// file, B+tree depth, directory size) against damaged metadata.
package xfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

var be = binary.BigEndian

// Bounds against damaged metadata.
const (
	maxExtents  = 1 << 22
	maxDepth    = 8
	maxDirBytes = 1 << 30
	maxLink     = 4096 // XFS_SYMLINK_MAXLEN is 1024; generous
)

// Incompatible features this reader understands.
const (
	incompatFtype    = 0x1
	incompatSpinodes = 0x2
	incompatMetaUUID = 0x4
	incompatBigtime  = 0x8
	incompatRepair   = 0x10
	incompatNrext64  = 0x20
	knownIncompat    = incompatFtype | incompatSpinodes | incompatMetaUUID | incompatBigtime | incompatNrext64
)

// FS is an XFS volume opened read-only.
type FS struct {
	ra        io.ReaderAt
	size      int64
	blockSize int64
	agBlocks  int64
	agBlkLog  uint
	inoPBLog  uint
	inodeSize int64
	dirBlk    int64 // directory block bytes
	rootIno   uint64
	v5        bool
	ftype     bool
	nrext64   bool
	agCount   int64
	notes     []string
}

// Probe reports whether b starts with an XFS superblock.
func Probe(b []byte) bool { return len(b) >= 4 && string(b[:4]) == "XFSB" }

// Open reads the superblock of the XFS volume of size bytes.
func Open(ra io.ReaderAt, size int64) (*FS, error) {
	sb := make([]byte, 512)
	if _, err := ra.ReadAt(sb, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("xfs: superblock: %w", err)
	}
	if !Probe(sb) {
		return nil, gfs.Corruptf("xfs: no superblock magic")
	}
	fs := &FS{
		ra:        ra,
		size:      size,
		blockSize: int64(be.Uint32(sb[4:])),
		rootIno:   be.Uint64(sb[56:]),
		agBlocks:  int64(be.Uint32(sb[84:])),
		agCount:   int64(be.Uint32(sb[88:])),
		inodeSize: int64(be.Uint16(sb[104:])),
		inoPBLog:  uint(sb[123]),
		agBlkLog:  uint(sb[124]),
	}
	version := be.Uint16(sb[100:]) & 0xf
	switch version {
	case 5:
		fs.v5 = true
		incompat := be.Uint32(sb[216:])
		if incompat&incompatRepair != 0 {
			return nil, gfs.Corruptf("xfs: the volume is marked as needing xfs_repair")
		}
		if unknown := incompat &^ knownIncompat; unknown != 0 {
			return nil, fmt.Errorf("xfs: incompatible features %#x: %w", unknown, gfs.ErrUnsupported)
		}
		fs.ftype = incompat&incompatFtype != 0
		fs.nrext64 = incompat&incompatNrext64 != 0
	case 4:
		fs.ftype = be.Uint32(sb[200:])&0x200 != 0 // features2 FTYPE
	default:
		return nil, fmt.Errorf("xfs: superblock version %d: %w", version, gfs.ErrUnsupported)
	}
	if fs.blockSize < 512 || fs.blockSize > 65536 || fs.blockSize&(fs.blockSize-1) != 0 ||
		fs.inodeSize < 256 || fs.inodeSize > 2048 || fs.agBlocks <= 0 || fs.agCount <= 0 ||
		fs.agBlkLog > 31 || fs.inoPBLog > 8 || int64(1)<<fs.agBlkLog < fs.agBlocks ||
		fs.inodeSize<<fs.inoPBLog != fs.blockSize || sb[192] > 8 {
		return nil, gfs.Corruptf("xfs: superblock geometry (block %d, inode %d, AG %d blocks)", fs.blockSize, fs.inodeSize, fs.agBlocks)
	}
	fs.dirBlk = fs.blockSize << sb[192]
	if need := fs.agBlocks * fs.blockSize * (fs.agCount - 1); need >= size {
		return nil, gfs.Corruptf("xfs: %d allocation groups do not fit in %d bytes (truncated?)", fs.agCount, size)
	}
	if sb[126] != 0 {
		return nil, gfs.Corruptf("xfs: the volume's creation did not finish (sb_inprogress)")
	}
	fs.notes = fs.logNotes(be.Uint64(sb[48:]), int64(be.Uint32(sb[96:])))
	return fs, nil
}

// Notes says what the reader did not do (gfs.Noter): replay a log that
// needs recovery.
func (fs *FS) Notes() []string { return fs.notes }

// logNotes reads the internal log of logBlocks blocks at block logStart
// (0: an external log) and says whether it needs recovery.
func (fs *FS) logNotes(logStart uint64, logBlocks int64) []string {
	if logStart == 0 {
		return []string{"the XFS log is on an external device the backup does not hold: whether the volume was unmounted cleanly is not known, " +
			"and transactions it may hold were not replayed (the backup is read-only)"}
	}
	off, err := fs.blockOff(logStart)
	if err == nil && (logBlocks <= 0 || off+logBlocks*fs.blockSize > fs.size) {
		err = gfs.Corruptf("xfs: the log (%d blocks at block %d) does not fit in the volume", logBlocks, logStart)
	}
	var state int
	var why string
	if err != nil {
		state, why = logUnknown, err.Error()
	} else {
		state, why = logStateOf(io.NewSectionReader(fs.ra, off, logBlocks*fs.blockSize), logBlocks*fs.blockSize/bbSize, maxLogRead)
	}
	switch state {
	case logDirty:
		return []string{"the XFS log needs recovery and was not replayed (the volume was not cleanly unmounted; the backup is read-only): " +
			"files written in the last seconds before the backup may show older content (" + why + ")"}
	case logUnknown:
		return []string{"the XFS log could not be read (" + why + "): it may hold transactions that were not replayed (the backup is read-only); " +
			"files written in the last seconds before the backup may show older content"}
	}
	return nil
}

// inode is the part of an on-disk inode this reader uses.
type inode struct {
	ino     uint64
	mode    uint16
	format  byte
	uid     uint32
	gid     uint32
	nlink   uint32
	size    int64
	mtime   time.Time
	nextent uint64
	fork    []byte // the data fork's bytes in the inode
}

// ref is an Entry's handle on its inode.
type ref struct{ in *inode }

func (fs *FS) blockOff(fsb uint64) (int64, error) {
	ag, bno := int64(fsb>>fs.agBlkLog), int64(fsb&(1<<fs.agBlkLog-1))
	if ag >= fs.agCount || bno >= fs.agBlocks {
		return 0, gfs.Corruptf("xfs: block %d lies outside the volume", fsb)
	}
	off := (ag*fs.agBlocks + bno) * fs.blockSize
	if off >= fs.size {
		return 0, gfs.Corruptf("xfs: block %d lies past the volume's end", fsb)
	}
	return off, nil
}

func (fs *FS) read(off int64, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > fs.size {
		return nil, gfs.Corruptf("xfs: read of %d bytes at %d outside the volume", n, off)
	}
	b := make([]byte, n)
	if m, err := fs.ra.ReadAt(b, off); int64(m) < n {
		return nil, fmt.Errorf("xfs: read at %d: %w", off, err)
	}
	return b, nil
}

func (fs *FS) readInode(ino uint64) (*inode, error) {
	ag := int64(ino >> (fs.agBlkLog + fs.inoPBLog))
	agino := ino & (1<<(fs.agBlkLog+fs.inoPBLog) - 1)
	bno, slot := int64(agino>>fs.inoPBLog), int64(agino&(1<<fs.inoPBLog-1))
	if ag >= fs.agCount || bno >= fs.agBlocks {
		return nil, gfs.Corruptf("xfs: inode %d lies outside the volume", ino)
	}
	b, err := fs.read((ag*fs.agBlocks+bno)*fs.blockSize+slot*fs.inodeSize, fs.inodeSize)
	if err != nil {
		return nil, err
	}
	if string(b[:2]) != "IN" {
		return nil, gfs.Corruptf("xfs: inode %d: bad magic", ino)
	}
	in := &inode{ino: ino, mode: be.Uint16(b[2:]), format: b[5], uid: be.Uint32(b[8:]), gid: be.Uint32(b[12:]),
		nlink: be.Uint32(b[16:]), size: int64(be.Uint64(b[56:]))}
	version := b[4]
	core := int64(100)
	var flags2 uint64
	if version == 3 {
		core = 176
		flags2 = be.Uint64(b[120:])
		if got := be.Uint64(b[152:]); got != ino {
			return nil, gfs.Corruptf("xfs: inode %d says it is inode %d", ino, got)
		}
	} else if version == 1 {
		in.nlink = uint32(be.Uint16(b[6:]))
	}
	in.nextent = uint64(be.Uint32(b[76:]))
	if flags2&(1<<4) != 0 { // NREXT64: a 64-bit extent count
		in.nextent = be.Uint64(b[24:])
	}
	in.mtime = timestamp(be.Uint64(b[40:]), flags2&(1<<3) != 0)
	if in.size < 0 {
		return nil, gfs.Corruptf("xfs: inode %d: size %d", ino, in.size)
	}
	forkLen := fs.inodeSize - core
	if fo := int64(b[82]); fo != 0 {
		forkLen = fo * 8
	}
	if core+forkLen > fs.inodeSize {
		return nil, gfs.Corruptf("xfs: inode %d: fork offset past the inode", ino)
	}
	in.fork = b[core : core+forkLen]
	return in, nil
}

// timestamp decodes an inode time: seconds and nanoseconds, or with
// bigtime nanoseconds since 1901-12-13 (the 32-bit epoch's start).
func timestamp(v uint64, bigtime bool) time.Time {
	if bigtime {
		return time.Unix(int64(v/1e9)-(1<<31), int64(v%1e9)).UTC()
	}
	return time.Unix(int64(int32(v>>32)), int64(uint32(v))%1e9).UTC()
}

func (fs *FS) entry(in *inode, name string) gfs.Entry {
	e := gfs.Entry{Name: name, Ino: in.ino, Size: in.size, Mtime: in.mtime, UID: in.uid, GID: in.gid, Nlink: in.nlink, Ref: &ref{in: in}}
	m := os.FileMode(in.mode & 0o777)
	if in.mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if in.mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if in.mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	switch in.mode & 0xF000 {
	case 0x4000:
		m |= os.ModeDir
	case 0xA000:
		m |= os.ModeSymlink
	case 0x8000:
	case 0x1000:
		m |= os.ModeNamedPipe
	case 0xC000:
		m |= os.ModeSocket
	case 0x2000:
		m |= os.ModeDevice | os.ModeCharDevice
	case 0x6000:
		m |= os.ModeDevice
	default:
		m |= os.ModeIrregular
	}
	e.Mode = m
	return e
}

// Root is the root directory.
func (fs *FS) Root() (gfs.Entry, error) {
	in, err := fs.readInode(fs.rootIno)
	if err != nil {
		return gfs.Entry{}, err
	}
	e := fs.entry(in, "/")
	if !e.Mode.IsDir() {
		return gfs.Entry{}, gfs.Corruptf("xfs: the root inode is not a directory")
	}
	return e, nil
}

// extent maps count blocks at logical block off to disk block start.
type extent struct {
	off, start, count uint64
	unwritten         bool
}

func unpack(r []byte) extent {
	l0, l1 := be.Uint64(r), be.Uint64(r[8:])
	return extent{
		unwritten: l0>>63 != 0,
		off:       (l0 & (1<<63 - 1)) >> 9,
		start:     (l0&0x1ff)<<43 | l1>>21,
		count:     l1 & (1<<21 - 1),
	}
}

// extents returns the data fork's extents in logical order.
func (fs *FS) extents(in *inode) ([]extent, error) {
	var out []extent
	switch in.format {
	case 2:
		n := in.nextent
		if n*16 > uint64(len(in.fork)) {
			return nil, gfs.Corruptf("xfs: inode %d: %d extents do not fit its fork", in.ino, n)
		}
		for i := uint64(0); i < n; i++ {
			out = append(out, unpack(in.fork[16*i:]))
		}
	case 3:
		f := in.fork
		if len(f) < 4 {
			return nil, gfs.Corruptf("xfs: inode %d: B+tree root too small", in.ino)
		}
		level, nrecs := be.Uint16(f), int(be.Uint16(f[2:]))
		maxr := (len(f) - 4) / 16
		if level == 0 || int(level) > maxDepth || nrecs > maxr {
			return nil, gfs.Corruptf("xfs: inode %d: B+tree root (level %d, %d records)", in.ino, level, nrecs)
		}
		for i := 0; i < nrecs; i++ {
			ptr := be.Uint64(f[4+maxr*8+i*8:])
			if err := fs.bmbt(in, ptr, int(level)-1, &out); err != nil {
				return nil, err
			}
		}
	default:
		return nil, gfs.Corruptf("xfs: inode %d: data fork format %d has no extents", in.ino, in.format)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].off < out[j].off })
	for i := 1; i < len(out); i++ {
		if out[i].off < out[i-1].off+out[i-1].count {
			return nil, gfs.Corruptf("xfs: inode %d: extents overlap", in.ino)
		}
	}
	return out, nil
}

// bmbt walks a B+tree block of extents at level.
func (fs *FS) bmbt(in *inode, fsb uint64, level int, out *[]extent) error {
	off, err := fs.blockOff(fsb)
	if err != nil {
		return err
	}
	b, err := fs.read(off, fs.blockSize)
	if err != nil {
		return err
	}
	hdr := 24
	if fs.v5 {
		hdr = 72
		if string(b[:4]) != "BMA3" || be.Uint64(b[56:]) != in.ino {
			return gfs.Corruptf("xfs: inode %d: B+tree block %d is not its own", in.ino, fsb)
		}
	} else if string(b[:4]) != "BMAP" {
		return gfs.Corruptf("xfs: inode %d: B+tree block %d: bad magic", in.ino, fsb)
	}
	if int(be.Uint16(b[4:])) != level {
		return gfs.Corruptf("xfs: inode %d: B+tree block %d at the wrong level", in.ino, fsb)
	}
	n := int(be.Uint16(b[6:]))
	maxr := (len(b) - hdr) / 16
	if n > maxr {
		return gfs.Corruptf("xfs: inode %d: B+tree block %d holds %d records", in.ino, fsb, n)
	}
	for i := 0; i < n; i++ {
		if level == 0 {
			if len(*out) >= maxExtents {
				return fmt.Errorf("xfs: inode %d: over %d extents: %w", in.ino, maxExtents, gfs.ErrUnsupported)
			}
			*out = append(*out, unpack(b[hdr+16*i:]))
			continue
		}
		ptr := be.Uint64(b[hdr+maxr*8+8*i:])
		if err := fs.bmbt(in, ptr, level-1, out); err != nil {
			return err
		}
	}
	return nil
}

// ReadDir lists a directory.
func (fs *FS) ReadDir(dir gfs.Entry) ([]gfs.Entry, error) {
	r, ok := dir.Ref.(*ref)
	if !ok || !dir.Mode.IsDir() {
		return nil, fmt.Errorf("xfs: %s: not a directory", dir.Name)
	}
	type dent struct {
		name string
		ino  uint64
	}
	var ds []dent
	in := r.in
	switch in.format {
	case 1: // short form, in the inode
		f := in.fork
		if len(f) < 6 {
			return nil, gfs.Corruptf("xfs: directory %d: short form header", in.ino)
		}
		count, i8 := int(f[0]), f[1] != 0 // with any 8-byte inode number, all are
		inoLen := 4
		if i8 {
			inoLen = 8
		}
		p := 2 + inoLen
		for i := 0; i < count; i++ {
			if p+3 > len(f) {
				return nil, gfs.Corruptf("xfs: directory %d: short form entry past its fork", in.ino)
			}
			nl := int(f[p])
			p += 3
			end := p + nl
			if fs.ftype {
				end++
			}
			if nl == 0 || end+inoLen > len(f) {
				return nil, gfs.Corruptf("xfs: directory %d: short form entry past its fork", in.ino)
			}
			name := string(f[p : p+nl])
			var ino uint64
			if i8 {
				ino = be.Uint64(f[end:])
			} else {
				ino = uint64(be.Uint32(f[end:]))
			}
			ds = append(ds, dent{name, ino})
			p = end + inoLen
		}
	case 2, 3:
		exts, err := fs.extents(in)
		if err != nil {
			return nil, err
		}
		leafBlk := uint64(32<<30) / uint64(fs.blockSize) // the hash index starts here
		perDir := uint64(fs.dirBlk / fs.blockSize)
		var total int64
		for _, x := range exts {
			if x.off >= leafBlk {
				break
			}
			for b := uint64(0); b < x.count && x.off+b < leafBlk; b += perDir {
				total += fs.dirBlk
				if total > maxDirBytes {
					return nil, fmt.Errorf("xfs: directory %d over %d bytes: %w", in.ino, maxDirBytes, gfs.ErrUnsupported)
				}
				off, err := fs.blockOff(x.start + b)
				if err != nil {
					return nil, err
				}
				blk, err := fs.read(off, fs.dirBlk)
				if err != nil {
					return nil, err
				}
				err = fs.dirBlock(in.ino, blk, func(name string, ino uint64) { ds = append(ds, dent{name, ino}) })
				if err != nil {
					return nil, err
				}
			}
		}
	default:
		return nil, gfs.Corruptf("xfs: directory %d: data fork format %d", in.ino, in.format)
	}
	out := make([]gfs.Entry, 0, len(ds))
	for _, d := range ds {
		if d.name == "." || d.name == ".." {
			continue
		}
		ci, err := fs.readInode(d.ino)
		if err != nil {
			return nil, fmt.Errorf("xfs: %s in directory %d: %w", d.name, in.ino, err)
		}
		out = append(out, fs.entry(ci, d.name))
	}
	return out, nil
}

// dirBlock calls f for each entry of a directory data block.
func (fs *FS) dirBlock(dino uint64, b []byte, f func(string, uint64)) error {
	hdr, end := 16, len(b)
	magic := string(b[:4])
	switch magic {
	case "XDB3", "XDD3":
		hdr = 64
		if be.Uint64(b[40:]) != dino {
			return gfs.Corruptf("xfs: directory %d: data block of another inode", dino)
		}
	case "XD2B", "XD2D":
	default:
		return gfs.Corruptf("xfs: directory %d: data block magic %q", dino, magic)
	}
	if magic == "XDB3" || magic == "XD2B" { // block form: leaf entries and a tail at the end
		count := int(be.Uint32(b[len(b)-8:]))
		end = len(b) - 8 - count*8
		if end < hdr {
			return gfs.Corruptf("xfs: directory %d: block tail counts %d entries", dino, count)
		}
	}
	for p := hdr; p+8 <= end; {
		if be.Uint16(b[p:]) == 0xffff { // unused space
			l := int(be.Uint16(b[p+2:]))
			if l < 8 || l%8 != 0 {
				return gfs.Corruptf("xfs: directory %d: unused entry of %d bytes", dino, l)
			}
			p += l
			continue
		}
		if p+11 > end {
			return gfs.Corruptf("xfs: directory %d: entry past its block", dino)
		}
		ino := be.Uint64(b[p:])
		nl := int(b[p+8])
		sz := 8 + 1 + nl + 2
		if fs.ftype {
			sz++
		}
		sz = (sz + 7) &^ 7
		if nl == 0 || p+sz > end {
			return gfs.Corruptf("xfs: directory %d: entry past its block", dino)
		}
		f(string(b[p+9:p+9+nl]), ino)
		p += sz
	}
	return nil
}

// Open returns a regular file's bytes.
func (fs *FS) Open(f gfs.Entry) (io.ReaderAt, error) {
	r, ok := f.Ref.(*ref)
	if !ok || !f.Mode.IsRegular() {
		return nil, fmt.Errorf("xfs: %s: not a regular file", f.Name)
	}
	if r.in.format == 1 || (r.in.size == 0 && r.in.nextent == 0) {
		return &file{fs: fs, size: 0}, nil
	}
	exts, err := fs.extents(r.in)
	if err != nil {
		return nil, err
	}
	return &file{fs: fs, size: r.in.size, exts: exts}, nil
}

// file reads a regular file: holes and unwritten extents read as zeros.
type file struct {
	fs   *FS
	size int64
	exts []extent
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	pieces, err := f.Map(off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	if len(pieces) == 0 {
		return 0, io.EOF
	}
	done, err := gfs.ReadPieces(p, pieces)
	if err != nil {
		return done, fmt.Errorf("xfs: %w", err)
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// Readlink returns a symlink's target: in the inode, or in remote blocks
// (v5 blocks start with a 56-byte "XSLM" header).
func (fs *FS) Readlink(l gfs.Entry) (string, error) {
	r, ok := l.Ref.(*ref)
	if !ok || l.Mode&os.ModeSymlink == 0 {
		return "", fmt.Errorf("xfs: %s: not a symlink", l.Name)
	}
	in := r.in
	if in.size <= 0 || in.size > maxLink {
		return "", gfs.Corruptf("xfs: symlink %d: target of %d bytes", in.ino, in.size)
	}
	if in.format == 1 {
		if in.size > int64(len(in.fork)) {
			return "", gfs.Corruptf("xfs: symlink %d: target past its fork", in.ino)
		}
		return string(in.fork[:in.size]), nil
	}
	exts, err := fs.extents(in)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	for _, x := range exts {
		for b := uint64(0); b < x.count && int64(buf.Len()) < in.size; b++ {
			off, err := fs.blockOff(x.start + b)
			if err != nil {
				return "", err
			}
			blk, err := fs.read(off, fs.blockSize)
			if err != nil {
				return "", err
			}
			if fs.v5 {
				if string(blk[:4]) != "XSLM" {
					return "", gfs.Corruptf("xfs: symlink %d: remote block magic", in.ino)
				}
				n := int(be.Uint32(blk[8:]))
				if 56+n > len(blk) {
					return "", gfs.Corruptf("xfs: symlink %d: remote block holds %d bytes", in.ino, n)
				}
				blk = blk[56 : 56+n]
			}
			buf.Write(blk)
		}
	}
	if int64(buf.Len()) < in.size {
		return "", gfs.Corruptf("xfs: symlink %d: target shorter than its size", in.ino)
	}
	return string(buf.Bytes()[:in.size]), nil
}

var _ gfs.Reader = (*FS)(nil)

// Map returns where bytes [off, off+n) of the file lie on the volume
// (gfs.Mapper): its extents, cut where they cross an allocation group, and
// zeros for holes and unwritten extents. It checks what ReadAt checks.
func (f *file) Map(off, n int64) ([]gfs.Piece, error) {
	if off < 0 {
		return nil, fmt.Errorf("xfs: negative offset")
	}
	if off >= f.size {
		return nil, nil
	}
	end := min(off+n, f.size)
	bs := f.fs.blockSize
	var out []gfs.Piece
	for pos := off; pos < end; {
		lb := uint64(pos / bs)
		i := sort.Search(len(f.exts), func(i int) bool { return f.exts[i].off+f.exts[i].count > lb })
		if i == len(f.exts) || f.exts[i].off > lb { // a hole, up to the next extent
			stop := end
			if i < len(f.exts) {
				stop = min(stop, int64(f.exts[i].off)*bs)
			}
			out = append(out, gfs.Piece{Len: stop - pos})
			pos = stop
			continue
		}
		x := f.exts[i]
		k := min(end, int64(x.off+x.count)*bs) - pos
		if x.unwritten {
			out = append(out, gfs.Piece{Len: k})
			pos += k
			continue
		}
		fsb := x.start + (lb - x.off)
		dOff, err := f.fs.blockOff(fsb)
		if err != nil {
			return nil, err
		}
		agEnd := (int64(fsb>>f.fs.agBlkLog)*f.fs.agBlocks + f.fs.agBlocks) * bs
		dOff += pos % bs
		k = min(k, agEnd-dOff)
		if k <= 0 || dOff+k > f.fs.size {
			return nil, gfs.Corruptf("xfs: file data past the volume's end")
		}
		out = append(out, gfs.Piece{R: f.fs.ra, Off: dOff, Len: k})
		pos += k
	}
	return out, nil
}

var _ gfs.Noter = (*FS)(nil)
