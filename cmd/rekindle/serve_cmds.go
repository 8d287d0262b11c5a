package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"golang.org/x/sync/errgroup"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/internal/accept"
	"github.com/rekindle/rekindle/internal/httpapi"
	"github.com/rekindle/rekindle/nfsd"
	"github.com/rekindle/rekindle/nfsd/datastore"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/backupjob"
)

const defaultAPI = "127.0.0.1:7480"

func serveCommands() []*cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML file with any of these flags as keys (flags and REKINDLE_* variables win)", EnvVars: []string{"REKINDLE_CONFIG"}},
		altsrc.NewStringFlag(&cli.StringFlag{Name: "repo", Usage: "repository folder", EnvVars: []string{"REKINDLE_REPO"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "catalog", Usage: "catalog database (default REPO/catalog.db)", EnvVars: []string{"REKINDLE_CATALOG"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "state", Usage: "folder for session overlays (default REPO/state)", EnvVars: []string{"REKINDLE_STATE"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "nfs", Value: ":2049", Usage: "NFS and MOUNT listen address", EnvVars: []string{"REKINDLE_NFS"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "portmap", Value: ":111", Usage: "portmapper listen address, or off", EnvVars: []string{"REKINDLE_PORTMAP"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "api", Value: defaultAPI, Usage: "HTTP API listen address", EnvVars: []string{"REKINDLE_API"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "metrics", Value: "127.0.0.1:7481", Usage: "Prometheus /metrics listen address, or off", EnvVars: []string{"REKINDLE_METRICS"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "server-name", Usage: "host name or address hypervisors use to reach this server (default: the NFS address's host, else 127.0.0.1)", EnvVars: []string{"REKINDLE_SERVER_NAME"}}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "allow", Usage: "CIDR admitted to the read-only /points export (repeatable; default loopback)", EnvVars: []string{"REKINDLE_ALLOW"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "squash", Value: "none", Usage: "NFS identities mapped to nobody (65534) on every export: none, root (uid 0) or all", EnvVars: []string{"REKINDLE_SQUASH"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cache-mb", Value: "1024", Usage: "chunk cache size: MiB (1024), or " + sizeUsage + " (4GiB)", EnvVars: []string{"REKINDLE_CACHE_MB"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "open-chunk-files", Value: repo.DefaultOpenChunkFiles, Usage: "chunk files kept open between reads (a read of a chunk kept open costs no open); 0 keeps none (at most a quarter of the file-descriptor limit)", EnvVars: []string{"REKINDLE_OPEN_CHUNK_FILES"}}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "no-fast-path", Usage: "serve READ and WRITE through go-nfs instead of rekindle's fast path (slower; a fallback)", EnvVars: []string{"REKINDLE_NO_FAST_PATH"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-conns", Usage: "most open client connections to the NFS port (and, separately, the portmapper's) (default 4096, or half the file-descriptor limit if lower)", EnvVars: []string{"REKINDLE_MAX_CONNS"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-conns-per-client", Value: nfsd.DefaultMaxConnsPerClient, Usage: "most open connections from one client address", EnvVars: []string{"REKINDLE_MAX_CONNS_PER_CLIENT"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "idle-timeout", Value: nfsd.DefaultIdleTimeout, Usage: "close a client connection idle this long (clients reconnect)", EnvVars: []string{"REKINDLE_IDLE_TIMEOUT"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "record-timeout", Value: nfsd.DefaultRecordTimeout, Usage: "close a connection that takes longer to send one RPC record", EnvVars: []string{"REKINDLE_RECORD_TIMEOUT"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "record-memory-mb", Value: fmt.Sprint(nfsd.DefaultRecordMemory >> 20), Usage: "memory budget for RPC records being read or answered, over all connections: MiB, or " + sizeUsage, EnvVars: []string{"REKINDLE_RECORD_MEMORY_MB"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-fragments", Value: nfsd.DefaultMaxFragments, Usage: "most fragments in one RPC record", EnvVars: []string{"REKINDLE_MAX_FRAGMENTS"}}),
		&cli.BoolFlag{Name: "check", Usage: "check the settings (--config keys, sizes, --repo given) and exit without serving"},
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "unsafe-writes", Usage: "acknowledge NFS writes before they reach stable storage: faster, but a crash may lose writes the guest believes are safe", EnvVars: []string{"REKINDLE_UNSAFE_WRITES"}}),
	}
	flags = append(flags, fromConfig(protectServeFlags())...)
	flags = append(flags, fromConfig(apiServeFlags())...)
	flags = append(flags, fromConfig(hypervisorFlags())...)
	return []*cli.Command{
		{
			Name: "serve", Usage: "serve restore points and sessions over NFS, with an HTTP API (and restores, when a hypervisor is configured)",
			Flags:  flags,
			Before: altsrc.InitInputSourceWithContext(flags, configSource),
			Action: serveCmd,
		},
		{
			Name: "publish", Usage: "publish a session: a read-write NFS folder per VM over a restore point",
			Flags: apiFlags(jsonFlag,
				&cli.StringSliceFlag{Name: "vm", Required: true, Usage: "VM to publish (repeatable)"},
				&cli.StringSliceFlag{Name: "point", Usage: "restore point per --vm, in order: latest (default), an id or a unique prefix"},
				&cli.StringSliceFlag{Name: "allow", Usage: "client CIDR or address that may mount the session (repeatable; default loopback)"},
				&cli.StringFlag{Name: "squash", Value: "none", Usage: "the session's NFS identities mapped to nobody: none, root (uid 0) or all"}),
			Action: publishCmd,
		},
		{
			Name: "sessions", Usage: "list, inspect, resume, stop and discard sessions",
			Subcommands: []*cli.Command{
				{Name: "list", Usage: "every session, newest first", Flags: apiFlags(jsonFlag), Action: sessionsList},
				{Name: "show", Usage: "one session with its steps", ArgsUsage: "ID", Description: "Example:\n  rekindle sessions show rk-1 --json", Flags: apiFlags(jsonFlag), Action: sessionsShow},
				{Name: "discard", Usage: "withdraw a session's export and delete what was written to it", ArgsUsage: "ID", Flags: apiFlags(), Action: sessionsDiscard},
			},
		},
	}
}

// configSource reads --config when given; without it there is no file.
func configSource(c *cli.Context) (altsrc.InputSourceContext, error) {
	if c.String("config") == "" {
		return altsrc.NewMapInputSource("", map[any]any{}), nil
	}
	return yamlConfig(c.String("config"))
}

func serveCmd(c *cli.Context) error {
	if c.Bool("check") {
		return serveCheck(c)
	}
	if c.String("repo") == "" {
		return &exitError{2, "serve: --repo (or REKINDLE_REPO, or repo: in --config) is required"}
	}
	r, err := repo.Open(c.String("repo"))
	if err != nil {
		return err
	}
	if n := c.Int("open-chunk-files"); n < 0 {
		return &exitError{2, fmt.Sprintf("--open-chunk-files %d: must be 0 (keep none open) or more", n)}
	} else {
		r.SetOpenChunkFiles(n)
	}
	serveLock, err := r.Lock(c.Context, repo.LockServe, "serve")
	if err != nil {
		return err
	}
	defer serveLock.Unlock()
	state := c.String("state")
	if state == "" {
		state = filepath.Join(r.Dir, "state")
	}
	tokenFile := apiTokenFile(c, state)
	apiTLSConfig, err := apiTLS(c, tokenFile)
	if err != nil {
		return err
	}
	cat, err := openCatalog(c, r)
	if err != nil {
		return err
	}
	defer cat.Close()
	var allow []netip.Prefix
	for _, a := range c.StringSlice("allow") {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return &exitError{2, fmt.Sprintf("--allow %q: not a CIDR (e.g. 10.0.0.0/24)", a)}
		}
		allow = append(allow, p)
	}
	portmap := c.String("portmap")
	if portmap == "off" {
		portmap = ""
	} else if h, p, err := net.SplitHostPort(portmap); err == nil && h == "" {
		// A bare port binds the portmapper (TCP and UDP) where NFS listens.
		if nh, _, err := net.SplitHostPort(c.String("nfs")); err == nil && nh != "" {
			portmap = net.JoinHostPort(nh, p)
		}
	}
	name := c.String("server-name")
	if name == "" {
		if h, _, err := net.SplitHostPort(c.String("nfs")); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
			name = h
		} else {
			name = "127.0.0.1"
		}
	}
	log := slog.Default()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rekindle_build_info",
		Help: "Always 1; the labels say which rekindle is running."}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(buildInfo)
	cacheBytes, err := sizeFlag(c, "cache-mb", 1<<20)
	if err != nil {
		return err
	}
	recordMemory, err := sizeFlag(c, "record-memory-mb", 1<<20)
	if err != nil {
		return err
	}
	svc, err := datastore.New(c.Context, datastore.Config{
		Repo: r, Catalog: cat, StateDir: state, NFSListen: c.String("nfs"), PortmapAddr: portmap,
		ServerName: name, PointsAllow: allow, CacheBytes: cacheBytes, Unsafe: c.Bool("unsafe-writes"),
		NoFastPath: c.Bool("no-fast-path"), Squash: c.String("squash"),
		Limits: nfsd.Limits{
			MaxConns: c.Int("max-conns"), MaxConnsPerClient: c.Int("max-conns-per-client"),
			IdleTimeout: c.Duration("idle-timeout"), RecordTimeout: c.Duration("record-timeout"),
			RecordMemory: recordMemory, MaxFragments: c.Int("max-fragments"),
		},
		Logger: log, Registry: reg,
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	if c.Bool("unsafe-writes") {
		log.Warn("unsafe writes: NFS writes are acknowledged before they reach stable storage; a crash may lose them")
	}
	g, ctx := errgroup.WithContext(c.Context)
	g.Go(func() error { return svc.Serve(ctx) })
	// Backup jobs (`rekindle job define`) run here when due.
	// Their retention prunes beside this server's lock (sessions' points pinned).
	sched := &backupjob.Scheduler{Runner: &backupjob.Runner{Repo: r, Catalog: cat, Logger: log, ServeLock: serveLock}}
	// Their metrics come from the catalog's run history: `job run` counts too.
	backupjob.NewMetrics(reg, cat, log)
	g.Go(func() error { return sched.Run(ctx) })
	// Protection cycles of --protect-site run here every --protect-every,
	// their prunes ordered with the jobs' backups and prunes by its runner.
	if protect, err := protectSchedule(c, r, cat, log, reg, sched.Runner); err != nil {
		return err
	} else if protect != nil {
		g.Go(func() error { return protect.Run(ctx) })
	}
	var jobs *orchestrator.Jobs
	if c.String("vc") != "" || c.String("hypervisor") == "qemu" {
		// Restores through the API run here, against this server's exports.
		d, closeDriver, err := openDriver(c, r.Dir)
		if err != nil {
			return err
		}
		defer closeDriver()
		jobs = orchestrator.NewJobs(ctx, &orchestrator.Orchestrator{Catalog: cat, Driver: d, Exporter: svc, Logger: log})
		defer jobs.Wait()
		if d.Name() == "qemu" {
			// qemu's datastores are folders of this machine, written as root.
			confine, err := migrateRoots(c, state)
			if err != nil {
				return err
			}
			jobs.ConfineDatastores(confine)
		}
		log.Info("restores enabled on the API", "hypervisor", d.Name())
	}
	token, err := httpapi.LoadOrCreateToken(tokenFile)
	if err != nil {
		return err
	}
	guard, err := httpapi.NewGuard(httpapi.GuardConfig{Token: token, Names: apiNames(c, name), Public: httpapi.PublicPaths, Logger: log})
	if err != nil {
		return err
	}
	servers := []*http.Server{{Addr: c.String("api"), Handler: guard.Wrap(apiRoutes(svc, jobs)), ReadHeaderTimeout: 10 * time.Second, TLSConfig: apiTLSConfig}}
	if m := c.String("metrics"); m != "off" && m != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		servers = append(servers, &http.Server{Addr: m, Handler: mux, ReadHeaderTimeout: 10 * time.Second})
	}
	// Every listener is bound before any serves, so a client that reached the
	// API finds the metrics port listening too.
	lns := make([]net.Listener, len(servers))
	for i, hs := range servers {
		ln, err := net.Listen("tcp", hs.Addr)
		if err != nil {
			for _, l := range lns[:i] {
				l.Close()
			}
			return fmt.Errorf("listen %s: %w", hs.Addr, err)
		}
		lns[i] = ln
	}
	for i, hs := range servers {
		ln := lns[i]
		// Out of descriptors or kernel memory, Accept fails: retry with backoff
		// rather than let Serve return (net/http gives up on ENOBUFS).
		ln = accept.New(ln, "api "+hs.Addr, log)
		if hs.TLSConfig != nil {
			ln = tls.NewListener(ln, hs.TLSConfig)
		}
		if hs == servers[0] {
			// The CLI of this user on this machine finds the token through it.
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			if forget, err := httpapi.WriteLocator(port, tokenFile); err != nil {
				log.Warn("the CLI will need --token-file to find the API token", "err", err)
			} else {
				defer forget()
			}
		}
		g.Go(func() error {
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return hs.Shutdown(sctx)
		})
	}
	pm := "off"
	if a := svc.PortmapAddr(); a != nil {
		pm = a.String()
	}
	apiURL := "http://" + c.String("api")
	if apiTLSConfig != nil {
		apiURL = "https://" + c.String("api")
	}
	log.Info("serving", "repo", r.Dir, "nfs", svc.NFSAddr().String(), "portmap", pm, "api", apiURL, "api_token_file", tokenFile,
		"metrics", c.String("metrics"), "exports", datastore.PointsExport+" "+datastore.SessionsExport, "server_name", name)
	err = g.Wait()
	if errors.Is(err, context.Canceled) || c.Context.Err() != nil {
		log.Info("stopped")
		return nil
	}
	return err
}

func publishCmd(c *cli.Context) error {
	vms, points := c.StringSlice("vm"), c.StringSlice("point")
	if len(points) > len(vms) {
		return &exitError{2, "publish: more --point than --vm flags"}
	}
	req := datastore.PublishRequest{Allow: c.StringSlice("allow"), Squash: c.String("squash")}
	for i, vm := range vms {
		pv := datastore.PublishVM{VM: vm}
		if i < len(points) {
			pv.Point = points[i]
		}
		req.VMs = append(req.VMs, pv)
	}
	cl, err := apiClient(c)
	if err != nil {
		return err
	}
	info, err := cl.Publish(c.Context, req)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, info)
	}
	fmt.Println(info.ID)
	fmt.Println(info.NFSPath)
	for _, v := range info.VMs {
		fmt.Fprintf(os.Stderr, "  %s  point %s  vmx %s\n", v.Folder, v.Point, v.VMX)
	}
	fmt.Fprintf(os.Stderr, "mount %s (NFS v3) as a datastore; clients admitted: %s\n", info.NFSPath, strings.Join(info.Allow, ", "))
	return nil
}

func sessionsList(c *cli.Context) error {
	cl, err := apiClient(c)
	if err != nil {
		return err
	}
	list, err := cl.Sessions(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, nonNil(list))
	}
	var rows [][]string
	for _, s := range list {
		var vms []string
		for _, v := range s.VMs {
			vms = append(vms, v.Folder)
		}
		rows = append(rows, []string{s.ID, s.Kind, s.State, fmtTime(s.Created), strings.Join(vms, ","), dash(s.NFSPath)})
	}
	table(os.Stdout, []string{"SESSION", "KIND", "STATE", "CREATED", "VMS", "NFS PATH"}, rows)
	return nil
}

func sessionsShow(c *cli.Context) error {
	cl, err := apiClient(c)
	if err != nil {
		return err
	}
	s, err := cl.Session(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, s)
	}
	fmt.Printf("session %s (%s): %s\n", s.ID, s.Kind, s.State)
	if s.Error != "" {
		fmt.Printf("error: %s\n", s.Error)
	}
	fmt.Printf("nfs path: %s\nclients:  %s\ncreated:  %s\n", dash(s.NFSPath), strings.Join(s.Allow, ", "), fmtTime(s.Created))
	var plan orchestrator.Plan
	if len(s.Plan) > 0 {
		_ = json.Unmarshal(s.Plan, &plan) // a site recovery's plan has no VMs of this form
	}
	for _, v := range s.VMs {
		fmt.Printf("vm %s: point %s, folder %s, host %s", v.VM, v.Point, v.Folder, dash(v.Host))
		for _, pv := range plan.VMs {
			if pv.Folder == v.Folder {
				fmt.Printf(", ready: %s", readyText(pv.Ready))
			}
		}
		fmt.Println()
	}
	for _, st := range s.Steps {
		d := ""
		if !st.Ended.IsZero() {
			d = st.Ended.Sub(st.Started).Round(time.Millisecond).String()
		}
		fmt.Printf("  %2d %-12s %-8s %8s %s%s\n", st.Seq, st.Name, st.State, d, st.Error, restoreSessionOf(st))
		var detail struct {
			Events []orchestrator.StepEvent `json:"events"`
		}
		if len(st.Detail) > 0 && st.Detail[0] == '{' {
			_ = json.Unmarshal(st.Detail, &detail) // other details say nothing to print
		}
		for _, ev := range detail.Events {
			fmt.Printf("       %s  %s\n", fmtTime(ev.Time), ev.Message)
		}
	}
	return nil
}

// restoreSessionOf names the restore session a site recovery's VM step
// ran, as its detail records it ("" for other steps).
func restoreSessionOf(st catalog.Step) string {
	var d struct {
		Session string `json:"session"`
	}
	if json.Unmarshal(st.Detail, &d) != nil || d.Session == "" {
		return ""
	}
	return " (restore session " + d.Session + ")"
}

func sessionsDiscard(c *cli.Context) error {
	cl, err := apiClient(c)
	if err != nil {
		return err
	}
	if err := cl.Discard(c.Context, c.Args().First()); err != nil {
		return err
	}
	fmt.Printf("session %s discarded: export withdrawn, overlay deleted\n", c.Args().First())
	return nil
}

// fromConfig lets flags also be set from the --config file.
func fromConfig(flags []cli.Flag) []cli.Flag {
	out := make([]cli.Flag, 0, len(flags))
	for _, f := range flags {
		switch f := f.(type) {
		case *cli.StringFlag:
			out = append(out, altsrc.NewStringFlag(f))
		case *cli.BoolFlag:
			out = append(out, altsrc.NewBoolFlag(f))
		case *cli.StringSliceFlag:
			out = append(out, altsrc.NewStringSliceFlag(f))
		case *cli.DurationFlag:
			out = append(out, altsrc.NewDurationFlag(f))
		case *cli.IntFlag:
			out = append(out, altsrc.NewIntFlag(f))
		default:
			out = append(out, f)
		}
	}
	return out
}

var configFlag = &cli.StringFlag{Name: "config", Usage: "YAML file with any of these flags as keys (flags and REKINDLE_* variables win)", EnvVars: []string{"REKINDLE_CONFIG"}}

// withConfig adds --config to a command's flags.
func withConfig(cmd *cli.Command) *cli.Command {
	cmd.Flags = append([]cli.Flag{configFlag}, fromConfig(cmd.Flags)...)
	cmd.Before = altsrc.InitInputSourceWithContext(cmd.Flags, configSource)
	return cmd
}
