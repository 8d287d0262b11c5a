package nfsd

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sort"

	billy "github.com/go-git/go-billy/v5"
)

// Tenancy: what one client may learn of the others. A client sees in a
// directory listing only the entries it is admitted to, in EXPORT only the
// exports and subtrees it may mount, and in DUMP only its own mounts.
//
// go-nfs answers READDIR and READDIRPLUS behind a pipe and never learns the
// client's address, so the front tells it: it forwards such a call with a
// viewer handle, the client's handle followed by a marker and the client's
// address (36 bytes in all, still a multiple of 4). Only the front writes to the
// pipes, and it refuses every handle a client sends that is not exactly a
// 20-byte handle, so no client can name another's address this way.
const (
	viewerMark      = 0x76 // 'v', in byte 1 of a viewer handle (zero in client handles)
	viewerHandleLen = handleLen + 16
)

// viewerHandle is fh (a valid client handle) marked with client's address.
func viewerHandle(fh []byte, client netip.Addr) []byte {
	h := make([]byte, viewerHandleLen)
	copy(h, fh)
	h[1] = viewerMark
	a := client.As16()
	copy(h[handleLen:], a[:])
	return h
}

// splitViewerHandle undoes viewerHandle; ok is false for any other handle.
func splitViewerHandle(h []byte) (fh []byte, client netip.Addr, ok bool) {
	if len(h) != viewerHandleLen || h[1] != viewerMark {
		return nil, netip.Addr{}, false
	}
	fh = append([]byte(nil), h[:handleLen]...)
	fh[1] = 0
	client = netip.AddrFrom16([16]byte(h[handleLen:])).Unmap()
	return fh, client, true
}

// markViewer rewrites a READDIR or READDIRPLUS record (framed, with its 4-byte
// gap) so that its directory handle carries the client's address. It leaves
// other calls, and exports without path rules, as they are.
func (s *Server) markViewer(client netip.Addr, argsOff int, proc uint32, a *nfsArgs, framed []byte) []byte {
	if proc != procReaddir && proc != procReaddirplus || len(a.handles) == 0 {
		return framed
	}
	eid, _, err := decodeHandle(a.handles[0])
	if err != nil {
		return framed
	}
	exp := s.exportByID(eid)
	if exp == nil || !s.pathRules(exp) {
		return framed
	}
	off := 4 + argsOff
	rest := framed[off+4+handleLen:] // the handle is the first argument; 20 bytes need no padding
	out := make([]byte, 0, len(framed)+16)
	out = append(out, framed[:off]...)
	out = binary.BigEndian.AppendUint32(out, viewerHandleLen)
	out = append(out, viewerHandle(a.handles[0], client)...)
	return append(out, rest...)
}

// viewerFS is an export's filesystem as one client lists it: ReadDir leaves out
// the entries the client is not admitted to.
type viewerFS struct {
	*exportFS
	s      *Server
	client netip.Addr
}

func (v *viewerFS) ReadDir(name string) ([]os.FileInfo, error) {
	list, err := v.exportFS.ReadDir(name)
	if err != nil {
		return nil, err
	}
	parts, err := splitPath(name)
	if err != nil {
		return nil, &os.PathError{Op: "readdir", Path: name, Err: os.ErrPermission}
	}
	out := list[:0]
	for _, fi := range list {
		if v.s.admitsPath(v.exportFS.exp, v.client, slashPath(append(parts[:len(parts):len(parts)], fi.Name()))) {
			out = append(out, fi)
		}
	}
	return out, nil
}

// exportFSOf finds the exportFS behind what FromHandle gave go-nfs.
func exportFSOf(fs billy.Filesystem) (*exportFS, bool) {
	switch f := fs.(type) {
	case *exportFS:
		return f, true
	case *viewerFS:
		return f.exportFS, true
	}
	return nil, false
}

// matching lists the prefixes of list that contain a: what EXPORT tells a
// client of an allow-list, without the networks of other clients.
func matching(list []netip.Prefix, a netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range list {
		if p.Contains(a) {
			out = append(out, p)
		}
	}
	return out
}

// exportEntry is one line of MOUNT EXPORT: a directory and its groups.
type exportEntry struct {
	dir    string
	groups []netip.Prefix
}

// exportsFor lists what client may mount: each export whose root admits it, and
// for an export whose root does not, each subtree whose rule admits it. The
// groups are the client's own networks among those the rules name.
func (s *Server) exportsFor(client netip.Addr) []exportEntry {
	var out []exportEntry
	for _, x := range s.Exports() {
		s.mu.RLock()
		exp := s.exports[x.Path]
		var rules []subtreeRule
		if exp != nil {
			rules = append(rules, exp.subtrees...)
		}
		serverAllow := clonePrefixes(s.allow)
		s.mu.RUnlock()
		if exp == nil || !s.admitsExport(exp, client) {
			continue
		}
		groups := matching(serverAllow, client)
		if x.Allow != nil {
			groups = matching(x.Allow, client)
		}
		if s.admitsPath(exp, client, "/") {
			if r := ruleFor(rules, "/"); r != nil {
				groups = matching(r.allow, client)
			}
			out = append(out, exportEntry{dir: x.Path, groups: groups})
			continue
		}
		var subs []exportEntry
		for _, r := range rules {
			if r.path == "/" || !contains(r.allow, client) || !s.admitsPath(exp, client, r.path) {
				continue
			}
			subs = append(subs, exportEntry{dir: x.Path + r.path, groups: matching(r.allow, client)})
		}
		sort.Slice(subs, func(i, j int) bool { return subs[i].dir < subs[j].dir })
		out = append(out, subs...)
	}
	return out
}

// ruleFor is the rule that decides for p: the deepest one covering it.
func ruleFor(rules []subtreeRule, p string) *subtreeRule {
	for i := range rules {
		if p == rules[i].path || within(p, rules[i].path) {
			return &rules[i]
		}
	}
	return nil
}
