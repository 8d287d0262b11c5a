package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
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

// TestServeProtectPrune: with --protect-prune, serve's protect cycles
// prune after their retention, beside serve's own lock, while it serves:
// a point a running session reads is kept whole through the prunes, and
// once the session ends a later cycle forgets it and its prune frees the
// chunks only that point named.
func TestServeProtectPrune(t *testing.T) {
	lab := newBackupLab(t)
	ctx := context.Background()
	const size = 2 << 20
	if _, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: "db01", Disks: []int64{size}, PowerOn: true}); err != nil {
		t.Fatal(err)
	}
	fill := func(seed byte) {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i/7) ^ byte(i/4093)*seed ^ seed
		}
		if err := lab.WriteDisk("db01", 0, 0, b); err != nil {
			t.Fatal(err)
		}
	}
	repoDir := filepath.Join(t.TempDir(), "repo")
	run(t, false, "init", "--repo", repoDir)
	fill(1)
	run(t, false, "backup", "vm", "--repo", repoDir, "--vc", lab.URL(), "--vc-insecure", "db01")
	points := func() (ids []string) {
		out, _ := run(t, false, "list", "points", "--repo", repoDir, "--vm", "db01", "--json")
		var ps []struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(out), &ps); err != nil {
			t.Fatalf("list points --json: %v\n%s", err, out)
		}
		for _, p := range ps {
			ids = append(ids, p.ID)
		}
		return ids
	}
	p0 := points()[0]
	// A running restore session reads p0, as the catalog records one.
	session := func(state string) {
		cat, err := catalog.Open(ctx, filepath.Join(repoDir, "catalog.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer cat.Close()
		if state == catalog.SessionRunning {
			err = cat.CreateSession(ctx, &catalog.Session{ID: "s1", Kind: catalog.KindTest, State: state,
				VMs: []catalog.SessionVM{{VM: "db01", PointID: p0}}})
		} else {
			err = cat.SetSessionState(ctx, "s1", state, "")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	session(catalog.SessionRunning)
	fill(2) // every chunk of the cycles' points differs from p0's

	api, metrics := freePort(t), freePort(t)
	args := []string{"serve", "--repo", repoDir, "--portmap", "off", "--metrics", metrics,
		"--api", api, "--nfs", freePort(t), "--vc", lab.URL(), "--vc-insecure",
		"--protect-site", "hq", "--protect-every", "300ms", "--protect-vm", "db01", "--protect-prune"}
	if _, stderr := run(t, true, args...); !strings.Contains(stderr, "--protect-prune needs a retention") {
		t.Fatalf("serve --protect-prune without a retention: %s", stderr)
	}
	s := &server{t: t, api: api, args: append(args, "--protect-keep-last", "1")}
	s.start()
	defer s.kill()
	prunes := func() int { return strings.Count(s.log.String(), "prune done") }
	s.waitFor("two protect cycles' prunes", func() bool { return prunes() >= 2 })
	if !slices.Contains(points(), p0) {
		t.Fatalf("the point a running session reads, %s, was forgotten: %v\n%s", p0, points(), s.log)
	}
	// The prune kept every chunk p0 needs: it reads back whole.
	if out, _ := run(t, false, "verify", "--repo", repoDir, "--point", p0); !strings.Contains(out, "checked 1 restore points") || !strings.Contains(out, "all ok") {
		t.Fatalf("verify --point %s after the prunes:\n%s", p0, out)
	}

	before := chunkCount(t, repoDir)
	session(catalog.SessionDone)
	// The second prune from now follows a whole cycle (its forget
	// included) that started after the session ended.
	n := prunes()
	s.waitFor("two more prunes", func() bool { return prunes() >= n+2 })
	if slices.Contains(points(), p0) {
		t.Fatalf("%s, its session ended, is still kept by --protect-keep-last 1: %v", p0, points())
	}
	if after := chunkCount(t, repoDir); after >= before {
		t.Fatalf("chunk files: %d when the session ended, %d after two more cycles: the prunes freed none of %s's\n%s", before, after, p0, s.log)
	}
	s.kill()
	run(t, false, "verify", "--repo", repoDir)
}

// chunkCount counts the chunk files of the repository in dir.
func chunkCount(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(dir, "chunks"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
