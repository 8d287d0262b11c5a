package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25/mo"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestServeProtectSessions: serve's protect cycles log in to vCenter each
// time, so when every vCenter session ends between cycles (as when vCenter
// restarts) the next cycles still succeed; each cycle is in `protect list`
// with its package and VMs, `protect show` names each VM's point, and the
// --protect-keep-last retention leaves one point per VM.
func TestServeProtectSessions(t *testing.T) {
	lab := newBackupLab(t)
	ctx := context.Background()
	for _, vm := range []string{"db01", "web01"} {
		if _, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: vm, Disks: []int64{2 << 20}, PowerOn: true}); err != nil {
			t.Fatal(err)
		}
	}
	repoDir := filepath.Join(t.TempDir(), "repo")
	run(t, false, "init", "--repo", repoDir)
	api, metrics := freePort(t), freePort(t)
	s := &server{t: t, api: api, args: []string{"serve", "--repo", repoDir, "--portmap", "off", "--metrics", metrics,
		"--api", api, "--nfs", freePort(t), "--vc", lab.URL(), "--vc-insecure",
		"--protect-site", "hq", "--protect-every", "300ms", "--protect-vm", "db01", "--protect-vm", "web01",
		"--protect-parallel", "1", "--protect-keep-last", "1"}}
	s.start()
	defer s.kill()
	cycles := func() []catalog.JobRun {
		out, _ := run(t, false, "protect", "list", "--repo", repoDir, "--site", "hq", "--limit", "0", "--json")
		var runs []catalog.JobRun
		if err := json.Unmarshal([]byte(out), &runs); err != nil {
			t.Fatalf("protect list --json: %v\n%s", err, out)
		}
		return runs
	}
	done := func() (n int) {
		for _, r := range cycles() {
			if r.State == catalog.RunDone {
				n++
			}
		}
		return n
	}
	s.waitFor("a protect cycle done", func() bool { return done() >= 1 })

	// Every session vCenter has ends, serve's included.
	sm := session.NewManager(lab.Client)
	var m mo.SessionManager
	if err := property.DefaultCollector(lab.Client).RetrieveOne(ctx, sm.Reference(), []string{"sessionList", "currentSession"}, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, us := range m.SessionList {
		if us.Key != m.CurrentSession.Key {
			keys = append(keys, us.Key)
		}
	}
	if err := sm.TerminateSession(ctx, keys); err != nil {
		t.Fatal(err)
	}
	// The cycle running now may fail; every cycle that starts later logs
	// in again and succeeds.
	cut := time.Now()
	after := func() (out []catalog.JobRun) {
		for _, r := range cycles() {
			if r.Started.After(cut) && r.State != catalog.RunRunning {
				out = append(out, r)
			}
		}
		return out
	}
	s.waitFor("two cycles after the sessions ended", func() bool { return len(after()) >= 2 })
	runs := after()
	for _, r := range runs {
		if r.State != catalog.RunDone || r.Package == "" || r.VMsOK != 2 || r.VMsFailed != 0 || r.Trigger != "schedule" {
			t.Fatalf("cycle after vCenter's sessions ended: %+v: want done, a package, 2 VMs\n%s", r, s.log)
		}
	}
	if f := metric(t, metrics, `rekindle_protect_failures_total{site="hq"}`); f > 1 {
		t.Fatalf("%v failed cycles counted: want at most the one running when the sessions ended\n%s", f, s.log)
	}
	if n := metric(t, metrics, `rekindle_protect_last_vms_protected{site="hq"}`); n != 2 {
		t.Errorf("rekindle_protect_last_vms_protected %v: want 2", n)
	}
	last := runs[0]
	out, _ := run(t, false, "protect", "show", "--repo", repoDir, last.ID, "--json")
	var shown catalog.JobRun
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatal(err)
	}
	if len(shown.VMs) != 2 || shown.VMs[0].VM != "db01" || shown.VMs[0].PointID == "" || shown.Package != last.Package {
		t.Fatalf("protect show %s: %+v: want db01 and web01 with their points, package %s", last.ID, shown, last.Package)
	}
	text, _ := run(t, false, "protect", "show", "--repo", repoDir, last.ID)
	if !strings.Contains(text, shown.VMs[0].PointID) || !strings.Contains(text, "package "+last.Package) {
		t.Fatalf("protect show %s:\n%s", last.ID, text)
	}
	s.kill()
	// --protect-keep-last 1: of db01's points, the one of the last done
	// cycle stays, and its parent when the kill cut that cycle's retention
	// short; any other must be newer, made by a cycle after it (one that
	// failed when the sessions ended, or one the kill cut short), so its
	// parent chain reaches that point. An older point means an earlier
	// cycle's retention kept what it should have forgotten.
	var lastDone catalog.JobRun
	for _, r := range cycles() {
		if r.State == catalog.RunDone && r.Started.After(lastDone.Started) {
			lastDone = r
		}
	}
	out, _ = run(t, false, "protect", "show", "--repo", repoDir, lastDone.ID, "--json")
	var lastShown catalog.JobRun
	if err := json.Unmarshal([]byte(out), &lastShown); err != nil {
		t.Fatal(err)
	}
	kept := ""
	for _, v := range lastShown.VMs {
		if v.VM == "db01" {
			kept = v.PointID
		}
	}
	pts, _ := run(t, false, "list", "points", "--repo", repoDir, "--vm", "db01", "--json")
	var points []struct {
		ID     string `json:"id"`
		Parent string `json:"parent"`
	}
	if err := json.Unmarshal([]byte(pts), &points); err != nil {
		t.Fatal(err)
	}
	parent := map[string]string{}
	for _, p := range points {
		parent[p.ID] = p.Parent
	}
	if _, ok := parent[kept]; kept == "" || !ok {
		t.Fatalf("the last done cycle %s names db01's point %q, not among db01's points:\n%s", lastDone.ID, kept, pts)
	}
	for _, p := range points {
		id := p.ID
		for id != "" && id != kept {
			id = parent[id]
		}
		if id != kept && p.ID != parent[kept] {
			t.Errorf("db01's point %s is not the last done cycle's (%s) nor made after it: --protect-keep-last 1 kept it (%d done cycles):\n%s", p.ID, kept, done(), pts)
		}
	}
}

// TestProtectListEverySite: without --site, `protect list` lists the
// cycles of every protected site, newest first, with each one's site, and
// no backup job's runs; --site keeps one site's, --limit the newest.
func TestProtectListEverySite(t *testing.T) {
	ctx := context.Background()
	repoDir := filepath.Join(t.TempDir(), "repo")
	run(t, false, "init", "--repo", repoDir)
	if out, _ := run(t, false, "protect", "list", "--repo", repoDir); !strings.Contains(out, "no protect cycle recorded: `rekindle protect run --site SITE`") {
		t.Fatalf("protect list of an empty catalog:\n%s", out)
	}
	// The cycles as protect and serve record them, into the catalog the
	// command above created and claimed for the repository.
	cat, err := catalog.Open(ctx, filepath.Join(repoDir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	for i, r := range []catalog.JobRun{
		{ID: "c1", Job: catalog.ProtectJob("hq"), Trigger: "schedule", Package: "hq-1", VMsOK: 2},
		{ID: "c2", Job: catalog.ProtectJob("branch"), Trigger: "manual", Package: "branch-1", VMsOK: 1},
		{ID: "n1", Job: "nightly", Trigger: "schedule", VMsOK: 3},
		{ID: "c3", Job: catalog.ProtectJob("hq"), Trigger: "schedule", Package: "hq-2", VMsOK: 2},
	} {
		r.Started = t0.Add(time.Duration(i) * time.Minute)
		if err := cat.StartJobRun(ctx, &r); err != nil {
			t.Fatal(err)
		}
		r.State, r.Ended = catalog.RunDone, r.Started.Add(10*time.Second)
		if err := cat.EndJobRun(ctx, &r); err != nil {
			t.Fatal(err)
		}
	}
	if err := cat.Close(); err != nil {
		t.Fatal(err)
	}
	list := func(args ...string) (ids []string) {
		out, _ := run(t, false, append([]string{"protect", "list", "--repo", repoDir, "--json"}, args...)...)
		var runs []catalog.JobRun
		if err := json.Unmarshal([]byte(out), &runs); err != nil {
			t.Fatalf("protect list --json %v: %v\n%s", args, err, out)
		}
		for _, r := range runs {
			ids = append(ids, r.ID+"="+r.Job+"="+r.Package)
		}
		return ids
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "c3=protect:hq=hq-2 c2=protect:branch=branch-1 c1=protect:hq=hq-1"},
		{[]string{"--site", "hq"}, "c3=protect:hq=hq-2 c1=protect:hq=hq-1"},
		{[]string{"--site", "branch"}, "c2=protect:branch=branch-1"},
		{[]string{"--limit", "2"}, "c3=protect:hq=hq-2 c2=protect:branch=branch-1"},
		{[]string{"--site", "nightly"}, ""},
	} {
		if got := strings.Join(list(tt.args...), " "); got != tt.want {
			t.Errorf("protect list %v: %q, want %q", tt.args, got, tt.want)
		}
	}
	text, _ := run(t, false, "protect", "list", "--repo", repoDir)
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "SITE") || !strings.Contains(lines[2], "branch") || !strings.Contains(lines[2], "branch-1") ||
		strings.Contains(text, "nightly") || strings.Contains(text, "n1") {
		t.Fatalf("protect list: want a header and the three protect cycles, each with its site, newest first:\n%s", text)
	}
}
