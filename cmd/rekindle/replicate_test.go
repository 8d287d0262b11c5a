package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rekindle/rekindle/testdata/vmgen"
)

// replicaSource is a repository with one VM of a size-byte random disk,
// imported once.
func replicaSource(t *testing.T, size int64) (repoDir, folder string) {
	t.Helper()
	dir := t.TempDir()
	repoDir = filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 7, MemoryMB: 256,
		Disks: []vmgen.DiskSpec{{Size: size, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, false, "backup", "import", "--repo", repoDir, "-q", folder)
	return repoDir, folder
}

type replicateStats struct {
	Chunks, ChunksPresent, Points, Sites int
	Bytes                                int64
	Refused                              []struct{ Name string }
}

func replicateJSON(t *testing.T, out string) replicateStats {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("replicate --json: %v\n%s", err, out)
	}
	st := replicateStats{Chunks: int(m["chunks"].(float64)), ChunksPresent: int(m["chunks_present"].(float64)),
		Points: int(m["points"].(float64)), Sites: int(m["sites"].(float64)), Bytes: int64(m["bytes"].(float64))}
	return st
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// TestReplicateKilledThenResumed kills `rekindle replicate` with SIGKILL
// while it copies chunks, checks that what reached the target verifies,
// and that the next run copies only the chunks still missing.
func TestReplicateKilledThenResumed(t *testing.T) {
	src, _ := replicaSource(t, 64<<20)
	total := countFiles(t, filepath.Join(src, "chunks"))
	var dst string
	killedMidway := false
	for attempt := 0; attempt < 3 && !killedMidway; attempt++ {
		dst = filepath.Join(t.TempDir(), "dr")
		cmd := exec.Command(binary, "replicate", "--repo", src, "--to", dst, "--workers", "1", "-q")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill as soon as the first chunk folder appears.
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if ents, _ := os.ReadDir(filepath.Join(dst, "chunks")); len(ents) > 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		cmd.Process.Kill()
		err := cmd.Wait()
		killedMidway = err != nil && countFiles(t, filepath.Join(dst, "points")) == 0
	}
	if !killedMidway {
		t.Fatalf("three copies of %d chunks finished before the kill: the test cannot interrupt them", total)
	}
	// Whatever arrived is consistent: the target opens and verifies (no
	// point names a missing chunk; here, no point arrived at all).
	run(t, false, "verify", "--repo", dst, "-q")
	run(t, false, "catalog", "rebuild", "--repo", dst) // a recovery server's catalog, made before the point arrives
	landed := countFiles(t, filepath.Join(dst, "chunks"))
	out, _ := run(t, false, "replicate", "--repo", src, "--to", dst, "--json")
	st := replicateJSON(t, out)
	if st.Points != 1 || st.Chunks+landed != total {
		t.Fatalf("resumed copy: %d chunks copied, %d had landed before the kill, the source has %d; %d points", st.Chunks, landed, total, st.Points)
	}
	// The copy recorded the point in the target's existing catalog.
	if out, _ := run(t, false, "list", "points", "--repo", dst, "--json"); strings.Count(out, `"id"`) != 1 {
		t.Fatalf("target catalog after the copy lists:\n%s", out)
	}
	out, _ = run(t, false, "verify", "--repo", dst, "--json")
	if !strings.Contains(out, `"problems": null`) && !strings.Contains(out, `"problems": []`) {
		t.Fatalf("verify of the replica:\n%s", out)
	}
	out, _ = run(t, false, "replicate", "--repo", src, "--to", dst, "--json")
	if st := replicateJSON(t, out); st.Bytes != 0 || st.Chunks != 0 || st.Points != 0 {
		t.Fatalf("third copy: %+v, want nothing copied", st)
	}
}

// TestReplicateRefusesCorruptChunk: a source chunk damaged on disk is
// named, not written, and the run exits non-zero (4: damaged).
func TestReplicateRefusesCorruptChunk(t *testing.T) {
	src, _ := replicaSource(t, 2<<20)
	var victim string
	filepath.WalkDir(filepath.Join(src, "chunks"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && victim == "" {
			victim = p
		}
		return nil
	})
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(victim, b, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dr")
	_, stderr, code := runCode(t, "replicate", "--repo", src, "--to", dst, "-q")
	name := filepath.Base(victim)
	if code != exitDamaged || !strings.Contains(stderr, name) || !strings.Contains(stderr, "not written") {
		t.Fatalf("replicate of a damaged source: exit %d, stderr %q; want exit %d naming chunk %s", code, stderr, exitDamaged, name)
	}
	if _, err := os.Stat(filepath.Join(dst, "chunks", name[:2], name)); err == nil {
		t.Fatalf("the damaged chunk was written to the target")
	}
	if n := countFiles(t, filepath.Join(dst, "points")); n != 0 {
		t.Fatalf("%d points reached the target though one of their chunks was refused", n)
	}
}

// TestReplicateWatch follows a new backup, then stops cleanly on SIGINT.
func TestReplicateWatch(t *testing.T) {
	src, folder := replicaSource(t, 1<<20)
	dst := filepath.Join(t.TempDir(), "dr")
	cmd := exec.Command(binary, "replicate", "--repo", src, "--to", dst, "--watch", "--interval", "50ms", "--json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitPoints := func(want int) {
		t.Helper()
		deadline := time.After(time.Minute)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("replicate --watch ended")
				}
				st := replicateJSON(t, l)
				if st.Points == want {
					return
				}
			case <-deadline:
				t.Fatalf("replicate --watch: no copy of %d points within a minute", want)
			}
		}
	}
	waitPoints(1)
	run(t, false, "backup", "import", "--repo", src, "-q", folder)
	waitPoints(1) // the new point, in a later cycle
	if n := countFiles(t, filepath.Join(dst, "points")); n != 2 {
		t.Fatalf("target has %d points, want 2", n)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("replicate --watch after SIGINT: %v", err)
	}
}

// TestReplicateChecksTargetOwner: replicate records the copied points only
// in the catalog that owns the target (owner.json), as every command
// claims its repository: a stale TARGET/catalog.db, or none while the
// owner is elsewhere, is refused before anything is copied, naming the
// owner and --to-catalog; --to-catalog OWNER records them there.
func TestReplicateChecksTargetOwner(t *testing.T) {
	src, _ := replicaSource(t, 1<<20)
	dir := t.TempDir()
	dst, owner := filepath.Join(dir, "dr"), filepath.Join(dir, "dr-catalog.db")
	run(t, false, "init", "--repo", dst)
	run(t, false, "catalog", "rebuild", "--repo", dst) // TARGET/catalog.db, the first owner
	run(t, false, "catalog", "rebuild", "--repo", dst, "--catalog", owner, "--take-over")

	refused := func(what string, args ...string) {
		t.Helper()
		_, stderr := run(t, true, append([]string{"replicate", "--repo", src, "--to", dst}, args...)...)
		for _, want := range []string{"belongs to another catalog", owner, "--to-catalog " + owner} {
			if !strings.Contains(stderr, want) {
				t.Fatalf("replicate %s: stderr %q lacks %q", what, stderr, want)
			}
		}
		if n := countFiles(t, filepath.Join(dst, "points")); n != 0 {
			t.Fatalf("replicate %s copied %d points before refusing", what, n)
		}
	}
	refused("to a target whose catalog.db is not its owner")
	refused("with --to-catalog of a catalog that is not the owner", "--to-catalog", filepath.Join(dir, "stray.db"))
	if _, err := os.Stat(filepath.Join(dir, "stray.db")); !os.IsNotExist(err) {
		t.Fatalf("a refused --to-catalog left its new catalog behind: %v", err)
	}
	os.Remove(filepath.Join(dst, "catalog.db"))
	refused("to a target without catalog.db whose owner is elsewhere")

	out, _ := run(t, false, "replicate", "--repo", src, "--to", dst, "--to-catalog", owner, "--json")
	if st := replicateJSON(t, out); st.Points != 1 {
		t.Fatalf("replicate --to-catalog: %+v", st)
	}
	if out, _ := run(t, false, "list", "points", "--repo", dst, "--catalog", owner, "--json"); strings.Count(out, `"id"`) != 1 {
		t.Fatalf("the owner's catalog after the copy lists:\n%s", out)
	}
}
