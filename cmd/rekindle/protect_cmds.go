package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/site"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
)

func protectCommands() []*cli.Command {
	return []*cli.Command{{
		Name: "protect", Usage: "protect a site: back up its VMs and record its virtual infrastructure as a site package",
		Subcommands: []*cli.Command{
			withConfig(&cli.Command{Name: "run", Usage: "run one protection cycle", Action: protectRunCmd,
				Flags: append([]cli.Flag{repoFlag, catalogFlag, jsonFlag,
					&cli.StringFlag{Name: "site", Required: true, Usage: "name of the primary site (letters, digits, ._-)"},
					&cli.StringSliceFlag{Name: "vm", Usage: "VM to protect (repeatable; default: every VM of the datacenter)"},
				}, vcFlags()...)}),
		},
	}}
}

// vcBackuper adapts vCenter's backup engine to site.VMBackuper.
type vcBackuper struct{ cfg vcbackup.Config }

func (b vcBackuper) BackupVMs(ctx context.Context, names []string) (map[string]string, error) {
	rs, err := vcbackup.BackupVMs(ctx, b.cfg, names)
	out := map[string]string{}
	var errs []error
	for _, r := range rs {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.VM, r.Err))
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
	var dcs []string
	if dc := c.String("datacenter"); dc != "" {
		dcs = []string{dc}
	}
	p, err := site.Protect(c.Context, cfg.Client, cfg.Repo, vcBackuper{cfg},
		site.ProtectOptions{ExtractOptions: site.ExtractOptions{Site: c.String("site"), Datacenters: dcs}, VMs: c.StringSlice("vm")})
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

// protectServeFlags are serve's: protect one site on a schedule, with
// serve's --vc flags.
func protectServeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "protect-site", Usage: "protect this site (its package name) on a schedule: every --protect-every, back up its VMs and store a site package (needs --vc)", EnvVars: []string{"REKINDLE_PROTECT_SITE"}},
		&cli.DurationFlag{Name: "protect-every", Value: time.Hour, Usage: "the RPO: how often a protect cycle starts", EnvVars: []string{"REKINDLE_PROTECT_EVERY"}},
		&cli.StringSliceFlag{Name: "protect-vm", Usage: "VM to protect (repeatable; default: every VM of the datacenter)", EnvVars: []string{"REKINDLE_PROTECT_VM"}},
	}
}

// protectSchedule is serve's protect schedule, or nil without
// --protect-site; done closes its vCenter session.
func protectSchedule(c *cli.Context, r *repo.Repo, cat *catalog.Catalog, log *slog.Logger, reg prometheus.Registerer) (*site.Schedule, func(), error) {
	name := c.String("protect-site")
	if name == "" {
		return nil, nil, nil
	}
	if c.Duration("protect-every") <= 0 {
		return nil, nil, usageErr("--protect-every %s: want a positive duration", c.Duration("protect-every"))
	}
	d, err := connectVC(c, " with --protect-site")
	if err != nil {
		return nil, nil, err
	}
	cfg := vcbackup.Config{Client: d.Client(), Datacenter: c.String("datacenter"), Repo: r, Catalog: cat, Transport: vcbackup.TransportAuto}
	var dcs []string
	if dc := c.String("datacenter"); dc != "" {
		dcs = []string{dc}
	}
	opts := site.ProtectOptions{ExtractOptions: site.ExtractOptions{Site: name, Datacenters: dcs}, VMs: c.StringSlice("protect-vm")}
	s := &site.Schedule{Site: name, Every: c.Duration("protect-every"), Metrics: site.NewMetrics(reg), Logger: log,
		Cycle: func(ctx context.Context) (*site.Package, error) {
			return site.Protect(ctx, d.Client(), r, vcBackuper{cfg}, opts)
		}}
	log.Info("protecting", "site", name, "every", s.Every, "vc", c.String("vc"))
	return s, func() { d.Close(context.Background()) }, nil
}
