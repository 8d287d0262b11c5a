package repo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

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
	Duration       time.Duration `json:"duration_ns"`
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
	lock, err := r.Lock(ctx, LockExclusive, "prune")
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
	remove := func(kind, dir string, keep map[Digest]bool, kept, removed *int) error {
		return r.walkObjects(filepath.Join(r.Dir, dir), func(path string, d Digest) error {
			if keep[d] {
				*kept++
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if (*removed)%256 == 0 {
				if err := lock.Check(); err != nil {
					return err
				}
			}
			fi, err := r.fsys().Stat(path)
			if err != nil {
				return nil // gone meanwhile
			}
			if !opts.DryRun {
				if err := r.fsys().Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("prune: remove %s %s: %w", kind, d, err)
				}
			}
			*removed++
			rep.BytesRemoved += fi.Size()
			if opts.Progress != nil {
				opts.Progress(kind, d)
			}
			return nil
		})
	}
	if err := remove("index", "indexes", indexes, &rep.IndexesKept, &rep.IndexesRemoved); err != nil {
		return rep, err
	}
	if err := remove("chunk", "chunks", chunks, &rep.ChunksKept, &rep.ChunksRemoved); err != nil {
		return rep, err
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// walkObjects calls fn for every object file under dir (<aa>/<digest>);
// files whose names are not digests are left alone.
func (r *Repo) walkObjects(dir string, fn func(path string, d Digest) error) error {
	subs, err := r.fsys().ReadDir(dir)
	if err != nil {
		return err
	}
	for _, s := range subs {
		if !s.IsDir() || len(s.Name()) != 2 {
			continue
		}
		ents, err := r.fsys().ReadDir(filepath.Join(dir, s.Name()))
		if err != nil {
			return err
		}
		for _, e := range ents {
			d, err := ParseDigest(e.Name())
			if err != nil || e.IsDir() {
				continue
			}
			if err := fn(filepath.Join(dir, s.Name(), e.Name()), d); err != nil {
				return err
			}
		}
	}
	return nil
}
