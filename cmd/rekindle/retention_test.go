package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// forget keeps what a session runs from and the newest point, says why for
// each point, and prune then frees only what no remaining point uses.
func TestForgetAndPrune(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	var ids []string
	for i := range 4 {
		folder, err := vmgen.Generate(filepath.Join(dir, fmt.Sprint("src", i)), vmgen.Spec{Name: "web01", Seed: int64(i + 1),
			Disks: []vmgen.DiskSpec{{Size: 2 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
		if err != nil {
			t.Fatal(err)
		}
		id, _ := run(t, false, "backup", "import", "--repo", repoDir, folder)
		ids = append(ids, strings.TrimSpace(id))
	}
	cat, err := catalog.Open(context.Background(), filepath.Join(repoDir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	err = cat.CreateSession(context.Background(), &catalog.Session{ID: "s-pinned", Kind: catalog.KindVM, State: catalog.SessionRunning,
		VMs: []catalog.SessionVM{{VM: "web01", PointID: ids[1], Name: "web01"}}})
	cat.Close()
	if err != nil {
		t.Fatal(err)
	}

	if _, stderr := run(t, true, "forget", "--repo", repoDir); !strings.Contains(stderr, "no policy given") {
		t.Fatalf("forget without a policy: %q", stderr)
	}
	// The newest point is the one the next incremental starts from: the
	// largest id (ids begin with their UTC second; these share one).
	newest := slices.Max(ids)
	keep := []string{ids[1], newest}
	var gone []string
	for _, id := range ids {
		if !slices.Contains(keep, id) {
			gone = append(gone, id)
		}
	}
	out, _ := run(t, false, "forget", "--repo", repoDir, "--keep-last", "1", "--dry-run")
	for _, want := range []string{newest + "  ", "newest point: the parent of the next incremental backup",
		"in use by session s-pinned (running)", fmt.Sprintf("would remove %d of 4 restore points", len(gone))} {
		if !strings.Contains(out, want) {
			t.Fatalf("forget --dry-run lacks %q:\n%s", want, out)
		}
	}
	if lines := strings.Count(out, "would remove  "); lines != len(gone) {
		t.Fatalf("dry run lists %d removals:\n%s", lines, out)
	}
	out, _ = run(t, false, "list", "points", "--repo", repoDir)
	if strings.Count(out, "web01") != 4 {
		t.Fatalf("a dry run removed points:\n%s", out)
	}

	out, _ = run(t, false, "forget", "--repo", repoDir, "--keep-last", "1", "--prune")
	if !strings.Contains(out, fmt.Sprintf("removed %d of 4 restore points", len(gone))) || !strings.Contains(out, "prune: removed ") {
		t.Fatalf("forget --prune:\n%s", out)
	}
	out, _ = run(t, false, "list", "points", "--repo", repoDir)
	for _, id := range ids {
		if strings.Contains(out, "\n"+id+" ") != slices.Contains(keep, id) {
			t.Fatalf("points after forget (keep %v):\n%s", keep, out)
		}
	}
	run(t, false, "verify", "--repo", repoDir)
	// The pinned point still reads whole.
	run(t, false, "export", "--repo", repoDir, "--point", ids[1], "--to", filepath.Join(dir, "out"))
	out, _ = run(t, false, "prune", "--repo", repoDir)
	if !strings.Contains(out, "removed 0 chunks") {
		t.Fatalf("second prune: %q", out)
	}
}

// One repository has one server: a second serve is refused naming the
// first; prune waits for no one and is refused while serve runs; a killed
// server's lock does not outlive it.
func TestServeLock(t *testing.T) {
	repoDir := filepath.Join(t.TempDir(), "repo")
	run(t, false, "init", "--repo", repoDir)
	api := freePort(t)
	s := &server{t: t, api: api, args: []string{"serve", "--repo", repoDir, "--nfs", freePort(t), "--portmap", "off", "--api", api, "--metrics", "off"}}
	s.start()
	defer s.kill()
	pid := fmt.Sprintf("pid %d", s.cmd.Process.Pid)
	_, stderr := run(t, true, "serve", "--repo", repoDir, "--nfs", freePort(t), "--portmap", "off", "--api", freePort(t), "--metrics", "off")
	if !strings.Contains(stderr, "another `rekindle serve` uses this repository") || !strings.Contains(stderr, pid) {
		t.Fatalf("second serve: %q", stderr)
	}
	if _, stderr := run(t, true, "prune", "--repo", repoDir); !strings.Contains(stderr, `lock of "serve" held by `+pid) {
		t.Fatalf("prune while serving: %q", stderr)
	}
	s.kill()
	if out, _ := run(t, false, "prune", "--repo", repoDir); !strings.Contains(out, "prune: removed 0 chunks") {
		t.Fatalf("prune after the server died: %q", out)
	}
}
