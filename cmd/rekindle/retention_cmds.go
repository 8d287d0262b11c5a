package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/retention"
	"github.com/rekindle/rekindle/orchestrator/site"
)

// retentionCommands are forget and prune.
func retentionCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name: "forget", Usage: "remove restore points a retention policy does not keep (then `rekindle prune` frees their chunks)",
			Flags: []cli.Flag{repoFlag, catalogFlag, jsonFlag, lockWaitFlag,
				&cli.StringSliceFlag{Name: "vm", Usage: "only this VM's points (repeatable; default every VM)"},
				&cli.IntFlag{Name: "keep-last", Usage: "keep the N newest points"},
				&cli.IntFlag{Name: "keep-hourly", Usage: "keep the newest point of each of the N newest hours with points"},
				&cli.IntFlag{Name: "keep-daily", Usage: "... of each of the N newest days"},
				&cli.IntFlag{Name: "keep-weekly", Usage: "... of each of the N newest ISO weeks"},
				&cli.IntFlag{Name: "keep-monthly", Usage: "... of each of the N newest months"},
				&cli.StringFlag{Name: "keep-within", Usage: "keep every point within this long of the VM's newest (e.g. 36h, 7d, 2w)"},
				&cli.BoolFlag{Name: "dry-run", Usage: "print what would go and why; change nothing"},
				&cli.BoolFlag{Name: "prune", Usage: "prune after forgetting"},
			},
			Action: forgetCmd,
		},
		{
			Name: "prune", Usage: "delete the chunks and indexes no restore point references (takes the repository's exclusive lock)",
			Flags:  []cli.Flag{repoFlag, jsonFlag, &cli.BoolFlag{Name: "dry-run", Usage: "count what would go; change nothing"}},
			Action: pruneCmd,
		},
	}
}

// parseWithin reads a duration that may also be in days (d) or weeks (w).
func parseWithin(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.Atoi(n)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("--keep-within %q: want e.g. 36h, 7d or 2w", s)
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--keep-within %q: want e.g. 36h, 7d or 2w", s)
	}
	return d, nil
}

// forgetReport is forget's --json: the policy applied and each point's fate.
type forgetReport struct {
	DryRun    bool                 `json:"dry_run"`
	Policy    retention.Policy     `json:"policy"`
	Decisions []retention.Decision `json:"decisions"`
}

// policyFrom reads the keep flags named prefix+"keep-..." that c has.
func policyFrom(c *cli.Context, prefix string) (retention.Policy, error) {
	within, err := parseWithin(c.String(prefix + "keep-within"))
	if err != nil {
		return retention.Policy{}, err
	}
	p := retention.Policy{Last: c.Int(prefix + "keep-last"), Hourly: c.Int(prefix + "keep-hourly"), Daily: c.Int(prefix + "keep-daily"),
		Weekly: c.Int(prefix + "keep-weekly"), Monthly: c.Int(prefix + "keep-monthly"), Within: within}
	return p, p.Validate()
}

func policyFromFlags(c *cli.Context) (retention.Policy, error) {
	p, err := policyFrom(c, "")
	if err != nil {
		return p, err
	}
	if p.Empty() {
		return p, fmt.Errorf("forget: no policy given: pass at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-within")
	}
	return p, nil
}

func forgetCmd(c *cli.Context) error {
	p, err := policyFromFlags(c)
	if err != nil {
		return &exitError{exitUsage, err.Error()}
	}
	r, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	o, err := site.ForgetOptions(c.Context, r, cat)
	if err != nil {
		return err
	}
	o.VMs, o.DryRun = c.StringSlice("vm"), c.Bool("dry-run")
	ds, err := retention.Forget(c.Context, r, p, o)
	if err != nil {
		return err
	}
	removed := 0
	for _, d := range ds {
		if !d.Keep {
			removed++
		}
	}
	if c.Bool("json") {
		if err := printJSON(os.Stdout, forgetReport{DryRun: c.Bool("dry-run"), Policy: p, Decisions: nonNil(ds)}); err != nil {
			return err
		}
	} else {
		var rows [][]string
		for _, d := range ds {
			action := "keep"
			if !d.Keep {
				action = "remove"
				if c.Bool("dry-run") {
					action = "would remove"
				}
			}
			rows = append(rows, []string{d.VM, d.ID, d.Created.UTC().Format(time.RFC3339), action, strings.Join(d.Reasons, "; ")})
		}
		table(os.Stdout, []string{"VM", "POINT", "CREATED", "ACTION", "WHY"}, rows)
		verb := "removed"
		if c.Bool("dry-run") {
			verb = "would remove"
		}
		fmt.Printf("%s %d of %d restore points", verb, removed, len(ds))
		if !c.Bool("dry-run") && removed > 0 && !c.Bool("prune") {
			fmt.Print("; `rekindle prune` frees their chunks")
		}
		fmt.Println()
	}
	if c.Bool("prune") && !c.Bool("dry-run") {
		return runPrune(c, r)
	}
	return nil
}

func pruneCmd(c *cli.Context) error {
	r, err := repo.Open(c.String("repo"))
	if err != nil {
		return err
	}
	return runPrune(c, r)
}

func runPrune(c *cli.Context, r *repo.Repo) error {
	rep, err := r.Prune(c.Context, repo.PruneOptions{DryRun: c.Bool("dry-run")})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, rep)
	}
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	fmt.Printf("prune: %s %d chunks and %d indexes (%s stored), kept %d chunks of %d restore points, in %s\n", verb,
		rep.ChunksRemoved, rep.IndexesRemoved, humanBytes(rep.BytesRemoved), rep.ChunksKept, rep.Points, rep.Duration.Round(time.Millisecond))
	return nil
}

// lockRepo takes a repository lock for the command, a shared one waiting
// --lock-wait for a prune (see waitForLocks); a conflict is exit status 1
// with the holder named.
func lockRepo(c *cli.Context, r *repo.Repo, kind, purpose string) (func(), error) {
	waitForLocks(c, r)
	l, err := r.Lock(c.Context, kind, purpose)
	if err != nil {
		return nil, err
	}
	return func() { l.Unlock() }, nil
}
