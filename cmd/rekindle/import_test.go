package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/testdata/vmgen"
)

// runCode runs the binary and returns stdout, stderr and the exit status.
func runCode(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		auditJSON(t, args, stdout.String())
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	t.Fatalf("rekindle %s: %v", strings.Join(args, " "), err)
	return "", "", -1
}

func points(t *testing.T, repoDir string) []map[string]any {
	t.Helper()
	out, _ := run(t, false, "list", "points", "--repo", repoDir, "--json")
	var pts []map[string]any
	if err := json.Unmarshal([]byte(out), &pts); err != nil {
		t.Fatalf("list points --json: %v\n%s", err, out)
	}
	return pts
}

// TestImportRefusesDamagedVMDK: a .vmdk whose sparse header is damaged is
// not a raw disk. The import fails naming the file, exits non-zero and
// leaves no restore point, so `latest` still means the last good backup.
func TestImportRefusesDamagedVMDK(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img is needed (scripts/install-deps installs qemu-utils)")
	}
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 9,
		Disks: []vmgen.DiskSpec{{Size: 2 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatSparse}}})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := run(t, false, "backup", "import", "--repo", repoDir, "-q", folder)
	disk := filepath.Join(folder, "web01.vmdk")
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	copy(b, "KDMX") // the header's magic, damaged
	os.WriteFile(disk, b, 0o644)
	_, stderr, code := runCode(t, "backup", "import", "--repo", repoDir, "-q", folder)
	if code != exitFailure || !strings.Contains(stderr, "web01.vmdk") || !strings.Contains(stderr, "damaged") {
		t.Fatalf("import of a damaged VMDK: exit %d, stderr %q", code, stderr)
	}
	pts := points(t, repoDir)
	if len(pts) != 1 || pts[0]["id"] != strings.TrimSpace(good) {
		t.Fatalf("after the failed import the points are %v, want only %s", pts, good)
	}

	// A raw image named .vmdk is refused too, unless declared raw.
	raw, err := vmgen.Generate(filepath.Join(dir, "src2"), vmgen.Spec{Name: "db01", Seed: 2,
		Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatRaw}}})
	if err != nil {
		t.Fatal(err)
	}
	os.Rename(filepath.Join(raw, "db01.img"), filepath.Join(raw, "db01.vmdk"))
	vmx := filepath.Join(raw, "db01.vmx")
	vb, _ := os.ReadFile(vmx)
	os.WriteFile(vmx, []byte(strings.ReplaceAll(string(vb), "db01.img", "db01.vmdk")), 0o644)
	_, stderr, code = runCode(t, "backup", "import", "--repo", repoDir, "-q", raw)
	if code != exitFailure || !strings.Contains(stderr, "db01.vmdk: not a VMDK") || !strings.Contains(stderr, "--raw-disk") {
		t.Fatalf("import of a raw image named .vmdk: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = runCode(t, "backup", "import", "--repo", repoDir, "-q", raw, "--raw-disk", "nosuch.img")
	if code != exitFailure || !strings.Contains(stderr, `raw disk "nosuch.img": the vmx names no such disk (its disks: db01.vmdk)`) {
		t.Fatalf("--raw-disk naming no disk: exit %d, stderr %q", code, stderr)
	}
	if n := len(points(t, repoDir)); n != 1 {
		t.Fatalf("refused imports left %d points", n)
	}
	run(t, false, "backup", "import", "--repo", repoDir, "-q", raw, "--raw-disk", "db01.vmdk")
	pts = points(t, repoDir)
	if len(pts) != 2 || pts[0]["vm"] != "db01" {
		t.Fatalf("declared raw disk not imported: %v", pts)
	}
}

// TestImportAppMembership: --app makes the VM a member of the app (created
// when missing), a later import without --app keeps it there, and app
// define warns about members that have no backup.
func TestImportAppMembership(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	mk := func(name string) string {
		f, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: name, Seed: 1,
			Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	web := mk("web01")
	run(t, false, "backup", "import", web, "--repo", repoDir, "--app", "shop", "-q")
	apps := func() []map[string]any {
		out, _ := run(t, false, "list", "apps", "--repo", repoDir, "--json")
		var a []map[string]any
		json.Unmarshal([]byte(out), &a)
		return a
	}
	vmApp := func(vm string) any {
		out, _ := run(t, false, "list", "vms", "--repo", repoDir, "--json")
		var vms []map[string]any
		json.Unmarshal([]byte(out), &vms)
		for _, v := range vms {
			if v["name"] == vm {
				return v["app"]
			}
		}
		return nil
	}
	if a := apps(); len(a) != 1 || a[0]["name"] != "shop" || a[0]["members"] != 1.0 {
		t.Fatalf("after import --app shop, apps are %v", a)
	}
	run(t, false, "backup", "import", web, "--repo", repoDir, "-q")
	if got := vmApp("web01"); got != "shop" {
		t.Fatalf("import without --app: web01 is in app %v, want shop", got)
	}
	db := mk("db01")
	run(t, false, "backup", "import", db, "--repo", repoDir, "--app", "shop", "-q")
	if a := apps(); len(a) != 1 || a[0]["members"] != 2.0 || a[0]["groups"] != 2.0 {
		t.Fatalf("second member: apps are %v", a)
	}
	// The rebuilt catalog agrees: membership lives in the repository.
	os.Remove(filepath.Join(repoDir, "catalog.db"))
	if a := apps(); len(a) != 1 || a[0]["members"] != 2.0 {
		t.Fatalf("after losing the catalog, apps are %v", a)
	}

	out, stderr := run(t, false, "app", "define", "--repo", repoDir, "../../testdata/apps/shop.yaml")
	if !strings.Contains(out, "app shop: 3 members") ||
		!strings.Contains(stderr, "warning: app shop: member app01 has no backup yet") ||
		strings.Contains(stderr, "member web01 has no") || strings.Contains(stderr, "member db01 has no") {
		t.Fatalf("app define with a member lacking a backup:\nstdout %s\nstderr %s", out, stderr)
	}
}
