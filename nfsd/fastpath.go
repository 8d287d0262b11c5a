package nfsd

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// The fast path answers READ and WRITE in the front, without go-nfs. go-nfs
// would allocate a zeroed buffer per READ, marshal the data through reflective
// XDR into a growing buffer, and send the reply through a pipe to be read and
// framed again: four copies of every byte. Here a READ reads into a pooled
// buffer that goes to the socket as is, and a WRITE writes straight from the
// call record. Each step mirrors go-nfs's onRead and onWrite (v0.0.4), so the
// replies are the bytes go-nfs would send; fastpath_test.go compares them.
// Like go-nfs, it opens the file for every call: rekindle's own views open a
// file with a map lookup, and a cache of open files would have to follow every
// removal, rename and copy-up behind the server's back.

// ioArgs are the arguments of a READ or WRITE call.
type ioArgs struct {
	fh     []byte
	offset uint64
	count  uint32
	stable uint32 // WRITE's stable_how
	data   []byte // WRITE's data, aliasing the call record
}

// parseIOArgs decodes READ or WRITE arguments for the fast path. It declines
// (false) what go-nfs should answer as it always has: undecodable arguments,
// and WRITEs whose count is not their data's length or whose stable_how is
// unknown. A READ's count is cut to MaxIO.
func parseIOArgs(proc uint32, args []byte) (ioArgs, bool) {
	var a ioArgs
	d := rpc.NewDecoder(args)
	a.fh = d.Opaque(maxHandleLen)
	a.offset = d.Uint64()
	a.count = d.Uint32()
	switch proc {
	case procRead:
		a.count = min(a.count, MaxIO)
	case procWrite:
		a.stable = d.Uint32()
		a.data = d.Opaque(len(args))
		if d.Err() == nil && (int64(a.count) != int64(len(a.data)) || a.stable > fileSync) {
			return a, false
		}
	case procCommit:
	default:
		return a, false
	}
	return a, d.Err() == nil
}

// stable_how of a WRITE (RFC 1813).
const (
	unstable = 0
	dataSync = 1
	fileSync = 2
)

// SliceReader may be implemented by the files of an export's filesystem to
// lend the bytes of a READ instead of copying them: ReadSlices returns the n
// bytes at off as read-only slices that stay valid after it returns (fewer
// bytes and io.EOF past the end, like ReadAt). The READ fast path writes them
// to the client as they are.
type SliceReader interface {
	ReadSlices(off int64, n int) ([][]byte, int, error)
}

// CachedOpener may be implemented by an export's filesystem that can open
// some files without waiting for I/O (OpenCached's ok false: it would wait).
// With CachedSliceReader files it lets the front answer a READ whose bytes
// are at hand on the goroutine that read the call, without handing the
// connection's reading to a new goroutine (see clientConn.dispatch).
type CachedOpener interface {
	OpenCached(name string) (billy.File, bool)
}

// OpenStater may be implemented by an export's filesystem that can describe
// a file it opened, as its Stat and Lstat of the file's name would, from
// the open file (ok false: it cannot, and the name is stat-ed): a WRITE
// then takes its pre- and post-op attributes without two lookups of the
// name through every layer of the export. A filesystem whose Stat changes
// what the one below says (names, modes) implements it only if it does the
// same to what StatOpen returns.
type OpenStater interface {
	StatOpen(name string, f billy.File) (os.FileInfo, bool)
}

// pathStats makes WRITEs take their attributes from path Stats only: for
// benchmarks that compare the two.
var pathStats atomic.Bool

// CachedSliceReader is SliceReader without I/O: ok false when the bytes are
// not at hand, and then it has done nothing.
type CachedSliceReader interface {
	CachedSlices(off int64, n int) ([][]byte, int, bool, error)
}

// fastReply is a reply record in pieces, written with one vectored write.
type fastReply struct {
	head []byte   // 4 bytes for the record mark, then the reply up to READ's data
	data []byte   // READ's data, when read into a buffer
	lent [][]byte // READ's data, when lent by a SliceReader
	pad  []byte   // XDR padding after data
	buf  *[]byte  // the pooled buffer data lives in, or nil
	n    uint64   // bytes read or written, for the metrics
}

// length is the record's length after its 4-byte mark.
func (r *fastReply) length() int {
	n := len(r.head) - 4 + len(r.data) + len(r.pad)
	for _, b := range r.lent {
		n += len(b)
	}
	return n
}

// free returns the reply's buffer to its pool.
func (r *fastReply) free() {
	if r.buf != nil {
		putReadBuf(r.buf)
		r.buf, r.data = nil, nil
	}
	r.lent = nil
}

var zeroPad [4]byte

// Sizes of the reply parts the fast path builds.
const (
	replyHeadLen = 4 + 24 // record mark, accepted reply header
	readHeadLen  = replyHeadLen + 4 + 4 + fattr3Len + 4 + 4 + 4
	writeHeadLen = replyHeadLen + 4 + 4 + wccAttrLen + 4 + fattr3Len + 4 + 4 + 8
)

// appendReplyHeader appends an accepted, successful reply header (RFC 5531,
// AUTH_NONE verifier), as go-nfs writes it.
func appendReplyHeader(b []byte, xid uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, xid)
	b = binary.BigEndian.AppendUint32(b, rpc.MsgReply)
	b = append(b, make([]byte, 16)...) // MSG_ACCEPTED, AUTH_NONE, empty body, SUCCESS
	return b
}

// appendFattr3 appends a fattr3 as go-nfs's XDR encoding of nfs.FileAttribute
// does.
func appendFattr3(b []byte, a *nfs.FileAttribute) []byte {
	be := binary.BigEndian
	b = be.AppendUint32(b, uint32(a.Type))
	b = be.AppendUint32(b, a.FileMode)
	b = be.AppendUint32(b, a.Nlink)
	b = be.AppendUint32(b, a.UID)
	b = be.AppendUint32(b, a.GID)
	b = be.AppendUint64(b, a.Filesize)
	b = be.AppendUint64(b, a.Used)
	b = be.AppendUint32(b, a.SpecData[0])
	b = be.AppendUint32(b, a.SpecData[1])
	b = be.AppendUint64(b, a.FSID)
	b = be.AppendUint64(b, a.Fileid)
	for _, t := range [...]nfs.FileTime{a.Atime, a.Mtime, a.Ctime} {
		b = be.AppendUint32(b, t.Seconds)
		b = be.AppendUint32(b, t.Nseconds)
	}
	return b
}

// errorReply is an NFS failure reply, as go-nfs's error formatters build it.
func errorReply(xid, proc uint32, st nfs.NFSStatus) fastReply {
	rec := nfsErrorReply(xid, proc, st)
	head := make([]byte, 4, 4+len(rec))
	return fastReply{head: append(head, rec...)}
}

// Read buffers: MaxIO ones for large READs, small ones for the rest, so that a
// 4 KiB READ does not hold a megabyte.
const smallReadBuf = 64 << 10

var (
	bigReadBufs   = sync.Pool{New: func() any { b := make([]byte, MaxIO); return &b }}
	smallReadBufs = sync.Pool{New: func() any { b := make([]byte, smallReadBuf); return &b }}
)

func getReadBuf(n uint32) *[]byte {
	if n <= smallReadBuf {
		return smallReadBufs.Get().(*[]byte)
	}
	return bigReadBufs.Get().(*[]byte)
}

func putReadBuf(b *[]byte) {
	if cap(*b) == MaxIO {
		bigReadBufs.Put(b)
	} else {
		smallReadBufs.Put(b)
	}
}

// fastRead answers a READ as go-nfs's onRead does.
func (s *Server) fastRead(xid uint32, a *ioArgs) fastReply {
	r, _ := s.readFile(xid, a, false, nil)
	return r
}

// readFile is fastRead (cachedOnly false), or fastRead when it needs no I/O
// (cachedOnly: CachedOpener, CachedSliceReader), false when it would, and
// then it has done nothing: errors, too, are left to fastRead. The reply's
// head is built in head's array when it has room (readHeadLen), else in a
// new one.
func (s *Server) readFile(xid uint32, a *ioArgs, cachedOnly bool, head []byte) (fastReply, bool) {
	efs, full, err := s.filePathOf(a.fh)
	if err != nil {
		return errorReply(xid, procRead, nfs.NFSStatusStale), !cachedOnly
	}
	var f billy.File
	if cachedOnly {
		co, ok := efs.Filesystem.(CachedOpener)
		if !ok || efs.check("open", full) != nil {
			return fastReply{}, false
		}
		if f, ok = co.OpenCached(full); !ok {
			return fastReply{}, false
		}
		if _, ok := f.(CachedSliceReader); !ok {
			f.Close()
			return fastReply{}, false
		}
	} else if f, err = efs.Open(full); err != nil {
		if os.IsNotExist(err) {
			return errorReply(xid, procRead, nfs.NFSStatusNoEnt), true
		}
		return errorReply(xid, procRead, nfs.NFSStatusAccess), true
	}
	defer f.Close()
	info, ok := efs.statOpen(full, f)
	if !ok {
		if info, err = efs.Stat(full); err != nil {
			return errorReply(xid, procRead, nfs.NFSStatusAccess), !cachedOnly
		}
	}
	count, setEOF := a.count, false
	if int64(a.offset) >= info.Size() {
		count, setEOF = 0, true
	} else if info.Size()-int64(a.offset) <= int64(count) {
		count, setEOF = uint32(uint64(info.Size())-a.offset), true
	}
	var (
		buf  *[]byte
		lent [][]byte
		n    int
	)
	if cachedOnly {
		var hit bool
		lent, n, hit, err = f.(CachedSliceReader).CachedSlices(int64(a.offset), int(count))
		if !hit || (err != nil && !errors.Is(err, io.EOF)) {
			return fastReply{}, false
		}
	} else if sr, ok := f.(SliceReader); ok {
		lent, n, err = sr.ReadSlices(int64(a.offset), int(count))
	} else {
		buf = getReadBuf(count)
		n, err = f.ReadAt((*buf)[:count], int64(a.offset))
	}
	if err != nil && !errors.Is(err, io.EOF) {
		if buf != nil {
			putReadBuf(buf)
		}
		return errorReply(xid, procRead, nfs.NFSStatusIO), true
	}
	eof := errors.Is(err, io.EOF) || setEOF

	if cap(head) < readHeadLen {
		head = make([]byte, 0, readHeadLen)
	}
	head = appendReplyHeader(head[:4], xid)
	head = binary.BigEndian.AppendUint32(head, uint32(nfs.NFSStatusOk))
	head = binary.BigEndian.AppendUint32(head, 1) // attributes follow
	head = appendFattr3(head, nfs.ToFileAttribute(info, full))
	head = binary.BigEndian.AppendUint32(head, uint32(n))
	if eof {
		head = binary.BigEndian.AppendUint32(head, 1)
	} else {
		head = binary.BigEndian.AppendUint32(head, 0)
	}
	head = binary.BigEndian.AppendUint32(head, uint32(n))
	r := fastReply{head: head, lent: lent, pad: zeroPad[:(4-n%4)%4], buf: buf, n: uint64(n)}
	if buf != nil {
		r.data = (*buf)[:n]
	}
	return r, true
}

// fastWrite answers a WRITE with the protocol's durability: an UNSTABLE
// write is answered UNSTABLE once it is in the filesystem (COMMIT makes it
// durable); a DATA_SYNC or FILE_SYNC write is synced before the reply, the
// sync shared with other stable WRITEs and COMMITs of the file under way
// (see commitGroups). The reply is go-nfs's onWrite's but for the committed
// field, which go-nfs always sets to FILE_SYNC. An unsafe server syncs
// nothing.
func (s *Server) fastWrite(xid uint32, a *ioArgs) fastReply {
	efs, parts, err := s.fileOf(a.fh)
	if err != nil {
		return errorReply(xid, procWrite, nfs.NFSStatusStale)
	}
	if !billy.CapabilityCheck(efs, billy.WriteCapability) {
		return errorReply(xid, procWrite, nfs.NFSStatusROFS)
	}
	full := efs.Join(parts...)
	f, info, st := openForWrite(efs, full)
	if st != nfs.NFSStatusOk {
		return errorReply(xid, procWrite, st)
	}
	pre := nfs.ToFileAttribute(info, full)
	opened := f
	// The export's sync-after-every-write wrapper is for go-nfs, which
	// answers every WRITE FILE_SYNC: here the reply says what was done.
	syncFn := func() error { return nil }
	if sf, ok := f.(*syncFile); ok {
		f = sf.File
		if sf.sync != nil {
			syncFn = sf.sync
		}
	}
	if a.offset > 0 {
		if _, err := f.Seek(int64(a.offset), io.SeekStart); err != nil {
			f.Close()
			return errorReply(xid, procWrite, nfs.NFSStatusIO)
		}
	}
	n, err := f.Write(a.data)
	if err == nil && a.stable != unstable {
		err = s.commits.sync(string(a.fh), syncsFor(len(a.data)), syncFn)
	}
	if err != nil {
		f.Close()
		s.log.Warn("nfsd: write failed", "export", efs.exp.Path, "path", full, "err", err)
		return errorReply(xid, procWrite, writeErrorStatus(err))
	}
	// The post-op attributes before the close, which changes none of them.
	post, postOK := efs.statOpen(full, opened)
	if err := f.Close(); err != nil {
		s.log.Warn("nfsd: write failed at close", "export", efs.exp.Path, "path", full, "err", err)
		return errorReply(xid, procWrite, writeErrorStatus(err))
	}

	head := make([]byte, 4, writeHeadLen)
	head = appendReplyHeader(head, xid)
	be := binary.BigEndian
	head = be.AppendUint32(head, uint32(nfs.NFSStatusOk))
	head = be.AppendUint32(head, 1) // wcc_data: pre-op attributes follow
	head = be.AppendUint64(head, pre.Filesize)
	head = be.AppendUint32(head, pre.Mtime.Seconds)
	head = be.AppendUint32(head, pre.Mtime.Nseconds)
	head = be.AppendUint32(head, pre.Ctime.Seconds)
	head = be.AppendUint32(head, pre.Ctime.Nseconds)
	if !postOK {
		post, err = efs.Lstat(full)
	}
	if err == nil && post != nil {
		head = be.AppendUint32(head, 1)
		head = appendFattr3(head, nfs.ToFileAttribute(post, full))
	} else {
		s.log.Warn("nfsd: no attributes after a write", "export", efs.exp.Path, "path", full, "err", err)
		head = be.AppendUint32(head, 0)
	}
	head = be.AppendUint32(head, uint32(n))
	head = be.AppendUint32(head, a.stable) // committed: what was asked, and done
	head = append(head, s.nfs.ID[:]...)
	return fastReply{head: head, n: uint64(n)}
}

// openForWrite opens the file at full for a WRITE and describes it as
// efs.Stat does. A filesystem that can describe a file it opened
// (OpenStater) is asked after the open, which saves a lookup of the name;
// any other, or any failure there, takes the path: Stat, then open (as
// go-nfs does), which also tells the failures apart for the reply.
func openForWrite(efs *exportFS, full string) (billy.File, os.FileInfo, nfs.NFSStatus) {
	if _, ok := efs.Filesystem.(OpenStater); ok && !pathStats.Load() {
		if f, err := efs.OpenFile(full, os.O_RDWR, 0); err == nil {
			if info, ok := efs.statOpen(full, f); ok && info.Mode().IsRegular() {
				return f, info, nfs.NFSStatusOk
			}
			f.Close()
		}
	}
	info, err := efs.Stat(full)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil, nfs.NFSStatusNoEnt
		}
		return nil, nil, nfs.NFSStatusAccess
	}
	if !info.Mode().IsRegular() {
		return nil, nil, nfs.NFSStatusInval
	}
	f, err := efs.OpenFile(full, os.O_RDWR, info.Mode().Perm())
	if err != nil {
		return nil, nil, nfs.NFSStatusAccess
	}
	return f, info, nfs.NFSStatusOk
}

// fastCommit answers a COMMIT: every WRITE of the file answered before it
// arrived is made durable (the whole file is synced; offset and count are
// not needed for that), sharing the sync with concurrent stable WRITEs and
// COMMITs of the file. The reply is go-nfs's onCommit's: no pre-op
// attributes, post-op attributes, the write verifier. (COMMIT on a
// read-only export is answered ROFS by checkNFS before it gets here; the
// capability check below only keeps an unsafe or read-only filesystem from
// being synced.)
func (s *Server) fastCommit(xid uint32, a *ioArgs) fastReply {
	efs, parts, err := s.fileOf(a.fh)
	if err != nil {
		return errorReply(xid, procCommit, nfs.NFSStatusStale)
	}
	full := efs.Join(parts...)
	var (
		post   os.FileInfo
		postOK bool
	)
	if !efs.unsafe && billy.CapabilityCheck(efs, billy.WriteCapability) {
		// Opened read-only: opening a base file for writing would record
		// it as changed in an overlay.
		f, err := efs.Open(full)
		if err != nil {
			if os.IsNotExist(err) {
				return errorReply(xid, procCommit, nfs.NFSStatusNoEnt)
			}
			return errorReply(xid, procCommit, nfs.NFSStatusIO)
		}
		if syncFn := syncerOf(f); syncFn != nil {
			err = s.commits.sync(string(a.fh), 1, syncFn)
		}
		if err == nil {
			post, postOK = efs.statOpen(full, f)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			s.log.Warn("nfsd: commit failed", "export", efs.exp.Path, "path", full, "err", err)
			return errorReply(xid, procCommit, nfs.NFSStatusIO)
		}
	}
	head := make([]byte, 4, replyHeadLen+4+4+4+fattr3Len+8)
	head = appendReplyHeader(head, xid)
	be := binary.BigEndian
	head = be.AppendUint32(head, uint32(nfs.NFSStatusOk))
	head = be.AppendUint32(head, 0) // no pre-op attributes
	if !postOK {
		post, err = efs.Lstat(full)
	}
	if err == nil && post != nil {
		head = be.AppendUint32(head, 1)
		head = appendFattr3(head, nfs.ToFileAttribute(post, full))
	} else {
		head = be.AppendUint32(head, 0)
	}
	head = append(head, s.nfs.ID[:]...)
	return fastReply{head: head}
}

// commitGroups lets concurrent syncs of one file share them: a caller
// whose data was written before a sync started may wait for that sync
// instead of starting its own (group commit). A caller may start its own
// while fewer than its limit are running (see syncsFor). Keyed by file
// handle.
type commitGroups struct {
	mu sync.Mutex
	m  map[string]*commitGroup
}

// syncsFor is how many syncs of one file may run at once when a stable
// WRITE of n bytes starts one. Small writes start their own beside up to 7
// others: the filesystem shares one journal commit between concurrent
// fdatasyncs of a file, and a sync started now answers sooner than one
// started when the running one ends (FILE_SYNC 4 KiB writes at depth 8:
// 0.47–0.49× Ganesha with 8, 0.34× with 1, medians of 5 per-run ratios).
// Large ones (and COMMITs, which cover what UNSTABLE writes left) share
// one: their time is the writeback of their data, which concurrent syncs
// of the file would contend for (FILE_SYNC 1 MiB at depth 8: 0.95× with
// 1, 0.81–0.83× with 8).
func syncsFor(n int) int {
	if n <= 64<<10 {
		return 8
	}
	return 1
}

type commitGroup struct {
	refs int // guarded by commitGroups.mu

	mu        sync.Mutex
	cond      *sync.Cond
	requested uint64 // tickets handed out
	completed uint64 // every ticket up to it is covered by a finished sync
	running   int
	err       error // of a finished sync that failed; kept while the group lives
}

// sync runs fn, or waits for a run that starts after this call did, for
// the file named key; it starts fn only while fewer than limit runs are
// under way. Call it after the data to make durable was written.
func (g *commitGroups) sync(key string, limit int, fn func() error) error {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*commitGroup{}
	}
	cg := g.m[key]
	if cg == nil {
		cg = &commitGroup{}
		cg.cond = sync.NewCond(&cg.mu)
		g.m[key] = cg
	}
	cg.refs++
	g.mu.Unlock()
	err := cg.sync(limit, fn)
	g.mu.Lock()
	if cg.refs--; cg.refs == 0 {
		delete(g.m, key)
	}
	g.mu.Unlock()
	return err
}

func (cg *commitGroup) sync(limit int, fn func() error) error {
	cg.mu.Lock()
	defer cg.mu.Unlock()
	cg.requested++
	ticket := cg.requested
	for {
		if cg.completed >= ticket {
			return cg.err
		}
		if cg.running < limit {
			break
		}
		cg.cond.Wait()
	}
	// This run covers every ticket handed out before it starts; runs may
	// end out of order, and one that ends covers what it covers even when
	// an earlier one is still running.
	cg.running++
	upto := cg.requested
	cg.mu.Unlock()
	err := fn()
	cg.mu.Lock()
	cg.running--
	cg.completed = max(cg.completed, upto)
	if err != nil {
		cg.err = err
	}
	cg.cond.Broadcast()
	return err
}

// writeErrorStatus maps a write error to a status as go-nfs does.
func writeErrorStatus(err error) nfs.NFSStatus {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return nfs.NFSStatusNoSPC
	case errors.Is(err, syscall.EDQUOT):
		return nfs.NFSStatusDQuot
	case errors.Is(err, syscall.EFBIG):
		return nfs.NFSStatusFBig
	}
	return nfs.NFSStatusIO
}
