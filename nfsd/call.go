package nfsd

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"
)

// Calls go-nfs answers. go-nfs works behind a pipe: it learns neither who
// calls nor why a filesystem failed (it answers most failures with ACCES or
// IO). So the front forwards each call whose arguments carry file handles with
// call handles: the client's handle, marked, followed by a token that names the
// call's callState. go-nfs's FromHandle gives it a callFS, the export's
// filesystem as this caller sees it: listings leave out what the client is not
// admitted to, and every error the filesystem returns is kept. When go-nfs's
// reply leaves, the front replaces its guess (ACCES, IO, SERVERFAULT, NOTDIR)
// by the status the error means (nfsStatusOf), in one place.
//
// Only the front writes to the pipes, and it refuses every client handle that
// is not exactly a 20-byte handle, so no client can send a call handle.
const (
	callMark      = 0x63 // 'c', in byte 1 of a call handle (zero in client handles)
	callHandleLen = handleLen + 8
	// callStateTTL bounds how long the state of a call that never came back
	// from go-nfs (its connection closed) is kept.
	callStateTTL = 10 * time.Minute
)

// callState is what the front and the filesystems learn of one call.
type callState struct {
	token  uint64
	client netip.Addr
	id     identity
	born   time.Time
	// access, when set, is what the caller may do: ACCESS's reply is cut to it.
	access    uint32
	hasAccess bool
	// createMode is the mode a CREATE asks for, or nil: the file is made with
	// it, so go-nfs's SETATTR after the create finds nothing to change (one
	// metadata sync per CREATE, not two).
	createMode *uint32

	mu  sync.Mutex
	err error // the last error a filesystem returned, see note
}

// note keeps err as the call's failure. A "does not exist" never replaces
// another error: go-nfs probes with Stat before it creates.
func (c *callState) note(err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	if c.err == nil || !errors.Is(err, os.ErrNotExist) {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *callState) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// callTable holds the states of the calls in go-nfs.
type callTable struct {
	mu    sync.Mutex
	seq   uint64
	m     map[uint64]*callState
	swept time.Time
}

func (t *callTable) add(client netip.Addr) *callState {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[uint64]*callState{}
	}
	if now.Sub(t.swept) > callStateTTL {
		for k, c := range t.m {
			if now.Sub(c.born) > callStateTTL {
				delete(t.m, k)
			}
		}
		t.swept = now
	}
	t.seq++
	c := &callState{token: t.seq, client: client, born: now}
	t.m[c.token] = c
	return c
}

func (t *callTable) get(token uint64) *callState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[token]
}

func (t *callTable) remove(c *callState) {
	t.mu.Lock()
	delete(t.m, c.token)
	t.mu.Unlock()
}

func callHandle(fh []byte, token uint64) []byte {
	h := make([]byte, callHandleLen)
	copy(h, fh)
	h[1] = callMark
	binary.BigEndian.PutUint64(h[handleLen:], token)
	return h
}

// splitCallHandle undoes callHandle; ok is false for any other handle.
func splitCallHandle(h []byte) (fh []byte, token uint64, ok bool) {
	if len(h) != callHandleLen || h[1] != callMark {
		return nil, 0, false
	}
	fh = append([]byte(nil), h[:handleLen]...)
	fh[1] = 0
	return fh, binary.BigEndian.Uint64(h[handleLen:]), true
}

// prepareForward rewrites a checked call (framed, with its 4-byte gap) for
// go-nfs: its handles become call handles of a new callState. READ and WRITE
// are left as they are (their failures are go-nfs's own, mapped well), as are
// LOOKUP and calls without handles.
func (s *Server) prepareForward(client netip.Addr, argsOff int, proc uint32, a *nfsArgs, framed []byte) ([]byte, *callState) {
	// LOOKUP is left alone too: go-nfs echoes the handle it was given for ".".
	if proc == procRead || proc == procWrite || proc == procLookup || len(a.handleOffs) == 0 {
		return framed, nil
	}
	st := s.calls.add(client)
	st.id, st.access, st.hasAccess = a.id, a.accessMask, a.hasAccessMask
	if proc == procCreate && a.sattr.mode != nil {
		m := *a.sattr.mode
		st.createMode = &m
	}
	args := framed[4+argsOff:]
	out := make([]byte, 0, len(framed)+8*len(a.handleOffs))
	out = append(out, framed[:4+argsOff]...)
	pos := 0
	for i, off := range a.handleOffs {
		out = append(out, args[pos:off]...)
		out = binary.BigEndian.AppendUint32(out, callHandleLen)
		out = append(out, callHandle(a.handles[i], st.token)...)
		pos = off + 4 + handleLen // checkNFS admits 20-byte handles only: no padding
	}
	return append(out, args[pos:]...), st
}

// finishCall forgets a call's state and corrects the status of go-nfs's reply
// (body: the reply's results, starting with the status) in place.
func (s *Server) finishCall(st *callState, body []byte) {
	if st == nil {
		return
	}
	s.calls.remove(st)
	if len(body) < 4 {
		return
	}
	status := nfs.NFSStatus(binary.BigEndian.Uint32(body))
	if status == nfs.NFSStatusOk && st.hasAccess && len(body) >= 8 {
		m := body[len(body)-4:] // ACCESS3resok ends with the access bits
		binary.BigEndian.PutUint32(m, binary.BigEndian.Uint32(m)&st.access)
		return
	}
	switch status {
	case nfs.NFSStatusAccess, nfs.NFSStatusIO, nfs.NFSStatusServerFault, nfs.NFSStatusNotDir:
	default:
		return
	}
	if err := st.failure(); err != nil {
		if mapped, ok := nfsStatusOf(err); ok {
			binary.BigEndian.PutUint32(body, uint32(mapped))
		}
	}
}

// nfsStatusOf is the NFS status an error from a filesystem means. Every
// answer the server makes from an error comes from here.
func nfsStatusOf(err error) (nfs.NFSStatus, bool) {
	var se *nfs.NFSStatusError
	switch {
	case err == nil:
		return nfs.NFSStatusOk, false
	case errors.As(err, &se):
		return se.NFSStatus, true
	case errors.Is(err, syscall.ENOSPC):
		return nfs.NFSStatusNoSPC, true
	case errors.Is(err, syscall.EDQUOT):
		return nfs.NFSStatusDQuot, true
	case errors.Is(err, syscall.EROFS):
		return nfs.NFSStatusROFS, true
	case errors.Is(err, syscall.EXDEV):
		return nfs.NFSStatusXDev, true
	case errors.Is(err, syscall.EFBIG):
		return nfs.NFSStatusFBig, true
	case errors.Is(err, syscall.ENOTEMPTY):
		return nfs.NFSStatusNotEmpty, true
	case errors.Is(err, syscall.ENAMETOOLONG):
		return nfs.NFSStatusNameTooLong, true
	case errors.Is(err, syscall.ENOTDIR):
		return nfs.NFSStatusNotDir, true
	case errors.Is(err, syscall.EISDIR):
		return nfs.NFSStatusIsDir, true
	case errors.Is(err, syscall.ESTALE):
		return nfs.NFSStatusStale, true
	case errors.Is(err, billy.ErrNotSupported), errors.Is(err, errors.ErrUnsupported),
		errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.ENOSYS):
		return nfs.NFSStatusNotSupp, true
	case errors.Is(err, os.ErrExist):
		return nfs.NFSStatusExist, true
	case errors.Is(err, os.ErrNotExist):
		return nfs.NFSStatusNoEnt, true
	case errors.Is(err, os.ErrPermission):
		return nfs.NFSStatusAccess, true
	case errors.Is(err, syscall.EINVAL), errors.Is(err, os.ErrInvalid):
		return nfs.NFSStatusInval, true
	}
	return nfs.NFSStatusIO, true
}

// callFS is an export's filesystem as one call's caller sees it.
type callFS struct {
	*exportFS
	s  *Server
	st *callState
}

// file wraps f, opened as name ("" when the caller did not name it: a
// temporary file).
func (c *callFS) file(name string, f billy.File, err error) (billy.File, error) {
	c.st.note(err)
	if err != nil {
		return f, err
	}
	return &noteFile{File: f, st: c.st, name: name}, nil
}

// Create makes a new file its caller's. A regular file already there (a
// CREATE UNCHECKED of an existing name: libnfs sends one for every open with
// O_CREAT) keeps its bytes: RFC 1813 applies only the call's attributes to
// it, which go-nfs does after Create (a size of 0 among them truncates). It
// is opened read-only, so an overlay does not count it as changed.
func (c *callFS) Create(name string) (billy.File, error) {
	fi, statErr := c.exportFS.Lstat(name)
	if statErr == nil && fi.Mode().IsRegular() {
		if f, err := c.exportFS.Open(name); err == nil {
			return c.file(name, f, nil)
		}
		f, err := c.exportFS.OpenFile(name, os.O_RDWR, 0)
		return c.file(name, f, err)
	}
	var f billy.File
	var err error
	if m := c.st.createMode; m != nil {
		f, err = c.exportFS.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, os.FileMode(*m)&os.ModePerm)
	} else {
		f, err = c.exportFS.Create(name)
	}
	f, err = c.file(name, f, err)
	if err == nil && errors.Is(statErr, os.ErrNotExist) {
		if err := c.own(name); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, err
}

// own gives a new file to the caller (root's files are root's already).
func (c *callFS) own(name string) error {
	if c.st.id.root() {
		return nil
	}
	err := newAttrChanger(c.exportFS).Lchown(name, int(c.st.id.uid), int(c.st.id.gid))
	c.st.note(err)
	return err
}

func (c *callFS) Open(name string) (billy.File, error) {
	f, err := c.exportFS.Open(name)
	return c.file(name, f, err)
}

func (c *callFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	f, err := c.exportFS.OpenFile(name, flag, perm)
	return c.file(name, f, err)
}

func (c *callFS) Stat(name string) (os.FileInfo, error) {
	fi, err := c.exportFS.Stat(name)
	c.st.note(err)
	return fi, err
}

func (c *callFS) Lstat(name string) (os.FileInfo, error) {
	fi, err := c.exportFS.Lstat(name)
	c.st.note(err)
	return fi, err
}

func (c *callFS) Rename(from, to string) error {
	err := c.exportFS.Rename(from, to)
	c.st.note(err)
	return err
}

func (c *callFS) Remove(name string) error {
	err := c.exportFS.Remove(name)
	c.st.note(err)
	return err
}

func (c *callFS) TempFile(dir, prefix string) (billy.File, error) {
	f, err := c.exportFS.TempFile(dir, prefix)
	return c.file("", f, err)
}

// MkdirAll makes a new directory its caller's (go-nfs makes one at a time).
func (c *callFS) MkdirAll(name string, perm os.FileMode) error {
	_, statErr := c.exportFS.Lstat(name)
	err := c.exportFS.MkdirAll(name, perm)
	c.st.note(err)
	if err == nil && errors.Is(statErr, os.ErrNotExist) {
		err = c.own(name)
	}
	return err
}

func (c *callFS) Symlink(target, link string) error {
	err := c.exportFS.Symlink(target, link)
	c.st.note(err)
	return err
}

func (c *callFS) Readlink(name string) (string, error) {
	t, err := c.exportFS.Readlink(name)
	c.st.note(err)
	return t, err
}

// ReadDir leaves out the entries the caller is not admitted to.
func (c *callFS) ReadDir(name string) ([]os.FileInfo, error) {
	list, err := c.exportFS.ReadDir(name)
	c.st.note(err)
	if err != nil || !c.s.pathRules(c.exportFS.exp) {
		return list, err
	}
	parts, err := splitPath(name)
	if err != nil {
		return nil, &os.PathError{Op: "readdir", Path: name, Err: os.ErrPermission}
	}
	out := list[:0]
	for _, fi := range list {
		if c.s.admitsPath(c.exportFS.exp, c.st.client, slashPath(append(parts[:len(parts):len(parts)], fi.Name()))) {
			out = append(out, fi)
		}
	}
	return out, nil
}

// noteFile keeps the errors of a file's writes and close, and answers
// Name with the export's path of the file: go-nfs's CREATE looks it up
// (Lstat) for the reply's attributes, where the name a session overlay
// gives is its own, without the session's folder (the lookup failed,
// logged a warning per CREATE, and the reply went without attributes).
type noteFile struct {
	billy.File
	st   *callState
	name string
}

func (f *noteFile) Name() string {
	if f.name == "" {
		return f.File.Name()
	}
	return f.name
}

func (f *noteFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	f.st.note(err)
	return n, err
}

func (f *noteFile) Truncate(size int64) error {
	err := f.File.Truncate(size)
	f.st.note(err)
	return err
}

func (f *noteFile) Close() error {
	err := f.File.Close()
	f.st.note(err)
	return err
}

// noteChanger keeps the errors of SETATTR's changes.
type noteChanger struct {
	billy.Change
	st *callState
}

func (c *noteChanger) Chmod(name string, mode os.FileMode) error {
	err := c.Change.Chmod(name, mode)
	c.st.note(err)
	return err
}

func (c *noteChanger) Lchown(name string, uid, gid int) error {
	err := c.Change.Lchown(name, uid, gid)
	c.st.note(err)
	return err
}

func (c *noteChanger) Chown(name string, uid, gid int) error {
	err := c.Change.Chown(name, uid, gid)
	c.st.note(err)
	return err
}

func (c *noteChanger) Chtimes(name string, atime, mtime time.Time) error {
	err := c.Change.Chtimes(name, atime, mtime)
	c.st.note(err)
	return err
}
