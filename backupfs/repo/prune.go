package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// DeletePoint removes restore point id's manifest: the point is gone,
// its indexes and chunks stay until Prune finds nothing else uses them.
// Removing one file is atomic, so a crash leaves the point whole or gone.
func (r *Repo) DeletePoint(id string) error {
	if !ValidPointID(id) {
		return fmt.Errorf("restore point %q: %w", id, ErrNotFound)
	}
	if err := r.fsys().Remove(r.pointPath(id)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore point %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("forget restore point %s: %w", id, err)
	}
	if err := durablefs.SyncDir(r.fsys(), filepath.Join(r.Dir, "points")); err != nil {
		return fmt.Errorf("forget restore point %s: %w", id, err)
	}
	return nil
}

// PruneOptions tune Prune.
type PruneOptions struct {
	DryRun bool
	// Beside is the lock of the `serve` this prune runs in, when it runs in
	// one (a job's retention): the prune's exclusive lock then does not
	// count that lock as a conflict, while every other holder (a backup, an
	// import, another process) still makes it wait or fail. The server's
	// sessions pin their points through the catalog, so forget keeps them,
	// and prune only removes what no remaining point names.
	Beside *RepoLock
	// Progress, when set, is called after each object removed (or, in a dry
	// run, found removable) with the kind ("index" or "chunk") and digest.
	Progress func(kind string, d Digest)
}

// PruneReport is what Prune removed (or would remove).
type PruneReport struct {
	Points         int           `json:"points"`
	IndexesKept    int           `json:"indexes_kept"`
	IndexesRemoved int           `json:"indexes_removed"`
	ChunksKept     int           `json:"chunks_kept"`
	ChunksRemoved  int           `json:"chunks_removed"`
	BytesRemoved   int64         `json:"bytes_removed"` // stored (compressed) bytes
	DryRun         bool          `json:"dry_run"`
	Duration       time.Duration `json:"-"` // MarshalJSON writes duration_s
}

// Prune deletes every index and chunk no restore point references. It holds
// the exclusive lock, so no backup, import or server runs meanwhile: an
// object written but not yet named by a manifest can only belong to a
// writer that is gone. The order (see docs/repository-format.md, "Prune"):
// read every manifest and every index they name, refusing to go on if any
// does not read (deleting with an incomplete picture could remove what a
// point needs); then remove unreferenced indexes, then unreferenced chunks.
// Prune only ever removes objects nothing references, so a kill at any
// moment leaves every point whole; the next prune removes the rest.
func (r *Repo) Prune(ctx context.Context, opts PruneOptions) (*PruneReport, error) {
	start := time.Now()
	beside := ""
	if opts.Beside != nil {
		if err := opts.Beside.Check(); err != nil {
			return nil, err
		}
		beside = opts.Beside.info.ID
	}
	lock, err := r.lock(ctx, LockExclusive, "prune", beside, 0)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	rep := &PruneReport{DryRun: opts.DryRun}
	points, err := r.Points()
	if err != nil {
		return nil, fmt.Errorf("prune: a restore point does not read, nothing removed (run `rekindle verify`): %w", err)
	}
	rep.Points = len(points)
	indexes := map[Digest]bool{}
	chunks := map[Digest]bool{}
	for _, p := range points {
		var ds []Digest
		for _, d := range p.Disks {
			ds = append(ds, d.Index)
		}
		for _, f := range p.Files {
			if !f.Index.IsZero() {
				ds = append(ds, f.Index)
			}
		}
		for _, d := range ds {
			if indexes[d] {
				continue
			}
			x, err := r.LoadIndex(d)
			if err != nil {
				return nil, fmt.Errorf("prune: restore point %s: %w; nothing removed (run `rekindle verify`)", p.ID, err)
			}
			indexes[d] = true
			for _, c := range x.Chunks {
				if !c.IsZero() {
					chunks[c] = true
				}
			}
		}
	}
	var mu sync.Mutex // guards rep and orders Progress calls
	remove := func(kind, dir string, keep map[Digest]bool, kept, removed *int) error {
		// The folders' garbage is removed by pruneWorkers at once, one
		// folder each: an unlink of a synced file waits on the
		// filesystem's journal (and its discards), and those waits overlap
		// (a profile shows a prune's time in unlinkat, not on the CPU).
		folders, err := r.objectFolders(filepath.Join(r.Dir, dir))
		if err != nil {
			return err
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(pruneWorkers)
		for _, folder := range folders {
			g.Go(func() error {
				if err := gctx.Err(); err != nil {
					return err
				}
				ents, err := r.fsys().ReadDir(folder)
				if err != nil {
					return err
				}
				var garbage []os.DirEntry
				nkept := 0
				for _, e := range ents {
					name, frames := strings.CutSuffix(e.Name(), ".frames")
					d, err := ParseDigest(name)
					if err != nil || e.IsDir() {
						continue
					}
					if frames && kind == "index" {
						// An index's frame index goes with it (or is left
						// over from a crash after its index went).
						if !keep[d] && !opts.DryRun {
							if err := r.fsys().Remove(filepath.Join(folder, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
								return fmt.Errorf("prune: remove the frame index of index %s: %w", d, err)
							}
						}
						continue
					}
					if frames {
						continue
					}
					if keep[d] {
						nkept++
					} else {
						garbage = append(garbage, e)
					}
				}
				mu.Lock()
				*kept += nkept
				mu.Unlock()
				if len(garbage) == 0 {
					return nil
				}
				// Before each folder's deletions: stop if another process
				// judged the lock stale and took the repository.
				if err := lock.Check(); err != nil {
					return err
				}
				for _, e := range garbage {
					if err := gctx.Err(); err != nil {
						return err
					}
					d, _ := ParseDigest(e.Name())
					path := filepath.Join(folder, e.Name())
					fi, err := e.Info()
					if err != nil {
						continue // gone meanwhile
					}
					if !opts.DryRun {
						if err := r.fsys().Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
							return fmt.Errorf("prune: remove %s %s: %w", kind, d, err)
						}
						if kind == "chunk" {
							// A chunk file kept open would keep its blocks
							// (and be read if the chunk is stored again).
							r.files.forget(d)
						}
					}
					mu.Lock()
					*removed++
					rep.BytesRemoved += fi.Size()
					if opts.Progress != nil {
						opts.Progress(kind, d)
					}
					mu.Unlock()
				}
				return nil
			})
		}
		return g.Wait()
	}
	// Every unreferenced index goes before any chunk.
	if err := remove("index", "indexes", indexes, &rep.IndexesKept, &rep.IndexesRemoved); err != nil {
		return rep, err
	}
	if err := remove("chunk", "chunks", chunks, &rep.ChunksKept, &rep.ChunksRemoved); err != nil {
		return rep, err
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// pruneWorkers is how many object folders Prune empties at once.
const pruneWorkers = 8

// objectFolders lists the object folders under dir (<aa>, two hex digits).
func (r *Repo) objectFolders(dir string) ([]string, error) {
	subs, err := r.fsys().ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range subs {
		if s.IsDir() && len(s.Name()) == 2 {
			out = append(out, filepath.Join(dir, s.Name()))
		}
	}
	return out, nil
}

// MarshalJSON writes the duration in seconds (docs/json.md).
func (r PruneReport) MarshalJSON() ([]byte, error) {
	type plain PruneReport
	return json.Marshal(struct {
		plain
		DurationSeconds float64 `json:"duration_s"`
	}{plain(r), r.Duration.Seconds()})
}
