package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
)

// vcFlags are restore's vCenter flags (the same names, variables and
// credential handling), without the hypervisor choice.
func vcFlags() []cli.Flag {
	var out []cli.Flag
	for _, f := range hypervisorFlags() {
		if n := f.Names()[0]; strings.HasPrefix(n, "vc") || n == "datacenter" {
			out = append(out, f)
		}
	}
	return out
}

func vcBackupFlags() []cli.Flag {
	return append([]cli.Flag{repoFlag, catalogFlag, jsonFlag, quietFlag, lockWaitFlag,
		&cli.BoolFlag{Name: "quiesce", Usage: "quiesce the guest file systems (VMs with VMware Tools running)"},
		&cli.BoolFlag{Name: "no-cbt", Usage: "do not switch on changed block tracking where it is off (backups of such VMs are full)"},
		&cli.StringFlag{Name: "transport", Value: vcbackup.TransportAuto, Usage: "how disks are read: auto (nfc when powered on, datastore when off; a running VM's incremental reads its changed areas from the snapshot's disk by ranged datastore reads, nfc if the host refuses), nfc or datastore"},
		&cli.IntFlag{Name: "parallel", Value: 2, Usage: "VMs backed up at once"},
		&cli.IntFlag{Name: "disk-parallel", Value: 2, Usage: "disks of one VM read at once"},
		&cli.DurationFlag{Name: "vm-wait", Usage: "how long to wait for another backup of the same VM (another process's, or a job's in serve) to end (0: refuse it, naming that backup)"},
	}, vcFlags()...)
}

func vcBackupCommands() []*cli.Command {
	return []*cli.Command{
		withConfig(&cli.Command{Name: "vm", Usage: "back up VMs from vCenter (incremental by changed block tracking)", ArgsUsage: "NAME...",
			Flags: vcBackupFlags(), Action: backupVMCmd}),
		withConfig(&cli.Command{Name: "vapp", Usage: "back up a vApp from vCenter: its members and its startup order as the app definition", ArgsUsage: "NAME",
			Flags: vcBackupFlags(), Action: backupVMCmd}),
	}
}

// vcBackupConfig connects to vCenter and opens the repository; done
// closes both.
func vcBackupConfig(c *cli.Context) (vcbackup.Config, func(), error) {
	r, cat, err := openRepoCatalog(c)
	if err != nil {
		return vcbackup.Config{}, nil, err
	}
	d, err := connectVC(c, "")
	if err != nil {
		cat.Close()
		return vcbackup.Config{}, nil, err
	}
	cfg := vcbackup.Config{Client: d.Client(), Datacenter: c.String("datacenter"), Repo: r, Catalog: cat,
		Quiesce: c.Bool("quiesce"), NoCBT: c.Bool("no-cbt"), Transport: c.String("transport"),
		Parallel: c.Int("parallel"), DiskParallel: c.Int("disk-parallel"), ClaimWait: c.Duration("vm-wait"),
		ClaimWaiting: func(vm string, h repo.LockInfo, wait time.Duration) {
			fmt.Fprintf(os.Stderr, "%s: waiting for another backup of this VM: %s; waiting up to %s (--vm-wait)\n", vm, h, wait)
		}}
	return cfg, func() { d.Close(context.Background()); cat.Close() }, nil
}

func backupVMCmd(c *cli.Context) error {
	if c.NArg() == 0 {
		return usageErr("backup vm: give one or more VM names")
	}
	switch t := c.String("transport"); t {
	case vcbackup.TransportAuto, vcbackup.TransportNFC, vcbackup.TransportDatastore:
	default:
		return usageErr("--transport %q: want auto, nfc or datastore", t)
	}
	cfg, done, err := vcBackupConfig(c)
	if err != nil {
		return err
	}
	defer done()
	if !c.Bool("quiet") && !c.Bool("json") {
		cfg.Progress = progressLines(os.Stderr)
	}
	var results []vcbackup.Result
	if c.Command.Name == "vapp" {
		ar, err := vcbackup.BackupVApp(c.Context, cfg, c.Args().First())
		if ar == nil {
			return err
		}
		results = ar.Members
		if c.Bool("json") {
			if perr := printJSON(os.Stdout, ar); perr != nil {
				return perr
			}
		} else {
			printResults(os.Stdout, results)
			if ar.AppSaved {
				fmt.Printf("app %s: %d members in %d startup groups recorded\n", ar.App.Name, len(ar.App.Members), len(ar.App.StartupGroups()))
			} else {
				fmt.Println(ar.AppNote)
			}
		}
		if err != nil {
			return &exitError{exitFailure, err.Error()}
		}
		return nil
	}
	results, err = vcbackup.BackupVMs(c.Context, cfg, c.Args().Slice())
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if err := printJSON(os.Stdout, results); err != nil {
			return err
		}
	} else {
		printResults(os.Stdout, results)
	}
	if n := failed(results); n > 0 {
		return &exitError{exitFailure, fmt.Sprintf("%d of %d VMs failed (the others are backed up)", n, len(results))}
	}
	return nil
}

func failed(rs []vcbackup.Result) int {
	n := 0
	for _, r := range rs {
		if r.Err != nil {
			n++
		}
	}
	return n
}

// printResults prints a line per VM, then its notes.
func printResults(w io.Writer, rs []vcbackup.Result) {
	for _, r := range rs {
		if r.Err != nil {
			fmt.Fprintf(w, "%s: FAILED: %v\n", r.VM, r.Err)
		} else {
			var size int64
			for _, d := range r.Point.Disks {
				size += d.Size
			}
			pct := 0.0
			if size > 0 {
				pct = 100 * float64(r.BytesRead) / float64(size)
			}
			var used int64
			for _, d := range r.Disks {
				used += d.BytesRead
			}
			// Over nfc the export lease streams each disk: what is
			// transferred can exceed what changed.
			fmt.Fprintf(w, "%s: point %s (%s): transferred %s from vCenter for %s read of %s (%.1f%%), %s new, %s\n", r.VM, r.Point.ID, r.Mode,
				humanBytes(r.BytesRead), humanBytes(used), humanBytes(size), pct, humanBytes(r.Stats.BytesNew), r.Duration.Round(time.Millisecond))
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  %s: %s\n", r.VM, n)
		}
	}
}

// progressLines prints a line per VM phase and every 10% of reading.
func progressLines(w io.Writer) func(vcbackup.Progress) {
	var mu sync.Mutex
	last := map[string]string{}
	return func(p vcbackup.Progress) {
		mu.Lock()
		defer mu.Unlock()
		key := p.Phase
		if p.Phase == "read" && p.Total > 0 {
			key = fmt.Sprintf("read %d%%", 100*p.Done/p.Total/10*10)
		}
		if last[p.VM] == key {
			return
		}
		last[p.VM] = key
		if p.Phase == "read" {
			fmt.Fprintf(w, "%s: %s of %s changed/allocated\n", p.VM, key, humanBytes(p.Total))
			return
		}
		if slices.Contains([]string{"snapshot", "save"}, p.Phase) {
			fmt.Fprintf(w, "%s: %s\n", p.VM, p.Phase)
		}
	}
}
