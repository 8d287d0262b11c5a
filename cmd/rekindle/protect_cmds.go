package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

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
