package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/backupfs/export"
	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
)

var (
	repoFlag    = &cli.StringFlag{Name: "repo", Usage: "repository folder", EnvVars: []string{"REKINDLE_REPO"}, Required: true}
	catalogFlag = &cli.StringFlag{Name: "catalog", Usage: "catalog database (default REPO/catalog.db)", EnvVars: []string{"REKINDLE_CATALOG"}}
	quietFlag   = &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output"}
	// lockWaitFlag is on the commands that add to or read the repository
	// under its shared lock (backups, forget, verify, export, replicate): a
	// prune's exclusive lock (a `rekindle prune`, or a job's prune in
	// `serve`) makes them wait, saying for whom, instead of failing.
	lockWaitFlag = &cli.DurationFlag{Name: "lock-wait", Value: 10 * time.Minute,
		Usage: "how long to wait for a prune's exclusive repository lock to be released (0: fail at once)"}
)

func repoCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name: "init", Usage: "create a repository",
			Flags: []cli.Flag{repoFlag, &cli.StringFlag{Name: "chunk-size", Usage: "chunk size, a power of two from 64K to 16M: bytes, or " + sizeUsage, Value: humanSize(repo.DefaultChunkSize)}},
			Action: func(c *cli.Context) error {
				chunk, err := sizeFlag(c, "chunk-size", 1)
				if err != nil {
					return err
				}
				r, err := repo.Init(c.String("repo"), repo.InitOptions{ChunkSize: int(chunk)})
				if err != nil {
					return err
				}
				fmt.Printf("created repository %s (id %s, chunk size %s)\n", r.Dir, r.Config.ID, humanBytes(int64(r.ChunkSize())))
				return nil
			},
		},
		{
			Name: "backup", Usage: "put backups into the repository",
			Subcommands: []*cli.Command{{
				Name: "import", Usage: "import a VM folder (.vmx, .nvram, disks) as a new restore point", ArgsUsage: "SRC",
				Description: "Example:\n  rekindle backup import /vmfs/volumes/ds1/web01 --repo /srv/rekindle --app shop",
				Flags: []cli.Flag{repoFlag, catalogFlag, quietFlag, jsonFlag, lockWaitFlag,
					&cli.StringFlag{Name: "vm", Usage: "VM name in the repository (default: the vmx displayName)"},
					&cli.StringFlag{Name: "app", Usage: "vApp the VM belongs to: the VM becomes a member (the app is created if missing); default: the app of the VM's previous point"},
					&cli.StringSliceFlag{Name: "raw-disk", Usage: "disk file to read as a raw image although not named .raw or .img (repeatable)"}},
				Action: backupImport,
			}},
		},
		{
			Name: "app", Usage: "distributed applications (vApps)",
			Subcommands: []*cli.Command{{
				Name: "define", Usage: "record a vApp from a YAML definition", ArgsUsage: "FILE.yaml",
				Flags:  []cli.Flag{repoFlag, catalogFlag},
				Action: appDefine,
			}},
		},
		{
			Name: "export", Usage: "write a restore point back out as a VM folder (full restore)",
			Flags: []cli.Flag{repoFlag, catalogFlag, quietFlag, lockWaitFlag,
				&cli.StringFlag{Name: "point", Required: true, Usage: "restore point: an id, a unique prefix of one, or latest (with --vm)"},
				&cli.StringFlag{Name: "vm", Usage: "the VM whose point --point names (needed for latest)"},
				&cli.StringFlag{Name: "to", Required: true, Usage: "destination folder (created; must be empty)"}},
			Action: exportCmd,
		},
		{
			Name: "catalog", Usage: "the catalog database",
			Subcommands: []*cli.Command{{
				Name: "rebuild", Usage: "recreate the catalog from the repository alone",
				Description: "Example (the repository's catalog was lost; make a new one its catalog):\n  rekindle catalog rebuild --repo /srv/rekindle --catalog /var/lib/rekindle/catalog.db --take-over",
				Flags: []cli.Flag{repoFlag, catalogFlag, &cli.BoolFlag{Name: "take-over",
					Usage: "make this catalog the repository's even though the repository names another one (restore sessions recorded only in the other catalog then no longer keep their points)"}},
				Action: func(c *cli.Context) error {
					r, cat, err := openRepoCatalog(c)
					if err != nil {
						return err
					}
					defer cat.Close()
					st, err := cat.Rebuild(c.Context, r)
					if err != nil {
						return err
					}
					fmt.Printf("catalog %s rebuilt: %d restore points, %d apps\n", cat.Path(), st.Points, st.Apps)
					return nil
				},
			}},
		},
		{
			Name: "list", Usage: "list what the repository holds",
			Subcommands: []*cli.Command{
				{Name: "vms", Usage: "VMs with restore points", Flags: []cli.Flag{repoFlag, catalogFlag, jsonFlag}, Action: listCmd},
				{Name: "points", Usage: "restore points, newest first", Flags: []cli.Flag{repoFlag, catalogFlag, jsonFlag,
					&cli.StringFlag{Name: "vm", Usage: "points of this VM only"}}, Action: listCmd},
				{Name: "apps", Usage: "vApps", Flags: []cli.Flag{repoFlag, catalogFlag, jsonFlag}, Action: listCmd},
			},
		},
		{
			Name: "verify", Usage: "re-read and re-hash every chunk the selected restore points use",
			Flags:  []cli.Flag{repoFlag, catalogFlag, quietFlag, jsonFlag, lockWaitFlag, &cli.StringSliceFlag{Name: "point", Usage: "restore point id or unique prefix (repeatable; default all)"}},
			Action: verifyCmd,
		},
		{
			Name: "upgrade", Usage: "bring a repository to the newest format: version 1 chunks are rewritten as version 2 frames (takes the exclusive lock; safe to interrupt and run again)",
			Description: "Example:\n  rekindle upgrade --repo /srv/rekindle",
			Flags:       []cli.Flag{repoFlag, quietFlag, jsonFlag},
			Action:      upgradeCmd,
		},
	}
}

func upgradeCmd(c *cli.Context) error {
	r, err := repo.Open(c.String("repo"))
	if err != nil {
		return err
	}
	pr := newProgressUnit("upgrade chunk folders", c.Bool("quiet") || c.Bool("json"), true)
	rep, err := r.Upgrade(c.Context, func(done, total int64) { pr.update(done, total) })
	pr.finish()
	if err != nil && rep == nil {
		return err
	}
	if c.Bool("json") {
		if jerr := printJSON(os.Stdout, rep); jerr != nil {
			return jerr
		}
	} else if rep.AlreadyLatest {
		fmt.Printf("repository %s is already version %d with every chunk in frames: nothing to do\n", r.Dir, rep.To)
	} else {
		fmt.Printf("repository %s: version %d -> %d; %d of %d chunks rewritten in frames (%s stored -> %s), in %s\n",
			r.Dir, rep.From, rep.To, rep.Rewritten, rep.Chunks, humanBytes(rep.BytesBefore), humanBytes(rep.BytesAfter),
			rep.Duration.Round(time.Millisecond))
	}
	if err != nil {
		return &exitError{exitDamaged, err.Error()}
	}
	return nil
}

// openRepoCatalog opens the repository and its catalog (see openCatalog).
func openRepoCatalog(c *cli.Context) (*repo.Repo, *catalog.Catalog, error) {
	r, err := repo.Open(c.String("repo"))
	if err != nil {
		return nil, nil, err
	}
	waitForLocks(c, r)
	cat, err := openCatalog(c, r)
	if err != nil {
		return nil, nil, err
	}
	return r, cat, nil
}

// openCatalog opens --catalog (default REPO/catalog.db) as the catalog of
// r: one that another catalog owns is refused (catalog.Claim; `catalog
// rebuild --take-over` takes it over). A catalog created just now is
// filled from the repository, so a lost catalog heals itself.
func openCatalog(c *cli.Context, r *repo.Repo) (*catalog.Catalog, error) {
	path := c.String("catalog")
	if path == "" {
		path = filepath.Join(r.Dir, "catalog.db")
	}
	cat, err := catalog.Open(c.Context, path)
	if err != nil {
		return nil, err
	}
	if err := cat.Claim(c.Context, r, c.Bool("take-over")); err != nil {
		discardRefused(cat)
		return nil, err
	}
	if cat.Created() && c.Command.Name != "rebuild" {
		if _, err := cat.Rebuild(c.Context, r); err != nil {
			cat.Close()
			return nil, fmt.Errorf("new catalog %s: fill from repository: %w", path, err)
		}
	}
	return cat, nil
}

// discardRefused closes a catalog whose claim was refused, and deletes it
// when it was made just now, only to be refused: nothing is left behind.
func discardRefused(cat *catalog.Catalog) {
	cat.Close()
	if cat.Created() {
		for _, f := range []string{cat.Path(), cat.Path() + "-wal", cat.Path() + "-shm"} {
			os.Remove(f)
		}
	}
}

// waitForLocks makes r's locks wait --lock-wait for a prune, saying so on
// stderr once per holder.
func waitForLocks(c *cli.Context, r *repo.Repo) { r.LockWait, r.LockWaiting = lockWait(c) }

// lockWait is the command's --lock-wait (0 when it has none) and what to
// say, once per holder, while a lock waits for a prune: the values of
// repo.Repo's LockWait and LockWaiting.
func lockWait(c *cli.Context) (time.Duration, func(repo.LockInfo, time.Duration)) {
	return c.Duration("lock-wait"), func(h repo.LockInfo, wait time.Duration) {
		fmt.Fprintf(os.Stderr, "waiting for the repository: %s; waiting up to %s (--lock-wait)\n", h, wait)
	}
}

func backupImport(c *cli.Context) error {
	r, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	unlock, err := lockRepo(c, r, repo.LockShared, "backup import")
	if err != nil {
		return err
	}
	defer unlock()
	src := c.Args().First()
	pr := newProgress("import "+filepath.Base(src), c.Bool("quiet") || c.Bool("json"))
	p, err := ingest.Import(c.Context, r, src, ingest.Options{
		VM: c.String("vm"), App: c.String("app"), RawDisks: c.StringSlice("raw-disk"),
		Progress: func(s ingest.Progress) { pr.update(s.Done, s.Total) },
	})
	pr.finish()
	if err != nil {
		return err
	}
	if err := cat.IndexPoint(c.Context, p); err != nil {
		return fmt.Errorf("restore point %s is stored, but the catalog could not record it: %w (run `rekindle catalog rebuild`)", p.ID, err)
	}
	if c.String("app") != "" {
		a, err := r.App(p.App)
		if err == nil {
			err = cat.IndexApp(c.Context, a)
		}
		if err != nil {
			return fmt.Errorf("vm %s joined app %s, but the catalog could not record it: %w (run `rekindle catalog rebuild`)", p.VM.Name, p.App, err)
		}
	}
	st := p.Stats
	if c.Bool("json") {
		out := map[string]any{"point": p.ID, "vm": p.VM.Name, "parent": p.Parent, "stats": st}
		if st.BytesNew > 0 { // left out when nothing was new (docs/json.md: no nulls)
			out["dedup_ratio"] = float64(st.BytesRead) / float64(st.BytesNew)
		}
		return printJSON(os.Stdout, out)
	}
	fmt.Println(p.ID)
	fmt.Fprintf(os.Stderr, "vm %s: %d disks, %s logical, %s read, %s new (%s stored), %s\n",
		p.VM.Name, len(p.Disks), humanBytes(st.BytesLogical), humanBytes(st.BytesRead), humanBytes(st.BytesNew),
		humanBytes(st.BytesStored), dedup(st))
	return nil
}

// dedup says how much of what was read was already in the repository.
func dedup(st repo.IngestStats) string {
	switch {
	case st.BytesRead == 0:
		return "no data"
	case st.BytesNew == 0:
		return "nothing new (all chunks already stored)"
	default:
		return fmt.Sprintf("dedup ratio %.1fx (%.1f%% new)", float64(st.BytesRead)/float64(st.BytesNew), 100*float64(st.BytesNew)/float64(st.BytesRead))
	}
}

func appDefine(c *cli.Context) error {
	b, err := os.ReadFile(c.Args().First())
	if err != nil {
		return err
	}
	a, err := repo.ParseAppDefinition(b, time.Now())
	if err != nil {
		return fmt.Errorf("%s: %w", c.Args().First(), err)
	}
	r, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	if err := r.SaveApp(a); err != nil {
		return err
	}
	if err := cat.IndexApp(c.Context, a); err != nil {
		return fmt.Errorf("app %s is stored, but the catalog could not record it: %w (run `rekindle catalog rebuild`)", a.Name, err)
	}
	fmt.Printf("app %s: %d members in %d startup groups\n", a.Name, len(a.Members), len(a.StartupGroups()))
	for _, w := range appWarnings(c, cat, a) {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	return nil
}

func exportCmd(c *cli.Context) error {
	r, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	unlock, err := lockRepo(c, r, repo.LockShared, "export")
	if err != nil {
		return err
	}
	defer unlock()
	p, err := cat.ResolvePoint(c.Context, c.String("vm"), c.String("point"), time.Time{})
	if err != nil {
		return err
	}
	pr := newProgress("export "+p.VM.Name, c.Bool("quiet"))
	err = export.Export(c.Context, r, p, c.String("to"), export.Options{Progress: pr.update})
	pr.finish()
	if err != nil {
		return err
	}
	fmt.Printf("exported %s (%s) to %s\n", p.ID, p.VM.Name, c.String("to"))
	return nil
}

func listCmd(c *cli.Context) error {
	what := c.Command.Name
	_, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	ctx := c.Context
	asJSON := c.Bool("json")
	switch what {
	case "vms":
		vms, err := cat.VMs(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(os.Stdout, nonNil(vms))
		}
		var rows [][]string
		for _, v := range vms {
			rows = append(rows, []string{v.Name, dash(v.App), fmt.Sprint(v.Points), v.LatestPoint, humanBytes(v.LogicalBytes)})
		}
		table(os.Stdout, []string{"VM", "APP", "POINTS", "LATEST", "SIZE"}, rows)
	case "points":
		pts, err := cat.Points(ctx, c.String("vm"))
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(os.Stdout, nonNil(pts))
		}
		var rows [][]string
		for _, p := range pts {
			rows = append(rows, []string{p.ID, p.VM, dash(p.App), fmtTime(p.Created), fmt.Sprint(p.Disks),
				humanBytes(p.LogicalBytes), humanBytes(p.NewBytes), dash(p.Parent)})
		}
		table(os.Stdout, []string{"POINT", "VM", "APP", "CREATED", "DISKS", "SIZE", "NEW", "PARENT"}, rows)
	case "apps":
		apps, err := cat.Apps(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(os.Stdout, nonNil(apps))
		}
		var rows [][]string
		for _, a := range apps {
			rows = append(rows, []string{a.Name, fmt.Sprint(a.Members), fmt.Sprint(a.Groups), fmtTime(a.Updated)})
		}
		table(os.Stdout, []string{"APP", "MEMBERS", "GROUPS", "UPDATED"}, rows)
	}
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func verifyCmd(c *cli.Context) error {
	r, err := repo.Open(c.String("repo"))
	if err != nil {
		return err
	}
	unlock, err := lockRepo(c, r, repo.LockShared, "verify")
	if err != nil {
		return err
	}
	defer unlock()
	var pts []*repo.RestorePoint
	if ids := c.StringSlice("point"); len(ids) > 0 {
		_, cat, err := openRepoCatalog(c)
		if err != nil {
			return err
		}
		defer cat.Close()
		for _, id := range ids {
			p, err := cat.ResolvePoint(c.Context, "", id, time.Time{})
			if err != nil {
				return err
			}
			// Verify reads the repository's own manifest, not the catalog's copy.
			if p, err = r.Point(p.ID); err != nil {
				return err
			}
			pts = append(pts, p)
		}
	} else if pts, err = r.Points(); err != nil {
		return err
	}
	pr := newProgressUnit("verify chunks", c.Bool("quiet") || c.Bool("json"), true)
	rep, err := r.Verify(c.Context, pts, func(done, total int64) { pr.update(done, total) })
	pr.finish()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if err := printJSON(os.Stdout, rep); err != nil {
			return err
		}
	} else {
		fmt.Printf("checked %d restore points: %d indexes, %d chunks, %s\n", rep.Points, rep.Indexes, rep.Chunks, humanBytes(rep.Bytes))
		for _, p := range rep.Problems {
			fmt.Printf("%s %s: %s\n  needed by restore points: %s\n  files: %s\n", p.Kind, p.Digest, p.Error,
				strings.Join(p.Points, ", "), strings.Join(p.Files, ", "))
		}
	}
	if !rep.OK() {
		return &exitError{exitDamaged, fmt.Sprintf("verify: %d damaged or missing objects affect restore points (see above); restore those points from another copy of the repository or take new backups", len(rep.Problems))}
	}
	if !c.Bool("json") {
		fmt.Println("all ok")
	}
	return nil
}

// appWarnings says what an app definition leaves unrestorable: members with
// no restore point, and VMs backed up as part of the app that it omits.
func appWarnings(c *cli.Context, cat *catalog.Catalog, a *repo.App) []string {
	vms, err := cat.VMs(c.Context)
	if err != nil {
		return []string{fmt.Sprintf("could not check the members against the catalog: %v", err)}
	}
	known := map[string]catalog.VMSummary{}
	for _, v := range vms {
		known[v.Name] = v
	}
	member := map[string]bool{}
	var out []string
	for _, m := range a.Members {
		member[m.VM] = true
		if _, ok := known[m.VM]; !ok {
			out = append(out, fmt.Sprintf("app %s: member %s has no backup yet: `rekindle restore vapp %s` fails until it has one (`rekindle backup import --app %s FOLDER`)", a.Name, m.VM, a.Name, a.Name))
		}
	}
	for _, v := range vms {
		if v.App == a.Name && !member[v.Name] {
			out = append(out, fmt.Sprintf("app %s: vm %s was backed up as part of the app but is not a member of this definition: it will not be restored with it", a.Name, v.Name))
		}
	}
	return out
}
