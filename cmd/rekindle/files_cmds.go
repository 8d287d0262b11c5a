package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/backupfs/guestfs"
	"github.com/rekindle/rekindle/backupfs/repo"
)

// filesCommands is `rekindle files`: file-level restore from a restore
// point's guest filesystems, read straight from the repository.
func filesCommands() []*cli.Command {
	sel := func(extra ...cli.Flag) []cli.Flag {
		return append([]cli.Flag{repoFlag,
			&cli.StringFlag{Name: "vm", Required: true, Usage: "VM name"},
			&cli.StringFlag{Name: "point", Value: "latest", Usage: "restore point id, or latest"},
			jsonFlag}, extra...)
	}
	return []*cli.Command{{
		Name:  "files",
		Usage: "browse and copy guest files out of a restore point (paths are DISK/VOLUME/path inside the guest)",
		Subcommands: []*cli.Command{
			{Name: "ls", Usage: "list the point's disks, a disk's volumes (with the status of those not served), or a guest folder",
				ArgsUsage: "[PATH]", Flags: sel(), Action: filesLs},
			{Name: "get", Usage: "copy files or whole folders out, keeping mode, mtime and symlinks",
				ArgsUsage: "PATH...", Flags: sel(quietFlag, &cli.StringFlag{Name: "to", Required: true, Usage: "local folder to copy into (created; existing files are never overwritten)"}),
				Action: filesGet},
			{Name: "find", Usage: "find entries whose name matches a shell pattern",
				ArgsUsage: "[PATH]", Flags: sel(&cli.StringFlag{Name: "name", Required: true, Usage: "shell pattern, e.g. '*.conf'"}),
				Action: filesFind},
		},
	}}
}

// openFiles opens the guest file view and resolves --point.
func openFiles(c *cli.Context) (*guestfs.FS, string, string, error) {
	r, err := repo.Open(c.String("repo"))
	if err != nil {
		return nil, "", "", err
	}
	vm, point := c.String("vm"), c.String("point")
	if point == "latest" {
		p, err := r.LatestPoint(vm)
		if err != nil {
			return nil, "", "", fmt.Errorf("vm %s: latest restore point: %w (see `rekindle list points`)", vm, err)
		}
		point = p.ID
	} else if p, err := r.Point(point); err != nil {
		return nil, "", "", fmt.Errorf("restore point %s: %w (see `rekindle list points --vm %s`)", point, err, vm)
	} else if p.VM.Name != vm {
		return nil, "", "", fmt.Errorf("restore point %s belongs to vm %s, not %s", point, p.VM.Name, vm)
	}
	fs, err := guestfs.New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), guestfs.Options{})
	if err != nil {
		return nil, "", "", err
	}
	return fs, vm, point, nil
}

func filesLs(c *cli.Context) error {
	fs, vm, point, err := openFiles(c)
	if err != nil {
		return err
	}
	items, err := fs.List(vm, point, c.Args().First())
	if err != nil {
		return notFoundHint(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, nonNil(items))
	}
	var rows [][]string
	for _, it := range items {
		name := it.Name
		switch {
		case it.Type == "symlink":
			name += " -> " + it.Target
		case it.Type == "dir":
			name += "/"
		}
		info := ""
		if v := it.Volume; v != nil {
			info = v.Filesystem + " " + v.Status
			if it.Type == "status" {
				info += ": " + v.Reason
				for _, n := range v.Notes {
					info += " (" + n + ")"
				}
			}
		}
		rows = append(rows, []string{it.Mode, strconv.FormatInt(it.Size, 10), it.Mtime.UTC().Format("2006-01-02 15:04:05"), name, info})
	}
	table(c.App.Writer, []string{"MODE", "SIZE", "MTIME (UTC)", "NAME", "VOLUME"}, rows)
	return nil
}

func filesGet(c *cli.Context) error {
	fs, vm, point, err := openFiles(c)
	if err != nil {
		return err
	}
	pr := newProgress("files get", c.Bool("quiet") || c.Bool("json"))
	sum, err := fs.Get(c.Context, vm, point, c.Args().Slice(), c.String("to"), pr.update)
	pr.finish()
	if err != nil {
		return notFoundHint(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, sum)
	}
	fmt.Fprintf(c.App.Writer, "copied %d files, %d folders, %d symlinks (%s) into %s\n", sum.Files, sum.Dirs, sum.Symlinks, humanBytes(sum.Bytes), sum.To)
	for _, s := range sum.Skipped {
		fmt.Fprintf(c.App.Writer, "skipped (not a file, folder or symlink): %s\n", s)
	}
	return nil
}

func filesFind(c *cli.Context) error {
	fs, vm, point, err := openFiles(c)
	if err != nil {
		return err
	}
	var found []guestfs.Item
	err = fs.Find(c.Context, vm, point, c.Args().First(), c.String("name"), func(it guestfs.Item) {
		if c.Bool("json") {
			found = append(found, it)
			return
		}
		fmt.Fprintln(c.App.Writer, it.Path)
	})
	if err != nil {
		return notFoundHint(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, nonNil(found))
	}
	return nil
}

func notFoundHint(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w (list what is there with `rekindle files ls`)", err)
	}
	return err
}
