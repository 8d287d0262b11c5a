package nfsd

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"

	nfs "github.com/willscott/go-nfs"
	"github.com/willscott/go-nfs/file"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// Identities. An NFS call carries its caller's identity in its AUTH_SYS
// credential: uid, gid and up to 16 auxiliary gids (AUTH_NONE is nobody). The
// front applies the permission model of a normal NFS server before a call goes
// anywhere, so go-nfs and the fast path alike are covered:
//
//   - uid 0 may do anything (ESXi and QEMU run as root), unless squashed;
//   - any other uid gets the owner, group or other bits of a file's mode, as
//     the file's uid and gid say: x on a directory to look up in it, r to list
//     it, w and x to create, remove or rename in it (and in a sticky directory
//     only its own entries), r to read a file (or x: a client may read a program
//     to run it), w to write or truncate it; like knfsd, the owner of a file may
//     read and write it whatever its mode, since a local process that opened a
//     file keeps its access after a chmod;
//   - only root changes a file's owner; the owner (or root) changes its mode and
//     times and gives it a group the owner is in; a new file or directory
//     belongs to its creator;
//   - ACCESS answers what the caller may really do.
//
// Squashing maps identities that are not to be trusted to nobody (65534):
// SquashRoot maps uid 0, SquashAll every uid. It is set per server
// (Config.Squash) and per subtree (SetSubtreeSquash, a session); the stricter
// applies.

// Squash says which identities are mapped to nobody.
type Squash int

// Squash levels, in order of strictness.
const (
	SquashNone Squash = iota // identities as sent
	SquashRoot               // uid 0 (and gid 0) become nobody
	SquashAll                // every identity becomes nobody
)

// Nobody is the uid and gid squashed identities get.
const Nobody = 65534

// ParseSquash reads "none", "root" or "all" ("" is none).
func ParseSquash(s string) (Squash, error) {
	switch s {
	case "", "none":
		return SquashNone, nil
	case "root":
		return SquashRoot, nil
	case "all":
		return SquashAll, nil
	}
	return SquashNone, fmt.Errorf("squash %q: want none, root or all", s)
}

func (q Squash) String() string {
	switch q {
	case SquashRoot:
		return "root"
	case SquashAll:
		return "all"
	}
	return "none"
}

// identity is who a call is from, after squashing.
type identity struct {
	uid, gid uint32
	gids     []uint32
}

func (id identity) root() bool { return id.uid == 0 }

func (id identity) inGroup(g uint32) bool {
	return id.gid == g || slices.Contains(id.gids, g)
}

// identityOf reads a call's credential (checkAuth has vetted it) and applies
// squash.
func identityOf(cred rpc.Auth, q Squash) identity {
	if q == SquashNone && cred.Flavor == rpc.AuthUnix {
		// Root calls (ESXi, QEMU) are nearly all calls: tell them without
		// decoding the whole credential.
		b := cred.Body
		if len(b) >= 8 {
			n := int(binary.BigEndian.Uint32(b[4:8]))
			if off := 8 + (n+3)&^3; n <= 255 && len(b) >= off+8 && binary.BigEndian.Uint32(b[off:]) == 0 {
				return identity{uid: 0, gid: binary.BigEndian.Uint32(b[off+4:])}
			}
		}
	}
	id := identity{uid: Nobody, gid: Nobody}
	if cred.Flavor == rpc.AuthUnix {
		if u, err := rpc.ParseUnixCred(cred.Body); err == nil {
			id = identity{uid: u.UID, gid: u.GID, gids: u.GIDs}
		}
	}
	switch {
	case q == SquashAll:
		return identity{uid: Nobody, gid: Nobody}
	case q == SquashRoot && id.uid == 0:
		return identity{uid: Nobody, gid: Nobody}
	}
	return id
}

type squashRule struct {
	path   string
	squash Squash
}

// SetSubtreeSquash squashes the identities of calls on subtree (a path inside
// the export, like "/session-42") and below; SquashNone removes the rule.
// Where rules nest the deepest decides; the server's Config.Squash applies
// when it is stricter.
func (s *Server) SetSubtreeSquash(exportPath, subtree string, q Squash) error {
	parts, err := splitPath(subtree)
	if err != nil {
		return fmt.Errorf("nfsd: subtree %q: %w", subtree, err)
	}
	p := slashPath(parts)
	s.mu.Lock()
	defer s.mu.Unlock()
	exp := s.exports[exportPath]
	if exp == nil {
		return fmt.Errorf("nfsd: no export %q", exportPath)
	}
	var r *squashRule
	if q != SquashNone {
		r = &squashRule{path: p, squash: q}
	}
	exp.squashes = withRule(exp.squashes, p, func(r squashRule) string { return r.path }, r)
	return nil
}

// squashFor is the squash that applies to p inside exp.
func (s *Server) squashFor(exp *export, p string) Squash {
	q := s.cfg.Squash
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range exp.squashes {
		if p == r.path || within(p, r.path) {
			return max(q, r.squash)
		}
	}
	return q
}

func (s *Server) hasSquashRules(exp *export) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(exp.squashes) > 0
}

// Permission bits asked of a file's mode.
const (
	mayRead  = 4
	mayWrite = 2
	mayExec  = 1
)

// owner gives a file's uid and gid as clients see them.
func owner(fi os.FileInfo) (uid, gid uint32) {
	if a := file.GetInfo(fi); a != nil {
		return a.UID, a.GID
	}
	return 0, 0
}

// may reports whether id has every permission in want on fi.
func (id identity) may(fi os.FileInfo, want uint32) bool {
	if id.root() {
		return true
	}
	uid, gid := owner(fi)
	perm := uint32(fi.Mode().Perm())
	switch {
	case id.uid == uid:
		perm >>= 6
	case id.inGroup(gid):
		perm >>= 3
	}
	return perm&want == want
}

func (id identity) owns(fi os.FileInfo) bool {
	if id.root() {
		return true
	}
	uid, _ := owner(fi)
	return uid == id.uid
}

// ACCESS bits (RFC 1813).
const (
	access3Read    = 0x01
	access3Lookup  = 0x02
	access3Modify  = 0x04
	access3Extend  = 0x08
	access3Delete  = 0x10
	access3Execute = 0x20
)

// accessMask is what id may do with fi: the bits ACCESS answers.
func (id identity) accessMask(fi os.FileInfo, readOnly bool) uint32 {
	var m uint32
	if fi.IsDir() {
		if id.may(fi, mayRead) {
			m |= access3Read
		}
		if id.may(fi, mayExec) {
			m |= access3Lookup
		}
		if id.may(fi, mayWrite|mayExec) {
			m |= access3Modify | access3Extend | access3Delete
		}
	} else {
		if id.may(fi, mayRead) || id.owns(fi) {
			m |= access3Read
		}
		if id.may(fi, mayWrite) || id.owns(fi) {
			m |= access3Modify | access3Extend
		}
		// Even root executes only what has an x bit.
		if fi.Mode().Perm()&0o111 != 0 && (id.root() || id.may(fi, mayExec)) {
			m |= access3Execute
		}
	}
	if readOnly {
		m &^= access3Modify | access3Extend | access3Delete
	}
	return m
}

// sattr3 is what a SETATTR, CREATE or MKDIR asks to set.
type sattr3 struct {
	mode, uid, gid       *uint32
	size                 *uint64
	atimeHow, mtimeHow   uint32 // 0 don't change, 1 server time, 2 client time
	present, undecodable bool
}

func parseSattr3(d *rpc.Decoder) sattr3 {
	var s sattr3
	s.present = true
	u32 := func() *uint32 {
		if d.Bool() {
			v := d.Uint32()
			return &v
		}
		return nil
	}
	s.mode, s.uid, s.gid = u32(), u32(), u32()
	if d.Bool() {
		v := d.Uint64()
		s.size = &v
	}
	for _, how := range []*uint32{&s.atimeHow, &s.mtimeHow} {
		*how = d.Uint32()
		if *how == 2 {
			d.Uint64()
		}
	}
	s.undecodable = d.Err() != nil
	return s
}

// fileInfo stats the file at parts inside exp.
func fileInfo(exp *export, parts []string) (os.FileInfo, error) {
	return exp.fs.Filesystem.Lstat(exp.fs.Join(append([]string{"/"}, parts...)...))
}

// checkPermission applies the permission model to a call whose handles are
// in exps at paths. It returns NFSStatusOk to go on; for ACCESS it leaves the
// caller's mask in a.accessMask.
func (s *Server) checkPermission(id identity, proc uint32, a *nfsArgs, exps [2]*export, paths [2][]string) nfs.NFSStatus {
	stat := func(i int) (os.FileInfo, nfs.NFSStatus) {
		fi, err := fileInfo(exps[i], paths[i])
		if err != nil {
			if st, ok := nfsStatusOf(err); ok && st != nfs.NFSStatusNoEnt {
				return nil, st
			}
			return nil, nfs.NFSStatusStale
		}
		return fi, nfs.NFSStatusOk
	}
	// entry stats name inside the directory of handle i; nil if absent.
	entry := func(i int, name []byte) os.FileInfo {
		fi, err := fileInfo(exps[i], append(append([]string{}, paths[i]...), string(name)))
		if err != nil {
			return nil
		}
		return fi
	}
	// dirChange checks that id may change the entry name of directory i.
	dirChange := func(i int, name []byte, removing bool) nfs.NFSStatus {
		dir, st := stat(i)
		if st != nfs.NFSStatusOk {
			return st
		}
		if !id.may(dir, mayWrite|mayExec) {
			return nfs.NFSStatusAccess
		}
		if removing && dir.Mode()&os.ModeSticky != 0 && !id.owns(dir) {
			if e := entry(i, name); e != nil && !id.owns(e) {
				return nfs.NFSStatusAccess
			}
		}
		return nfs.NFSStatusOk
	}
	if proc == procAccess {
		fi, st := stat(0)
		if st != nfs.NFSStatusOk {
			return st
		}
		a.accessMask = id.accessMask(fi, exps[0].ReadOnly)
		a.hasAccessMask = true
		return nfs.NFSStatusOk
	}
	if id.root() {
		return nfs.NFSStatusOk
	}
	switch proc {
	case procLookup:
		if fi, st := stat(0); st != nfs.NFSStatusOk {
			return st
		} else if fi.IsDir() && !id.may(fi, mayExec) {
			return nfs.NFSStatusAccess
		}
	case procReaddir, procReaddirplus:
		if fi, st := stat(0); st != nfs.NFSStatusOk {
			return st
		} else if fi.IsDir() && !id.may(fi, mayRead) {
			return nfs.NFSStatusAccess
		}
	case procRead:
		if fi, st := stat(0); st != nfs.NFSStatusOk {
			return st
		} else if fi.Mode().IsRegular() && !id.owns(fi) && !id.may(fi, mayRead) && !id.may(fi, mayExec) {
			return nfs.NFSStatusAccess
		}
	case procWrite:
		if fi, st := stat(0); st != nfs.NFSStatusOk {
			return st
		} else if fi.Mode().IsRegular() && !id.owns(fi) && !id.may(fi, mayWrite) {
			return nfs.NFSStatusAccess
		}
	case procSetattr:
		fi, st := stat(0)
		if st != nfs.NFSStatusOk {
			return st
		}
		return id.checkSetattr(fi, a.sattr)
	case procCreate, procMkdir, procSymlink, procMknod:
		if st := dirChange(0, a.names[0].name, false); st != nfs.NFSStatusOk {
			return st
		}
		if a.sattr.present && a.sattr.uid != nil && *a.sattr.uid != id.uid {
			return nfs.NFSStatusPerm
		}
		if a.sattr.present && a.sattr.gid != nil && !id.inGroup(*a.sattr.gid) {
			return nfs.NFSStatusPerm
		}
	case procRemove, procRmdir:
		return dirChange(0, a.names[0].name, true)
	case procRename:
		if st := dirChange(0, a.names[0].name, true); st != nfs.NFSStatusOk {
			return st
		}
		return dirChange(1, a.names[1].name, true)
	case procLink:
		return dirChange(1, a.names[0].name, false)
	}
	return nfs.NFSStatusOk
}

// checkSetattr checks a SETATTR by a caller other than root.
func (id identity) checkSetattr(fi os.FileInfo, sa sattr3) nfs.NFSStatus {
	if !sa.present || sa.undecodable {
		return nfs.NFSStatusOk // go-nfs answers undecodable arguments itself
	}
	uid, gid := owner(fi)
	if sa.uid != nil && *sa.uid != uid {
		return nfs.NFSStatusPerm // only root gives a file away
	}
	if sa.gid != nil && *sa.gid != gid && (!id.owns(fi) || !id.inGroup(*sa.gid)) {
		return nfs.NFSStatusPerm
	}
	if sa.mode != nil && !id.owns(fi) {
		return nfs.NFSStatusPerm
	}
	if sa.size != nil && !id.owns(fi) && !id.may(fi, mayWrite) {
		return nfs.NFSStatusAccess
	}
	if sa.atimeHow == 2 || sa.mtimeHow == 2 {
		if !id.owns(fi) {
			return nfs.NFSStatusPerm
		}
	} else if (sa.atimeHow == 1 || sa.mtimeHow == 1) && !id.owns(fi) && !id.may(fi, mayWrite) {
		return nfs.NFSStatusAccess
	}
	return nfs.NFSStatusOk
}
