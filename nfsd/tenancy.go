package nfsd

import (
	"net/netip"
	"sort"

	billy "github.com/go-git/go-billy/v5"
)

// Tenancy: what one client may learn of the others. A client sees in a
// directory listing only the entries it is admitted to (callFS.ReadDir, see
// call.go), in EXPORT only the exports and subtrees it may mount, and in DUMP
// only its own mounts.

// exportFSOf finds the exportFS behind what FromHandle gave go-nfs.
func exportFSOf(fs billy.Filesystem) (*exportFS, bool) {
	switch f := fs.(type) {
	case *exportFS:
		return f, true
	case *callFS:
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
