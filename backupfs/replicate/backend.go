package replicate

import (
	"context"
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
	"sync"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/internal/durable"
)

// Kind is a class of repository object, named as its folder.
type Kind string

// The kinds in the order replication writes them.
const (
	Chunks  Kind = "chunks"
	Indexes Kind = "indexes"
	Points  Kind = "points"
	Apps    Kind = "apps"
	Sites   Kind = "sites"
)

// Object is one listed object: its name (a digest in hex for chunks and
// indexes, the id or name for manifests) and its stored size in bytes.
type Object struct {
	Name string
	Size int64
}

// Unlocker releases a lock a Backend took (*repo.RepoLock is one).
type Unlocker interface{ Unlock() error }

// Backend is a repository's storage as replication sees it: named objects
// of a few kinds, written atomically, made durable by Flush. Local (a
// folder) is the one there is; an object store or a remote rekindle server
// implements the same methods (see docs/repository-format.md,
// "Replication").
type Backend interface {
	// String names the repository for messages.
	String() string
	// Config reads the repository's config; it wraps repo.ErrNotRepository
	// when there is none.
	Config(ctx context.Context) (*repo.Config, error)
	// Create makes an empty repository with cfg.
	Create(ctx context.Context, cfg repo.Config) error
	// Lock takes the repository's shared lock for purpose, so prune cannot
	// delete while it is held.
	Lock(ctx context.Context, purpose string) (Unlocker, error)
	// List lists every object of kind.
	List(ctx context.Context, kind Kind) ([]Object, error)
	// Read returns an object's stored bytes; it wraps repo.ErrNotFound.
	Read(ctx context.Context, kind Kind, name string) ([]byte, error)
	// Write stores data as the object: atomically (a reader sees all of it
	// or nothing), but durable only once Flush returns.
	Write(ctx context.Context, kind Kind, name string, data []byte) error
	// Flush makes every object written so far durable.
	Flush(ctx context.Context) error
}

// Local is a repository in a folder, written through a durable.FS.
type Local struct {
	Dir string
	// FS is the filesystem (nil means the operating system's). Locks are
	// taken through package repo and so need the operating system's.
	FS durable.FS
	// LockWait and LockWaiting are what Lock gives the repository (see
	// repo.Repo's fields of those names): how long its shared lock waits
	// for a prune's exclusive one, and whom to tell meanwhile.
	LockWait    time.Duration
	LockWaiting func(holder repo.LockInfo, wait time.Duration)

	mu      sync.Mutex
	pending []string            // files written since the last Flush
	dirs    map[string]struct{} // folders whose entries changed since then
	made    map[string]struct{} // folders known to exist
}

// NewLocal returns the Local backend of the repository folder dir.
func NewLocal(dir string) (*Local, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return &Local{Dir: abs}, nil
}

func (l *Local) String() string { return l.Dir }

func (l *Local) fs() durable.FS {
	if l.FS == nil {
		return durable.OS()
	}
	return l.FS
}

func (l *Local) path(kind Kind, name string) string {
	switch kind {
	case Chunks, Indexes:
		return filepath.Join(l.Dir, string(kind), name[:2], name)
	default:
		return filepath.Join(l.Dir, string(kind), name+".json")
	}
}

// validName refuses names that could escape the object's folder.
func validName(kind Kind, name string) error {
	switch kind {
	case Chunks, Indexes:
		if _, err := repo.ParseDigest(name); err != nil {
			return fmt.Errorf("%s name: %w", kind, err)
		}
	case Points:
		if !repo.ValidPointID(name) {
			return fmt.Errorf("restore point id %q malformed", name)
		}
	case Apps:
		if err := repo.ValidName(name); err != nil {
			return err
		}
	case Sites:
		if !repo.ValidSitePackageID(name) {
			return fmt.Errorf("site package id %q malformed", name)
		}
	default:
		return fmt.Errorf("object kind %q unknown", kind)
	}
	return nil
}

func (l *Local) Config(ctx context.Context) (*repo.Config, error) {
	b, err := durable.ReadFile(l.fs(), filepath.Join(l.Dir, "config.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("repository %s: %w", l.Dir, repo.ErrNotRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", l.Dir, err)
	}
	var c repo.Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("repository %s: config.json: %w", l.Dir, err)
	}
	if c.Format != repo.FormatName || c.Version < 1 || c.Version > repo.FormatVersion {
		return nil, fmt.Errorf("repository %s: config.json: format %q version %d is not one this rekindle reads", l.Dir, c.Format, c.Version)
	}
	return &c, nil
}

// Create writes the layout folders and config.json durably (config last:
// a folder without it is not a repository yet).
func (l *Local) Create(ctx context.Context, cfg repo.Config) error {
	for _, d := range []string{"chunks", "indexes", "points", "apps", "sites", "tmp", "locks"} {
		if err := durable.MkdirAll(l.fs(), filepath.Join(l.Dir, d), 0o755); err != nil {
			return fmt.Errorf("create repository %s: %w", l.Dir, err)
		}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.Replace(l.fs(), filepath.Join(l.Dir, "config.json"), append(b, '\n'), 0o644, l.tempOpts(false)); err != nil {
		return fmt.Errorf("create repository %s: %w", l.Dir, err)
	}
	return nil
}

func (l *Local) Lock(ctx context.Context, purpose string) (Unlocker, error) {
	r, err := repo.Open(l.Dir)
	if err != nil {
		return nil, err
	}
	r.LockWait, r.LockWaiting = l.LockWait, l.LockWaiting
	return r.Lock(ctx, repo.LockShared, purpose)
}

func (l *Local) List(ctx context.Context, kind Kind) ([]Object, error) {
	root := filepath.Join(l.Dir, string(kind))
	var out []Object
	add := func(dir string) error {
		ents, err := l.fs().ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %s of %s: %w", kind, l.Dir, err)
		}
		for _, e := range ents {
			name := e.Name()
			if e.IsDir() || strings.Contains(name, ".tmp-") {
				continue
			}
			if kind != Chunks && kind != Indexes {
				var ok bool
				if name, ok = strings.CutSuffix(name, ".json"); !ok {
					continue
				}
			}
			if validName(kind, name) != nil {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			out = append(out, Object{Name: name, Size: fi.Size()})
		}
		return nil
	}
	if kind == Chunks || kind == Indexes {
		ents, err := l.fs().ReadDir(root)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("list %s of %s: %w", kind, l.Dir, err)
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if e.IsDir() && len(e.Name()) == 2 {
				if err := add(filepath.Join(root, e.Name())); err != nil {
					return nil, err
				}
			}
		}
	} else if err := add(root); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (l *Local) Read(ctx context.Context, kind Kind, name string) ([]byte, error) {
	if err := validName(kind, name); err != nil {
		return nil, err
	}
	b, err := durable.ReadFile(l.fs(), l.path(kind, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s %s of %s: %w", kind, name, l.Dir, repo.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s of %s: %w", kind, name, l.Dir, err)
	}
	return b, nil
}

// tempOpts puts temporary files in the repository's tmp/ named after this
// process, as package repo does, so an interrupted copy's leftovers are
// removed by the next opener.
func (l *Local) tempOpts(noSync bool) durable.Options {
	return durable.Options{TempDir: filepath.Join(l.Dir, "tmp"), TempPrefix: strconv.Itoa(os.Getpid()) + "-", NoSync: noSync}
}

// Write replaces the object without syncing it and remembers it for Flush:
// one pass of fsyncs after a batch costs far less than one per write.
func (l *Local) Write(ctx context.Context, kind Kind, name string, data []byte) error {
	if err := validName(kind, name); err != nil {
		return err
	}
	p := l.path(kind, name)
	dir := filepath.Dir(p)
	l.mu.Lock()
	_, made := l.made[dir]
	l.mu.Unlock()
	if !made {
		if err := durable.MkdirAll(l.fs(), dir, 0o755); err != nil {
			return fmt.Errorf("write %s %s to %s: %w", kind, name, l.Dir, err)
		}
	}
	if err := durable.Replace(l.fs(), p, data, 0o644, l.tempOpts(true)); err != nil {
		return fmt.Errorf("write %s %s to %s: %w", kind, name, l.Dir, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.made == nil {
		l.made, l.dirs = map[string]struct{}{}, map[string]struct{}{}
	}
	l.made[dir] = struct{}{}
	l.dirs[dir] = struct{}{}
	l.pending = append(l.pending, p)
	return nil
}

// Flush makes every file written since the last Flush durable, and its
// name: one syncfs where the FS has it, else an fsync per file and folder.
func (l *Local) Flush(ctx context.Context) error {
	l.mu.Lock()
	files, dirs := l.pending, l.dirs
	l.pending, l.dirs = nil, map[string]struct{}{}
	l.mu.Unlock()
	if len(files) == 0 && len(dirs) == 0 {
		return nil
	}
	if _, ok := l.fs().(interface{ SyncAll(string) error }); ok {
		// One syncfs instead of an fsync per file and folder.
		if err := durable.SyncAll(l.fs(), l.Dir); err != nil {
			return fmt.Errorf("flush %s: %w", l.Dir, err)
		}
		return nil
	}
	for _, p := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := l.fs().OpenFile(p, os.O_RDONLY, 0)
		if err == nil {
			err = f.Sync()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return fmt.Errorf("flush %s: %w", l.Dir, err)
		}
	}
	for d := range dirs {
		if err := durable.SyncDir(l.fs(), d); err != nil {
			return fmt.Errorf("flush %s: %w", l.Dir, err)
		}
	}
	return nil
}

// newConfig is the config of a fresh replica of src: the same settings
// under a new id.
func newConfig(src repo.Config) (repo.Config, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return repo.Config{}, err
	}
	src.ID = hex.EncodeToString(id)
	src.Created = time.Now().UTC().Truncate(time.Second)
	return src, nil
}
