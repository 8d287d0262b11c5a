package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/orchestrator/simlab"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// TestRestoreDryRun plans a vApp restore through the CLI against the vCenter
// simulator (a real HTTPS vSphere endpoint), with the password from a file.
func TestRestoreDryRun(t *testing.T) {
	l, err := simlab.New(context.Background(), simlab.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.ImportShop(context.Background(), 1<<20, vmgen.FillRandom); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("demo-only\n"), 0o600)
	u := *l.Server.URL
	u.User = nil
	args := []string{"restore", "vapp", "--repo", l.Repo.Dir, "--vc", u.String(), "--vc-user", "rekindle",
		"--vc-password-file", pw, "--vc-ca", filepath.Join(l.Dir, "vcsim-ca.pem"), "--target", simlab.Target,
		"--nfs-server", "nfs1.example.com", "--network-map", "VM Network=DC0_DVPG0", "--dry-run", "shop"}
	out, _ := run(t, false, args...)
	for _, want := range []string{"nothing changed", "nfs1.example.com", "db01", "app01", "web01", "DC0_DVPG0", "guest"} {
		if !strings.Contains(out, want) {
			t.Fatalf("plan lacks %q:\n%s", want, out)
		}
	}
	lines := strings.Split(out, "\n")
	order := []string{}
	for _, ln := range lines {
		for _, vm := range []string{"db01", "app01", "web01"} {
			if strings.Contains(ln, " "+vm+" ") {
				order = append(order, vm)
			}
		}
	}
	if strings.Join(order, ",") != "db01,app01,web01" {
		t.Fatalf("plan order %v:\n%s", order, out)
	}
	// A wrong password fails without printing it.
	os.WriteFile(pw, []byte("s3cret-wrong\n"), 0o600)
	_, stderr := run(t, true, args...)
	if strings.Contains(stderr, "s3cret-wrong") || !strings.Contains(stderr, "log in to vCenter") {
		t.Fatalf("login failure: %s", stderr)
	}
}

// TestRestoreDryRunQEMU plans a single-VM restore onto this machine's QEMU.
func TestRestoreDryRunQEMU(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 1, MemoryMB: 256,
		Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, false, "backup", "import", "--repo", repoDir, folder)
	vms := filepath.Join(dir, "vms")
	out, _ := run(t, false, "restore", "vm", "--repo", repoDir, "--hypervisor", "qemu", "--target", vms,
		"--nfs-server", "127.0.0.1", "--dry-run", "web01")
	if !strings.Contains(out, "web01") || !strings.Contains(out, "localhost") || !strings.Contains(out, "nothing changed") {
		t.Fatalf("qemu plan:\n%s", out)
	}
	if _, err := os.Stat(vms); err != nil {
		t.Fatalf("the qemu driver did not take --target as its folder: %v", err)
	}
	_, stderr := run(t, true, "restore", "vm", "--repo", repoDir, "--hypervisor", "xen", "--nfs-server", "x", "web01")
	if !strings.Contains(stderr, "want vsphere or qemu") {
		t.Fatalf("unknown hypervisor: %s", stderr)
	}
}
