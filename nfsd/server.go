package nfsd

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	billy "github.com/go-git/go-billy/v5"
	"github.com/prometheus/client_golang/prometheus"
	nfs "github.com/willscott/go-nfs"

	"github.com/rekindle/rekindle/internal/accept"
	"github.com/rekindle/rekindle/internal/durable"
	"github.com/rekindle/rekindle/nfsd/portmap"
	"github.com/rekindle/rekindle/nfsd/rpc"
)

// Defaults and limits.
const (
	// DefaultListen is the NFS port's address when Config.Listen is empty.
	DefaultListen = ":2049"
	// DefaultPortmapAddr is the conventional portmapper address; Config.PortmapAddr
	// is empty (portmapper off) unless the caller sets it.
	DefaultPortmapAddr = ":111"
	// DefaultPipesPerConn is how many go-nfs connections serve one client
	// connection when Config.PipesPerConn is zero.
	DefaultPipesPerConn = 8
	// MaxIO is the largest READ or WRITE the server announces (FSINFO rtmax and
	// wtmax) and serves; READ counts above it are cut to it.
	MaxIO = 1 << 20
	// maxCallRecord bounds one call record: a MaxIO WRITE and its header.
	maxCallRecord = MaxIO + 64<<10
	// writeTimeout is how long a reply may take to leave.
	writeTimeout = 2 * time.Minute
)

// DefaultAllow admits loopback clients only.
var DefaultAllow = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// Config configures a Server.
type Config struct {
	// Listen is the TCP address for NFS and MOUNT (both on one port); empty means
	// DefaultListen, port 0 picks a free port (see Server.Addr).
	Listen string
	// PortmapAddr is where the portmapper listens on TCP and UDP; empty turns it
	// off. DefaultPortmapAddr is the conventional value.
	PortmapAddr string
	// StateDir holds the handle tables of exports whose filesystems do not
	// implement FileIDer. Required for such exports.
	StateDir string
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Registry receives the server's metrics; nil keeps them unregistered.
	Registry prometheus.Registerer
	// StateFS is the filesystem StateDir is on; nil means the real one. Tests
	// put a powercut.FS here.
	StateFS durable.FS
	// Unsafe trades durability for speed: writes are not synced before the reply,
	// so acknowledged writes may be lost on a crash.
	Unsafe bool
	// PipesPerConn is how many calls of one client connection go-nfs may work on
	// at once, and how many READs and WRITEs of it the fast path may; zero means
	// DefaultPipesPerConn.
	PipesPerConn int
	// NoFastPath sends READ and WRITE to go-nfs like every other NFS call. By
	// default the front answers them itself (the fast path): the same replies
	// with fewer copies of the data. For comparisons, and as a way back should
	// the fast path misbehave.
	NoFastPath bool
	// Allow lists the client networks the server admits at all; nil means
	// DefaultAllow (loopback only). SetAllow changes it while serving.
	Allow []netip.Prefix
	// Authorize, when set, is asked before any use of a path inside an export:
	// on MNT, on every file handle an NFS call carries, and for every name it looks
	// up or changes. pathInExport is "/" for the export's root and "/dir/file"
	// below it. A false answer refuses the call with NFS3ERR_ACCES (MNT3ERR_ACCES on
	// MNT). It runs on the hot path: keep it quick.
	Authorize func(client netip.Addr, export, pathInExport string) bool
	// Squash maps untrusted identities to nobody on every export: SquashRoot
	// for uid 0, SquashAll for everyone (see identity.go). SetSubtreeSquash
	// adds stricter rules per subtree.
	Squash Squash
	// Limits bound connections, timeouts and the memory of call records; zero
	// fields take their defaults (see Limits).
	Limits Limits
}

// Export publishes a filesystem.
type Export struct {
	// Path is the export's name as clients mount it, like "/rekindle": absolute and
	// clean. Exports may not nest.
	Path string
	// FS is what the export serves. If it implements FileIDer its file ids make the
	// file handles; otherwise the server keeps a handle table under StateDir.
	FS billy.Filesystem
	// ReadOnly refuses every change with NFS3ERR_ROFS.
	ReadOnly bool
	// Allow lists the client networks that may use this export, within the
	// server's allow-list; nil admits every client the server admits.
	Allow []netip.Prefix
	// ID is the export's stable id, carried in every file handle. Keep it across
	// restarts and never give it to another export.
	ID uint32
}

// FileIDer is implemented by filesystems that give their files stable ids. Paths
// are slash paths inside the filesystem: "/" for the root, "/dir/file" below it.
// FileID may assign an id to a file that has none yet, and must keep it durable
// before returning; PathOf must fail for an id whose file is gone (the server then
// answers NFS3ERR_STALE). It may return the path with or without a leading slash.
type FileIDer interface {
	FileID(path string) (uint64, error)
	PathOf(id uint64) (string, error)
}

// SpaceReporter may be implemented by an export's filesystem to report its
// capacity in FSSTAT replies, in bytes.
type SpaceReporter interface {
	Space() (total, free, avail uint64, err error)
}

// Server is the NFS service.
type Server struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	pipes int

	ln       net.Listener
	gate     *accept.Gate
	limits   Limits
	budget   *recordBudget
	recPools recordPools
	pm       *portmap.Server
	pmTable  *portmap.Table
	inmem    *pipeListener
	nfs      *nfs.Server
	commits  commitGroups // shared syncs of stable WRITEs and COMMITs

	mu      sync.RWMutex
	allow   []netip.Prefix
	exports map[string]*export
	byID    map[uint32]*export
	tables  map[uint32]*handleTable

	mountsMu sync.Mutex
	mounts   map[mountEntry]struct{}

	calls callTable  // calls in go-nfs (call.go)
	drc   replyCache // replies of calls that must not run twice (drc.go)

	connsMu sync.Mutex
	conns   map[*clientConn]struct{}
	connWG  sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
	served    bool
}

type export struct {
	Export
	fs       *exportFS
	ider     FileIDer
	table    *handleTable
	subtrees []subtreeRule // longest first
	squashes []squashRule  // longest first
	log      *slog.Logger
	noSync   atomic.Bool // warned that files cannot be synced
}

type subtreeRule struct {
	path  string // "/sess"
	allow []netip.Prefix
	// only: allow admits to path itself; below it only deeper rules admit
	only bool
}

// New binds the NFS port and, if configured, the portmapper. Serve starts
// answering.
func New(cfg Config) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	routeGoNFSLog(cfg.Logger)
	limits, err := cfg.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		m:       m,
		pipes:   cfg.PipesPerConn,
		limits:  limits,
		budget:  newRecordBudget(limits.RecordMemory),
		allow:   append([]netip.Prefix(nil), cfg.Allow...),
		exports: map[string]*export{},
		byID:    map[uint32]*export{},
		tables:  map[uint32]*handleTable{},
		mounts:  map[mountEntry]struct{}{},
		conns:   map[*clientConn]struct{}{},
	}
	if cfg.Allow == nil {
		s.allow = append([]netip.Prefix(nil), DefaultAllow...)
	}
	if s.pipes <= 0 {
		s.pipes = DefaultPipesPerConn
	}
	if s.pipes > 64 {
		s.pipes = 64
	}
	listen := cfg.Listen
	if listen == "" {
		listen = DefaultListen
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("nfsd: listen %s: %w", listen, err)
	}
	al := accept.New(ln, "nfs", log)
	al.OnError = func(error) { m.acceptErrors.WithLabelValues("nfs").Inc() }
	s.ln = al
	s.gate = accept.NewGate("nfs", log)
	s.gate.Max, s.gate.PerClient = limits.MaxConns, limits.MaxConnsPerClient
	s.gate.Admit = s.admitsClient
	s.gate.OnRefuse = func(reason string) { m.refused.WithLabelValues(reason).Inc() }
	nfsPort := uint16(s.ln.Addr().(*net.TCPAddr).Port)
	host := rpc.HostOf(s.ln.Addr())
	if cfg.PortmapAddr != "" {
		mappings := []portmap.Mapping{
			{Prog: progNFS, Vers: 3, Prot: portmap.ProtoTCP, Host: host, Port: nfsPort},
			{Prog: progMount, Vers: 3, Prot: portmap.ProtoTCP, Host: host, Port: nfsPort},
			{Prog: progMount, Vers: 2, Prot: portmap.ProtoTCP, Host: host, Port: nfsPort},
			{Prog: progMount, Vers: 1, Prot: portmap.ProtoTCP, Host: host, Port: nfsPort},
		}
		// The portmapper's own port is known only once bound; bind, then build
		// the table it answers from.
		pm, err := portmap.Listen(cfg.PortmapAddr, nil, log)
		if err != nil {
			s.ln.Close()
			return nil, fmt.Errorf("nfsd: %w", err)
		}
		pmAddr := pm.TCPAddr().(*net.TCPAddr)
		pmHost := rpc.HostOf(pmAddr)
		pmPort := uint16(pmAddr.Port)
		for _, v := range []uint32{2, 3, 4} {
			mappings = append(mappings,
				portmap.Mapping{Prog: portmap.Prog, Vers: v, Prot: portmap.ProtoTCP, Host: pmHost, Port: pmPort},
				portmap.Mapping{Prog: portmap.Prog, Vers: v, Prot: portmap.ProtoUDP, Host: pmHost, Port: pmPort})
		}
		s.pmTable = portmap.NewTable(mappings)
		pm.SetTable(s.pmTable)
		pm.Observe = s.observe
		pm.Garbage = func() { s.m.refused.WithLabelValues(refusedGarbage).Inc() }
		pm.Admit = s.admitsClient
		pm.MaxConns, pm.MaxConnsPerClient, pm.IdleTimeout = limits.MaxConns, limits.MaxConnsPerClient, limits.IdleTimeout
		m.acceptErrors.WithLabelValues("portmap")
		m.refused.WithLabelValues(portmap.RefusedAmplification)
		pm.OnAcceptError = func(error) { m.acceptErrors.WithLabelValues("portmap").Inc() }
		pm.OnRefuse = func(reason string) { m.refused.WithLabelValues(reason).Inc() }
		s.pm = pm
	} else {
		s.pmTable = portmap.NewTable([]portmap.Mapping{
			{Prog: progNFS, Vers: 3, Prot: portmap.ProtoTCP, Host: host, Port: nfsPort},
			{Prog: progMount, Vers: 3, Prot: portmap.ProtoTCP, Host: host, Port: nfsPort},
		})
	}
	s.inmem = newPipeListener()
	s.nfs = &nfs.Server{Handler: &goHandler{s: s}}
	// The write verifier, which go-nfs would otherwise draw when it starts
	// serving: the fast path sends it too, and may read it before then.
	rand.Read(s.nfs.ID[:]) // never fails since Go 1.24
	return s, nil
}

func (s *Server) stateFS() durable.FS {
	if s.cfg.StateFS != nil {
		return s.cfg.StateFS
	}
	return durable.OS()
}

// Addr is the NFS port's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// PortmapAddr is the portmapper's TCP address (its UDP socket has the same
// port), or nil when it is off.
func (s *Server) PortmapAddr() net.Addr {
	if s.pm == nil {
		return nil
	}
	return s.pm.TCPAddr()
}

func (s *Server) observe(proc string, d time.Duration) {
	s.m.calls.WithLabelValues(proc).Inc()
	s.m.duration.WithLabelValues(proc).Observe(d.Seconds())
}

// observeNFS is observe for an NFS procedure, through the procedure's own
// series, looked up once: WithLabelValues hashes the label and takes the
// vector's lock, twice per call.
func (s *Server) observeNFS(proc uint32, d time.Duration) {
	if int(proc) >= len(s.m.nfs) {
		s.observe(nfsProcName(proc), d)
		return
	}
	pm := s.m.nfs[proc].Load()
	if pm == nil {
		name := nfsProcName(proc)
		pm = &procMetrics{calls: s.m.calls.WithLabelValues(name), duration: s.m.duration.WithLabelValues(name)}
		s.m.nfs[proc].Store(pm) // a racing first call stores the same series
	}
	pm.calls.Inc()
	pm.duration.Observe(d.Seconds())
}

// Serve answers clients until ctx is cancelled, then closes the listeners and
// every connection and returns. It returns an error only if the NFS listener
// fails.
func (s *Server) Serve(ctx context.Context) error {
	s.connsMu.Lock()
	if s.served {
		s.connsMu.Unlock()
		return errors.New("nfsd: Serve called twice")
	}
	s.served = true
	s.connsMu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.nfs.Context = ctx

	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		_ = s.nfs.Serve(s.inmem)
	}()
	if s.pm != nil {
		bg.Add(1)
		go func() {
			defer bg.Done()
			_ = s.pm.Serve(ctx)
		}()
	}

	acceptErr := make(chan error, 1)
	bg.Add(1)
	go func() {
		defer bg.Done()
		acceptErr <- s.acceptLoop(ctx)
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-acceptErr:
		if ctx.Err() != nil {
			err = nil
		}
	}
	cancel()
	closeErr := s.Close()
	bg.Wait()
	if err == nil && closeErr != nil {
		err = closeErr
	}
	return err
}

// acceptLoop accepts until the listener closes. Transient accept errors
// (EMFILE, ENOBUFS, ...) are retried below it (accept.Listener); connections
// the gate refuses are closed before anything is allocated for them.
func (s *Server) acceptLoop(ctx context.Context) error {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("nfsd: accept: %w", err)
		}
		client := rpc.HostOf(nc.RemoteAddr())
		if ok, _ := s.gate.Enter(client); !ok {
			refuseConn(nc)
			continue
		}
		c := s.newClientConn(nc)
		s.connsMu.Lock()
		if s.conns == nil {
			s.connsMu.Unlock()
			s.gate.Leave(client)
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.connsMu.Unlock()
		go func() {
			defer s.connWG.Done()
			defer s.gate.Leave(client)
			c.serve(ctx)
			s.connsMu.Lock()
			delete(s.conns, c)
			s.connsMu.Unlock()
		}()
	}
}

// refuseConn closes a refused connection with a reset: no FIN handshake, and
// nothing left of it on the server (no TIME_WAIT).
func refuseConn(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	nc.Close()
}

// Close stops the server: listeners, connections and handle tables. It waits
// for the fast path's READs and WRITEs under way in the filesystems. Serve calls
// it when its context ends; call it directly only for a server never served.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		errs := []error{s.ln.Close(), s.inmem.Close()}
		if s.pm != nil {
			errs = append(errs, s.pm.Close())
		}
		s.connsMu.Lock()
		conns := s.conns
		s.conns = nil
		s.connsMu.Unlock()
		for c := range conns {
			c.close()
		}
		s.connWG.Wait()
		s.mu.Lock()
		for _, t := range s.tables {
			errs = append(errs, t.Close())
		}
		s.mu.Unlock()
		s.closeErr = errors.Join(errs...)
		if errors.Is(s.closeErr, net.ErrClosed) {
			s.closeErr = nil
		}
	})
	return s.closeErr
}

// AddExport publishes e. Its path and id must be new, and its path may not lie
// inside another export's or contain one.
func (s *Server) AddExport(e Export) error {
	if e.FS == nil {
		return fmt.Errorf("nfsd: export %q: no filesystem", e.Path)
	}
	if !strings.HasPrefix(e.Path, "/") || path.Clean(e.Path) != e.Path || len(e.Path) > maxMountPath || strings.IndexByte(e.Path, 0) >= 0 {
		return fmt.Errorf("nfsd: export %q: path must be absolute and clean", e.Path)
	}
	e.Allow = clonePrefixes(e.Allow)
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, other := range s.exports {
		if p == e.Path || within(p, e.Path) || within(e.Path, p) {
			return fmt.Errorf("nfsd: export %q: overlaps export %q", e.Path, p)
		}
		if other.ID == e.ID {
			return fmt.Errorf("nfsd: export %q: id %d already used by %q", e.Path, e.ID, p)
		}
	}
	exp := &export{Export: e, log: s.log}
	if ider, ok := e.FS.(FileIDer); ok {
		exp.ider = ider
	} else {
		t := s.tables[e.ID]
		if t == nil {
			if s.cfg.StateDir == "" {
				return fmt.Errorf("nfsd: export %q: its filesystem has no file ids and Config.StateDir is empty: handles would not survive a restart", e.Path)
			}
			var err error
			t, err = openHandleTable(s.stateFS(), filepath.Join(s.cfg.StateDir, "handles", fmt.Sprintf("export-%d.log", e.ID)))
			if err != nil {
				return fmt.Errorf("nfsd: export %q: %w", e.Path, err)
			}
			s.tables[e.ID] = t
		}
		exp.table = t
	}
	exp.fs = &exportFS{Filesystem: e.FS, exp: exp, readOnly: e.ReadOnly, unsafe: s.cfg.Unsafe}
	s.exports[e.Path] = exp
	s.byID[e.ID] = exp
	s.log.Info("nfsd: export added", "export", e.Path, "id", e.ID, "read_only", e.ReadOnly)
	return nil
}

// within reports whether p lies strictly inside dir.
func within(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}

// RemoveExport withdraws the export at path: its handles go stale at once.
func (s *Server) RemoveExport(path string) {
	s.mu.Lock()
	exp := s.exports[path]
	if exp != nil {
		delete(s.exports, path)
		delete(s.byID, exp.ID)
	}
	s.mu.Unlock()
	if exp == nil {
		return
	}
	s.mountsMu.Lock()
	for m := range s.mounts {
		if m.dir == path || within(m.dir, path) {
			delete(s.mounts, m)
		}
	}
	s.mountsMu.Unlock()
	s.log.Info("nfsd: export removed", "export", path)
}

// Exports lists the published exports.
func (s *Server) Exports() []Export {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Export, 0, len(s.exports))
	for _, e := range s.exports {
		x := e.Export
		x.Allow = clonePrefixes(e.Allow)
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// SetAllow replaces the server's allow-list. It applies to open connections at
// their next call. An empty list admits nobody.
func (s *Server) SetAllow(allow []netip.Prefix) {
	s.mu.Lock()
	s.allow = clonePrefixes(allow)
	if s.allow == nil {
		s.allow = []netip.Prefix{}
	}
	s.mu.Unlock()
}

// SetExportAllow replaces an export's allow-list (nil: every client the server
// admits).
func (s *Server) SetExportAllow(exportPath string, allow []netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp := s.exports[exportPath]
	if exp == nil {
		return fmt.Errorf("nfsd: no export %q", exportPath)
	}
	exp.Allow = clonePrefixes(allow)
	return nil
}

// SetSubtreeAllow admits only the clients in allow to subtree (a path inside the
// export, like "/session-42") and everything below it; other clients get
// NFS3ERR_ACCES for any handle or name there and MNT3ERR_ACCES when mounting it. A
// nil allow removes the rule; an empty one admits nobody. Where rules nest, the
// deepest one decides.
func (s *Server) SetSubtreeAllow(exportPath, subtree string, allow []netip.Prefix) error {
	return s.setSubtreeRule(exportPath, subtree, allow, false)
}

// SetSubtreeAllowOnly makes subtree a folder of tenants: allow admits clients
// to the folder itself, and nobody to anything inside it but what a deeper
// rule admits. An entry that appears inside it before its own rule is there
// (a session being published) is invisible to every client. A nil allow
// removes the rule.
func (s *Server) SetSubtreeAllowOnly(exportPath, subtree string, allow []netip.Prefix) error {
	return s.setSubtreeRule(exportPath, subtree, allow, true)
}

func (s *Server) setSubtreeRule(exportPath, subtree string, allow []netip.Prefix, only bool) error {
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
	var r *subtreeRule
	if allow != nil {
		r = &subtreeRule{path: p, allow: clonePrefixes(allow), only: only}
	}
	exp.subtrees = withRule(exp.subtrees, p, func(r subtreeRule) string { return r.path }, r)
	return nil
}

// withRule is rules with the rule for path p replaced by r (removed when r is
// nil), deepest path first, so that the first match of a lookup decides.
func withRule[R any](rules []R, p string, pathOf func(R) string, r *R) []R {
	out := make([]R, 0, len(rules)+1)
	for _, x := range rules {
		if pathOf(x) != p {
			out = append(out, x)
		}
	}
	if r != nil {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return len(pathOf(out[i])) > len(pathOf(out[j])) })
	return out
}

func clonePrefixes(p []netip.Prefix) []netip.Prefix {
	if p == nil {
		return nil
	}
	return append([]netip.Prefix{}, p...)
}

func contains(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// admitsClient reports whether the server admits a at all.
func (s *Server) admitsClient(a netip.Addr) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return contains(s.allow, a)
}

func (s *Server) exportByID(id uint32) *export {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byID[id]
}

// admitsExport reports whether client may use exp at all.
func (s *Server) admitsExport(exp *export, client netip.Addr) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.byID[exp.ID] != exp {
		return false
	}
	if !contains(s.allow, client) {
		return false
	}
	return exp.Allow == nil || contains(exp.Allow, client)
}

// pathRules reports whether exp has rules that depend on the path.
func (s *Server) pathRules(exp *export) bool {
	if s.cfg.Authorize != nil {
		return true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(exp.subtrees) > 0
}

// admitsPath reports whether client may use p ("/dir/file") inside exp: the
// deepest subtree rule covering p and Config.Authorize both admit it.
func (s *Server) admitsPath(exp *export, client netip.Addr, p string) bool {
	if !s.admitsRule(exp, client, p) {
		return false
	}
	if s.cfg.Authorize != nil && !s.cfg.Authorize(client, exp.Path, p) {
		return false
	}
	return true
}

// admitsRule reports whether the deepest subtree rule covering p admits client
// (true when no rule covers p).
func (s *Server) admitsRule(exp *export, client netip.Addr, p string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if r := ruleFor(exp.subtrees, p); r != nil {
		return (!r.only || p == r.path) && contains(r.allow, client)
	}
	return true
}

// exportForMount finds the export a MNT dirpath lies in, and the components of
// the directory inside it.
func (s *Server) exportForMount(dirpath string) (*export, []string, error) {
	if !strings.HasPrefix(dirpath, "/") {
		return nil, nil, errBadPath
	}
	parts, err := splitPath(dirpath)
	if err != nil {
		return nil, nil, err
	}
	clean := slashPath(parts)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for p, exp := range s.exports {
		if clean == p || within(clean, p) {
			rest := strings.TrimPrefix(clean, p)
			sub, err := splitPath(rest)
			if err != nil {
				return nil, nil, err
			}
			return exp, sub, nil
		}
	}
	return nil, nil, os.ErrNotExist
}

// fileID gives the stable id of the file at components inside exp.
func (e *export) fileID(components []string) (uint64, error) {
	p := slashPath(components)
	if e.ider != nil {
		return e.ider.FileID(p)
	}
	return e.table.idFor(p)
}

var errStale = errors.New("nfsd: stale file handle")

// pathOf finds the components of the file with id. With check, a handle-table
// path must still exist (the table cannot know of removals done behind its back).
func (e *export) pathOf(id uint64, check bool) ([]string, error) {
	var p string
	if e.ider != nil {
		var err error
		p, err = e.ider.PathOf(id)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errStale, err)
		}
	} else {
		var ok bool
		p, ok = e.table.pathOf(id)
		if !ok {
			return nil, errStale
		}
	}
	parts, err := splitPath(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errStale, err)
	}
	if check && e.ider == nil {
		if _, err := e.fs.Filesystem.Lstat(e.fs.Join(append([]string{"/"}, parts...)...)); err != nil {
			return nil, fmt.Errorf("%w: %v", errStale, err)
		}
	}
	return parts, nil
}

// syncHandles makes every new handle-table entry durable; the front calls it
// before a reply that may carry new handles leaves.
func (s *Server) syncHandles() error {
	s.mu.RLock()
	tables := make([]*handleTable, 0, len(s.tables))
	for _, t := range s.tables {
		tables = append(tables, t)
	}
	s.mu.RUnlock()
	var errs []error
	for _, t := range tables {
		if err := t.Sync(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
