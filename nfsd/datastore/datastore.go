// Package datastore is what `rekindle serve` runs: the repository's restore
// points exported read-only over NFS (/points/<vm>/<point>/), sessions
// exported read-write (/rekindle/<session>/<vm>/) over copy-on-write
// overlays whose upper layers live in the state folder, an HTTP JSON API to
// publish and discard sessions, and Prometheus metrics.
//
// A session is published for a set of client networks; only they may mount
// or use its folder. Sessions survive restarts: the service re-exports every
// session whose overlay is in the state folder, and every NFS file handle a
// client held stays valid.
package datastore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rekindle/rekindle/backupfs/guestfs"
	"github.com/rekindle/rekindle/backupfs/overlay"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/view"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/internal/durable"
	"github.com/rekindle/rekindle/nfsd"
	"github.com/rekindle/rekindle/orchestrator/storeapi"
)

// Export paths and their stable ids.
const (
	PointsExport   = storeapi.PointsExport
	SessionsExport = storeapi.SessionsExport
	pointsID       = 1
	sessionsID     = 2
	// FilesExport serves the guest files inside restore points, read-only
	// (see backupfs/guestfs), to the clients PointsAllow admits.
	FilesExport = "/files"
	filesID     = 3
)

// Config configures a Service.
type Config struct {
	Repo        *repo.Repo
	Catalog     *catalog.Catalog
	StateDir    string // session overlays; not part of the repository format
	NFSListen   string // e.g. ":2049"
	PortmapAddr string // e.g. ":111"; empty turns the portmapper off
	// ServerName is the host name or address hypervisors use to reach this
	// server; it goes into the NFS paths the API hands out.
	ServerName string
	// PointsAllow admits clients to the read-only /points export (default
	// loopback). Sessions admit the networks they are published for.
	PointsAllow []netip.Prefix
	CacheBytes  int64
	// Unsafe acknowledges writes before they reach stable storage.
	Unsafe bool
	// NoFastPath sends READ and WRITE through go-nfs instead of the front's
	// fast path (a fallback for operators; see nfsd.Config).
	NoFastPath bool
	// Squash maps untrusted NFS identities to nobody on every export: "root"
	// (uid 0) or "all"; empty or "none" trusts them (ESXi writes as root).
	// A session may ask for a stricter squash of its own.
	Squash string
	// Limits bound the NFS front's connections, timeouts and record memory
	// (zero fields: nfsd's defaults).
	Limits   nfsd.Limits
	Logger   *slog.Logger
	Registry *prometheus.Registry
}

// Service is a running datastore.
type Service struct {
	cfg    Config
	log    *slog.Logger
	cache  *repo.Cache
	points *view.PointFS
	files  *guestfs.FS
	root   *view.MountFS
	nfs    *nfsd.Server

	mu       sync.Mutex
	sessions map[string]*session

	serving   sync.Once
	serveDone chan struct{} // closed when Serve returns
}

type session struct {
	id      string
	allow   []netip.Prefix
	squash  nfsd.Squash
	overlay *overlay.Overlay
	vms     []catalog.SessionVM
	created time.Time
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// New opens the views, re-exports the sessions found in the state folder and
// binds the NFS listeners. Run serves.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PointsAllow == nil {
		cfg.PointsAllow = loopback
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "127.0.0.1"
	}
	for _, d := range []string{"sessions", "discarded", "squash"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("state folder: %w", err)
		}
	}
	s := &Service{cfg: cfg, log: cfg.Logger, sessions: map[string]*session{}, serveDone: make(chan struct{})}
	s.cache = repo.NewCache(repo.CacheOptions{MaxBytes: cfg.CacheBytes, ChunkSize: cfg.Repo.ChunkSize()})
	var err error
	if s.points, err = view.NewPointFS(cfg.Repo, s.cache); err != nil {
		return nil, err
	}
	s.root = view.NewMountFS("sessions")
	// Sessions write into the state folder: its free space is the datastore's.
	s.root.SetSpace(view.FolderSpace(cfg.StateDir))
	squash, err := nfsd.ParseSquash(cfg.Squash)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	ncfg := nfsd.Config{Squash: squash,
		Listen: cfg.NFSListen, PortmapAddr: cfg.PortmapAddr, StateDir: filepath.Join(cfg.StateDir, "nfs"),
		Logger: cfg.Logger, Unsafe: cfg.Unsafe, Allow: cfg.PointsAllow, NoFastPath: cfg.NoFastPath,
		Limits: cfg.Limits,
	}
	if cfg.Registry != nil { // a nil *Registry must not become a non-nil Registerer
		ncfg.Registry = cfg.Registry
	}
	s.nfs, err = nfsd.New(ncfg)
	if err != nil {
		return nil, err
	}
	if err := s.nfs.AddExport(nfsd.Export{Path: PointsExport, FS: s.points, ReadOnly: true, Allow: cfg.PointsAllow, ID: pointsID}); err != nil {
		return nil, err
	}
	if s.files, err = guestfs.New(cfg.Repo, s.cache, guestfs.Options{Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if err := s.nfs.AddExport(nfsd.Export{Path: FilesExport, FS: s.files, ReadOnly: true, Allow: cfg.PointsAllow, ID: filesID}); err != nil {
		return nil, err
	}
	if err := s.nfs.AddExport(nfsd.Export{Path: SessionsExport, FS: s.root, ID: sessionsID}); err != nil {
		return nil, err
	}
	// The sessions root admits the networks /points admits (loopback by
	// default), and lists to each client only the sessions it is admitted
	// to; each session's folder admits its own networks, and nobody else: a
	// client admitted to its session only can neither mount the root nor
	// climb to it with LOOKUP "..". A folder without a rule of its own (a
	// session being published) is nobody's.
	if err := s.nfs.SetExportAllow(SessionsExport, nil); err != nil {
		return nil, err
	}
	if err := s.nfs.SetSubtreeAllowOnly(SessionsExport, "/", cfg.PointsAllow); err != nil {
		return nil, err
	}
	if err := s.restoreSessions(ctx); err != nil {
		s.nfs.Close()
		return nil, err
	}
	if cfg.Registry != nil {
		s.registerMetrics(cfg.Registry)
	}
	return s, nil
}

// NFSAddr is the address NFS and MOUNT listen on.
func (s *Service) NFSAddr() net.Addr { return s.nfs.Addr() }

// PortmapAddr is the portmapper's address, nil when off.
func (s *Service) PortmapAddr() net.Addr { return s.nfs.PortmapAddr() }

// Serve serves NFS until ctx ends.
func (s *Service) Serve(ctx context.Context) error {
	started := false
	s.serving.Do(func() { started = true })
	if !started {
		return errors.New("datastore: Serve called twice")
	}
	defer close(s.serveDone)
	return s.nfs.Serve(ctx)
}

// Close stops serving, waits for Serve to return, and releases the overlays
// (their content stays). Calls still in flight fail unanswered, so the
// client retries them once the server is back.
func (s *Service) Close() error {
	err := s.nfs.Close()
	s.serving.Do(func() { close(s.serveDone) }) // never served: nothing to wait for
	<-s.serveDone
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		err = errors.Join(err, ss.overlay.Close())
	}
	return err
}

// CacheStats reports the chunk cache.
func (s *Service) CacheStats() repo.CacheStats { return s.cache.Stats() }

// The API's request and reply types are the orchestrator's (storeapi):
// this service implements them.
type (
	PublishRequest = storeapi.PublishRequest
	PublishVM      = storeapi.PublishVM
	SessionInfo    = storeapi.SessionInfo
	SessionVMInfo  = storeapi.SessionVMInfo
)

// ErrNotFound is returned (wrapped) for unknown sessions, VMs and points.
var ErrNotFound = storeapi.ErrNotFound

// ErrInvalid is returned (wrapped) for requests that cannot be carried out as
// asked.
var ErrInvalid = storeapi.ErrInvalid

// NewSessionID returns a fresh session id (see storeapi.NewSessionID).
func NewSessionID() string { return storeapi.NewSessionID() }

func parseAllow(allow []string) ([]netip.Prefix, error) {
	if len(allow) == 0 {
		return slices.Clone(loopback), nil
	}
	var out []netip.Prefix
	for _, a := range allow {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			addr, aerr := netip.ParseAddr(a)
			if aerr != nil {
				return nil, fmt.Errorf("%w: allow %q: not an address or CIDR", ErrInvalid, a)
			}
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// Publish creates a session exporting the requested VMs' restore points
// read-write, over a fresh copy-on-write overlay.
func (s *Service) Publish(ctx context.Context, req PublishRequest) (*SessionInfo, error) {
	if len(req.VMs) == 0 {
		return nil, fmt.Errorf("%w: publish: name at least one VM", ErrInvalid)
	}
	allow, err := parseAllow(req.Allow)
	if err != nil {
		return nil, err
	}
	squash, err := nfsd.ParseSquash(req.Squash)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if req.Kind == "" {
		req.Kind = catalog.KindVM
	}
	var vms []catalog.SessionVM
	seen := map[string]bool{}
	for _, v := range req.VMs {
		p, err := s.resolvePoint(ctx, v.VM, v.Point)
		if err != nil {
			return nil, err
		}
		folder := v.As
		if folder == "" {
			folder = p.VM.Name
		}
		if err := repo.ValidName(folder); err != nil {
			return nil, fmt.Errorf("%w: folder %v", ErrInvalid, err)
		}
		if seen[folder] {
			return nil, fmt.Errorf("%w: two VMs would share the folder %q: give one another name", ErrInvalid, folder)
		}
		seen[folder] = true
		vms = append(vms, catalog.SessionVM{VM: p.VM.Name, PointID: p.ID, Name: folder})
	}
	id := req.ID
	if id != "" && s.discarded(id) {
		return nil, fmt.Errorf("%w: session %s was discarded and its id is never reused (old file handles must stay stale): publish a new session", ErrInvalid, id)
	}
	if id == "" {
		id, err = s.freshID(ctx)
		if err != nil {
			return nil, err
		}
		// The catalog refuses a point forgotten since resolvePoint read it
		// (catalog.ForgetPoint): the session fails rather than lose it.
		if err := s.cfg.Catalog.CreateSession(ctx, &catalog.Session{ID: id, Kind: req.Kind, State: catalog.SessionRunning,
			Allow: prefixStrings(allow), VMs: vms}); err != nil {
			return nil, notFound(err)
		}
	} else {
		if _, err := s.cfg.Catalog.Session(ctx, id); err != nil {
			return nil, fmt.Errorf("%w: session %s: %v", ErrNotFound, id, err)
		}
		if err := s.cfg.Catalog.SetSessionVMs(ctx, id, vms); err != nil {
			return nil, notFound(err)
		}
	}
	s.mu.Lock()
	_, exists := s.sessions[id]
	s.mu.Unlock()
	if !exists {
		if err := s.saveSquash(id, squash); err != nil {
			return nil, err
		}
		if err := s.export(id, vms, allow, squash); err != nil {
			if req.ID == "" {
				s.cfg.Catalog.SetSessionState(ctx, id, catalog.SessionFailed, err.Error())
			}
			return nil, err
		}
	}
	if err := s.cfg.Catalog.SetSessionExport(ctx, id, s.nfsPath(id), prefixStrings(allow)); err != nil {
		return nil, err
	}
	s.log.Info("session published", "session", id, "vms", len(vms), "allow", prefixStrings(allow))
	return s.Session(ctx, id)
}

// notFound marks a catalog ErrNotFound as this service's ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, catalog.ErrNotFound) {
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return err
}

func (s *Service) nfsPath(id string) string {
	return s.cfg.ServerName + ":" + SessionsExport + "/" + id
}

func (s *Service) resolvePoint(ctx context.Context, vm, point string) (*repo.RestorePoint, error) {
	// "latest", a full id or a unique prefix, as everywhere a point is named.
	p, err := s.cfg.Catalog.ResolvePoint(ctx, vm, point, time.Time{})
	if err != nil {
		if errors.Is(err, catalog.ErrNotFound) {
			return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
		}
		if errors.Is(err, catalog.ErrAmbiguous) {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return nil, err
	}
	// A point imported after the server started is not in the view yet.
	if _, err := s.points.Stat("/" + p.VM.Name + "/" + p.ID); err != nil {
		if err := s.points.Refresh(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// export builds the session's overlay and puts it under /rekindle/<id>.
func (s *Service) export(id string, vms []catalog.SessionVM, allow []netip.Prefix, squash nfsd.Squash) error {
	base := view.NewMountFS("base:" + id)
	var largest int64
	for _, v := range vms {
		sub, err := view.Sub(s.points, "/"+v.VM+"/"+v.PointID)
		if err != nil {
			return fmt.Errorf("session %s: vm %s point %s: %w", id, v.VM, v.PointID, err)
		}
		n, err := largestFile(sub, "/")
		if err != nil {
			return fmt.Errorf("session %s: vm %s point %s: %w", id, v.VM, v.PointID, err)
		}
		largest = max(largest, n)
		if err := base.Mount(v.Name, view.Writable(sub)); err != nil {
			return err
		}
	}
	// Not Options.Sync: the NFS server syncs what the protocol asks to be
	// durable (stable WRITEs, COMMIT), so UNSTABLE writes stay cheap. The
	// block size fits the largest disk (4 KiB up to 64 GiB: a guest's 4 KiB
	// write into a block not written yet fills nothing from the backup); a
	// session made before keeps the block size it was made with.
	ov, err := overlay.New(base, filepath.Join(s.cfg.StateDir, "sessions", id),
		overlay.Options{Salt: id, BlockSize: overlay.BlockSizeFor(largest)})
	if err != nil {
		return fmt.Errorf("session %s: overlay: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[id]; ok {
		ov.Close()
		return fmt.Errorf("session %s: %w", id, os.ErrExist)
	}
	// The rules first, then the folder: no client may see the folder before
	// the rules that admit only the session's networks and squash its
	// identities are in place.
	if err := s.nfs.SetSubtreeSquash(SessionsExport, "/"+id, squash); err != nil {
		ov.Close()
		return err
	}
	if err := s.nfs.SetSubtreeAllow(SessionsExport, "/"+id, allow); err != nil {
		ov.Close()
		return err
	}
	if err := s.root.Mount(id, ov); err != nil {
		s.nfs.SetSubtreeAllow(SessionsExport, "/"+id, nil)
		ov.Close()
		return err
	}
	s.sessions[id] = &session{id: id, allow: allow, squash: squash, overlay: ov, vms: vms, created: time.Now()}
	s.updateAllowLocked()
	return nil
}

// largestFile returns the size of the largest file at or below dir of fsys.
func largestFile(fsys billy.Filesystem, dir string) (int64, error) {
	infos, err := fsys.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, fi := range infos {
		if fi.IsDir() {
			m, err := largestFile(fsys, fsys.Join(dir, fi.Name()))
			if err != nil {
				return 0, err
			}
			n = max(n, m)
		} else if fi.Mode().IsRegular() {
			n = max(n, fi.Size())
		}
	}
	return n, nil
}

// updateAllowLocked admits every client that some export admits.
func (s *Service) updateAllowLocked() {
	all := slices.Clone(s.cfg.PointsAllow)
	for _, ss := range s.sessions {
		all = append(all, ss.allow...)
	}
	s.nfs.SetAllow(all)
}

// restoreSessions re-exports the sessions whose overlays are in the state
// folder and that the catalog still lists as live.
func (s *Service) restoreSessions(ctx context.Context) error {
	ents, err := os.ReadDir(filepath.Join(s.cfg.StateDir, "sessions"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		id := e.Name()
		if s.discarded(id) {
			s.log.Warn("overlay of a discarded session: not re-exported", "session", id)
			continue
		}
		cs, err := s.cfg.Catalog.Session(ctx, id)
		if err != nil {
			s.log.Warn("session folder without catalog record: left alone", "session", id, "err", err)
			continue
		}
		if cs.State == catalog.SessionStopped || cs.State == catalog.SessionDone {
			continue
		}
		allow, err := parseAllow(cs.Allow)
		if err != nil {
			return err
		}
		squash, err := s.loadSquash(id)
		if err != nil {
			s.log.Error("session could not be re-exported", "session", id, "err", err)
			s.cfg.Catalog.SetSessionState(ctx, id, catalog.SessionFailed, "re-export after restart: "+err.Error())
			continue
		}
		if err := s.export(id, cs.VMs, allow, squash); err != nil {
			s.log.Error("session could not be re-exported", "session", id, "err", err)
			s.cfg.Catalog.SetSessionState(ctx, id, catalog.SessionFailed, "re-export after restart: "+err.Error())
			continue
		}
		s.log.Info("session re-exported", "session", id)
	}
	return nil
}

// Discard withdraws the session's export and deletes its overlay (everything
// written to it). The restore points are untouched. The id is retired for
// good: it is never published again, so handles into the session stay stale.
func (s *Service) Discard(ctx context.Context, id string) error {
	cs, err := s.cfg.Catalog.Session(ctx, id)
	if err != nil {
		return fmt.Errorf("%w: session %s", ErrNotFound, id)
	}
	if err := s.retire(id); err != nil {
		return err
	}
	s.mu.Lock()
	ss := s.sessions[id]
	delete(s.sessions, id)
	s.root.Unmount(id)
	s.nfs.SetSubtreeAllow(SessionsExport, "/"+id, nil)
	s.nfs.SetSubtreeSquash(SessionsExport, "/"+id, nfsd.SquashNone)
	s.updateAllowLocked()
	s.mu.Unlock()
	if ss != nil {
		if err := ss.overlay.Discard(); err != nil {
			return fmt.Errorf("session %s: discard overlay: %w", id, err)
		}
	} else if err := os.RemoveAll(filepath.Join(s.cfg.StateDir, "sessions", id)); err != nil {
		return fmt.Errorf("session %s: %w", id, err)
	}
	if err := s.cfg.Catalog.SetSessionExport(ctx, id, "", cs.Allow); err != nil {
		return err
	}
	if cs.State == catalog.SessionRunning || cs.State == catalog.SessionPlanned {
		if err := s.cfg.Catalog.SetSessionState(ctx, id, catalog.SessionStopped, ""); err != nil {
			return err
		}
	}
	s.log.Info("session discarded", "session", id)
	return nil
}

// Session describes one session.
func (s *Service) Session(ctx context.Context, id string) (*SessionInfo, error) {
	cs, err := s.cfg.Catalog.Session(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%w: session %s", ErrNotFound, id)
	}
	return s.info(cs), nil
}

// Sessions lists every session, newest first.
func (s *Service) Sessions(ctx context.Context) ([]SessionInfo, error) {
	list, err := s.cfg.Catalog.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]SessionInfo, 0, len(list))
	for i := range list {
		out = append(out, *s.info(&list[i]))
	}
	return out, nil
}

func (s *Service) info(cs *catalog.Session) *SessionInfo {
	s.mu.Lock()
	ss, exported := s.sessions[cs.ID]
	s.mu.Unlock()
	// A site recovery has no folders and no clients of its own (its VMs'
	// restore sessions have): empty lists, not missing ones.
	si := &SessionInfo{ID: cs.ID, Kind: cs.Kind, State: cs.State, NFSPath: cs.NFSPath, Server: s.cfg.ServerName,
		Allow: cs.Allow, VMs: []SessionVMInfo{}, Created: cs.Created, Error: cs.Error, Steps: cs.Steps, Exported: exported}
	if cs.Kind != catalog.KindSite {
		si.Plan = cs.Request // a restore plan (a site recovery's is shown by `site recover`)
	}
	if si.Allow == nil {
		si.Allow = []string{}
	}
	if exported {
		si.Export = SessionsExport + "/" + cs.ID
		if ss.squash != nfsd.SquashNone {
			si.Squash = ss.squash.String()
		}
	}
	for _, v := range cs.VMs {
		si.VMs = append(si.VMs, SessionVMInfo{VM: v.VM, Point: v.PointID, Folder: v.Name, Host: v.Host,
			VMX: SessionsExport + "/" + cs.ID + "/" + v.Name + "/" + v.VM + ".vmx"})
	}
	return si
}

// Overlay returns a session's filesystem (for in-process file-level access
// and tests).
func (s *Service) Overlay(id string) (billy.Filesystem, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[id]
	if !ok {
		return nil, false
	}
	return ss.overlay, true
}

func (s *Service) registerMetrics(reg *prometheus.Registry) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rekindle_cache_hits_total", Help: "Chunk cache hits."},
			func() float64 { return float64(s.cache.Stats().Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rekindle_cache_misses_total", Help: "Chunk cache misses (chunks read from the repository)."},
			func() float64 { return float64(s.cache.Stats().Misses) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rekindle_cache_bytes", Help: "Decompressed chunk bytes held by the cache."},
			func() float64 { return float64(s.cache.Stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rekindle_sessions", Help: "Sessions exported now."},
			func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.sessions)) }),
	)
}

// Session ids are never reused. Discard leaves a tombstone,
// <state>/discarded/<id>, before it withdraws anything; Publish refuses a
// tombstoned id and never draws one, and a restart does not re-export one.
// (The catalog's state cannot tell: a failed session may be published again.)

func (s *Service) tombstone(id string) string {
	return filepath.Join(s.cfg.StateDir, "discarded", id)
}

// discarded reports whether id was discarded.
func (s *Service) discarded(id string) bool {
	if repo.ValidName(id) != nil {
		return false
	}
	_, err := os.Lstat(s.tombstone(id))
	return err == nil
}

// retire records durably that id is discarded.
func (s *Service) retire(id string) error {
	if err := repo.ValidName(id); err != nil {
		return fmt.Errorf("%w: session id %v", ErrInvalid, err)
	}
	if err := durable.WriteFile(durable.OS(), s.tombstone(id), []byte("discarded "+time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return fmt.Errorf("session %s: retire its id: %w", id, err)
	}
	return nil
}

// freshID draws a session id that no session has had.
func (s *Service) freshID(ctx context.Context) (string, error) {
	for range 16 {
		id := NewSessionID()
		if s.discarded(id) {
			continue
		}
		if _, err := s.cfg.Catalog.Session(ctx, id); err == nil {
			continue
		}
		return id, nil
	}
	return "", errors.New("publish: no unused session id after 16 draws")
}

// A session's squash is kept in <state>/squash/<id> ("root" or "all"; no file
// is none), beside its overlay, so that a restart squashes as before.

func (s *Service) squashFile(id string) string {
	return filepath.Join(s.cfg.StateDir, "squash", id)
}

func (s *Service) saveSquash(id string, q nfsd.Squash) error {
	if err := repo.ValidName(id); err != nil {
		return fmt.Errorf("%w: session id %v", ErrInvalid, err)
	}
	if q == nfsd.SquashNone {
		if err := os.Remove(s.squashFile(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("session %s: squash: %w", id, err)
		}
		return nil
	}
	if err := durable.WriteFile(durable.OS(), s.squashFile(id), []byte(q.String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("session %s: squash: %w", id, err)
	}
	return nil
}

func (s *Service) loadSquash(id string) (nfsd.Squash, error) {
	b, err := os.ReadFile(s.squashFile(id))
	if errors.Is(err, os.ErrNotExist) {
		return nfsd.SquashNone, nil
	}
	if err != nil {
		return nfsd.SquashNone, fmt.Errorf("session %s: squash: %w", id, err)
	}
	q, err := nfsd.ParseSquash(strings.TrimSpace(string(b)))
	if err != nil {
		return nfsd.SquashNone, fmt.Errorf("session %s: %s: %w", id, s.squashFile(id), err)
	}
	return q, nil
}
