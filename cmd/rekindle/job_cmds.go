package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/backupjob"
)

func jobCommand() *cli.Command {
	flags := []cli.Flag{repoFlag, catalogFlag, jsonFlag}
	return &cli.Command{
		Name: "job", Usage: "backup jobs from vCenter on a schedule (`rekindle serve` runs them when due)",
		Subcommands: []*cli.Command{
			{Name: "define", Usage: "record (or replace) a job from a YAML definition", ArgsUsage: "FILE.yaml", Flags: flags[:2], Action: jobDefineCmd},
			{Name: "list", Usage: "jobs with their schedule and last run", Flags: flags, Action: jobListCmd},
			{Name: "show", Usage: "a job's definition and run history, with the VMs of its last run", ArgsUsage: "NAME",
				Flags: append(flags, &cli.IntFlag{Name: "runs", Value: 10, Usage: "how many runs to show"}), Action: jobShowCmd},
			{Name: "run", Usage: "run a job now", ArgsUsage: "NAME", Flags: append(flags, quietFlag), Action: jobRunCmd},
			{Name: "delete", Usage: "remove a job and its history (its restore points stay)", ArgsUsage: "NAME", Flags: flags[:2], Action: jobDeleteCmd},
		},
	}
}

func jobDefineCmd(c *cli.Context) error {
	b, err := os.ReadFile(c.Args().First())
	if err != nil {
		return err
	}
	d, err := backupjob.Parse(b)
	if err != nil {
		return &exitError{exitUsage, fmt.Sprintf("%s: %v", c.Args().First(), err)}
	}
	_, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	if err := cat.SaveJob(c.Context, d.Name, b); err != nil {
		return err
	}
	fmt.Printf("job %s: %s; `rekindle serve` runs it when due, `rekindle job run %s` now\n", d.Name, d.Schedule(), d.Name)
	return nil
}

type jobSummary struct {
	Name     string           `json:"name"`
	Schedule string           `json:"schedule"`
	Next     time.Time        `json:"next,omitzero"`
	Last     *catalog.JobRun  `json:"last_run,omitempty"`
	Runs     []catalog.JobRun `json:"runs,omitempty"`
	Error    string           `json:"error,omitempty"`
}

func summarize(c *cli.Context, cat *catalog.Catalog, j catalog.Job, runs int) jobSummary {
	s := jobSummary{Name: j.Name}
	d, err := backupjob.Parse(j.Definition)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	s.Schedule = d.Schedule()
	rs, _ := cat.JobRuns(c.Context, j.Name, runs)
	from := j.Created
	if len(rs) > 0 {
		s.Last = &rs[0]
		from = rs[0].Started
	}
	s.Next = d.Next(from)
	if runs > 1 {
		s.Runs = rs
	}
	return s
}

func runLine(r *catalog.JobRun) string {
	if r == nil {
		return "never"
	}
	d := "running"
	if !r.Ended.IsZero() {
		d = r.Ended.Sub(r.Started).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%s %s (%d ok, %d failed, %s read, %s)", r.Started.Local().Format("2006-01-02 15:04:05"), r.State,
		r.VMsOK, r.VMsFailed, humanBytes(r.BytesRead), d)
}

func jobListCmd(c *cli.Context) error {
	_, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	jobs, err := cat.Jobs(c.Context)
	if err != nil {
		return err
	}
	var out []jobSummary
	for _, j := range jobs {
		out = append(out, summarize(c, cat, j, 1))
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, nonNil(out))
	}
	var rows [][]string
	for _, s := range out {
		if s.Error != "" {
			rows = append(rows, []string{s.Name, "-", "-", "definition broken: " + s.Error})
			continue
		}
		rows = append(rows, []string{s.Name, s.Schedule, s.Next.Local().Format("2006-01-02 15:04:05"), runLine(s.Last)})
	}
	table(os.Stdout, []string{"JOB", "SCHEDULE", "NEXT", "LAST RUN"}, rows)
	return nil
}

func jobShowCmd(c *cli.Context) error {
	_, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	j, err := cat.Job(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	s := summarize(c, cat, *j, max(c.Int("runs"), 2))
	var last *catalog.JobRun
	if s.Last != nil {
		last, err = cat.JobRun(c.Context, s.Last.ID)
		if err != nil {
			return err
		}
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, map[string]any{"job": s, "definition": string(j.Definition), "last_run": last})
	}
	fmt.Printf("job %s: %s, next %s\n", s.Name, s.Schedule, s.Next.Local().Format("2006-01-02 15:04:05"))
	fmt.Println(strings.TrimSpace(string(j.Definition)))
	fmt.Println("\nruns:")
	for i := range s.Runs {
		fmt.Printf("  %s  %s\n", s.Runs[i].ID, runLine(&s.Runs[i]))
	}
	if last != nil {
		fmt.Printf("\nlast run %s:\n", last.ID)
		var rows [][]string
		for _, v := range last.VMs {
			res := v.PointID + " " + v.Mode
			if v.Error != "" {
				res = "FAILED: " + v.Error
			}
			rows = append(rows, []string{v.VM, res, humanBytes(v.BytesRead), v.Duration.Round(time.Millisecond).String(), v.Notes})
		}
		table(os.Stdout, []string{"VM", "RESULT", "READ", "TIME", "NOTES"}, rows)
	}
	return nil
}

func jobRunCmd(c *cli.Context) error {
	r, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	j, err := cat.Job(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	d, err := backupjob.Parse(j.Definition)
	if err != nil {
		return err
	}
	runner := &backupjob.Runner{Repo: r, Catalog: cat}
	if !c.Bool("quiet") && !c.Bool("json") {
		runner.Progress = progressLines(os.Stderr)
	}
	run, err := runner.Run(c.Context, d, "manual")
	if err != nil {
		return err
	}
	if full, err := cat.JobRun(c.Context, run.ID); err == nil {
		run = full
	}
	if c.Bool("json") {
		if err := printJSON(os.Stdout, run); err != nil {
			return err
		}
	} else {
		fmt.Printf("job %s run %s: %s\n", d.Name, run.ID, runLine(run))
		for _, v := range run.VMs {
			if v.Error != "" {
				fmt.Printf("  %s: FAILED: %s\n", v.VM, v.Error)
			} else {
				fmt.Printf("  %s: point %s (%s), read %s\n", v.VM, v.PointID, v.Mode, humanBytes(v.BytesRead))
			}
		}
		if run.Error != "" {
			fmt.Printf("  %s\n", run.Error)
		}
	}
	if run.State != catalog.RunDone {
		return &exitError{exitFailure, fmt.Sprintf("job %s: run %s %s", d.Name, run.ID, run.State)}
	}
	return nil
}

func jobDeleteCmd(c *cli.Context) error {
	_, cat, err := openRepoCatalog(c)
	if err != nil {
		return err
	}
	defer cat.Close()
	if err := cat.DeleteJob(c.Context, c.Args().First()); err != nil {
		return err
	}
	fmt.Printf("job %s deleted\n", c.Args().First())
	return nil
}
