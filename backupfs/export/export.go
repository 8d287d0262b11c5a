// Package export writes a restore point back out as the VM folder it was:
// its config files, and for each disk a monolithicFlat descriptor and a flat
// extent whose zero chunks are left as holes. It is the slow path for sites
// where no hypervisor can mount rekindle's share, and the reference every
// faster path is compared against.
package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/vmfolder"
)

// Options tune an export.
type Options struct {
	Cache   *repo.Cache
	Workers int
	// Progress is told the bytes of disk processed so far. Workers finish in any
	// order, but calls are serialized (never concurrent) and done never decreases,
	// so the callback needs no locking of its own.
	Progress func(done, total int64)
}

// progress serializes Options.Progress across the workers of an export.
type progress struct {
	mu    sync.Mutex
	fn    func(done, total int64)
	done  int64
	total int64
}

func (p *progress) add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if p.fn != nil {
		p.fn(p.done, p.total)
	}
}

// Export writes point p of r into dest, which must not exist or be empty.
// On failure it removes what it wrote.
func Export(ctx context.Context, r *repo.Repo, p *repo.RestorePoint, dest string, opts Options) (err error) {
	if opts.Cache == nil {
		opts.Cache = repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize(), Readahead: -1})
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if ents, err := os.ReadDir(dest); err == nil && len(ents) > 0 {
		return fmt.Errorf("export %s: %s is not empty", p.ID, dest)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("export %s: %w", p.ID, err)
	}
	var written []string
	defer func() {
		if err != nil {
			for _, f := range written {
				os.Remove(f)
			}
		}
	}()
	create := func(name string) (*os.File, error) {
		path := filepath.Join(dest, name)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			written = append(written, path)
		}
		return f, err
	}
	for _, cf := range p.Files {
		b, err := r.ReadFile(cf, opts.Cache)
		if err != nil {
			return fmt.Errorf("export %s: %w", p.ID, err)
		}
		f, err := create(cf.Name)
		if err != nil {
			return fmt.Errorf("export %s: %w", p.ID, err)
		}
		_, werr := f.Write(b)
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			return fmt.Errorf("export %s: %s: %w", p.ID, cf.Name, err)
		}
	}
	var total int64
	for _, d := range p.Disks {
		total += d.Size
	}
	prog := &progress{fn: opts.Progress, total: total}
	for _, d := range p.Disks {
		desc, err := create(d.Name + ".vmdk")
		if err != nil {
			return fmt.Errorf("export %s: %w", p.ID, err)
		}
		_, werr := desc.Write(vmfolder.FlatDescriptor(d.Name+"-flat.vmdk", d.Size, d.Adapter))
		if err := errors.Join(werr, desc.Close()); err != nil {
			return fmt.Errorf("export %s: %s.vmdk: %w", p.ID, d.Name, err)
		}
		if err := exportDisk(ctx, r, p, d, create, opts, prog); err != nil {
			return fmt.Errorf("export %s: disk %s: %w", p.ID, d.Name, err)
		}
	}
	return nil
}

func exportDisk(ctx context.Context, r *repo.Repo, p *repo.RestorePoint, d repo.Disk,
	create func(string) (*os.File, error), opts Options, prog *progress) error {
	dr, err := r.OpenDisk(d.Index, opts.Cache, fmt.Sprintf("restore point %s disk %s", p.ID, d.Name))
	if err != nil {
		return err
	}
	if dr.Size() != d.Size {
		return fmt.Errorf("index size %d, manifest says %d: %w", dr.Size(), d.Size, repo.ErrCorrupt)
	}
	f, err := create(d.Name + "-flat.vmdk")
	if err != nil {
		return err
	}
	defer f.Close()
	// Truncate first: chunks never written stay holes.
	if err := f.Truncate(d.Size); err != nil {
		return err
	}
	x := dr.Index()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Workers)
	for i, c := range x.Chunks {
		n := int64(x.ChunkLen(i))
		if c.IsZero() {
			prog.add(n)
			continue
		}
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			off := int64(i) * int64(x.ChunkSize)
			b := make([]byte, n)
			if _, err := dr.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if _, err := f.WriteAt(b, off); err != nil {
				return err
			}
			prog.add(n)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}
