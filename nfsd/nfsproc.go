package nfsd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net/netip"

	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// Program numbers.
const (
	progNFS   = 100003
	progMount = 100005
)

// NFSv3 procedures (RFC 1813).
const (
	procNull        = 0
	procGetattr     = 1
	procSetattr     = 2
	procLookup      = 3
	procAccess      = 4
	procReadlink    = 5
	procRead        = 6
	procWrite       = 7
	procCreate      = 8
	procMkdir       = 9
	procSymlink     = 10
	procMknod       = 11
	procRemove      = 12
	procRmdir       = 13
	procRename      = 14
	procLink        = 15
	procReaddir     = 16
	procReaddirplus = 17
	procFsstat      = 18
	procFsinfo      = 19
	procPathconf    = 20
	procCommit      = 21
)

var nfsProcNames = [...]string{
	"null", "getattr", "setattr", "lookup", "access", "readlink", "read", "write",
	"create", "mkdir", "symlink", "mknod", "remove", "rmdir", "rename", "link",
	"readdir", "readdirplus", "fsstat", "fsinfo", "pathconf", "commit",
}

func nfsProcName(proc uint32) string {
	if int(proc) < len(nfsProcNames) {
		return nfsProcNames[proc]
	}
	return "other"
}

// errBodyLen is how many zero bytes follow the status in a failure reply of each
// procedure: an absent post_op_attr is 4 bytes, an empty wcc_data 8.
var errBodyLen = [...]int{
	procNull: 0, procGetattr: 0, procSetattr: 8, procLookup: 4, procAccess: 4,
	procReadlink: 4, procRead: 4, procWrite: 8, procCreate: 8, procMkdir: 8,
	procSymlink: 8, procMknod: 8, procRemove: 8, procRmdir: 8, procRename: 16,
	procLink: 12, procReaddir: 4, procReaddirplus: 4, procFsstat: 4, procFsinfo: 4,
	procPathconf: 4, procCommit: 8,
}

// nfsErrorReply is a successful RPC reply carrying an NFS failure status.
func nfsErrorReply(xid, proc uint32, status nfs.NFSStatus) []byte {
	e := rpc.AcceptedReply(xid, rpc.Success)
	e.Uint32(uint32(status))
	e.Raw(make([]byte, errBodyLen[proc]))
	return e.Bytes()
}

// nfsArgs is what the front needs to know of an NFS call's arguments.
type nfsArgs struct {
	handles [][]byte // file handles the call carries, in order
	// handleOffs are where the handles' length words are in the arguments.
	handleOffs []int
	names      []dirName
	target     []byte // SYMLINK's link text
	mutating   bool
	ordered    bool // keep the call behind others for the same handle
	// readCount is the offset of READ's count within the arguments, or -1.
	readCount int
	// offset and count of a WRITE
	offset uint64
	count  uint32
	// sattr is what SETATTR, CREATE or MKDIR asks to set.
	sattr sattr3
	// guarded: a SETATTR with a ctime guard
	guarded bool
	// Set by checkNFS: the caller, and for ACCESS what it may do.
	id            identity
	accessMask    uint32
	hasAccessMask bool
}

type dirName struct {
	dir  int // index into handles
	name []byte
}

var errArgs = errors.New("nfsd: undecodable arguments")

// maxName is NFS's usual NAME_MAX; the longest link text accepted is maxLinkText.
const (
	maxName     = 255
	maxLinkText = 4096
)

// parseNFSArgs decodes the parts of an NFSv3 call's arguments that carry handles
// and names, and checks that every variable-length item fits in the record, so
// that go-nfs never allocates on a length the record cannot back.
func parseNFSArgs(proc uint32, args []byte) (nfsArgs, error) {
	a := nfsArgs{readCount: -1}
	d := rpc.NewDecoder(args)
	fh := func() {
		a.handleOffs = append(a.handleOffs, d.Offset())
		a.handles = append(a.handles, d.Opaque(len(args)))
	}
	name := func() {
		a.names = append(a.names, dirName{dir: len(a.handles) - 1, name: d.Opaque(len(args))})
	}
	switch proc {
	case procNull:
	case procGetattr, procAccess, procReadlink, procReaddir, procReaddirplus, procFsstat, procFsinfo, procPathconf:
		fh()
	case procSetattr:
		fh()
		rest := rpc.NewDecoder(args[d.Offset():])
		a.sattr = parseSattr3(rest)
		a.guarded = rest.Bool()
		a.mutating, a.ordered = true, true
	case procCommit:
		fh()
		a.ordered = true
	case procLookup:
		fh()
		name()
	case procRead:
		fh()
		d.Uint64()
		a.readCount = d.Offset()
		d.Uint32()
	case procWrite:
		fh()
		a.offset = d.Uint64()
		a.count = d.Uint32()
		d.Uint32()
		d.Opaque(len(args))
		a.mutating, a.ordered = true, true
	case procCreate, procMkdir, procMknod, procRemove, procRmdir:
		fh()
		name()
		a.mutating = true
		// The attributes are go-nfs's to refuse if undecodable: read them
		// on a decoder of their own.
		rest := rpc.NewDecoder(args[min(d.Offset(), len(args)):])
		switch proc {
		case procCreate:
			if how := rest.Uint32(); how != 2 { // not EXCLUSIVE
				a.sattr = parseSattr3(rest)
			}
		case procMkdir:
			a.sattr = parseSattr3(rest)
		}
	case procSymlink:
		fh()
		name()
		skipSattr3(d)
		a.target = d.Opaque(len(args))
		a.mutating = true
	case procRename:
		fh()
		name()
		fh()
		name()
		a.mutating = true
	case procLink:
		fh()
		fh()
		name()
		a.mutating = true
	default:
		return a, errArgs
	}
	if d.Err() != nil {
		return a, errArgs
	}
	return a, nil
}

// skipSattr3 steps over an sattr3.
func skipSattr3(d *rpc.Decoder) {
	for i := 0; i < 3; i++ { // mode, uid, gid
		if d.Bool() {
			d.Uint32()
		}
	}
	if d.Bool() { // size
		d.Uint64()
	}
	for i := 0; i < 2; i++ { // atime, mtime
		if d.Uint32() == 2 { // SET_TO_CLIENT_TIME
			d.Uint64()
		}
	}
}

// checkName validates a name from a call. LOOKUP may name "." and "..".
func checkName(proc uint32, name []byte) (nfs.NFSStatus, bool) {
	if len(name) == 0 {
		return nfs.NFSStatusInval, false
	}
	if len(name) > maxName {
		return nfs.NFSStatusNameTooLong, false
	}
	if bytes.IndexByte(name, '/') >= 0 || bytes.IndexByte(name, 0) >= 0 {
		return nfs.NFSStatusInval, false
	}
	if string(name) == "." || string(name) == ".." {
		if proc == procLookup {
			return nfs.NFSStatusOk, true
		}
		return nfs.NFSStatusInval, false
	}
	return nfs.NFSStatusOk, true
}

// checkNFS applies the export, path and name rules to a call. It returns
// NFSStatusOk to forward the call, or the status to refuse it with and the reason
// to count.
func (s *Server) checkNFS(client netip.Addr, cred rpc.Auth, proc uint32, a *nfsArgs) (nfs.NFSStatus, string) {
	var exps [2]*export
	var paths [2][]string
	var checkPaths [2]bool
	var fids [2]uint64
	for i, fh := range a.handles {
		if len(fh) > maxHandleLen {
			return nfs.NFSStatusBadHandle, refusedHandle
		}
		eid, fid, err := decodeHandle(fh)
		if err != nil {
			return nfs.NFSStatusBadHandle, refusedHandle
		}
		exp := s.exportByID(eid)
		if exp == nil {
			return nfs.NFSStatusStale, refusedStale
		}
		if !s.admitsExport(exp, client) {
			return nfs.NFSStatusAccess, refusedExport
		}
		exps[i], fids[i] = exp, fid
		if s.pathRules(exp) {
			parts, err := exp.pathOf(fid, false)
			if err != nil {
				return nfs.NFSStatusStale, refusedStale
			}
			if !s.admitsPath(exp, client, slashPath(parts)) {
				return nfs.NFSStatusAccess, refusedPath
			}
			paths[i], checkPaths[i] = parts, true
		}
	}
	if len(a.handles) == 2 && exps[0] != exps[1] {
		return nfs.NFSStatusXDev, refusedExport
	}
	if a.mutating && exps[0] != nil && exps[0].ReadOnly {
		return nfs.NFSStatusROFS, refusedROFS
	}
	for _, n := range a.names {
		if st, ok := checkName(proc, n.name); !ok {
			return st, refusedName
		}
		if !checkPaths[n.dir] {
			continue
		}
		var p []string
		switch string(n.name) {
		case ".":
			continue
		case "..":
			dir := paths[n.dir]
			if len(dir) == 0 {
				continue // go-nfs refuses ".." at the root
			}
			p = dir[:len(dir)-1]
		default:
			p = append(append([]string{}, paths[n.dir]...), string(n.name))
		}
		if !s.admitsPath(exps[n.dir], client, slashPath(p)) {
			return nfs.NFSStatusAccess, refusedPath
		}
	}
	if exps[0] != nil {
		// Who calls, and may they.
		pathsOf := func() bool {
			for i := range a.handles {
				if !checkPaths[i] {
					parts, err := exps[i].pathOf(fids[i], false)
					if err != nil {
						return false
					}
					paths[i], checkPaths[i] = parts, true
				}
			}
			return true
		}
		q := s.cfg.Squash
		if s.hasSquashRules(exps[0]) {
			if !pathsOf() {
				return nfs.NFSStatusStale, refusedStale
			}
			for i := range a.handles {
				q = max(q, s.squashFor(exps[i], slashPath(paths[i])))
			}
		}
		a.id = identityOf(cred, q)
		if !a.id.root() || proc == procAccess {
			if !pathsOf() {
				return nfs.NFSStatusStale, refusedStale
			}
			if st := s.checkPermission(a.id, proc, a, exps, paths); st != nfs.NFSStatusOk {
				return st, refusedPermission
			}
		}
	}
	switch {
	case proc == procMknod:
		return nfs.NFSStatusNotSupp, refusedName
	case proc == procSymlink && !safeLinkTarget(string(a.target)):
		// Links the server's filesystem would follow out of the export are
		// not supported.
		return nfs.NFSStatusNotSupp, refusedName
	case proc == procCommit && exps[0] != nil && exps[0].ReadOnly:
		// What a read-only server answers: there is nothing to commit.
		return nfs.NFSStatusROFS, refusedROFS
	case proc == procWrite && a.offset > math.MaxInt64-uint64(a.count):
		// No file grows past 2^63-1 bytes; go-nfs and the fast path would
		// seek to a negative offset.
		return nfs.NFSStatusFBig, refusedName
	}
	return nfs.NFSStatusOk, ""
}

// Sizes of XDR structures in replies.
const (
	fattr3Len  = 84
	wccAttrLen = 24
)

// inspectReply looks into an NFS reply's results: it caps FSINFO's transfer
// sizes at MaxIO (the front refuses larger records) and returns the byte count
// of a successful READ or WRITE.
func inspectReply(proc uint32, body []byte) (n uint64) {
	d := rpc.NewDecoder(body)
	if d.Uint32() != 0 || d.Err() != nil {
		return 0
	}
	switch proc {
	case procRead:
		if d.Bool() {
			d.Fixed(fattr3Len)
		}
		n := d.Uint32()
		if d.Err() != nil {
			return 0
		}
		return uint64(n)
	case procWrite:
		if d.Bool() {
			d.Fixed(wccAttrLen)
		}
		if d.Bool() {
			d.Fixed(fattr3Len)
		}
		n := d.Uint32()
		if d.Err() != nil {
			return 0
		}
		return uint64(n)
	case procFsinfo:
		if d.Bool() {
			d.Fixed(fattr3Len)
		}
		off := d.Offset()
		if d.Remaining() < 20 {
			return 0
		}
		// rtmax, rtpref, rtmult, wtmax, wtpref
		for _, i := range []int{0, 4, 12, 16} {
			p := body[off+i : off+i+4]
			if binary.BigEndian.Uint32(p) > MaxIO {
				binary.BigEndian.PutUint32(p, MaxIO)
			}
		}
	}
	return 0
}
