package main

import (
	"context"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/site"
	"github.com/rekindle/rekindle/orchestrator/vsphere"
)

func siteCommands() []*cli.Command {
	flags := func(repo cli.Flag, more ...cli.Flag) []cli.Flag {
		return append(apiFlags(append([]cli.Flag{repo, catalogFlag, jsonFlag}, more...)...), hypervisorFlags()...)
	}
	control := flags(repoFlag)
	// recover's own --repo is checked by its action: urfave/cli checks a
	// parent's required flags before running a subcommand, so a required
	// one would refuse `site recover stop ID --repo R` (the flag is stop's).
	optionalRepo := *repoFlag
	optionalRepo.Required = false
	return []*cli.Command{{
		Name: "site", Usage: "site recovery: recreate a protected site's infrastructure and VMs at a recovery vCenter",
		Subcommands: []*cli.Command{
			withConfig(&cli.Command{Name: "recover", Usage: "recover a site package: networks, pools, folders, vApps, then every protected VM in priority order",
				Action: siteRecoverCmd,
				Description: "Examples:\n" +
					"  rekindle site recover --package latest --vc https://dr-vc/sdk --cluster /DR/host/C1 --repo /srv/rekindle --dry-run\n" +
					"  rekindle site recover --package latest --vc https://dr-vc/sdk --cluster /DR/host/C1 --map network:web=dr-web --test\n" +
					"  rekindle site recover resume rk-1a2b3c4d --vc https://dr-vc/sdk\n" +
					"  rekindle site recover stop rk-1a2b3c4d --vc https://dr-vc/sdk",
				Flags: flags(&optionalRepo,
					&cli.StringSliceFlag{Name: "package", Value: cli.NewStringSlice("latest"), Usage: "site package: latest or an id (repeatable: networks they share are made once)"},
					&cli.StringFlag{Name: "cluster", Usage: "recovery cluster inventory path for primary clusters --map does not name"},
					&cli.StringSliceFlag{Name: "map", Usage: "KIND:FROM=TO with KIND network, cluster or datastore (repeatable; kept in the repository for later recoveries)"},
					&cli.BoolFlag{Name: "test", Usage: "test recovery: names end in -test, networks isolated on a vSwitch without uplinks; stop removes it all"},
					&cli.StringFlag{Name: "nfs-server", Usage: "NFS server name the recovery hosts mount (default: the server's own)"},
					&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and change nothing"},
				),
				Subcommands: []*cli.Command{
					withConfig(&cli.Command{Name: "resume", Usage: "finish a site recovery that failed or whose rekindle died", ArgsUsage: "ID", Flags: control,
						Action: func(c *cli.Context) error {
							return withRecoverer(c, func(r *site.Recoverer, id string) error { return r.Resume(c.Context, id) })
						}}),
					withConfig(&cli.Command{Name: "stop", Usage: "undo a site recovery: its VMs' sessions, then what it created (never what existed before)", ArgsUsage: "ID", Flags: control,
						Action: func(c *cli.Context) error {
							return withRecoverer(c, func(r *site.Recoverer, id string) error { return r.Stop(c.Context, id) })
						}}),
				},
			}),
		},
	}}
}

func newRecoverer(c *cli.Context) (*site.Recoverer, *orchestrator.Orchestrator, func(), error) {
	if c.String("hypervisor") != "vsphere" {
		return nil, nil, nil, usageErr("site recovery runs on vSphere: --hypervisor vsphere")
	}
	o, done, err := newOrchestrator(c)
	if err != nil {
		return nil, nil, nil, err
	}
	r, err := recovererOf(o)
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	return r, o, done, nil
}

// recovererOf is the site recoverer over o's vCenter.
func recovererOf(o *orchestrator.Orchestrator) (*site.Recoverer, error) {
	d, ok := o.Driver.(*vsphere.Driver)
	if !ok {
		return nil, usageErr("site recovery needs a vCenter (--vc, --hypervisor vsphere)")
	}
	return &site.Recoverer{Client: d.Client(), Orchestrator: o, Datacenter: d.Datacenter(), Customize: true}, nil
}

// siteRecovererFor returns a recoverer when session id is a site recovery
// (so that `sessions resume|stop` run it as `site recover resume|stop`
// would), nil for any other session.
func siteRecovererFor(ctx context.Context, o *orchestrator.Orchestrator, id string) (*site.Recoverer, error) {
	s, err := o.Catalog.Session(ctx, id)
	if err != nil || s.Kind != catalog.KindSite {
		return nil, nil // the orchestrator says what is wrong with it
	}
	return recovererOf(o)
}

func withRecoverer(c *cli.Context, fn func(*site.Recoverer, string) error) error {
	r, _, done, err := newRecoverer(c)
	if err != nil {
		return err
	}
	defer done()
	id := c.Args().First()
	if err := fn(r, id); err != nil {
		return fmt.Errorf("%w\nthe recovery is kept: `rekindle site recover resume %s` retries from the failed step, `rekindle site recover stop %s` undoes it", err, id, id)
	}
	if !c.Bool("json") {
		fmt.Printf("site recovery %s: %s done\n", id, c.Command.Name)
	}
	return nil
}

func siteRecoverCmd(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return usageErr("site recover takes no arguments (did you mean `site recover resume ID`?)")
	}
	if c.String("repo") == "" {
		return usageErr("site recover: --repo (or REKINDLE_REPO) is required: the recovery site's repository")
	}
	rp, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	var pkgs []*site.Package
	for _, id := range c.StringSlice("package") {
		p, err := site.Load(rp, id)
		if err != nil {
			cat.Close()
			return err
		}
		pkgs = append(pkgs, p)
	}
	cat.Close()
	m, err := site.LoadMapping(rp.Dir, pkgs[0].Site)
	if err != nil {
		return err
	}
	for _, s := range c.StringSlice("map") {
		if err := m.ParseMap(s); err != nil {
			return usageErr("%v", err)
		}
	}
	r, _, done, err := newRecoverer(c)
	if err != nil {
		return err
	}
	defer done()
	server := c.String("nfs-server")
	if server == "" {
		cl, err := apiClient(c)
		if err == nil {
			st, serr := cl.Status(c.Context)
			if err = serr; err == nil {
				server = st.Server
			}
		}
		if server == "" && c.Bool("dry-run") {
			server = "(the rekindle server)"
		} else if server == "" {
			return fmt.Errorf("the NFS server name for the recovery hosts: %w (pass --nfs-server NAME)", err)
		}
	}
	plan, err := r.Plan(c.Context, pkgs, *m, site.RecoveryOptions{Cluster: c.String("cluster"), Test: c.Bool("test"), Server: server})
	if err != nil {
		return &exitError{exitUsage, err.Error()}
	}
	if c.Bool("dry-run") {
		if c.Bool("json") {
			return printJSON(os.Stdout, plan)
		}
		plan.Print(os.Stdout)
		return nil
	}
	if err := site.SaveMapping(rp.Dir, m); err != nil {
		return err
	}
	id, err := r.Create(c.Context, plan)
	if err != nil {
		return err
	}
	if !c.Bool("json") {
		fmt.Printf("site recovery %s: %d networks, %d pools, %d vApps, %d VMs\n", id, len(plan.Networks), len(plan.Pools), len(plan.VApps), len(plan.VMs))
	}
	if err := r.Resume(c.Context, id); err != nil {
		return fmt.Errorf("%w\nthe recovery is kept: `rekindle site recover resume %s` retries from the failed step, `rekindle site recover stop %s` undoes it", err, id, id)
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, map[string]any{"session": id, "plan": plan})
	}
	fmt.Printf("site recovery %s: done\n", id)
	return nil
}
