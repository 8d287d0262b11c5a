package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/simlab"
	"github.com/rekindle/rekindle/orchestrator/vsphere"
)

// Flags that pick and reach a hypervisor.
func hypervisorFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "hypervisor", Value: "vsphere", Usage: "vsphere or qemu", EnvVars: []string{"REKINDLE_HYPERVISOR"}},
		// govc's variables count when rekindle's own are absent.
		&cli.StringFlag{Name: "vc", Usage: "vCenter URL, e.g. https://vc.example.com/sdk", EnvVars: []string{"REKINDLE_VC_URL", "GOVC_URL"}},
		&cli.StringFlag{Name: "vc-user", Usage: "vCenter user", EnvVars: []string{"REKINDLE_VC_USER", "GOVC_USERNAME"}},
		&cli.StringFlag{Name: "vc-password-file", Usage: "file holding the vCenter password (or set REKINDLE_VC_PASSWORD, or GOVC_PASSWORD)", EnvVars: []string{"REKINDLE_VC_PASSWORD_FILE"}},
		&cli.StringFlag{Name: "vc-thumbprint", Usage: "vCenter certificate SHA-256 (or SHA-1) thumbprint to trust, as an unknown-authority error prints it", EnvVars: []string{"REKINDLE_VC_THUMBPRINT"}},
		&cli.StringFlag{Name: "vc-ca", Usage: "CA bundle to verify vCenter's certificate", EnvVars: []string{"REKINDLE_VC_CA"}},
		&cli.BoolFlag{Name: "vc-insecure", Aliases: []string{"k"}, Usage: "do not verify vCenter's certificate", EnvVars: []string{"REKINDLE_VC_INSECURE", "GOVC_INSECURE"}},
		&cli.StringFlag{Name: "datacenter", Usage: "vSphere datacenter (default: the only one)", EnvVars: []string{"REKINDLE_DATACENTER"}},
		&cli.StringFlag{Name: "qemu-dir", Usage: "qemu: folder for VM state (default: --target, else REPO/state/qemu)", EnvVars: []string{"REKINDLE_QEMU_DIR"}},
		&cli.StringFlag{Name: "qemu-ready", Value: "marker", Usage: "qemu: what \"up\" means: marker (--ready-marker on the serial console), agent (the QEMU guest agent answers guest-ping) or none (powered on only)", EnvVars: []string{"REKINDLE_QEMU_READY"}},
		&cli.StringFlag{Name: "ready-marker", Value: "REKINDLE-BOOT-OK", Usage: "qemu: serial console text the guest prints when it is up (--qemu-ready marker)", EnvVars: []string{"REKINDLE_READY_MARKER"}},
	}
}

// newQEMUDriver opens the qemu driver (set by driver_qemu.go).
var newQEMUDriver func(workDir string, o qemuOptions) (orchestrator.Driver, error)

// qemuOptions are the qemu driver's flags.
type qemuOptions struct{ ready, marker string }

func openDriver(c *cli.Context, repoDir string) (orchestrator.Driver, func(), error) {
	switch c.String("hypervisor") {
	case "qemu":
		dir := c.String("qemu-dir")
		if dir == "" && c.IsSet("target") {
			dir = c.String("target") // for qemu the target is the folder VMs run in
		}
		if dir == "" {
			dir = filepath.Join(repoDir, "state", "qemu")
		}
		if newQEMUDriver == nil {
			return nil, nil, errors.New("this rekindle was built without the qemu driver")
		}
		switch r := c.String("qemu-ready"); r {
		case "marker", "agent", "none":
		default:
			return nil, nil, usageErr("--qemu-ready %q: want marker, agent or none", r)
		}
		d, err := newQEMUDriver(dir, qemuOptions{ready: c.String("qemu-ready"), marker: c.String("ready-marker")})
		return d, func() {}, err
	case "vsphere":
		d, err := connectVC(c, "; or pass --hypervisor qemu")
		if err != nil {
			return nil, nil, err
		}
		return d, func() { d.Close(context.Background()) }, nil
	default:
		return nil, nil, &exitError{exitUsage, fmt.Sprintf("--hypervisor %q: want vsphere or qemu", c.String("hypervisor"))}
	}
}

// connectVC logs in to vCenter from the --vc flags (or REKINDLE_VC_*
// variables): restore, backup and jobs share it. hint ends the message
// when --vc is missing.
func connectVC(c *cli.Context, hint string) (*vsphere.Driver, error) {
	if c.String("vc") == "" {
		return nil, &exitError{exitUsage, "vsphere: --vc URL (or REKINDLE_VC_URL) is required" + hint}
	}
	pw, pwFrom := os.Getenv("REKINDLE_VC_PASSWORD"), "REKINDLE_VC_PASSWORD"
	if pw == "" {
		pw, pwFrom = os.Getenv("GOVC_PASSWORD"), "GOVC_PASSWORD"
	}
	if f := c.String("vc-password-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("vCenter password file: %w", err)
		}
		pw, pwFrom = strings.TrimRight(string(b), "\r\n"), "--vc-password-file "+f
	}
	if pw == "" {
		pwFrom = "the --vc URL"
	}
	if user := c.String("vc-user"); pw == "" && !urlHasPassword(c.String("vc")) {
		if user == "" {
			return nil, usageErr("no vCenter user: pass --vc-user (or set REKINDLE_VC_USER or GOVC_USERNAME) and its password file (--vc-password-file)")
		}
		return nil, usageErr("no password for vCenter user %s: name a file holding it with --vc-password-file (or REKINDLE_VC_PASSWORD_FILE), or set REKINDLE_VC_PASSWORD or GOVC_PASSWORD", user)
	}
	d, err := vsphere.Connect(c.Context, vsphere.Config{URL: c.String("vc"), Username: c.String("vc-user"), Password: pw,
		Insecure: c.Bool("vc-insecure"), Thumbprint: c.String("vc-thumbprint"), CAFile: c.String("vc-ca"),
		Datacenter: c.String("datacenter")}, slog.Default())
	if err != nil {
		return nil, &hypervisorError{vcWayOut(err, c.String("vc-user"), pwFrom)}
	}
	return d, nil
}

// vcWayOut adds to a vCenter connection error what the operator can do.
func vcWayOut(err error, user, pwFrom string) error {
	var ce *vsphere.CertificateError
	switch {
	case errors.As(err, &ce) && ce.Pinned != "":
		return fmt.Errorf("%w\nif the vCenter's certificate was replaced, check the new thumbprint on the vCenter and pass it with --vc-thumbprint (or REKINDLE_VC_THUMBPRINT)", err)
	case errors.As(err, &ce):
		tp := ce.SHA256
		if tp == "" {
			tp = "THUMBPRINT"
		}
		return fmt.Errorf("%w\ncheck the thumbprint on the vCenter, then trust it with --vc-thumbprint %s (or REKINDLE_VC_THUMBPRINT), "+
			"or trust the CA that signed it with --vc-ca FILE.pem (or REKINDLE_VC_CA), "+
			"or skip the check with --vc-insecure (-k, GOVC_INSECURE=1; not for production)", err, tp)
	case vsphere.IsLoginRefused(err):
		return fmt.Errorf("%w\nvCenter refused user %q with the password from %s: check both (a password was given, so this is not a missing one)", err, user, pwFrom)
	}
	return err
}

func restoreFlags() []cli.Flag {
	return append(apiFlags(repoFlag, catalogFlag, jsonFlag,
		&cli.StringFlag{Name: "target", Usage: "vsphere: cluster, resource pool or vApp inventory path; qemu: the folder VMs run in (default REPO/state/qemu)"},
		&cli.StringFlag{Name: "point", Usage: "vm restores: restore point: latest (default), an id, or a unique prefix of one"},
		&cli.StringFlag{Name: "before", Usage: "use the latest points at or before this time: " + whenUsage},
		&cli.StringSliceFlag{Name: "network-map", Usage: "SRC=DST: put NICs on network SRC onto DST (repeatable)"},
		&cli.BoolFlag{Name: "test", Usage: "test clone: new names (--suffix), NICs on --isolated-network, fresh MACs"},
		&cli.StringFlag{Name: "suffix", Value: "-test", Usage: "name suffix of test clones"},
		&cli.StringFlag{Name: "isolated-network", Usage: "network for test clones' NICs"},
		&cli.StringSliceFlag{Name: "member", Usage: "vapp: restore only these members into the running vApp (partial restore)"},
		&cli.StringSliceFlag{Name: "apart", Usage: "comma-separated VMs that must run on different hosts (repeatable)"},
		&cli.DurationFlag{Name: "ready-timeout", Value: 10 * time.Minute, Usage: "how long a startup group may take to come up"},
		&cli.StringFlag{Name: "migrate-to", Usage: "after boot, Storage-vMotion to this datastore (qemu: a folder) and withdraw the export"},
		&cli.StringFlag{Name: "nfs-server", Usage: "NFS server name the hosts mount (default: the server's own)"},
		&cli.StringSliceFlag{Name: "allow", Usage: "host address or CIDR admitted to the session (repeatable; default: loopback)"},
		&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and change nothing"},
	), hypervisorFlags()...)
}

func restoreCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name: "restore", Usage: "instant recovery: run VMs from their backups, in startup order",
			Subcommands: []*cli.Command{
				withConfig(&cli.Command{Name: "vapp", Usage: "restore a vApp (or --member some of it)", ArgsUsage: "NAME", Flags: restoreFlags(), Action: restoreCmd,
					Description: "Examples:\n" +
						"  rekindle restore vapp shop --repo /srv/rekindle --target /DC1/host/Cluster1 --dry-run\n" +
						"  rekindle restore vapp shop --repo /srv/rekindle --target /DC1/host/Cluster1 --member app01\n" +
						"  rekindle restore vapp shop --repo /srv/rekindle --target /DC1/host/Cluster1 --test --isolated-network bubble"}),
				withConfig(&cli.Command{Name: "vm", Usage: "restore one VM", ArgsUsage: "NAME", Flags: restoreFlags(), Action: restoreCmd,
					Description: "Examples:\n" +
						"  rekindle restore vm web01 --repo /srv/rekindle --target /DC1/host/Cluster1 --point latest\n" +
						"  rekindle restore vm web01 --repo /srv/rekindle --hypervisor qemu --dry-run"}),
			},
		},
		withConfig(&cli.Command{
			Name: "migrate", Usage: "move a session's VMs to production storage and withdraw the export", ArgsUsage: "SESSION",
			Description: "Example:\n  rekindle migrate rk-1 --repo /srv/rekindle --to ssd-ds01",
			Flags: append(apiFlags(repoFlag, catalogFlag, jsonFlag,
				&cli.StringFlag{Name: "to", Required: true, Usage: "target datastore (qemu: a folder)"}), hypervisorFlags()...),
			Action: func(c *cli.Context) error {
				return withOrchestrator(c, func(o *orchestrator.Orchestrator, id string) error { return o.Migrate(c.Context, id, c.String("to")) })
			},
		}),
	}
}

func sessionControlCommands() []*cli.Command {
	flags := append(apiFlags(repoFlag, catalogFlag, jsonFlag), hypervisorFlags()...)
	return []*cli.Command{
		withConfig(&cli.Command{Name: "resume", Usage: "finish a restore session or site recovery that failed or whose orchestrator died", ArgsUsage: "ID", Flags: flags,
			Action: func(c *cli.Context) error {
				return withOrchestrator(c, func(o *orchestrator.Orchestrator, id string) error {
					if r, err := siteRecovererFor(c.Context, o, id); err != nil {
						return err
					} else if r != nil {
						return r.Resume(c.Context, id)
					}
					return o.Resume(c.Context, id)
				})
			}}),
		withConfig(&cli.Command{Name: "stop", Usage: "undo a restore session (power off, unregister, unmount, discard) or a site recovery (its VMs' sessions, then what it created)", ArgsUsage: "ID", Flags: flags,
			Action: func(c *cli.Context) error {
				return withOrchestrator(c, func(o *orchestrator.Orchestrator, id string) error {
					if r, err := siteRecovererFor(c.Context, o, id); err != nil {
						return err
					} else if r != nil {
						return r.Stop(c.Context, id)
					}
					return o.Stop(c.Context, id)
				})
			}}),
	}
}

// newOrchestrator wires the catalog, the hypervisor driver and the server's
// API into an orchestrator that prints its steps.
func newOrchestrator(c *cli.Context) (*orchestrator.Orchestrator, func(), error) {
	return newOrchestratorWith(c, true)
}

// newOrchestratorWith leaves the driver out when withDriver is false: an
// offline plan (a dry run with no vCenter given).
func newOrchestratorWith(c *cli.Context, withDriver bool) (*orchestrator.Orchestrator, func(), error) {
	r, cat, err := openRepoCatalog(c)
	if err != nil {
		return nil, nil, err
	}
	var d orchestrator.Driver
	closeDriver := func() {}
	if withDriver {
		d, closeDriver, err = openDriver(c, r.Dir)
		if err != nil {
			cat.Close()
			return nil, nil, err
		}
	}
	cl, err := apiClient(c)
	if err != nil {
		closeDriver()
		cat.Close()
		return nil, nil, err
	}
	o := &orchestrator.Orchestrator{Catalog: cat, Driver: d, Exporter: cl,
		Logger: slog.New(slog.DiscardHandler), Events: stepPrinter(os.Stdout, c.Bool("json"))}
	return o, func() { closeDriver(); cat.Close() }, nil
}

func withOrchestrator(c *cli.Context, fn func(*orchestrator.Orchestrator, string) error) error {
	o, done, err := newOrchestrator(c)
	if err != nil {
		return err
	}
	defer done()
	id := c.Args().First()
	if err := fn(o, id); err != nil {
		return sessionError(id, err)
	}
	if !c.Bool("json") {
		fmt.Printf("session %s: %s done\n", id, c.Command.Name)
	}
	return nil
}

// sessionError tells the operator what they can do next.
func sessionError(id string, err error) error {
	if errors.Is(err, catalog.ErrNotFound) {
		return err
	}
	return fmt.Errorf("%w\nthe session is kept: `rekindle sessions resume %s` retries from the failed step, `rekindle sessions stop %s` undoes it", err, id, id)
}

// stepPrinter renders orchestrator events: a line per step start and end
// with its duration, progress lines, or JSON lines with --json.
func stepPrinter(w io.Writer, asJSON bool) func(orchestrator.Event) {
	lastPct := map[string]int{}
	return func(e orchestrator.Event) {
		if asJSON {
			b, _ := json.Marshal(e)
			fmt.Fprintln(w, string(b))
			return
		}
		switch e.Phase {
		case "start":
			fmt.Fprintf(w, "%-10s started\n", e.Step)
		case "done":
			fmt.Fprintf(w, "%-10s done in %s\n", e.Step, e.Duration.Round(time.Millisecond))
		case "failed":
			fmt.Fprintf(w, "%-10s FAILED after %s: %s\n", e.Step, e.Duration.Round(time.Millisecond), e.Err)
		case "progress":
			if e.Percent > 0 {
				key := e.Step + e.Message
				if e.Percent < 100 && e.Percent-lastPct[key] < 10 {
					return
				}
				lastPct[key] = e.Percent
				fmt.Fprintf(w, "%-10s   %s %d%%\n", "", e.Message, e.Percent)
				return
			}
			fmt.Fprintf(w, "%-10s   %s\n", "", e.Message)
		}
	}
}

func restoreCmd(c *cli.Context) error {
	name := c.Args().First()
	req := orchestrator.Request{Target: c.String("target"), Point: c.String("point"), Test: c.Bool("test"),
		IsolatedNetwork: c.String("isolated-network"), MigrateTo: c.String("migrate-to"),
		ReadyTimeout: c.Duration("ready-timeout"), Allow: c.StringSlice("allow"), Server: c.String("nfs-server")}
	if c.Bool("test") {
		req.Suffix = c.String("suffix")
	}
	if b := c.String("before"); b != "" {
		t, err := parseWhen(b, time.Now())
		if err != nil {
			return usageErr("--before %v", err)
		}
		req.Before = t
	}
	switch {
	case c.Command.Name == "vm":
		req.Kind, req.VMs = orchestrator.KindVM, []string{name}
	case len(c.StringSlice("member")) > 0:
		req.Kind, req.App, req.VMs = orchestrator.KindPartial, name, c.StringSlice("member")
	case c.Bool("test"):
		req.Kind, req.App = orchestrator.KindTest, name
	default:
		req.Kind, req.App = orchestrator.KindVApp, name
	}
	for _, m := range c.StringSlice("network-map") {
		src, dst, ok := strings.Cut(m, "=")
		if !ok || src == "" || dst == "" {
			return &exitError{2, fmt.Sprintf("--network-map %q: want SRC=DST", m)}
		}
		if req.NetworkMap == nil {
			req.NetworkMap = map[string]string{}
		}
		req.NetworkMap[src] = dst
	}
	for _, a := range c.StringSlice("apart") {
		req.Apart = append(req.Apart, strings.Split(a, ","))
	}
	// A dry run needs no vCenter: without --vc it plans offline and says
	// what it could not check.
	offline := c.Bool("dry-run") && c.String("hypervisor") == "vsphere" && c.String("vc") == ""
	o, done, err := newOrchestratorWith(c, !offline)
	if err != nil {
		return err
	}
	defer done()
	serverNote := ""
	if req.Server == "" {
		name, err := func() (string, error) {
			cl, err := apiClient(c)
			if err != nil {
				return "", err
			}
			st, err := cl.Status(c.Context)
			if err != nil {
				return "", err
			}
			return st.Server, nil
		}()
		switch {
		case err == nil:
			req.Server = name
		case c.Bool("dry-run"):
			// A plan needs no server: name it and say what was not checked.
			req.Server = "(the rekindle server)"
			serverNote = fmt.Sprintf("not checked: the NFS server's name and exports: %v; pass --nfs-server NAME", err)
		default:
			return err
		}
	}
	if c.Bool("dry-run") {
		p, err := o.Plan(c.Context, req)
		if err != nil {
			return err
		}
		if err := printPlan(p, c.Bool("json")); err != nil {
			return err
		}
		if c.Bool("json") {
			return nil
		}
		if offline {
			fmt.Printf("not checked: %s (no vCenter given: pass --vc, or set GOVC_URL)\n", strings.Join(p.NotChecked, ", "))
		}
		if serverNote != "" {
			fmt.Println(serverNote)
		}
		return nil
	}
	start := time.Now()
	id, err := o.Start(c.Context, req)
	if err != nil {
		if id == "" {
			return err
		}
		return sessionError(id, err)
	}
	if !c.Bool("json") {
		_, p, err := o.LoadPlan(c.Context, id)
		if err != nil {
			return err
		}
		fmt.Printf("session %s: %d VMs restored in %s\n", id, len(p.VMs), time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func printPlan(p *orchestrator.Plan, asJSON bool) error {
	if asJSON {
		return printJSON(os.Stdout, p)
	}
	fmt.Printf("plan (%s, nothing changed): NFS %s mounted on %s\n", p.Request.Kind, p.Request.Server, strings.Join(p.Hosts, ", "))
	if p.App != nil {
		fmt.Printf("vApp %s under %s\n", p.App.Name, dash(p.App.Parent))
	}
	var rows [][]string
	for gi, g := range p.Groups {
		for _, name := range g {
			vm := p.VM(name)
			var nets []string
			for _, n := range vm.Spec.NICs {
				nets = append(nets, n.Network)
			}
			wait := "-"
			if vm.Ready.Heartbeat {
				wait = "guest"
			}
			rows = append(rows, []string{fmt.Sprint(gi + 1), vm.Name, vm.Source + "@" + vm.Point, vm.Host,
				fmt.Sprintf("%d/%dMB", vm.Spec.NumCPU, vm.Spec.MemoryMB), strings.Join(nets, ","), wait, fmt.Sprintf("%ds", vm.StartDelay)})
		}
	}
	table(os.Stdout, []string{"GROUP", "VM", "FROM", "HOST", "CPU/MEM", "NETWORKS", "WAIT", "DELAY"}, rows)
	if p.Request.MigrateTo != "" {
		fmt.Printf("then migrate to %s and withdraw the export\n", p.Request.MigrateTo)
	}
	return nil
}

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run the main job end to end with no vCenter: back up a 3-VM vApp, serve it, restore it on an in-process vCenter simulator, migrate it, clean up",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "keep", Usage: "keep the working folder"}},
		Action: func(c *cli.Context) error {
			return simlab.Demo(c.Context, os.Stdout, c.Bool("keep"))
		},
	}
}

// urlHasPassword reports whether a vCenter URL carries user:password, as
// govc's GOVC_URL may.
func urlHasPassword(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return false
	}
	_, ok := u.User.Password()
	return ok
}
