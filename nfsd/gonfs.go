package nfsd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"
	"golang.org/x/sys/unix"
)

// goHandler is the nfs.Handler go-nfs calls: it maps file handles to exports and
// paths with the stable scheme of handle.go.
type goHandler struct{ s *Server }

// Mount is never reached: the front answers MOUNT itself, knowing the client's
// address, which go-nfs (behind a pipe) does not.
func (h *goHandler) Mount(context.Context, net.Conn, nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	return nfs.MountStatusErrAcces, nil, nil
}

func (h *goHandler) Change(fs billy.Filesystem) billy.Change {
	efs, ok := exportFSOf(fs)
	if !ok || efs.readOnly {
		return nil
	}
	if c, ok := fs.(*callFS); ok {
		return &noteChanger{Change: newAttrChanger(efs), st: c.st}
	}
	return newAttrChanger(efs)
}

func (h *goHandler) FSStat(_ context.Context, fs billy.Filesystem, st *nfs.FSStat) error {
	efs, ok := exportFSOf(fs)
	if !ok {
		return nil
	}
	if sr, ok := efs.Filesystem.(SpaceReporter); ok {
		total, free, avail, err := sr.Space()
		if err != nil {
			return err
		}
		st.TotalSize, st.FreeSize, st.AvailableSize = total, free, avail
	} else if root := efs.Filesystem.Root(); filepath.IsAbs(root) && root != "/" {
		var sf unix.Statfs_t
		if err := unix.Statfs(root, &sf); err == nil {
			bs := uint64(sf.Bsize)
			st.TotalSize, st.FreeSize, st.AvailableSize = sf.Blocks*bs, sf.Bfree*bs, sf.Bavail*bs
			st.TotalFiles, st.FreeFiles, st.AvailableFiles = sf.Files, sf.Ffree, sf.Ffree
		}
	}
	if efs.readOnly {
		st.AvailableSize, st.AvailableFiles = 0, 0
	}
	return nil
}

func (h *goHandler) ToHandle(fs billy.Filesystem, path []string) []byte {
	efs, ok := exportFSOf(fs)
	if !ok {
		h.s.log.Error("nfsd: handle asked for a foreign filesystem")
		return nil
	}
	id, err := efs.exp.fileID(path)
	if err != nil {
		h.s.log.Error("nfsd: no file id", "export", efs.exp.Path, "path", slashPath(path), "err", err)
		return nil
	}
	return encodeHandle(efs.exp.ID, id)
}

func (h *goHandler) FromHandle(fh []byte) (billy.Filesystem, []string, error) {
	if inner, token, ok := splitCallHandle(fh); ok {
		efs, parts, err := h.s.fileOf(inner)
		if err != nil {
			return nil, nil, err
		}
		if st := h.s.calls.get(token); st != nil {
			return &callFS{exportFS: efs, s: h.s, st: st}, parts, nil
		}
		return efs, parts, nil
	}
	efs, parts, err := h.s.fileOf(fh)
	if err != nil {
		return nil, nil, err
	}
	return efs, parts, nil
}

// filePathOf is fileOf for the fast path, which needs the file's path, not
// its components: the path a FileIDer keeps is clean already (the usual
// case: rekindle's views keep "/vm/point/disk-flat.vmdk"), and then it is
// used as it is, without splitting and joining it again on every READ.
func (s *Server) filePathOf(fh []byte) (*exportFS, string, error) {
	eid, fid, err := decodeHandle(fh)
	if err == nil {
		if exp := s.exportByID(eid); exp != nil && exp.ider != nil {
			if p, err := exp.ider.PathOf(fid); err == nil && (isCleanRel(p) || len(p) > 1 && p[0] == '/' && isCleanRel(p[1:])) {
				return exp.fs, p, nil
			}
		}
	}
	efs, parts, err := s.fileOf(fh)
	if err != nil {
		return nil, "", err
	}
	return efs, efs.Join(parts...), nil
}

// fileOf resolves a file handle to its export's filesystem and the file's path
// components there, for go-nfs and the fast path alike.
func (s *Server) fileOf(fh []byte) (*exportFS, []string, error) {
	eid, fid, err := decodeHandle(fh)
	if err != nil {
		return nil, nil, &nfs.NFSStatusError{NFSStatus: nfs.NFSStatusBadHandle, WrappedErr: err}
	}
	exp := s.exportByID(eid)
	if exp == nil {
		return nil, nil, &nfs.NFSStatusError{NFSStatus: nfs.NFSStatusStale, WrappedErr: errStale}
	}
	parts, err := exp.pathOf(fid, true)
	if err != nil {
		return nil, nil, &nfs.NFSStatusError{NFSStatus: nfs.NFSStatusStale, WrappedErr: err}
	}
	return exp.fs, parts, nil
}

// InvalidateHandle is called after REMOVE, RMDIR and RENAME of the handle's file.
// A handle table forgets the path; a FileIDer keeps its ids (a renamed file keeps
// its id there, which is the point of FileIDer).
func (h *goHandler) InvalidateHandle(fs billy.Filesystem, fh []byte) error {
	eid, fid, err := decodeHandle(fh)
	if err != nil {
		return nil
	}
	if exp := h.s.exportByID(eid); exp != nil && exp.table != nil {
		exp.table.forget(fid)
	}
	return nil
}

// HandleLimit is large: handles are computed, not cached. go-nfs caps a READDIR
// at half of it.
func (h *goHandler) HandleLimit() int { return 1 << 30 }

// pipeListener hands the go-nfs server one end of each in-memory pipe.
type pipeListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial makes a pipe and returns the front's end once go-nfs has the other.
func (l *pipeListener) dial() (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.ch <- b:
		return a, nil
	case <-l.done:
		a.Close()
		b.Close()
		return nil, errors.New("nfsd: server closed")
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "go-nfs" }

// goNFSLogger routes go-nfs's package-level logger to the most recent
// non-nil Config.Logger. go-nfs calls many client mistakes errors, so its errors
// are logged as warnings and its warnings as debug; go-nfs never asks to panic or
// exit, and this logger would only log if it did.
type goNFSLogger struct{ l atomic.Pointer[slog.Logger] }

var goNFSLog = &goNFSLogger{}
var goNFSLogOnce sync.Once

func routeGoNFSLog(l *slog.Logger) {
	goNFSLogOnce.Do(func() {
		goNFSLog.l.Store(slog.New(slog.DiscardHandler))
		nfs.SetLogger(goNFSLog)
	})
	if l != nil {
		goNFSLog.l.Store(l.With("component", "go-nfs"))
	}
}

func (g *goNFSLogger) log(level slog.Level, msg string) {
	l := g.l.Load()
	if l == nil || !l.Enabled(context.Background(), level) {
		return
	}
	l.Log(context.Background(), level, msg)
}

func (g *goNFSLogger) SetLevel(nfs.LogLevel)                   {}
func (g *goNFSLogger) GetLevel() nfs.LogLevel                  { return nfs.DebugLevel }
func (g *goNFSLogger) ParseLevel(string) (nfs.LogLevel, error) { return nfs.InfoLevel, nil }
func (g *goNFSLogger) Panic(a ...interface{})                  { g.log(slog.LevelError, fmt.Sprint(a...)) }
func (g *goNFSLogger) Fatal(a ...interface{})                  { g.log(slog.LevelError, fmt.Sprint(a...)) }
func (g *goNFSLogger) Error(a ...interface{})                  { g.log(slog.LevelWarn, fmt.Sprint(a...)) }
func (g *goNFSLogger) Warn(a ...interface{})                   { g.log(slog.LevelDebug, fmt.Sprint(a...)) }
func (g *goNFSLogger) Info(a ...interface{})                   { g.log(slog.LevelDebug, fmt.Sprint(a...)) }
func (g *goNFSLogger) Debug(a ...interface{})                  { g.log(slog.LevelDebug-4, fmt.Sprint(a...)) }
func (g *goNFSLogger) Trace(a ...interface{})                  {}
func (g *goNFSLogger) Print(a ...interface{})                  { g.log(slog.LevelDebug, fmt.Sprint(a...)) }
func (g *goNFSLogger) Panicf(f string, a ...interface{}) {
	g.log(slog.LevelError, fmt.Sprintf(f, a...))
}
func (g *goNFSLogger) Fatalf(f string, a ...interface{}) {
	g.log(slog.LevelError, fmt.Sprintf(f, a...))
}
func (g *goNFSLogger) Errorf(f string, a ...interface{}) { g.log(slog.LevelWarn, fmt.Sprintf(f, a...)) }
func (g *goNFSLogger) Warnf(f string, a ...interface{})  { g.log(slog.LevelDebug, fmt.Sprintf(f, a...)) }
func (g *goNFSLogger) Infof(f string, a ...interface{})  { g.log(slog.LevelDebug, fmt.Sprintf(f, a...)) }
func (g *goNFSLogger) Debugf(f string, a ...interface{}) {
	g.log(slog.LevelDebug-4, fmt.Sprintf(f, a...))
}
func (g *goNFSLogger) Tracef(string, ...interface{}) {}
func (g *goNFSLogger) Printf(f string, a ...interface{}) {
	g.log(slog.LevelDebug, fmt.Sprintf(f, a...))
}
