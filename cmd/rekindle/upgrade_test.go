package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// TestUpgradeCommand makes a version 1 repository (the layout of releases
// before chunk frames) with a backup of a 24 MiB disk, kills `rekindle
// upgrade` at several moments of its work, and checks after each kill that
// verify passes and the point exports byte for byte; then an upgrade runs
// to its end, verify passes, every chunk is in frames, and a second upgrade
// has nothing to do.
func TestUpgradeCommand(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	if _, err := repo.Init(repoDir, repo.InitOptions{ChunkSize: 64 << 10, Version: 1}); err != nil {
		t.Fatal(err)
	}
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "old01", Seed: 7, MemoryMB: 256,
		Disks: []vmgen.DiskSpec{{Size: 24 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, false, "backup", "import", "--repo", repoDir, "-q", folder)
	disk, err := os.ReadFile(filepath.Join(folder, "old01-flat.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	readsBack := func(when string) {
		t.Helper()
		if out, _ := run(t, false, "verify", "--repo", repoDir, "-q"); !strings.Contains(out, "all ok") {
			t.Fatalf("%s: verify: %s", when, out)
		}
		dest := filepath.Join(t.TempDir(), "out")
		run(t, false, "export", "--repo", repoDir, "--point", "latest", "--vm", "old01", "--to", dest, "-q")
		got, err := os.ReadFile(filepath.Join(dest, "old01-flat.vmdk"))
		if err != nil || string(got) != string(disk) {
			t.Fatalf("%s: the exported disk differs from the source (%v)", when, err)
		}
	}
	// Kill it a little later each time; each run goes on where the one
	// before stopped.
	for _, after := range []time.Duration{50, 200, 400, 800, 1600} {
		cmd := exec.Command(binary, "upgrade", "--repo", repoDir, "-q")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(after * time.Millisecond) // a moment to kill it at, not a wait for an event
		cmd.Process.Kill()
		cmd.Wait()
		readsBack("killed after " + (after * time.Millisecond).String())
		t.Logf("killed after %v: chunks by layout %v", after*time.Millisecond, layouts(t, repoDir))
	}
	out, _ := run(t, false, "upgrade", "--repo", repoDir)
	if !strings.Contains(out, "-> 2") && !strings.Contains(out, "nothing to do") {
		t.Fatalf("upgrade: %q", out)
	}
	readsBack("upgraded")
	if l := layouts(t, repoDir); l[1] != 0 || l[2] == 0 {
		t.Errorf("chunks by layout after the upgrade: %v, want all layout 2", l)
	}
	out, _ = run(t, false, "upgrade", "--repo", repoDir, "--json")
	var rep struct {
		AlreadyLatest bool `json:"already_latest"`
		To            int  `json:"to_version"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.AlreadyLatest || rep.To != 2 {
		t.Fatalf("second upgrade --json: %s (%v), want already_latest", out, err)
	}
}

// layouts counts the repository's chunk files by layout.
func layouts(t *testing.T, repoDir string) map[int]int {
	t.Helper()
	n := map[int]int{}
	err := filepath.WalkDir(filepath.Join(repoDir, "chunks"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		n[repo.ChunkLayoutVersion(b)]++
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
