package nfsd

import (
	"errors"
	"net/netip"
	"os"
	"sort"

	"github.com/rekindle/rekindle/nfsd/rpc"
)

// MOUNT procedures (RFC 1813 appendix I); versions 1 and 2 share them.
const (
	mountNull    = 0
	mountMnt     = 1
	mountDump    = 2
	mountUmnt    = 3
	mountUmntAll = 4
	mountExport  = 5
)

// MOUNT statuses (mountstat3; versions 1 and 2 use the same errno values).
const (
	mnt3OK          = 0
	mnt3ErrNoEnt    = 2
	mnt3ErrIO       = 5
	mnt3ErrAcces    = 13
	mnt3ErrNotDir   = 20
	mnt3ErrInval    = 22
	mnt3ErrTooLong  = 63
	mnt3ErrNotSupp  = 10004
	mnt3ServerFault = 10006
)

const (
	maxMountPath = 1024 // MNTPATHLEN
	maxMounts    = 4096 // entries remembered for DUMP
	fhSizeV1     = 32   // MOUNT v1/v2 handles are fixed at 32 bytes
)

var mountProcNames = [...]string{"mount.null", "mount.mnt", "mount.dump", "mount.umnt", "mount.umntall", "mount.export"}

func mountProcName(proc uint32) string {
	if int(proc) < len(mountProcNames) {
		return mountProcNames[proc]
	}
	return "mount.other"
}

type mountEntry struct {
	host string
	dir  string
}

// handleMount answers a MOUNT call. It returns the reply and the reason to count
// if the call was refused.
func (s *Server) handleMount(client netip.Addr, call rpc.Call) ([]byte, string) {
	if call.Vers < 1 || call.Vers > 3 {
		return rpc.ProgMismatchReply(call.XID, 1, 3), ""
	}
	admitted := s.admitsClient(client)
	d := rpc.NewDecoder(call.Args)
	switch call.Proc {
	case mountNull:
		return rpc.AcceptedReply(call.XID, rpc.Success).Bytes(), ""

	case mountMnt:
		dir := d.String(maxMountPath + 1)
		if d.Err() != nil {
			if errors.Is(d.Err(), rpc.ErrTooLong) {
				return mntStatusReply(call, mnt3ErrTooLong), refusedName
			}
			return rpc.AcceptedReply(call.XID, rpc.GarbageArgs).Bytes(), refusedGarbage
		}
		if len(dir) > maxMountPath {
			return mntStatusReply(call, mnt3ErrTooLong), refusedName
		}
		if !admitted {
			s.log.Info("nfsd: mount refused", "client", client, "dir", dir, "reason", "client not allowed")
			return mntStatusReply(call, mnt3ErrAcces), refusedClient
		}
		return s.mnt(client, call, dir)

	case mountDump:
		// A client sees its own mounts only: the others' addresses and
		// sessions are not its business.
		e := rpc.AcceptedReply(call.XID, rpc.Success)
		if admitted {
			host := client.String()
			s.mountsMu.Lock()
			var list []string
			for m := range s.mounts {
				if m.host == host {
					list = append(list, m.dir)
				}
			}
			s.mountsMu.Unlock()
			sort.Strings(list)
			for _, dir := range list {
				e.Bool(true)
				e.String(host)
				e.String(dir)
			}
		}
		e.Bool(false)
		return e.Bytes(), ""

	case mountUmnt:
		dir := d.String(maxMountPath)
		if d.Err() != nil {
			return rpc.AcceptedReply(call.XID, rpc.GarbageArgs).Bytes(), refusedGarbage
		}
		s.mountsMu.Lock()
		delete(s.mounts, mountEntry{host: client.String(), dir: dir})
		s.mountsMu.Unlock()
		return rpc.AcceptedReply(call.XID, rpc.Success).Bytes(), ""

	case mountUmntAll:
		host := client.String()
		s.mountsMu.Lock()
		for m := range s.mounts {
			if m.host == host {
				delete(s.mounts, m)
			}
		}
		s.mountsMu.Unlock()
		return rpc.AcceptedReply(call.XID, rpc.Success).Bytes(), ""

	case mountExport:
		e := rpc.AcceptedReply(call.XID, rpc.Success)
		if admitted {
			for _, x := range s.exportsFor(client) {
				e.Bool(true)
				e.String(x.dir)
				for _, g := range x.groups {
					e.Bool(true)
					e.String(g.String())
				}
				e.Bool(false)
			}
		}
		e.Bool(false)
		return e.Bytes(), ""
	}
	return rpc.AcceptedReply(call.XID, rpc.ProcUnavail).Bytes(), ""
}

func (s *Server) mnt(client netip.Addr, call rpc.Call, dir string) ([]byte, string) {
	exp, parts, err := s.exportForMount(dir)
	if err != nil {
		if errors.Is(err, errBadPath) {
			return mntStatusReply(call, mnt3ErrInval), refusedName
		}
		return mntStatusReply(call, mnt3ErrNoEnt), refusedExport
	}
	if !s.admitsExport(exp, client) {
		s.log.Info("nfsd: mount refused", "client", client, "dir", dir, "reason", "export allow-list")
		return mntStatusReply(call, mnt3ErrAcces), refusedExport
	}
	if s.pathRules(exp) {
		// The deepest subtree rule over the directory decides, so a client
		// may mount its own session without being admitted to the folder
		// that holds the others. Config.Authorize is asked about every
		// directory on the way down, as LOOKUPs would ask it.
		if !s.admitsRule(exp, client, slashPath(parts)) {
			s.log.Info("nfsd: mount refused", "client", client, "dir", dir, "reason", "path rule")
			return mntStatusReply(call, mnt3ErrAcces), refusedPath
		}
		for i := 0; i <= len(parts); i++ {
			if s.cfg.Authorize != nil && !s.cfg.Authorize(client, exp.Path, slashPath(parts[:i])) {
				s.log.Info("nfsd: mount refused", "client", client, "dir", dir, "reason", "path rule")
				return mntStatusReply(call, mnt3ErrAcces), refusedPath
			}
		}
	}
	fi, err := exp.fs.Stat(exp.fs.Join(append([]string{"/"}, parts...)...))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return mntStatusReply(call, mnt3ErrNoEnt), ""
	case err != nil:
		return mntStatusReply(call, mnt3ErrIO), ""
	case !fi.IsDir():
		return mntStatusReply(call, mnt3ErrNotDir), ""
	}
	id, err := exp.fileID(parts)
	if err != nil {
		s.log.Error("nfsd: mount: no file id", "export", exp.Path, "dir", dir, "err", err)
		return mntStatusReply(call, mnt3ServerFault), ""
	}
	if err := s.syncHandles(); err != nil {
		s.log.Error("nfsd: mount: handle table", "err", err)
		return mntStatusReply(call, mnt3ServerFault), ""
	}
	fh := encodeHandle(exp.ID, id)
	s.mountsMu.Lock()
	if len(s.mounts) < maxMounts {
		s.mounts[mountEntry{host: client.String(), dir: dir}] = struct{}{}
	}
	s.mountsMu.Unlock()
	s.log.Debug("nfsd: mounted", "client", client, "dir", dir, "export", exp.Path)

	e := rpc.AcceptedReply(call.XID, rpc.Success)
	e.Uint32(mnt3OK)
	if call.Vers < 3 {
		// fhstatus: a fixed 32-byte handle, good only for NFSv2, which is not served.
		v1 := make([]byte, fhSizeV1)
		copy(v1, fh)
		e.Fixed(v1)
		return e.Bytes(), ""
	}
	e.Opaque(fh)
	e.Uint32(2) // auth flavors
	e.Uint32(rpc.AuthUnix)
	e.Uint32(rpc.AuthNone)
	return e.Bytes(), ""
}

func mntStatusReply(call rpc.Call, status uint32) []byte {
	e := rpc.AcceptedReply(call.XID, rpc.Success)
	e.Uint32(status)
	return e.Bytes()
}
