package vcbackup_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestConfigFilesOfSnapshotMoment: the .vmx and .nvram a point records
// are those of its snapshot's moment. The stand-in changes both files
// when the backup removes its snapshot (a reconfiguration during the
// backup, or ESXi's consolidation rewriting the .vmx): a backup that
// downloaded them after the removal would record the changed files.
func TestConfigFilesOfSnapshotMoment(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "cfg01", Disks: []int64{1 << 20}, PowerOn: true})
	must(t, err)
	vmx := filepath.Join(e.lab.DatastoreDir, "cfg01", "cfg01.vmx")
	nvram := filepath.Join(e.lab.DatastoreDir, "cfg01", "cfg01.nvram")
	wantVMX := "displayName = \"cfg01\"\nmemSize = \"1024\"\n"
	wantNVRAM := "nvram of the snapshot's moment\n"
	must(t, os.WriteFile(vmx, []byte(wantVMX), 0o644))
	must(t, os.WriteFile(nvram, []byte(wantNVRAM), 0o644))
	e.lab.Backup.ChangeConfigAtSnapshotRemoval("cfg01/cfg01.vmx", "memSize", "4096")

	res := e.backup(t, "cfg01")[0]
	must(t, res.Err)
	e.noSnapshots(t, vm)
	now, err := os.ReadFile(vmx)
	must(t, err)
	if !strings.Contains(string(now), `memSize = "4096"`) {
		t.Fatalf("the stand-in did not change the .vmx at the snapshot's removal: %q", now)
	}
	got := map[string]string{}
	for _, f := range res.Point.Files {
		got[f.Name] = string(f.Inline)
	}
	if got["cfg01.vmx"] != wantVMX || got["cfg01.nvram"] != wantNVRAM {
		t.Fatalf("point %s recorded .vmx %q and .nvram %q: want the files of the snapshot's moment, %q and %q",
			res.Point.ID, got["cfg01.vmx"], got["cfg01.nvram"], wantVMX, wantNVRAM)
	}
}
