package main

import (
	"encoding/json"
	"fmt"
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
	path := filepath.Join(dir, "catalog.db")
	if len(st.CopiedPoints)+len(st.CopiedApps) == 0 {
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	r, err := repo.Open(dir)
	if err != nil {
		return err
	}
	cat, err := catalog.Open(c.Context, path)
	if err != nil {
		return fmt.Errorf("target catalog %s: %w (run `rekindle catalog rebuild --repo %s`)", path, err, dir)
	}
	defer cat.Close()
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
