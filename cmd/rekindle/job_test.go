package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

func TestJobs(t *testing.T) {
	lab := newBackupLab(t)
	ctx := context.Background()
	if _, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: "web01", Disks: []int64{1 << 20}, PowerOn: true}); err != nil {
		t.Fatal(err)
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
	run(t, false, "job", "define", "--repo", repoDir, write("often.yaml", "name: often\nvms: [web01]\ninterval: 1s\n"))
	api := freePort(t)
	s := &server{t: t, api: api, args: []string{"serve", "--repo", repoDir, "--nfs", freePort(t), "--portmap", "off", "--api", api, "--metrics", "off"}}
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
}
