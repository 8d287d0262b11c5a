package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/backupfs/replicate"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/site"
)

func replicateCommands() []*cli.Command {
	return []*cli.Command{{
		Name: "replicate", Usage: "copy what another repository (the recovery site's) lacks: chunks first, site packages last",
		Description: "Example:\n  rekindle replicate --repo /srv/rekindle --to /mnt/dr/rekindle --watch --interval 5m",
		Flags: []cli.Flag{repoFlag, quietFlag, jsonFlag, lockWaitFlag,
			&cli.StringFlag{Name: "to", Required: true, Usage: "target repository folder (created with the source's settings when empty)"},
			&cli.StringFlag{Name: "to-catalog", Usage: "the target's catalog, where the copied points are recorded (default TARGET/catalog.db when it exists); a target that belongs to another catalog is refused"},
			&cli.BoolFlag{Name: "watch", Usage: "poll: copy again every --interval until interrupted (follows new backups and protect cycles; no change notification)"},
			&cli.DurationFlag{Name: "interval", Value: time.Minute, Usage: "with --watch, the polling interval: the wait between copies"},
			&cli.IntFlag{Name: "workers", Usage: "chunks copied at once (default: the number of CPUs)"}},
		Action: replicateCmd,
	}}
}

func replicateCmd(c *cli.Context) error {
	src, err := replicate.NewLocal(c.String("repo"))
	if err != nil {
		return err
	}
	dst, err := replicate.NewLocal(c.String("to"))
	if err != nil {
		return err
	}
	if src.Dir == dst.Dir {
		return usageErr("--to %s is the source repository", c.String("to"))
	}
	// The target's catalog must be the target's owner, checked before
	// anything is copied (a new target is claimed after its first copy).
	if cat, err := targetCatalog(c, dst.Dir); err != nil {
		return err
	} else if cat != nil {
		cat.Close()
	}
	// A prune of either repository makes the copy wait, as a backup does.
	src.LockWait, src.LockWaiting = lockWait(c)
	dst.LockWait, dst.LockWaiting = lockWait(c)
	quiet := c.Bool("quiet") || c.Bool("json")
	opts := replicate.Options{Workers: c.Int("workers"), SitePoints: func(b []byte) ([]string, error) {
		p, err := site.Decode(b)
		if err != nil {
			return nil, err
		}
		return p.Points(), nil
	}}
	once := func() (*replicate.Stats, error) {
		pr := newProgress("replicate", quiet)
		o := opts
		o.Progress = func(p replicate.Progress) { pr.update(p.Done, p.Total) }
		st, err := replicate.Copy(c.Context, src, dst, o)
		pr.finish()
		if st != nil {
			if cerr := indexReplica(c, dst.Dir, st); cerr != nil && err == nil {
				err = cerr
			}
		}
		return st, err
	}
	if !c.Bool("watch") {
		st, err := once()
		if st != nil {
			if perr := printReplicate(c, st, false); perr != nil {
				return perr
			}
		}
		return err
	}
	if c.Duration("interval") <= 0 {
		return usageErr("--interval %s: want a positive duration", c.Duration("interval"))
	}
	var last error
	replicate.Watch(c.Context, src, dst, c.Duration("interval"), opts, func(st *replicate.Stats, err error) {
		if st != nil {
			if cerr := indexReplica(c, dst.Dir, st); cerr != nil && err == nil {
				err = cerr
			}
		}
		last = err
		if st != nil {
			printReplicate(c, st, true)
		}
		if err != nil {
			slog.Error("replicate", "err", err)
		}
	})
	return last
}

// printReplicate renders one copy: with --json an indented object, or one
// compact object a line under --watch.
func printReplicate(c *cli.Context, st *replicate.Stats, watch bool) error {
	if c.Bool("json") {
		if watch {
			b, err := json.Marshal(st)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(os.Stdout, "%s\n", b)
			return err
		}
		return printJSON(os.Stdout, st)
	}
	fmt.Printf("replicated %s to %s: %d chunks, %d indexes, %d restore points, %d apps, %d site packages; %s in %.1fs (%s/s); %d chunks already there\n",
		st.Source, st.Target, st.Chunks, st.Indexes, st.Points, st.Apps, st.Sites,
		humanBytes(st.Bytes), st.Seconds, humanBytes(int64(st.BytesPerSecond)), st.ChunksPresent)
	return nil
}

// indexReplica records the points and apps a copy wrote in the target's
// catalog when it has one (a recovery-site `rekindle serve` then sees them
// without a rebuild); a target without one builds it when first opened.
func indexReplica(c *cli.Context, dir string, st *replicate.Stats) error {
	if len(st.CopiedPoints)+len(st.CopiedApps) == 0 {
		return nil
	}
	cat, err := targetCatalog(c, dir)
	if err != nil || cat == nil {
		return err
	}
	defer cat.Close()
	r, err := repo.Open(dir)
	if err != nil {
		return err
	}
	for _, id := range st.CopiedPoints {
		p, err := r.Point(id)
		if err == nil {
			err = cat.IndexPoint(c.Context, p)
		}
		if err != nil {
			return fmt.Errorf("restore point %s is in the target, but its catalog could not record it: %w (run `rekindle catalog rebuild --repo %s`)", id, err, dir)
		}
	}
	for _, n := range st.CopiedApps {
		a, err := r.App(n)
		if err == nil {
			err = cat.IndexApp(c.Context, a)
		}
		if err != nil {
			return fmt.Errorf("app %s is in the target, but its catalog could not record it: %w (run `rekindle catalog rebuild --repo %s`)", n, err, dir)
		}
	}
	return nil
}

// targetCatalog opens the catalog that records the target's points,
// claimed for the target as every command claims its repository
// (catalog.Claim): --to-catalog, else TARGET/catalog.db when it exists.
// nil: the target has no catalog yet (nor owner elsewhere), and builds one
// when first opened. A target that belongs to another catalog is refused,
// naming the owner and what to give instead.
func targetCatalog(c *cli.Context, dir string) (*catalog.Catalog, error) {
	if _, err := os.Stat(filepath.Join(dir, "config.json")); errors.Is(err, fs.ErrNotExist) {
		return nil, nil // a new target: the copy creates it
	}
	r, err := repo.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("target %w", err)
	}
	owner, err := r.CatalogOwner()
	if err != nil {
		return nil, err
	}
	refuse := func(path string) error {
		return fmt.Errorf("%w: target %s records its restore sessions in %s, not in %s: give --to-catalog %s so the copied points are recorded there; "+
			"if that catalog is gone for good, `rekindle catalog rebuild --repo %s --catalog %s --take-over` makes %s the target's",
			catalog.ErrOtherCatalog, r.Dir, owner, path, catalog.OwnerPath(r, owner), r.Dir, path, path)
	}
	path := c.String("to-catalog")
	if path == "" {
		path = filepath.Join(r.Dir, "catalog.db")
		if _, err := os.Stat(path); err != nil {
			if owner != nil && catalog.OwnerPath(r, owner) != path {
				return nil, refuse(path)
			}
			return nil, nil
		}
	}
	cat, err := catalog.Open(c.Context, path)
	if err != nil {
		return nil, fmt.Errorf("target catalog %s: %w (run `rekindle catalog rebuild --repo %s`)", path, err, r.Dir)
	}
	if err := cat.Claim(c.Context, r, false); err != nil {
		discardRefused(cat)
		if errors.Is(err, catalog.ErrOtherCatalog) && owner != nil {
			return nil, refuse(path)
		}
		return nil, err
	}
	if cat.Created() {
		if _, err := cat.Rebuild(c.Context, r); err != nil {
			cat.Close()
			return nil, fmt.Errorf("new catalog %s: fill from the target %s: %w", path, r.Dir, err)
		}
	}
	return cat, nil
}
