package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// metric reads one sample of a running server's /metrics (-1 when absent).
func metric(t *testing.T, addr, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestServeProtectsOnSchedule: `rekindle serve --protect-site` backs up the
// simulator's VM and stores site packages every --protect-every; once
// vCenter is gone its cycles fail and are counted, and serve goes on
// serving.
func TestServeProtectsOnSchedule(t *testing.T) {
	lab := newBackupLab(t)
	ctx := context.Background()
	if _, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: "db01", Disks: []int64{2 << 20}, PowerOn: true}); err != nil {
		t.Fatal(err)
	}
	if err := lab.WriteDisk("db01", 0, 1<<20, []byte("data of db01")); err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(t.TempDir(), "repo")
	run(t, false, "init", "--repo", repoDir)
	api, metrics := freePort(t), freePort(t)
	s := &server{t: t, api: api, args: []string{"serve", "--repo", repoDir, "--portmap", "off", "--metrics", metrics,
		"--api", api, "--nfs", freePort(t), "--vc", lab.URL(), "--vc-insecure",
		"--protect-site", "hq", "--protect-every", "300ms", "--protect-vm", "db01"}}
	s.start()
	defer s.kill()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("serve: %s not within 2 minutes\n%s", what, s.log)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	packages := func() int {
		ents, _ := os.ReadDir(filepath.Join(repoDir, "sites"))
		return len(ents)
	}
	waitFor("two site packages", func() bool { return packages() >= 2 })
	if ts := metric(t, metrics, `rekindle_protect_last_success_timestamp_seconds{site="hq"}`); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last success %v after two cycles", ts)
	}
	if d := metric(t, metrics, `rekindle_protect_last_duration_seconds{site="hq"}`); d <= 0 {
		t.Fatalf("last duration %v", d)
	}
	out, _ := run(t, false, "list", "points", "--repo", repoDir, "--vm", "db01", "--json")
	if strings.Count(out, `"id"`) < 2 {
		t.Fatalf("points of db01 after two cycles:\n%s", out)
	}
	// vCenter goes away: cycles fail, serve stays.
	lab.Server.CloseClientConnections()
	lab.Server.Close()
	waitFor("a failed cycle counted", func() bool {
		return metric(t, metrics, `rekindle_protect_failures_total{site="hq"}`) >= 1
	})
	if _, err := testClient(api).Status(ctx); err != nil {
		t.Fatalf("serve after failed protect cycles: %v\n%s", err, s.log)
	}
	if s.cmd.ProcessState != nil {
		t.Fatalf("serve exited")
	}
	s.kill()
	if !strings.Contains(s.log.String(), "protect cycle failed") {
		t.Fatalf("no failed cycle in the log:\n%s", s.log)
	}
}
