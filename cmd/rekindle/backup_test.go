package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

func newBackupLab(t *testing.T) *backuplab.Lab {
	t.Helper()
	lab, err := backuplab.New(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Close)
	return lab
}

func TestBackupFromVCenter(t *testing.T) {
	lab := newBackupLab(t)
	ctx := context.Background()
	vapp, err := lab.CreateVApp(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"db01", "web01"} {
		if _, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: name, Disks: []int64{4 << 20}, PowerOn: true, VApp: vapp}); err != nil {
			t.Fatal(err)
		}
		if err := lab.WriteDisk(name, 0, 1<<20, []byte("data of "+name)); err != nil {
			t.Fatal(err)
		}
	}
	repoDir := filepath.Join(t.TempDir(), "repo")
	run(t, false, "init", "--repo", repoDir)
	vc := []string{"--repo", repoDir, "--vc", lab.URL(), "--vc-insecure"}

	out, stderr := run(t, false, append([]string{"backup", "vm"}, append(vc, "db01")...)...)
	if !strings.Contains(out, "db01: point ") || !strings.Contains(out, "(full)") || !strings.Contains(out, "transferred ") || !strings.Contains(out, "changed block tracking was off: enabled now") {
		t.Fatalf("first backup: %q %q", out, stderr)
	}
	// Progress on stderr: the VM's phases and its read reaching all it needs.
	for _, line := range []string{"db01: snapshot\n", "db01: read 100% of ", "db01: save\n"} {
		if !strings.Contains(stderr, line) {
			t.Fatalf("first backup's progress lacks %q: %q", line, stderr)
		}
	}
	if err := lab.WriteDisk("db01", 0, 3<<20, []byte("changed")); err != nil {
		t.Fatal(err)
	}
	out, _ = run(t, false, append([]string{"backup", "vm", "--json"}, append(vc, "db01")...)...)
	var res []struct {
		VM, Point, Mode string
		BytesRead       int64 `json:"bytes_read"`
		Disks           []struct {
			BytesRead int64 `json:"bytes_read"`
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 {
		t.Fatalf("backup --json: %v %q", err, out)
	}
	// Over the export lease's stream the changed block is taken from the
	// stream, which is transferred up to it.
	if res[0].Mode != "incremental" || len(res[0].Disks) != 1 || res[0].Disks[0].BytesRead != 64<<10 || res[0].BytesRead <= 0 {
		t.Fatalf("second backup: %+v, want incremental reading one 64 KiB block from the stream", res[0])
	}

	// --quiesce on a VM whose guest runs no VMware Tools: not quiesced,
	// and the output says so.
	out, _ = run(t, false, append([]string{"backup", "vm", "--quiesce"}, append(vc, "db01")...)...)
	if !strings.Contains(out, "db01: point ") || !strings.Contains(out, "  db01: not quiesced: VMware Tools are not running in the guest\n") {
		t.Fatalf("backup --quiesce of a VM without tools: %q", out)
	}

	// A VM vCenter does not have fails alone, with exit status 1.
	out, stderr = run(t, true, append([]string{"backup", "vm"}, append(vc, "web01", "nosuchvm")...)...)
	if !strings.Contains(out, "web01: point ") || !strings.Contains(out, "nosuchvm: FAILED") || !strings.Contains(stderr, "1 of 2 VMs failed") {
		t.Fatalf("one VM missing: %q %q", out, stderr)
	}
	if !strings.Contains(stderr, "web01: read 100% of ") || strings.Contains(stderr, "db01: ") {
		t.Fatalf("progress of web01's backup: %q", stderr)
	}

	out, _ = run(t, false, append([]string{"backup", "vapp"}, append(vc, "shop")...)...)
	if !strings.Contains(out, "app shop: 2 members") {
		t.Fatalf("backup vapp: %q", out)
	}
	out, _ = run(t, false, "list", "apps", "--repo", repoDir)
	if !strings.Contains(out, "shop") {
		t.Fatalf("list apps after backup vapp: %q", out)
	}
	_, stderr = run(t, true, "backup", "vm", "--repo", repoDir, "db01")
	if !strings.Contains(stderr, "--vc URL") {
		t.Fatalf("no --vc: %q", stderr)
	}
}
