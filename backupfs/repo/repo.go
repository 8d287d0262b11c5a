package repo

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// ErrNotFound is returned (wrapped) when a chunk, index, point or app is not
// in the repository.
var ErrNotFound = errors.New("not found")

// ErrMissing is wrapped (with ErrNotFound) when an object that a restore
// point names, a chunk or an index, is not in the repository: the
// repository is damaged, unlike a point or app name that does not exist.
var ErrMissing = errors.New("missing from the repository")

// missingObject is a chunk or index a restore point names that is gone.
type missingObject struct{ what string }

func (e *missingObject) Error() string {
	return e.what + ": not found in the repository (damaged: `rekindle verify` lists the points it affects)"
}
func (e *missingObject) Is(target error) bool { return target == ErrNotFound || target == ErrMissing }

func missing(kind string, d Digest) error { return &missingObject{kind + " " + d.String()} }

// Repo is an open repository. It is safe for concurrent use; several
// processes may write to one repository at once because every object is
// content-addressed or uniquely named.
type Repo struct {
	Dir    string
	Config Config
	// LockWait is how long Lock, taking a shared or serve lock, waits for
	// a conflicting exclusive lock (a prune in another process) to be
	// released before it fails with ErrLocked. Zero fails after a few
	// quick retries.
	LockWait time.Duration
	// LockWaiting, when set, is called once for each holder Lock starts
	// waiting for, so a command can say for whom it waits.
	LockWaiting func(holder LockInfo, wait time.Duration)

	fs    durablefs.FS // nil means durablefs.OS()
	files chunkFiles   // chunk files kept open between reads
}

// fsys is the filesystem the repository lives on.
func (r *Repo) fsys() durablefs.FS {
	if r.fs == nil {
		return durablefs.OS()
	}
	return r.fs
}

// Open opens the repository in dir. It fails with a clear error when dir holds
// no repository or one of a newer format.
func Open(dir string) (*Repo, error) { return OpenFS(durablefs.OS(), dir) }

// OpenFS opens the repository in dir of fsys (tests put a powercut.FS here
// to prove what a power cut leaves).
func OpenFS(fsys durablefs.FS, dir string) (*Repo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := readConfig(fsys, abs)
	if err != nil {
		return nil, err
	}
	r := &Repo{Dir: abs, Config: *cfg, fs: fsys}
	for _, d := range layoutDirs {
		if fi, err := fsys.Stat(filepath.Join(abs, d)); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("open repository %s: folder %s missing: the repository is damaged", abs, d)
		}
	}
	r.removeStaleTemp()
	return r, nil
}

// ChunkSize is the repository's chunk size in bytes.
func (r *Repo) ChunkSize() int { return r.Config.ChunkSize }

func (r *Repo) tmpDir() string { return filepath.Join(r.Dir, "tmp") }

// ChunkPath is where the chunk named d is stored.
func (r *Repo) ChunkPath(d Digest) string {
	s := d.String()
	return filepath.Join(r.Dir, "chunks", s[:2], s)
}

func (r *Repo) indexPath(d Digest) string {
	s := d.String()
	return filepath.Join(r.Dir, "indexes", s[:2], s)
}

func (r *Repo) pointPath(id string) string { return filepath.Join(r.Dir, "points", id+".json") }
func (r *Repo) appPath(name string) string { return filepath.Join(r.Dir, "apps", name+".json") }

// HasChunk reports whether chunk d is stored (it does not check its content).
func (r *Repo) HasChunk(d Digest) bool {
	_, err := r.fsys().Stat(r.ChunkPath(d))
	return err == nil
}

// PutChunk stores data as the chunk named d unless it is already stored. It
// returns the stored size and whether it wrote. It does not fsync: callers
// call Sync before writing anything that names the chunk.
func (r *Repo) PutChunk(d Digest, data []byte) (stored int64, wrote bool, err error) {
	p := r.ChunkPath(d)
	if _, err := r.fsys().Stat(p); err == nil {
		return 0, false, nil
	}
	enc := r.encodeChunk(d, data)
	// Neither the chunk nor its folder is synced here: Sync (one syncfs)
	// makes both durable before anything names the chunk.
	if err := r.fsys().Mkdir(filepath.Dir(p), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return 0, false, fmt.Errorf("store chunk %s: %w", d, err)
	}
	if err := r.writeFileAtomic(p, enc, false); err != nil {
		return 0, false, fmt.Errorf("store chunk %s: %w", d, err)
	}
	return int64(len(enc)), true, nil
}

// encodeChunk is the stored form of a chunk in this repository's layout:
// framed (version 2) unless the repository is still version 1.
func (r *Repo) encodeChunk(d Digest, data []byte) []byte {
	if r.Config.Version < 2 {
		return EncodeChunkV1(d, data)
	}
	return EncodeChunk(d, data)
}

// ReadChunkRaw returns the stored bytes of chunk d, undecoded.
func (r *Repo) ReadChunkRaw(d Digest) ([]byte, error) {
	b, err := durablefs.ReadFile(r.fsys(), r.ChunkPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, missing("chunk", d)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", d, err)
	}
	return b, nil
}

// GetChunk reads, decodes and checks chunk d (see DecodeChunk).
func (r *Repo) GetChunk(d Digest) ([]byte, error) {
	raw, err := r.ReadChunkRaw(d)
	if err != nil {
		return nil, err
	}
	return DecodeChunk(d, raw)
}

// VerifyChunk reads chunk d and proves its content hashes to d.
func (r *Repo) VerifyChunk(d Digest) ([]byte, error) {
	raw, err := r.ReadChunkRaw(d)
	if err != nil {
		return nil, err
	}
	return VerifyChunk(d, raw)
}

// Sync flushes everything written so far to stable storage. Writers call it
// after storing chunks and before writing the index or manifest naming them:
// one syncfs costs far less than an fsync per chunk.
func (r *Repo) Sync() error {
	if err := durablefs.SyncAll(r.fsys(), r.Dir); err != nil {
		return fmt.Errorf("sync repository %s: %w", r.Dir, err)
	}
	return nil
}

// PutIndex stores x durably and returns its name.
func (r *Repo) PutIndex(x *Index) (Digest, error) {
	b := x.Encode()
	d := Sum(b)
	p := r.indexPath(d)
	if _, err := r.fsys().Stat(p); err == nil {
		if _, err := r.fsys().Stat(r.frameIndexPath(d)); err != nil {
			_ = r.WriteFrameIndex(d, x) // a cache: rebuilt when read if this fails
		}
		return d, nil
	}
	// The index's folder is synced into indexes/ when it is new: the point
	// naming the index is written next, after no further repository sync.
	if err := durablefs.MkdirAll(r.fsys(), filepath.Dir(p), 0o755); err != nil {
		return d, fmt.Errorf("store index %s: %w", d, err)
	}
	if err := r.writeFileAtomic(p, b, true); err != nil {
		return d, fmt.Errorf("store index %s: %w", d, err)
	}
	_ = r.WriteFrameIndex(d, x) // a cache: rebuilt when read if this fails
	return d, nil
}

// LoadIndex reads and checks index d.
func (r *Repo) LoadIndex(d Digest) (*Index, error) {
	b, err := durablefs.ReadFile(r.fsys(), r.indexPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, missing("index", d)
	}
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", d, err)
	}
	if Sum(b) != d {
		return nil, fmt.Errorf("index %s: %w: checksum mismatch", d, ErrCorrupt)
	}
	x, err := DecodeIndex(b)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w: %v", d, ErrCorrupt, err)
	}
	if x.ChunkSize != r.ChunkSize() {
		return nil, fmt.Errorf("index %s: chunk size %d differs from the repository's %d", d, x.ChunkSize, r.ChunkSize())
	}
	return x, nil
}

// NewPointID returns a fresh restore point id: UTC time and 24 random bits,
// so ids sort by creation time.
func NewPointID(t time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// SavePoint writes a restore point manifest durably. Every chunk and index it
// names must already be stored and synced.
func (r *Repo) SavePoint(p *RestorePoint) error {
	if p.Format == 0 {
		p.Format = ManifestFormat
	}
	if err := p.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	path := r.pointPath(p.ID)
	if _, err := r.fsys().Stat(path); err == nil {
		return fmt.Errorf("restore point %s already exists", p.ID)
	}
	if err := r.writeFileAtomic(path, append(b, '\n'), true); err != nil {
		return fmt.Errorf("save restore point %s: %w", p.ID, err)
	}
	return nil
}

// Point loads restore point id.
func (r *Repo) Point(id string) (*RestorePoint, error) {
	if !ValidPointID(id) {
		return nil, fmt.Errorf("restore point %q: %w (ids look like 20261121T230748Z-3f9a2c)", id, ErrNotFound)
	}
	b, err := durablefs.ReadFile(r.fsys(), r.pointPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("restore point %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("restore point %s: %w", id, err)
	}
	p, err := DecodeRestorePoint(b)
	if err != nil {
		return nil, fmt.Errorf("restore point %s: %w", id, err)
	}
	if p.ID != id {
		return nil, fmt.Errorf("restore point %s: manifest names itself %s", id, p.ID)
	}
	return p, nil
}

// Points loads every restore point, oldest first.
func (r *Repo) Points() ([]*RestorePoint, error) {
	names, err := r.listNames(filepath.Join(r.Dir, "points"), ".json")
	if err != nil {
		return nil, err
	}
	var out []*RestorePoint
	for _, n := range names {
		p, err := r.Point(n)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// LatestPoint returns the newest restore point of vm, or ErrNotFound.
func (r *Repo) LatestPoint(vm string) (*RestorePoint, error) {
	pts, err := r.Points()
	if err != nil {
		return nil, err
	}
	for i := len(pts) - 1; i >= 0; i-- {
		if pts[i].VM.Name == vm {
			return pts[i], nil
		}
	}
	return nil, fmt.Errorf("vm %q has no restore point: %w", vm, ErrNotFound)
}

// SaveApp records (or replaces) an app manifest.
func (r *Repo) SaveApp(a *App) error {
	if a.Format == 0 {
		a.Format = ManifestFormat
	}
	if err := a.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	if err := r.writeFileAtomic(r.appPath(a.Name), append(b, '\n'), true); err != nil {
		return fmt.Errorf("save app %s: %w", a.Name, err)
	}
	return nil
}

// App loads the app named name.
func (r *Repo) App(name string) (*App, error) {
	if ValidName(name) != nil {
		return nil, fmt.Errorf("app %q: %w", name, ErrNotFound)
	}
	b, err := durablefs.ReadFile(r.fsys(), r.appPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("app %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("app %q: %w", name, err)
	}
	a, err := DecodeApp(b)
	if err != nil {
		return nil, fmt.Errorf("app %q: %w", name, err)
	}
	return a, nil
}

// Apps loads every app, by name.
func (r *Repo) Apps() ([]*App, error) {
	names, err := r.listNames(filepath.Join(r.Dir, "apps"), ".json")
	if err != nil {
		return nil, err
	}
	var out []*App
	for _, n := range names {
		a, err := r.App(n)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func (r *Repo) listNames(dir, suffix string) ([]string, error) {
	ents, err := r.fsys().ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, suffix) && !e.IsDir() {
			out = append(out, strings.TrimSuffix(n, suffix))
		}
	}
	sort.Strings(out)
	return out, nil
}

// writeFileAtomic writes b to a temporary file in the repository's tmp
// folder (named after this process, see removeStaleTemp) and renames it to
// path; when durable, it fsyncs the file before and path's folder after.
func (r *Repo) writeFileAtomic(path string, b []byte, durable bool) error {
	return writeFileAtomic(r.fsys(), r.tmpDir(), path, b, durable)
}

func writeFileAtomic(fsys durablefs.FS, tmp, path string, b []byte, durable bool) error {
	return durablefs.Replace(fsys, path, b, 0o600, durablefs.Options{
		TempDir: tmp, TempPrefix: strconv.Itoa(os.Getpid()) + "-", NoSync: !durable})
}

// removeStaleTemp deletes temporary files left by writers that are no longer
// running (their pid prefixes the name). Live writers' files are kept.
func (r *Repo) removeStaleTemp() {
	ents, err := r.fsys().ReadDir(r.tmpDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		pidStr, _, ok := strings.Cut(e.Name(), "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil {
			continue
		}
		if pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
			r.fsys().Remove(filepath.Join(r.tmpDir(), e.Name()))
		}
	}
}
