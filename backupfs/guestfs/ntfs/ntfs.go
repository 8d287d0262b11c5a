// Package ntfs reads an NTFS volume read-only for file-level restore, as a
// gfs.Reader, through www.velocidex.com/golang/go-ntfs (which parses the
// boot sector, MFT records, runlists, index B+ trees and LZNT1 compression).
//
// Words: an MFT record is one file's metadata (its number is the file's Ino:
// hard links, several $FILE_NAME attributes of one record, share it); a
// directory's index ($I30) holds one entry per name; the unnamed $DATA
// attribute is a file's bytes (resident in the record, or clusters named by
// a runlist, possibly sparse or compressed). Windows keeps no POSIX modes or
// owners: files are 0644 (0444 read-only), directories 0755, owner 0:0.
// Symlinks are reparse points (symlink, junction) or Interix links (what
// ntfs-3g writes).
//
// Alternate data streams (named $DATA attributes: Zone.Identifier, a
// Mac's resource fork, anything an application hid beside a file) are
// served as regular files of their own beside the file or folder they
// belong to, named "<name>:<stream>" as Windows names them, with the
// file's mtime and mode and a file id of their own. Copying a folder out
// copies them as such files.
//
// The library is wrapped defensively: its panics become errors wrapping
// gfs.ErrPanic; its calls (metadata, and the reads of resident or
// compressed data it decodes) take one lock per volume (its caches are not
// documented as safe for concurrent use); the work one call may do is
// bounded (entries per directory, link target sizes, bytes read: Limits);
// and each call runs with a deadline. A call past its deadline (go-ntfs
// looping on damaged metadata) makes the volume unavailable: the call and
// every later one fail fast with gfs.ErrUnavailable, and the one goroutine
// left inside the library is unwound at its next read.
package ntfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf16"

	"www.velocidex.com/golang/go-ntfs/parser"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// Bounds on the work of one call, against damaged or hostile metadata.
const (
	maxDirEntries = 1 << 21 // entries of one directory index
	maxLinkTarget = 16 << 10
	maxStreams    = 64 // named streams listed per file
	rootRecord    = 5  // the root directory's MFT record
	firstUser     = 16 // records below are the system's ($MFT, $Bitmap, ...)
)

// Attribute types and flags of the on-disk format.
const (
	attrStandardInfo = 0x10
	attrFileName     = 0x30
	attrVolumeInfo   = 0x70
	attrData         = 0x80
	attrReparse      = 0xC0

	faReadOnly = 0x1
	faSystem   = 0x4

	tagSymlink    = 0xA000000C
	tagMountPoint = 0xA0000003

	nsDOS = 2 // a $FILE_NAME in the 8.3 namespace only: an alias, not a link
)

// Limits bound each call into go-ntfs.
type Limits struct {
	// Name names the volume in errors (default "ntfs volume").
	Name string
	// CallTimeout is how long one call may run (default
	// DefaultCallTimeout); past it the volume becomes unavailable.
	CallTimeout time.Duration
	// ReadBudget is how many bytes one call may read from the volume
	// (default DefaultReadBudget); past it the call fails.
	ReadBudget int64
}

// Defaults of Limits. A sound call reads far less than the budget: the
// largest directory listed (maxDirEntries names, each one 1 KiB MFT
// record) reads 2 GiB; a data read, one compression unit per 64 KiB asked.
// The timeout leaves such a listing time to finish on a loaded server.
const (
	DefaultCallTimeout = 2 * time.Minute
	DefaultReadBudget  = 4 << 30
)

// FS is an NTFS volume opened read-only.
type FS struct {
	mu    sync.Mutex // go-ntfs's calls, one at a time (call)
	ctx   *parser.NTFSContext
	vol   *bounded // the volume, for the pieces Map returns
	size  int64
	notes []string
	lim   Limits

	cur    atomic.Pointer[callState] // the call go-ntfs's reads are counted against
	broken atomic.Pointer[error]     // why the volume is unavailable (a call hung)
}

// callState is one call's read budget, and whether it was abandoned.
type callState struct {
	left      atomic.Int64
	abandoned atomic.Bool
}

// budgetPanic is what a read past the call's budget (or of an abandoned
// call) panics with: it unwinds go-ntfs even where the library ignores a
// read error, and recoverAs turns it into the call's error.
type budgetPanic struct{ err error }

// metered is the volume as go-ntfs reads it: every read counts against
// the running call's budget.
type metered struct{ fs *FS }

func (m metered) ReadAt(p []byte, off int64) (int, error) {
	if c := m.fs.cur.Load(); c != nil {
		if c.abandoned.Load() {
			panic(budgetPanic{fmt.Errorf("%s: the call was abandoned: %w", m.fs.lim.Name, gfs.ErrUnavailable)})
		}
		if c.left.Add(-int64(len(p))) < 0 {
			panic(budgetPanic{gfs.Corruptf("%s: one call read over %d bytes, more than any sound call needs (damaged metadata that loops?); "+
				"the volume's other files are still served", m.fs.lim.Name, m.fs.lim.ReadBudget)})
		}
	}
	return m.fs.vol.ReadAt(p, off)
}

// call runs f, a call into go-ntfs, under the volume's lock, with the
// call's read budget and deadline. Past the deadline the volume becomes
// unavailable and call returns without waiting for f: f's results reach
// the caller only through the channel, so a late f touches nothing the
// caller holds. At most one goroutine per volume is ever left behind.
func call[T any](fs *FS, op string, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	var zero T
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if e := fs.broken.Load(); e != nil {
		return zero, *e
	}
	c := &callState{}
	c.left.Store(fs.lim.ReadBudget)
	fs.cur.Store(c)
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() { done <- r }()
		defer recoverAs(&r.err, op)
		r.v, r.err = f()
	}()
	t := time.NewTimer(fs.lim.CallTimeout)
	defer t.Stop()
	select {
	case r := <-done:
		fs.cur.Store(nil)
		return r.v, r.err
	case <-t.C:
		c.abandoned.Store(true)
		err := fmt.Errorf("%s: %s did not finish within %v (go-ntfs looping on damaged metadata?): the volume is no longer served "+
			"until the server restarts; restore the whole disk and run chkdsk in Windows to read it: %w",
			fs.lim.Name, op, fs.lim.CallTimeout, gfs.ErrUnavailable)
		fs.broken.Store(&err)
		return zero, err
	}
}

// Unavailable says why the volume is no longer served (a call into
// go-ntfs did not finish in time), nil while it is.
func (fs *FS) Unavailable() error {
	if e := fs.broken.Load(); e != nil {
		return *e
	}
	return nil
}

// ref is an Entry's handle on its MFT record (and, for an alternate data
// stream, the stream's name).
type ref struct {
	rec     int64
	symlink string
	stream  string
}

// namedStream is an alternate data stream of a file.
type namedStream struct {
	name string
	size int64
}

// Open opens the NTFS volume of size bytes read through ra, with the
// default Limits.
func Open(ra io.ReaderAt, size int64) (*FS, error) { return OpenLimited(ra, size, Limits{}) }

// OpenLimited opens the NTFS volume of size bytes read through ra; lim
// bounds each call into go-ntfs (zero fields: the defaults).
func OpenLimited(ra io.ReaderAt, size int64, lim Limits) (*FS, error) {
	if lim.Name == "" {
		lim.Name = "ntfs volume"
	}
	if lim.CallTimeout <= 0 {
		lim.CallTimeout = DefaultCallTimeout
	}
	if lim.ReadBudget <= 0 {
		lim.ReadBudget = DefaultReadBudget
	}
	fs := &FS{size: size, vol: &bounded{ra: ra, size: size}, lim: lim}
	type opened struct {
		ctx   *parser.NTFSContext
		notes []string
	}
	o, err := call(fs, "open", func() (opened, error) {
		ctx, err := parser.GetNTFSContext(metered{fs}, 0)
		if err != nil {
			return opened{}, gfs.Corruptf("ntfs: %v", err)
		}
		if vs := ctx.Boot.VolumeSize() * 512; vs > size+4096 { // VolumeSize counts sectors
			return opened{}, gfs.Corruptf("ntfs: boot sector says %d bytes, the volume holds %d (truncated?)", vs, size)
		}
		root, err := ctx.GetMFT(rootRecord)
		if err != nil {
			return opened{}, gfs.Corruptf("ntfs: root directory record: %v", err)
		}
		if !root.Flags().IsSet("DIRECTORY") {
			return opened{}, gfs.Corruptf("ntfs: MFT record 5 is not a directory")
		}
		return opened{ctx, volumeNotes(ctx)}, nil
	})
	if err != nil {
		return nil, err
	}
	fs.ctx, fs.notes = o.ctx, o.notes
	return fs, nil
}

// Notes says what a reader of the volume should know (gfs.Noter),
// including why it is no longer served when a call hung.
func (fs *FS) Notes() []string {
	if e := fs.broken.Load(); e != nil {
		return append(slices.Clone(fs.notes), (*e).Error())
	}
	return fs.notes
}

// volumeNotes reads $Volume's flags: a dirty volume was not cleanly
// unmounted, and $LogFile is not replayed on the read-only backup.
func volumeNotes(ctx *parser.NTFSContext) []string {
	m, err := ctx.GetMFT(3)
	if err != nil {
		return nil
	}
	for _, a := range m.EnumerateAttributes(ctx) {
		if a.Type().Value != attrVolumeInfo || !a.IsResident() {
			continue
		}
		b := make([]byte, 12)
		if n, _ := a.Data(ctx).ReadAt(b, 0); n < 12 {
			return nil
		}
		if binary.LittleEndian.Uint16(b[10:])&0x1 != 0 {
			return []string{"the NTFS volume is marked dirty (Windows did not shut down cleanly or chkdsk is pending): $LogFile is not replayed on the read-only backup; files are served as they lie on disk"}
		}
	}
	return nil
}

// recoverAs turns a panic of the library into an error for this call.
func recoverAs(err *error, op string) {
	if p := recover(); p != nil {
		if bp, ok := p.(budgetPanic); ok {
			*err = bp.err
			return
		}
		*err = fmt.Errorf("ntfs %s: %w: %v (%s)", op, gfs.ErrPanic, p, firstLine(debug.Stack()))
	}
}

func firstLine(st []byte) string {
	lines := strings.Split(string(st), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic(") && i+2 < len(lines) {
			return strings.TrimSpace(lines[i+2])
		}
	}
	return "no stack"
}

// bounded is the volume: reads past its end are EOF, never another volume's bytes.
type bounded struct {
	ra   io.ReaderAt
	size int64
}

func (b *bounded) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= b.size {
		return 0, io.EOF
	}
	if rem := b.size - off; int64(len(p)) > rem {
		n, err := b.ra.ReadAt(p[:rem], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return b.ra.ReadAt(p, off)
}

// Map places bytes [off, off+n) on the volume (gfs.Mapper).
func (b *bounded) Map(off, n int64) ([]gfs.Piece, error) {
	if off < 0 || off >= b.size {
		return nil, nil
	}
	return []gfs.Piece{{R: b.ra, Off: off, Len: min(n, b.size-off)}}, nil
}

// Root is the root directory.
func (fs *FS) Root() (gfs.Entry, error) {
	return call(fs, "root", func() (gfs.Entry, error) {
		e, _, err := fs.stat(rootRecord, "/")
		if err == nil && !e.Mode.IsDir() {
			return gfs.Entry{}, gfs.Corruptf("ntfs: the root is not a directory")
		}
		return e, err
	})
}

// stat builds the entry of MFT record rec, named name, and lists its
// alternate data streams.
func (fs *FS) stat(rec int64, name string) (gfs.Entry, []namedStream, error) {
	m, err := fs.ctx.GetMFT(rec)
	if err != nil {
		return gfs.Entry{}, nil, gfs.Corruptf("ntfs: MFT record %d: %v", rec, err)
	}
	flags := m.Flags()
	if !flags.IsSet("ALLOCATED") {
		return gfs.Entry{}, nil, gfs.Corruptf("ntfs: MFT record %d of %q is not in use", rec, name)
	}
	e := gfs.Entry{Name: name, Ino: uint64(rec), Ref: &ref{rec: rec}}
	var fattr uint64
	var haveSI, reparse bool
	var dataAttr *parser.NTFS_ATTRIBUTE
	var streams []namedStream
	for _, a := range m.EnumerateAttributes(fs.ctx) {
		switch a.Type().Value {
		case attrStandardInfo:
			si := fs.ctx.Profile.STANDARD_INFORMATION(a.Data(fs.ctx), 0)
			e.Mtime = si.File_altered_time().Time.UTC()
			fattr = si.Flags().Value
			haveSI = true
		case attrFileName:
			fn := fs.ctx.Profile.FILE_NAME(a.Data(fs.ctx), 0)
			if fn.NameType().Value != nsDOS {
				e.Nlink++
			}
		case attrData:
			if !a.IsResident() && a.Runlist_vcn_start() != 0 {
				break // a later piece of a stream whose first piece says its size
			}
			if n := a.Name(); n == "" && dataAttr == nil {
				dataAttr = a
			} else if n != "" && len(streams) < maxStreams && !strings.ContainsAny(n, "/\x00") && !slices.ContainsFunc(streams, func(s namedStream) bool { return s.name == n }) {
				streams = append(streams, namedStream{name: n, size: a.DataSize()})
			}
		case attrReparse:
			reparse = true
			if t, ok := reparseTarget(a.Data(fs.ctx), a.DataSize()); ok {
				e.Ref.(*ref).symlink = t
			}
		}
	}
	if !haveSI {
		return gfs.Entry{}, nil, gfs.Corruptf("ntfs: MFT record %d of %q has no $STANDARD_INFORMATION", rec, name)
	}
	if e.Nlink == 0 {
		e.Nlink = 1
	}
	r := e.Ref.(*ref)
	switch {
	case r.symlink != "":
		e.Mode, e.Size = os.ModeSymlink|0o777, int64(len(r.symlink))
		return e, nil, nil
	case flags.IsSet("DIRECTORY"):
		e.Mode = os.ModeDir | 0o755
		return e, streams, nil
	case reparse:
		// Another reparse point (deduplication, cloud files, WOF): its
		// bytes are not where $DATA says; serve nothing rather than a guess.
		e.Mode = 0o444
		return e, nil, nil
	}
	e.Mode = 0o644
	if fattr&faReadOnly != 0 {
		e.Mode = 0o444
	}
	if dataAttr != nil {
		e.Size = dataAttr.DataSize()
	}
	if fattr&faSystem != 0 && e.Size >= 10 && e.Size <= maxLinkTarget {
		if t, ok := fs.interix(m); ok {
			r.symlink = t
			e.Mode, e.Size = os.ModeSymlink|0o777, int64(len(t))
			return e, nil, nil
		}
	}
	return e, streams, nil
}

// streamEntry is the entry of file e's alternate data stream s, the i-th
// (from 0) it lists: its Ino puts i+1 above the 48 bits of MFT record
// numbers.
func streamEntry(e gfs.Entry, i int, s namedStream) gfs.Entry {
	mode := os.FileMode(0o644)
	if e.Mode.IsRegular() {
		mode = e.Mode.Perm()
	}
	rec := e.Ref.(*ref).rec
	return gfs.Entry{Name: e.Name + ":" + s.name, Ino: uint64(rec) | uint64(i+1)<<48, Mode: mode, Size: s.size,
		Mtime: e.Mtime, Nlink: 1, Ref: &ref{rec: rec, stream: s.name}}
}

// interix reads an Interix symlink (a system file "IntxLNK\1" + UTF-16LE target).
func (fs *FS) interix(m *parser.MFT_ENTRY) (string, bool) {
	rd, err := parser.OpenStream(fs.ctx, m, attrData, parser.WILDCARD_STREAM_ID, "")
	if err != nil {
		return "", false
	}
	b := make([]byte, maxLinkTarget)
	n, _ := rd.ReadAt(b, 0)
	b = b[:n]
	if len(b) < 10 || string(b[:8]) != "IntxLNK\x01" || (len(b)-8)%2 != 0 {
		return "", false
	}
	return utf16le(b[8:]), true
}

// reparseTarget reads a symlink or junction's target from $REPARSE_POINT.
func reparseTarget(ra io.ReaderAt, size int64) (string, bool) {
	if size < 20 || size > maxLinkTarget {
		return "", false
	}
	b := make([]byte, size)
	if n, _ := ra.ReadAt(b, 0); int64(n) < size {
		return "", false
	}
	le := binary.LittleEndian
	tag := le.Uint32(b)
	var buf []byte // the path buffer the name offsets count from
	switch tag {
	case tagSymlink:
		buf = b[20:] // symlinks carry 4 bytes of flags after the offsets
	case tagMountPoint:
		buf = b[16:]
	default:
		return "", false
	}
	off, ln := int(le.Uint16(b[12:])), int(le.Uint16(b[14:])) // the print name
	if ln == 0 {                                              // none: the substitute name
		off, ln = int(le.Uint16(b[8:])), int(le.Uint16(b[10:]))
	}
	if off+ln > len(buf) || ln == 0 || ln%2 != 0 {
		return "", false
	}
	t := strings.TrimPrefix(utf16le(buf[off:off+ln]), `\??\`)
	if tag == tagSymlink && le.Uint32(b[16:])&1 != 0 { // relative: a path of this volume
		t = strings.ReplaceAll(t, `\`, "/")
	}
	return t, true
}

func utf16le(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// ReadDir lists a directory from its $I30 index: one entry per name
// (8.3 aliases left out), system files of the root left out.
func (fs *FS) ReadDir(dir gfs.Entry) ([]gfs.Entry, error) {
	r, ok := dir.Ref.(*ref)
	if !ok || !dir.Mode.IsDir() {
		return nil, fmt.Errorf("ntfs: %s: not a directory", dir.Name)
	}
	return call(fs, "readdir", func() ([]gfs.Entry, error) { return fs.readDir(dir, r) })
}

func (fs *FS) readDir(dir gfs.Entry, r *ref) (out []gfs.Entry, err error) {
	m, err := fs.ctx.GetMFT(r.rec)
	if err != nil {
		return nil, gfs.Corruptf("ntfs: directory record %d: %v", r.rec, err)
	}
	type key struct {
		rec  int64
		name string
	}
	seen := map[key]bool{}
	var alts []gfs.Entry // alternate data streams, listed after the files
	for i, ie := range m.Dir(fs.ctx) {
		if i >= maxDirEntries {
			return nil, gfs.Corruptf("ntfs: directory %s has over %d index entries", dir.Name, maxDirEntries)
		}
		if ie.Flags()&2 != 0 { // the index node's end marker holds no name
			continue
		}
		fn := ie.File()
		rec := int64(ie.MftReference())
		if fn.NameType().Value == nsDOS || rec == r.rec || (r.rec == rootRecord && rec < firstUser) {
			continue
		}
		name := fn.Name()
		if name == "" || strings.ContainsAny(name, "/\x00") {
			continue
		}
		k := key{rec, name}
		if seen[k] {
			continue // an entry of an inner index node is listed once
		}
		seen[k] = true
		e, streams, err := fs.stat(rec, name)
		if err != nil {
			// A stale entry of an index block (a deleted file) names a
			// record no longer in use: not a file of this directory.
			var mf *parser.MFT_ENTRY
			if mf, _ = fs.ctx.GetMFT(rec); mf != nil && !mf.Flags().IsSet("ALLOCATED") {
				continue
			}
			return nil, err
		}
		if ie.Seq_num() != 0 {
			if mf, _ := fs.ctx.GetMFT(rec); mf != nil && mf.Sequence_value() != ie.Seq_num() {
				continue // the record was reused by another file
			}
		}
		out = append(out, e)
		for i, st := range streams {
			alts = append(alts, streamEntry(e, i, st))
		}
	}
	// A real name wins over a stream's (a POSIX-namespace name may hold ':').
	names := make(map[string]bool, len(out))
	for _, e := range out {
		names[e.Name] = true
	}
	for _, e := range alts {
		if !names[e.Name] {
			names[e.Name] = true
			out = append(out, e)
		}
	}
	return out, nil
}

// Open returns the bytes of a regular file's unnamed $DATA stream, or of
// an alternate data stream's entry.
func (fs *FS) Open(f gfs.Entry) (io.ReaderAt, error) {
	r, ok := f.Ref.(*ref)
	if !ok || !f.Mode.IsRegular() {
		return nil, fmt.Errorf("ntfs: %s: not a regular file", f.Name)
	}
	if f.Size == 0 {
		return &file{size: 0}, nil
	}
	return call(fs, "open", func() (io.ReaderAt, error) { return fs.open(f, r) })
}

func (fs *FS) open(f gfs.Entry, r *ref) (io.ReaderAt, error) {
	m, err := fs.ctx.GetMFT(r.rec)
	if err != nil {
		return nil, gfs.Corruptf("ntfs: MFT record %d: %v", r.rec, err)
	}
	rd, err := parser.OpenStream(fs.ctx, m, attrData, parser.WILDCARD_STREAM_ID, r.stream)
	if err != nil {
		return nil, gfs.Corruptf("ntfs: %s: $DATA: %v", f.Name, err)
	}
	if got := parser.RangeSize(rd); got < f.Size {
		// go-ntfs joins at most 21 extents of an attribute list: a file
		// that fragmented is not served short.
		return nil, fmt.Errorf("ntfs: %s: runlists cover %d of %d bytes: %w", f.Name, got, f.Size, gfs.ErrUnsupported)
	}
	runs := fs.dataRuns(m, r.stream)
	starts := make([]int64, len(runs))
	for i := 1; i < len(runs); i++ {
		starts[i] = starts[i-1] + runs[i-1].Len
	}
	return &file{fs: fs, rd: rd, size: f.Size, name: f.Name, runs: runs, starts: starts}, nil
}

// dataRuns places the $DATA stream of m named stream ("": the unnamed one) on the volume as go-ntfs
// reads it (its runs in order, sparse runs and the bytes past the
// initialised size as zeros), for Map; nil when its bytes are not in place
// (resident, compressed).
func (fs *FS) dataRuns(m *parser.MFT_ENTRY, stream string) []gfs.Piece {
	vcns := parser.GetAllVCNs(fs.ctx, m, attrData, parser.WILDCARD_STREAM_ID, stream)
	if len(vcns) == 0 || vcns[0].IsResident() || parser.IsCompressed(vcns[0].Flags()) {
		return nil
	}
	sparse := parser.IsSparse(vcns[0].Flags())
	sort.Slice(vcns, func(i, j int) bool { return vcns[i].Runlist_vcn_start() < vcns[j].Runlist_vcn_start() })
	var actual, initialized int64
	for _, v := range vcns {
		if actual == 0 {
			actual = int64(v.Actual_size())
		}
		if initialized == 0 {
			initialized = int64(v.Initialized_size())
		}
	}
	cs := fs.ctx.ClusterSize
	var out []gfs.Piece
	var at int64
	for _, v := range vcns {
		for _, r := range v.RunList() {
			if r.Length <= 0 || at >= initialized {
				continue
			}
			n := min(r.Length*cs, initialized-at)
			if sparse && r.RelativeUrnOffset == 0 {
				out = append(out, gfs.Piece{Len: n})
			} else {
				out = append(out, gfs.Piece{R: fs.vol, Off: r.Offset * cs, Len: n})
			}
			at += n
		}
	}
	if at < initialized { // runs shorter than the stream: ReadAt says so
		return nil
	}
	if actual > at {
		out = append(out, gfs.Piece{Len: actual - at})
	}
	return out
}

// file reads a stream: ReadAt fills p up to the file's size (the library
// may return a run at a time), as a call of the volume's (FS.call).
type file struct {
	fs     *FS
	rd     io.ReaderAt
	size   int64
	name   string
	runs   []gfs.Piece // where the bytes lie on the volume, from offset 0; nil: not in place
	starts []int64     // the file offset of each run
}

// Map returns where bytes [off, off+n) of the file lie on the volume
// (gfs.Mapper); gfs.ErrNotMapped for a resident or compressed stream.
func (f *file) Map(off, n int64) ([]gfs.Piece, error) {
	if f.runs == nil {
		return nil, gfs.ErrNotMapped
	}
	if off < 0 || off >= f.size {
		return nil, nil
	}
	end := min(off+n, f.size)
	// The first run ending after off (a fragmented file has many).
	i := sort.Search(len(f.runs), func(i int) bool { return f.starts[i]+f.runs[i].Len > off })
	var out []gfs.Piece
	for ; i < len(f.runs) && f.starts[i] < end; i++ {
		r, at := f.runs[i], f.starts[i]
		if lo, hi := max(at, off), min(at+r.Len, end); lo < hi {
			p := gfs.Piece{R: r.R, Len: hi - lo}
			if r.R != nil {
				p.Off = r.Off + lo - at
			}
			out = append(out, p)
		}
	}
	return out, nil
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("ntfs: negative offset")
	}
	if off >= f.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := f.size - off; int64(want) > rem {
		want = int(rem)
	}
	// The library fills a buffer of its own: past the deadline it may
	// still be writing while the caller reuses p.
	b, err := call(f.fs, "read", func() ([]byte, error) {
		b := make([]byte, want)
		n := 0
		for n < want {
			m, rerr := f.rd.ReadAt(b[n:], off+int64(n))
			n += m
			if m == 0 {
				if rerr == nil || rerr == io.EOF {
					return b[:n], gfs.Corruptf("ntfs: %s: data ends at %d of %d bytes", f.name, off+int64(n), f.size)
				}
				return b[:n], rerr
			}
		}
		return b, nil
	})
	n := copy(p, b)
	if err != nil {
		return n, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Readlink returns a symlink's target.
func (fs *FS) Readlink(l gfs.Entry) (string, error) {
	r, ok := l.Ref.(*ref)
	if !ok || r.symlink == "" {
		return "", fmt.Errorf("ntfs: %s: not a symlink", l.Name)
	}
	return r.symlink, nil
}

var _ gfs.Reader = (*FS)(nil)
