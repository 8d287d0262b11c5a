package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/testdata/vmgen"
)

// TestDamageExitCodes: a chunk missing from the repository, a damaged chunk
// and a missing index are damage (exit 4, the object named) for every
// command that reads restore point data, never "not found" (3), which is
// for names the operator typed.
func TestDamageExitCodes(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir, "--chunk-size", "65536")
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 3,
		Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillRandom}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, false, "backup", "import", "--repo", repoDir, "-q", folder)
	chunks, _ := filepath.Glob(filepath.Join(repoDir, "chunks", "*", "*"))
	if len(chunks) < 2 {
		t.Fatalf("want chunks, found %v", chunks)
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T) (undo func(), named string)
	}{
		{"missing chunk", func(t *testing.T) (func(), string) { return moveAway(t, chunks[0]), filepath.Base(chunks[0])[:12] }},
		{"damaged chunk", func(t *testing.T) (func(), string) {
			b, err := os.ReadFile(chunks[1])
			if err != nil {
				t.Fatal(err)
			}
			orig := append([]byte(nil), b...)
			b[len(b)-1] ^= 0xff
			if err := os.WriteFile(chunks[1], b, 0o644); err != nil {
				t.Fatal(err)
			}
			return func() { os.WriteFile(chunks[1], orig, 0o644) }, filepath.Base(chunks[1])[:12]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			undo, named := tc.damage(t)
			defer undo()
			for _, args := range [][]string{
				{"verify", "--repo", repoDir, "-q"},
				{"export", "--repo", repoDir, "--vm", "web01", "--point", "latest", "--to", filepath.Join(t.TempDir(), "out")},
			} {
				stdout, stderr, code := runCode(t, args...)
				if code != exitDamaged || !strings.Contains(stdout+stderr, named) {
					t.Errorf("%s: exit %d (want %d, naming %s): %s", strings.Join(args[:1], " "), code, exitDamaged, named, stderr)
				}
			}
		})
	}
}

func moveAway(t *testing.T, p string) func() {
	t.Helper()
	if err := os.Rename(p, p+".away"); err != nil {
		t.Fatal(err)
	}
	return func() { os.Rename(p+".away", p) }
}

// TestExitClasses: one case per documented exit status (README "Exit
// status"), through the binary, with the message a user sees.
func TestExitClasses(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		code int
		args []string
		want string
	}{
		{exitUsage, []string{"list", "points", "--repo", repoDir, "--nosuchflag"}, "flag provided but not defined"},
		{exitUsage, []string{"restore", "vm", "web01", "--repo", repoDir, "--ready-timeout", "soon"}, "ready-timeout"},
		{exitNotFound, []string{"list", "points", "--repo", filepath.Join(dir, "nonrepo")}, "not a rekindle repository"},
		{exitNotFound, []string{"export", "--repo", repoDir, "--vm", "web01", "--point", "latest", "--to", filepath.Join(dir, "out")}, "web01"},
		{exitHypervisor, []string{"restore", "vm", "web01", "--repo", repoDir, "--vc", "https://127.0.0.1:1/sdk", "--vc-user", "u",
			"--vc-password-file", pw, "--target", "/DC0/host/C", "--nfs-server", "n"}, "vCenter"},
		{exitServer, []string{"sessions", "list", "--server", "127.0.0.1:1"}, "is `rekindle serve` running?"},
	} {
		_, stderr, code := runCode(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d (want %d, saying %q): %s", strings.Join(tc.args, " "), code, tc.code, tc.want, stderr)
		}
	}
}
