package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	folder := lockWaitVM(t, dir)
	waitsForPrune(t, repoDir, func(t *testing.T) {
		if pts := points(t, repoDir); len(pts) != 0 {
			t.Fatalf("a restore point was written while the prune held the repository: %v", pts)
		}
	}, "backup", "import", "--repo", repoDir, "-q", folder)
	if pts := points(t, repoDir); len(pts) != 1 {
		t.Fatalf("after the wait: %d restore points, want 1", len(pts))
	}
}

// TestReadersWaitForPrune: verify, export and replicate wait for a prune
// as backups do (the same --lock-wait, the same word of whom they wait
// for), where they failed after three tries; replicate waits for a prune
// of the source and of the target.
func TestReadersWaitForPrune(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	run(t, false, "backup", "import", "--repo", repoDir, "-q", lockWaitVM(t, dir))
	target := filepath.Join(dir, "target")

	t.Run("verify", func(t *testing.T) {
		out := waitsForPrune(t, repoDir, nil, "verify", "--repo", repoDir, "-q")
		if !strings.Contains(out, "1 restore point") {
			t.Fatalf("verify after the wait: %q", out)
		}
	})
	t.Run("export", func(t *testing.T) {
		to := filepath.Join(dir, "export")
		waitsForPrune(t, repoDir, func(t *testing.T) {
			if _, err := os.Stat(to); err == nil {
				t.Fatalf("export wrote %s while the prune held the repository", to)
			}
		}, "export", "--repo", repoDir, "-q", "--vm", "web01", "--point", "latest", "--to", to)
		if _, err := os.Stat(filepath.Join(to, "web01.vmx")); err != nil {
			t.Fatalf("export after the wait: %v", err)
		}
	})
	t.Run("replicate source", func(t *testing.T) {
		waitsForPrune(t, repoDir, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(target, "points")); err == nil {
				t.Fatal("replicate copied while the source's prune held it")
			}
		}, "replicate", "--repo", repoDir, "--to", target, "-q")
		if pts := points(t, target); len(pts) != 1 {
			t.Fatalf("target after the wait: %d restore points, want 1", len(pts))
		}
	})
	t.Run("replicate target", func(t *testing.T) {
		run(t, false, "backup", "import", "--repo", repoDir, "-q", lockWaitVM(t, t.TempDir()))
		waitsForPrune(t, target, func(t *testing.T) {
			if pts := points(t, target); len(pts) != 1 {
				t.Fatalf("replicate copied while the target's prune held it: %d points", len(pts))
			}
		}, "replicate", "--repo", repoDir, "--to", target, "-q")
		if pts := points(t, target); len(pts) != 2 {
			t.Fatalf("target after the wait: %d restore points, want 2", len(pts))
		}
	})
}

func lockWaitVM(t *testing.T, dir string) string {
	t.Helper()
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 4,
		Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillRandom}}})
	if err != nil {
		t.Fatal(err)
	}
	return folder
}

// waitsForPrune holds a prune's exclusive lock on repoDir (as another
// process would) and runs the command args: with --lock-wait 300ms it must
// fail naming the prune's lock and the wait; with --lock-wait 2m it must
// say that it waits and for whom, meanwhile do nothing (during checks
// that), and succeed once the lock is released. It returns that run's
// stdout.
func waitsForPrune(t *testing.T, repoDir string, during func(*testing.T), args ...string) string {
	t.Helper()
	r, err := repo.Open(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	prune, err := r.Lock(context.Background(), repo.LockExclusive, "prune")
	if err != nil {
		t.Fatal(err)
	}
	defer prune.Unlock()
	with := func(wait string) []string { return append(slices.Clone(args), "--lock-wait", wait) }

	_, stderr, code := runCode(t, with("300ms")...)
	if code == 0 || !strings.Contains(stderr, prune.Info().ID) || !strings.Contains(stderr, "waited 300ms") {
		t.Fatalf("%s beside a prune with --lock-wait 300ms: exit %d, stderr %q: want a failure naming the prune's lock and the wait", args[0], code, stderr)
	}

	cmd := exec.Command(binary, with("2m")...)
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
				t.Fatalf("%s ended without waiting for the prune: %v, stdout %q", args[0], cmd.Wait(), stdout.String())
			}
			waiting = strings.Contains(l, "waiting for the repository") && strings.Contains(l, `"prune"`) && strings.Contains(l, prune.Info().ID)
			if !waiting {
				t.Logf("stderr: %s", l)
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("%s: no word of waiting for the prune within a minute", args[0])
		}
	}
	if during != nil {
		during(t)
	}
	if err := prune.Unlock(); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		t.Logf("stderr: %s", l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s after the prune released: %v, stdout %q", args[0], err, stdout.String())
	}
	return stdout.String()
}
