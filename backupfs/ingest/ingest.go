// Package ingest imports a VM folder (a .vmx, its .nvram and its disks, as
// found on a datastore) into a repository as a new restore point.
//
// Disks are read in chunk-size pieces; pieces the source reports as holes
// or that read as zeros are recorded as zero chunks without hashing; the rest
// are hashed and, when the repository lacks them, compressed and stored, on
// all cores. A second import of the same VM therefore stores only what
// changed. Nothing names a chunk before the chunk is on stable storage, and
// the manifest is written last: an import that fails or is killed leaves no
// restore point, only unreferenced chunks that the next import reuses.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/vmfolder"
)

// MaxInlineFile is the largest config file kept inside the manifest.
const MaxInlineFile = 1 << 20

// Options tune an import.
type Options struct {
	VM string // name of the VM in the repository; default: the vmx displayName
	// App is the vApp the VM belongs to. The VM becomes a member of the app
	// (created when missing, the VM in a startup group of its own after the
	// others). Empty records the app of the VM's previous restore point and
	// changes no app.
	App string
	// RawDisks are disk files (names as the vmx gives them, or their base
	// names) to read as raw images whatever their names. Without it only
	// files named .raw or .img are raw. A name that matches no disk is an
	// error.
	RawDisks []string
	Workers  int // hashing and compression goroutines; default GOMAXPROCS
	// Progress, when set, is called about five times a second and once at
	// the end with the bytes processed so far and the total.
	Progress func(Progress)
	Logger   *slog.Logger
	Now      func() time.Time // for tests
}

// Progress is a snapshot of a running import.
type Progress struct {
	Disk           string
	Done, Total    int64 // logical bytes (holes included)
	BytesRead      int64
	BytesNew       int64
	ElapsedSeconds float64
}

// Source is a disk to import, whatever its on-disk format.
type Source interface {
	io.ReaderAt
	Size() int64
	// HasData reports whether [off, off+n) may hold non-zero bytes.
	HasData(off, n int64) (bool, error)
}

// Import reads the VM folder at dir and records it as a new restore point.
func Import(ctx context.Context, r *repo.Repo, dir string, opts Options) (*repo.RestorePoint, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	start := opts.Now()
	f, err := vmfolder.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	id := f.Identity
	if opts.VM != "" {
		id.Name = opts.VM
	}
	if err := repo.ValidName(id.Name); err != nil {
		return nil, fmt.Errorf("import %s: vm %w (pass --vm NAME)", dir, err)
	}
	if opts.App != "" {
		if err := repo.ValidName(opts.App); err != nil {
			return nil, fmt.Errorf("import %s: app %w", dir, err)
		}
	}
	p := &repo.RestorePoint{
		Format:  repo.ManifestFormat,
		ID:      repo.NewPointID(start),
		VM:      id,
		App:     opts.App,
		Created: start.UTC().Truncate(time.Second),
		NICs:    f.NICs,
	}
	if prev, err := r.LatestPoint(id.Name); err == nil {
		p.Parent = prev.ID
		// Points are ordered by their creation second: a second import within
		// the same second must still come after its parent, or "latest"
		// would pick between them by chance.
		if !p.Created.After(prev.Created) {
			p.Created = prev.Created.Add(time.Second)
			p.ID = repo.NewPointID(p.Created)
		}
		if p.App == "" {
			p.App = prev.App // membership is kept until changed
		}
	} else if !errors.Is(err, repo.ErrNotFound) {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}

	// Open every disk before writing anything: a broken input fails here.
	type openDisk struct {
		ref vmfolder.DiskRef
		src vmfolder.SourceDisk
	}
	var disks []openDisk
	defer func() {
		for _, d := range disks {
			d.src.Close()
		}
	}()
	names := map[string]bool{}
	rawWanted := map[string]bool{}
	for _, n := range opts.RawDisks {
		found := false
		for _, ref := range f.Disks {
			found = found || n == filepath.Base(ref.Path) || n == ref.Path || n == ref.Name
		}
		if !found {
			var have []string
			for _, ref := range f.Disks {
				have = append(have, filepath.Base(ref.Path))
			}
			return nil, fmt.Errorf("import %s: raw disk %q: the vmx names no such disk (its disks: %s)", dir, n, strings.Join(have, ", "))
		}
		rawWanted[n] = true
	}
	for _, ref := range f.Disks {
		if err := repo.ValidName(ref.Name); err != nil {
			return nil, fmt.Errorf("import %s: disk %s (%s): %w", dir, ref.Controller, ref.Path, err)
		}
		if names[ref.Name] {
			return nil, fmt.Errorf("import %s: two disks are named %q: rename one", dir, ref.Name)
		}
		names[ref.Name] = true
		open := vmfolder.OpenDisk
		for _, n := range []string{filepath.Base(ref.Path), ref.Path, ref.Name} {
			if rawWanted[n] {
				open = vmfolder.OpenRawDisk
			}
		}
		src, err := open(ref.Path)
		if err != nil {
			return nil, fmt.Errorf("import %s: disk %s: %w", dir, ref.Controller, err)
		}
		disks = append(disks, openDisk{ref, src})
		if src.Size() <= 0 || src.Size() > repo.MaxDiskSize {
			return nil, fmt.Errorf("import %s: disk %s (%s): size %d out of range", dir, ref.Controller, ref.Path, src.Size())
		}
	}

	var total int64
	for _, d := range disks {
		total += d.src.Size()
	}
	w := &writer{r: r, opts: opts, total: total, start: start}
	stopProgress := w.reportProgress()
	defer stopProgress()

	for _, path := range f.ConfigFiles {
		cf, err := w.configFile(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("import %s: %w", dir, err)
		}
		p.Files = append(p.Files, cf)
	}
	indexes := make([]*repo.Index, len(disks))
	for i, d := range disks {
		w.disk.Store(d.ref.Name)
		idx, err := w.store(ctx, d.src, d.src.Size())
		if err != nil {
			return nil, fmt.Errorf("import %s: disk %s (%s): %w", dir, d.ref.Controller, filepath.Base(d.ref.Path), err)
		}
		indexes[i] = idx
	}
	// Chunks must be on stable storage before anything names them.
	if err := r.Sync(); err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	for i, d := range disks {
		digest, err := r.PutIndex(indexes[i])
		if err != nil {
			return nil, fmt.Errorf("import %s: %w", dir, err)
		}
		p.Disks = append(p.Disks, repo.Disk{
			Name: d.ref.Name, Controller: d.ref.Controller, Adapter: d.ref.Adapter,
			Size: d.src.Size(), Index: digest, SourceFormat: d.src.Format(),
		})
	}
	for i := range p.Files {
		if x := w.fileIndexes[p.Files[i].Name]; x != nil {
			digest, err := r.PutIndex(x)
			if err != nil {
				return nil, fmt.Errorf("import %s: %w", dir, err)
			}
			p.Files[i].Index = digest
		}
	}
	p.Stats = repo.IngestStats{
		BytesLogical: total, BytesRead: w.read.Load(), BytesNew: w.new.Load(),
		BytesStored: w.stored.Load(), ChunksTotal: w.chunks.Load(), ChunksNew: w.newChunks.Load(),
	}
	if err := r.SavePoint(p); err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	if opts.App != "" {
		if _, _, err := JoinApp(r, p.App, p.VM.Name, start); err != nil {
			return p, fmt.Errorf("import %s: restore point %s is stored, but %w", dir, p.ID, err)
		}
	}
	stopProgress()
	opts.Logger.Info("restore point created", "vm", p.VM.Name, "point", p.ID,
		"bytes_read", p.Stats.BytesRead, "bytes_new", p.Stats.BytesNew, "duration", time.Since(start))
	return p, nil
}

type writer struct {
	r     *repo.Repo
	opts  Options
	total int64
	start time.Time

	disk                                       atomic.Value
	done, read, new, stored, chunks, newChunks atomic.Int64
	fileIndexes                                map[string]*repo.Index
}

func (w *writer) snapshot() Progress {
	name, _ := w.disk.Load().(string)
	return Progress{Disk: name, Done: w.done.Load(), Total: w.total, BytesRead: w.read.Load(),
		BytesNew: w.new.Load(), ElapsedSeconds: time.Since(w.start).Seconds()}
}

func (w *writer) reportProgress() (stop func()) {
	if w.opts.Progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				w.opts.Progress(w.snapshot())
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
			w.opts.Progress(w.snapshot())
		})
	}
}

// configFile keeps a small file inline and chunks a large one.
func (w *writer) configFile(ctx context.Context, path string) (repo.ConfigFile, error) {
	name := filepath.Base(path)
	fh, err := os.Open(path)
	if err != nil {
		return repo.ConfigFile{}, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return repo.ConfigFile{}, err
	}
	if fi.Size() <= MaxInlineFile {
		b, err := io.ReadAll(io.LimitReader(fh, MaxInlineFile+1))
		if err != nil {
			return repo.ConfigFile{}, fmt.Errorf("%s: %w", name, err)
		}
		if b == nil {
			b = []byte{}
		}
		return repo.ConfigFile{Name: name, Size: int64(len(b)), Inline: b}, nil
	}
	idx, err := w.store(ctx, fileSource{fh, fi.Size()}, fi.Size())
	if err != nil {
		return repo.ConfigFile{}, fmt.Errorf("%s: %w", name, err)
	}
	if w.fileIndexes == nil {
		w.fileIndexes = map[string]*repo.Index{}
	}
	w.fileIndexes[name] = idx
	return repo.ConfigFile{Name: name, Size: fi.Size()}, nil
}

type fileSource struct {
	*os.File
	size int64
}

func (f fileSource) Size() int64                        { return f.size }
func (f fileSource) HasData(off, n int64) (bool, error) { return true, nil }

type piece struct {
	i   int
	buf []byte
}

// store cuts src into chunks, stores the new ones and returns the index.
// One goroutine reads in order; workers hash, compress and write.
func (w *writer) store(ctx context.Context, src Source, size int64) (*repo.Index, error) {
	cs := w.r.ChunkSize()
	idx := repo.NewIndex(cs, size)
	pool := sync.Pool{New: func() any { return make([]byte, cs) }}
	pieces := make(chan piece, 2*w.opts.Workers)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(pieces)
		for i := range idx.Chunks {
			if err := ctx.Err(); err != nil {
				return err
			}
			off, n := int64(i)*int64(cs), idx.ChunkLen(i)
			has, err := src.HasData(off, int64(n))
			if err != nil {
				return fmt.Errorf("offset %d: %w", off, err)
			}
			if !has {
				w.done.Add(int64(n))
				continue
			}
			buf := pool.Get().([]byte)[:n]
			if m, err := src.ReadAt(buf, off); m < n {
				if err == nil || errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("read at offset %d: %w", off, err)
			}
			w.read.Add(int64(n))
			select {
			case pieces <- piece{i, buf}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range w.opts.Workers {
		g.Go(func() error {
			for pc := range pieces {
				if !repo.IsZero(pc.buf) {
					d := repo.Sum(pc.buf)
					stored, wrote, err := w.r.PutChunk(d, pc.buf)
					if err != nil {
						return err
					}
					idx.Chunks[pc.i] = d
					w.chunks.Add(1)
					if wrote {
						w.newChunks.Add(1)
						w.new.Add(int64(len(pc.buf)))
						w.stored.Add(stored)
					}
				}
				w.done.Add(int64(len(pc.buf)))
				pool.Put(pc.buf[:cap(pc.buf)])
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return idx, nil
}

// JoinApp makes vm a member of app: it creates the app with vm alone when
// it does not exist, or adds vm in a startup group of its own after the
// others (powered on, powered off at stop). It reports whether anything
// changed; a VM already a member is left as the app definition says.
func JoinApp(r *repo.Repo, app, vm string, now time.Time) (*repo.App, bool, error) {
	a, err := r.App(app)
	switch {
	case errors.Is(err, repo.ErrNotFound):
		a = &repo.App{Format: repo.ManifestFormat, Name: app}
	case err != nil:
		return nil, false, fmt.Errorf("app %s: %w", app, err)
	}
	group := 0
	for _, m := range a.Members {
		if m.VM == vm {
			return a, false, nil
		}
		group = max(group, m.Group)
	}
	a.Members = append(a.Members, repo.AppMember{VM: vm, Group: group + 1, StartAction: "powerOn", StopAction: "powerOff"})
	a.Updated = now.UTC().Truncate(time.Second)
	if err := r.SaveApp(a); err != nil {
		return nil, false, fmt.Errorf("app %s: add member %s: %w", app, vm, err)
	}
	return a, true, nil
}
