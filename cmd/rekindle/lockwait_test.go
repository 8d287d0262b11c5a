package main

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// TestBackupWaitsForPrune: a `rekindle backup import` process meets the
// exclusive lock of a prune held by another process (this test): it says
// that it waits and for whom, does not run meanwhile, and backs up once the
// prune lets go. With a short --lock-wait it fails naming the holder.
func TestBackupWaitsForPrune(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 4,
		Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillRandom}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	prune, err := r.Lock(context.Background(), repo.LockExclusive, "prune")
	if err != nil {
		t.Fatal(err)
	}
	defer prune.Unlock()

	_, stderr, code := runCode(t, "backup", "import", "--repo", repoDir, "-q", "--lock-wait", "300ms", folder)
	if code == 0 || !strings.Contains(stderr, prune.Info().ID) || !strings.Contains(stderr, "waited 300ms") {
		t.Fatalf("backup beside a prune with --lock-wait 300ms: exit %d, stderr %q: want a failure naming the prune's lock and the wait", code, stderr)
	}

	cmd := exec.Command(binary, "backup", "import", "--repo", repoDir, "-q", "--lock-wait", "2m", folder)
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(time.Minute)
	for waiting := false; !waiting; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("backup ended without waiting for the prune: %v, stdout %q", cmd.Wait(), stdout.String())
			}
			waiting = strings.Contains(l, "waiting for the repository") && strings.Contains(l, `"prune"`) && strings.Contains(l, prune.Info().ID)
			if !waiting {
				t.Logf("stderr: %s", l)
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatal("no word of waiting for the prune within a minute")
		}
	}
	if pts := points(t, repoDir); len(pts) != 0 {
		t.Fatalf("a restore point was written while the prune held the repository: %v", pts)
	}
	if err := prune.Unlock(); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		t.Logf("stderr: %s", l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("backup after the prune released: %v, stdout %q", err, stdout.String())
	}
	if pts := points(t, repoDir); len(pts) != 1 {
		t.Fatalf("after the wait: %d restore points, want 1", len(pts))
	}
}
