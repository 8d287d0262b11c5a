package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/retention"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/backupjob"
	"github.com/rekindle/rekindle/orchestrator/site"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
)

func protectCommands() []*cli.Command {
	return []*cli.Command{{
		Name: "protect", Usage: "protect a site: back up its VMs and record its virtual infrastructure as a site package",
		Subcommands: []*cli.Command{
			withConfig(&cli.Command{Name: "run", Usage: "run one protection cycle (recorded in the catalog: `rekindle protect list`)", Action: protectRunCmd,
				Flags: append(append([]cli.Flag{repoFlag, catalogFlag, jsonFlag,
					&cli.StringFlag{Name: "site", Required: true, Usage: "name of the primary site (letters, digits, ._-)"},
					&cli.StringSliceFlag{Name: "vm", Usage: "VM to protect (repeatable; default: every VM of the datacenter)"},
				}, protectBackupFlags("")...), vcFlags()...)}),
			{Name: "list", Usage: "the protect cycles of every site (or of --site), newest first: when, outcome, package, VMs backed up and failed", Action: protectListCmd,
				Flags: []cli.Flag{repoFlag, catalogFlag, jsonFlag,
					&cli.StringFlag{Name: "site", Usage: "only this protected site's cycles (default: every site's)"},
					&cli.IntFlag{Name: "limit", Value: 20, Usage: "how many cycles to show (0: all)"}}},
			{Name: "show", Usage: "one protect cycle with each VM's restore point or failure", ArgsUsage: "CYCLE-ID", Action: protectShowCmd,
				Flags: []cli.Flag{repoFlag, catalogFlag, jsonFlag}},
		},
	}}
}

// protectBackupFlags are the backup settings of a protect cycle: `protect
// run`'s, and serve's with prefix "protect-".
func protectBackupFlags(prefix string) []cli.Flag {
	env := func(n string) []string {
		if prefix == "" {
			return nil
		}
		return []string{"REKINDLE_" + strings.ToUpper(strings.ReplaceAll(prefix+n, "-", "_"))}
	}
	return []cli.Flag{
		&cli.IntFlag{Name: prefix + "parallel", Value: 2, Usage: "VMs backed up at once", EnvVars: env("parallel")},
		&cli.IntFlag{Name: prefix + "disk-parallel", Value: 2, Usage: "disks of one VM read at once", EnvVars: env("disk-parallel")},
		&cli.BoolFlag{Name: prefix + "quiesce", Usage: "quiesce the guest file systems (VMs with VMware Tools running)", EnvVars: env("quiesce")},
		&cli.IntFlag{Name: prefix + "keep-last", Usage: "retention after each cycle: keep the N newest points of each protected VM", EnvVars: env("keep-last")},
		&cli.IntFlag{Name: prefix + "keep-daily", Usage: "retention: keep the newest point of each of the N newest days", EnvVars: env("keep-daily")},
		&cli.StringFlag{Name: prefix + "keep-within", Usage: "retention: keep every point within this long of the VM's newest (36h, 7d, 2w)", EnvVars: env("keep-within")},
	}
}

// protectSettings reads protectBackupFlags(prefix) into base and the
// cycle's retention (nil when no keep flag is given).
func protectSettings(c *cli.Context, prefix string, base vcbackup.Config) (vcbackup.Config, *retention.Policy, error) {
	base.Parallel, base.DiskParallel, base.Quiesce = c.Int(prefix+"parallel"), c.Int(prefix+"disk-parallel"), c.Bool(prefix+"quiesce")
	if base.Parallel < 1 || base.DiskParallel < 1 {
		return base, nil, usageErr("--%sparallel %d, --%sdisk-parallel %d: want 1 or more", prefix, base.Parallel, prefix, base.DiskParallel)
	}
	p, err := policyFrom(c, prefix)
	if err != nil {
		return base, nil, usageErr("%v", err)
	}
	if p.Empty() {
		return base, nil, nil
	}
	return base, &p, nil
}

// vcBackuper adapts vCenter's backup engine to site.VMBackuper.
type vcBackuper struct{ cfg vcbackup.Config }

func (b vcBackuper) BackupVMs(ctx context.Context, names []string) (map[string]string, error) {
	rs, err := vcbackup.BackupVMs(ctx, b.cfg, names)
	out := map[string]string{}
	var errs []error
	for _, r := range rs {
		if r.Err != nil {
			errs = append(errs, &site.VMError{VM: r.VM, Err: r.Err})
		} else {
			out[r.VM] = r.PointID
		}
	}
	return out, errors.Join(append(errs, err)...)
}

func protectRunCmd(c *cli.Context) error {
	cfg, done, err := vcBackupConfig(c)
	if err != nil {
		return err
	}
	defer done()
	cfg, keep, err := protectSettings(c, "", cfg)
	if err != nil {
		return err
	}
	var dcs []string
	if dc := c.String("datacenter"); dc != "" {
		dcs = []string{dc}
	}
	p, err := site.Protect(c.Context, cfg.Client, cfg.Repo, vcBackuper{cfg},
		site.ProtectOptions{ExtractOptions: site.ExtractOptions{Site: c.String("site"), Datacenters: dcs}, VMs: c.StringSlice("vm"),
			History: cfg.Catalog, Trigger: "manual", Retention: keep})
	if p == nil {
		return err
	}
	if c.Bool("json") {
		if perr := printJSON(os.Stdout, p); perr != nil {
			return perr
		}
	} else {
		vms := 0
		for _, dc := range p.Datacenters {
			vms += len(dc.VMs)
		}
		fmt.Printf("site package %s: %d datacenters, %d VMs, %d protected\n", p.ID, len(p.Datacenters), vms, len(p.Points()))
	}
	if err != nil {
		return &exitError{exitFailure, err.Error()}
	}
	return nil
}

func protectListCmd(c *cli.Context) error {
	_, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	name := c.String("site")
	var runs []catalog.JobRun
	if name != "" {
		runs, err = cat.JobRuns(c.Context, catalog.ProtectJob(name), c.Int("limit"))
	} else {
		runs, err = cat.ProtectRuns(c.Context, c.Int("limit"))
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, nonNil(runs))
	}
	var rows [][]string
	for _, r := range runs {
		d := "-"
		if !r.Ended.IsZero() {
			d = r.Ended.Sub(r.Started).Round(time.Millisecond).String()
		}
		rows = append(rows, []string{r.ID, strings.TrimPrefix(r.Job, catalog.ProtectJob("")), r.Started.Local().Format("2006-01-02 15:04:05"), d,
			r.Trigger, r.State, cmp.Or(r.Package, "-"), fmt.Sprint(r.VMsOK), fmt.Sprint(r.VMsFailed)})
	}
	table(os.Stdout, []string{"CYCLE", "SITE", "STARTED", "TOOK", "TRIGGER", "STATE", "PACKAGE", "VMS OK", "FAILED"}, rows)
	switch {
	case len(runs) > 0:
	case name != "":
		fmt.Printf("no protect cycle of site %s recorded: `rekindle protect run --site %s` or `rekindle serve --protect-site %s` runs one\n",
			name, name, name)
	default:
		fmt.Println("no protect cycle recorded: `rekindle protect run --site SITE` or `rekindle serve --protect-site SITE` runs one")
	}
	return nil
}

func protectShowCmd(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErr("protect show: give one cycle id (`rekindle protect list` lists them)")
	}
	_, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	r, err := cat.JobRun(c.Context, c.Args().First())
	if err == nil && !strings.HasPrefix(r.Job, catalog.ProtectJob("")) {
		err = fmt.Errorf("%s is a run of backup job %s, not a protect cycle: `rekindle job show %s`: %w", r.ID, r.Job, r.Job, catalog.ErrNotFound)
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, r)
	}
	fmt.Printf("protect cycle %s of site %s: %s\n", r.ID, strings.TrimPrefix(r.Job, catalog.ProtectJob("")), runLine(r))
	if r.Package != "" {
		fmt.Printf("package %s\n", r.Package)
	}
	if r.Error != "" {
		fmt.Printf("error: %s\n", r.Error)
	}
	var rows [][]string
	for _, v := range r.VMs {
		res := v.PointID
		if v.Error != "" {
			res = "FAILED: " + v.Error
		}
		rows = append(rows, []string{v.VM, res})
	}
	table(os.Stdout, []string{"VM", "RESTORE POINT"}, rows)
	return nil
}

// protectServeFlags are serve's: protect one site on a schedule, with
// serve's --vc flags and protectBackupFlags("protect-").
func protectServeFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "protect-site", Usage: "protect this site (its package name) on a schedule: every --protect-every, back up its VMs and store a site package (needs --vc)", EnvVars: []string{"REKINDLE_PROTECT_SITE"}},
		&cli.DurationFlag{Name: "protect-every", Value: time.Hour, Usage: "the RPO: how often a protect cycle starts", EnvVars: []string{"REKINDLE_PROTECT_EVERY"}},
		&cli.StringSliceFlag{Name: "protect-vm", Usage: "VM to protect (repeatable; default: every VM of the datacenter)", EnvVars: []string{"REKINDLE_PROTECT_VM"}},
		&cli.BoolFlag{Name: "protect-prune", Usage: "after each cycle's retention, prune: delete the chunks and indexes no point names any more, beside serve's lock while it serves (the points of running sessions stay; needs a --protect-keep-* retention)", EnvVars: []string{"REKINDLE_PROTECT_PRUNE"}},
	}, protectBackupFlags("protect-")...)
}

// protectSchedule is serve's protect schedule, or nil without
// --protect-site. Each cycle logs in to vCenter afresh and logs out at its
// end: a session that expired, or a vCenter that restarted, between cycles
// breaks no later cycle.
//
// With --protect-prune, each cycle that stored its package prunes through
// jobs, the runner of serve's backup jobs: beside serve's lock, and never
// while a backup of this server (a job's, or a cycle's) runs.
func protectSchedule(c *cli.Context, r *repo.Repo, cat *catalog.Catalog, log *slog.Logger, reg prometheus.Registerer, jobs *backupjob.Runner) (*site.Schedule, error) {
	name := c.String("protect-site")
	if name == "" {
		return nil, nil
	}
	if c.Duration("protect-every") <= 0 {
		return nil, usageErr("--protect-every %s: want a positive duration", c.Duration("protect-every"))
	}
	if c.String("vc") == "" {
		return nil, usageErr("--protect-site %s needs --vc URL (or REKINDLE_VC_URL): the vCenter of the site", name)
	}
	base, keep, err := protectSettings(c, "protect-", vcbackup.Config{Datacenter: c.String("datacenter"), Repo: r, Catalog: cat,
		Transport: vcbackup.TransportAuto})
	if err != nil {
		return nil, err
	}
	prune := c.Bool("protect-prune")
	if prune && keep == nil {
		return nil, usageErr("--protect-prune needs a retention to prune after (--protect-keep-last, --protect-keep-daily or --protect-keep-within): without one no point is forgotten")
	}
	var dcs []string
	if dc := c.String("datacenter"); dc != "" {
		dcs = []string{dc}
	}
	opts := site.ProtectOptions{ExtractOptions: site.ExtractOptions{Site: name, Datacenters: dcs}, VMs: c.StringSlice("protect-vm"),
		History: cat, Trigger: "schedule", Retention: keep}
	s := &site.Schedule{Site: name, Every: c.Duration("protect-every"), Metrics: site.NewMetrics(reg), Logger: log,
		Cycle: func(ctx context.Context) (*site.Package, error) {
			d, err := connectVC(c, " with --protect-site")
			if err != nil {
				return nil, fmt.Errorf("protect %s: log in to vCenter: %w", name, err)
			}
			defer d.Close(context.WithoutCancel(ctx))
			cfg := base
			cfg.Client = d.Client()
			release := jobs.HoldPrunes()
			p, err := site.Protect(ctx, d.Client(), r, vcBackuper{cfg}, opts)
			release()
			if prune && p != nil {
				if perr := jobs.Prune(ctx, log.With("site", name, "package", p.ID)); perr != nil {
					err = errors.Join(err, fmt.Errorf("package %s stored; prune: %w", p.ID, perr))
				}
			}
			return p, err
		}}
	log.Info("protecting", "site", name, "every", s.Every, "vc", withoutCredentials(c.String("vc")), "parallel", base.Parallel, "quiesce", base.Quiesce, "prune", prune)
	return s, nil
}

// withoutCredentials is a vCenter URL for logs: a user and password given
// in it (https://user:pw@vc/sdk, as govc users write it) are left out.
func withoutCredentials(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that does not parse)" // url errors quote it, credentials included
	}
	u.User = nil
	return u.String()
}
