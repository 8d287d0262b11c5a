package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

func TestJobs(t *testing.T) {
	lab := newBackupLab(t)
	ctx := context.Background()
	// serve's job backs up app01 while `job run` backs up web01 beside it.
	for _, name := range []string{"web01", "app01"} {
		if _, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: name, Disks: []int64{1 << 20}, PowerOn: true}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("vcenter: {url: %q, insecure: true}\n%s", lab.URL(), body)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, stderr := run(t, true, "job", "define", "--repo", repoDir, write("bad.yaml", "name: bad\nvms: [web01]\n")); !strings.Contains(stderr, "give interval") {
		t.Fatalf("bad job: %q", stderr)
	}
	out, _ := run(t, false, "job", "define", "--repo", repoDir, write("nightly.yaml", "name: nightly\nvms: [web01, gone01]\ncron: '0 2 * * *'\nretention: {keep_last: 2}\n"))
	if !strings.Contains(out, "job nightly: cron 0 2 * * *") {
		t.Fatalf("job define: %q", out)
	}
	out, _ = run(t, true, "job", "run", "--repo", repoDir, "nightly")
	if !strings.Contains(out, "partial (1 ok, 1 failed") || !strings.Contains(out, "web01: point ") || !strings.Contains(out, "gone01: FAILED") {
		t.Fatalf("job run: %q", out)
	}
	out, _ = run(t, false, "job", "show", "--repo", repoDir, "nightly")
	if !strings.Contains(out, "runs:") || !strings.Contains(out, "partial") || !strings.Contains(out, `no VM named "gone01"`) {
		t.Fatalf("job show: %q", out)
	}

	// serve runs a job whose interval is short, again and again.
	run(t, false, "job", "define", "--repo", repoDir, write("often.yaml", "name: often\nvms: [app01]\ninterval: 1s\n"))
	api, metrics := freePort(t), freePort(t)
	s := &server{t: t, api: api, args: []string{"serve", "--repo", repoDir, "--nfs", freePort(t), "--portmap", "off", "--api", api, "--metrics", metrics}}
	s.start()
	defer s.kill()
	deadline := time.Now().Add(time.Minute)
	for {
		out, _ := run(t, false, "job", "list", "--repo", repoDir, "--json")
		var jobs []struct {
			Name string
			Last *struct {
				Trigger, State string
			} `json:"last_run"`
		}
		if err := json.Unmarshal([]byte(out), &jobs); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, j := range jobs {
			if j.Name == "often" && j.Last != nil && j.Last.Trigger == "schedule" && j.Last.State == "done" {
				n++
			}
		}
		show, _ := run(t, false, "job", "show", "--repo", repoDir, "often")
		if n == 1 && strings.Count(show, " done (1 ok") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not run the due job twice:\n%s\n%s", show, s.log)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The job metrics of serve are the catalog's runs: those of `job run`
	// (another process, before serve and beside it) and serve's own.
	if err := lab.WriteDisk("web01", 0, 0, []byte("changed")); err != nil {
		t.Fatal(err)
	}
	out, _ = run(t, true, "job", "run", "--json", "--repo", repoDir, "nightly")
	var manual catalog.JobRun
	if err := json.Unmarshal([]byte(out), &manual); err != nil || manual.State != "partial" || manual.BytesRead <= 0 {
		t.Fatalf("job run --json beside serve: %v %q", err, out)
	}
	history := func(job string) []catalog.JobRun {
		out, _ := run(t, false, "job", "show", "--json", "--runs", "1000", "--repo", repoDir, job)
		var v struct {
			Job struct{ Runs []catalog.JobRun }
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatal(err)
		}
		return v.Job.Runs
	}
	nightly := history("nightly")
	if len(nightly) != 2 || nightly[0].ID != manual.ID {
		t.Fatalf("nightly's runs: %+v", nightly)
	}
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-3 {
			t.Fatalf("%s = %v, want %v\n%s", name, got, want, s.log)
		}
	}
	near("nightly failures", metric(t, metrics, `rekindle_job_vm_failures_total{job="nightly"}`), 2)
	near("nightly partial runs", metric(t, metrics, `rekindle_job_runs_total{job="nightly",state="partial"}`), 2)
	near("nightly bytes read", metric(t, metrics, `rekindle_job_read_bytes_total{job="nightly"}`), float64(nightly[0].BytesRead+nightly[1].BytesRead))
	near("nightly bytes stored", metric(t, metrics, `rekindle_job_stored_bytes_total{job="nightly"}`), float64(nightly[0].BytesStored+nightly[1].BytesStored))
	near("nightly last duration", metric(t, metrics, `rekindle_job_last_duration_seconds{job="nightly"}`), manual.Ended.Sub(manual.Started).Seconds())
	near("nightly last success (none)", metric(t, metrics, `rekindle_job_last_success_timestamp_seconds{job="nightly"}`), -1)
	// serve keeps running often: compare once the metrics and the history
	// read agree on the number of runs.
	for i := 0; ; i++ {
		done := metric(t, metrics, `rekindle_job_runs_total{job="often",state="done"}`)
		success := metric(t, metrics, `rekindle_job_last_success_timestamp_seconds{job="often"}`)
		read := metric(t, metrics, `rekindle_job_read_bytes_total{job="often"}`)
		var runs []catalog.JobRun
		var bytes int64
		for _, r := range history("often") {
			if r.State == "done" {
				runs = append(runs, r)
				bytes += r.BytesRead
			}
		}
		if again := metric(t, metrics, `rekindle_job_runs_total{job="often",state="done"}`); float64(len(runs)) != done || again != done {
			if i == 20 {
				t.Fatalf("often: %v then %v done runs in the metrics, %d in the history", done, again, len(runs))
			}
			continue
		}
		near("often last success", success, float64(runs[0].Ended.UnixNano())/1e9)
		near("often bytes read", read, float64(bytes))
		break
	}
}
