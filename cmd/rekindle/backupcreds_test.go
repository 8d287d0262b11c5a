package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/vim25/soap"

	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestBackupVMCredentials: `backup vm` takes restore's vCenter flags,
// variables and credential handling: govc's variables with a password file
// and a pinned thumbprint reach vCenter; no password is a usage error naming
// --vc-password-file; rekindle's variables win over govc's; an untrusted
// certificate is refused naming its thumbprint. (The simulator of the backup
// lab takes any password: a wrong one is TestVCenterCredentials', through the
// same connection code.)
func TestBackupVMCredentials(t *testing.T) {
	lab := newBackupLab(t)
	if _, err := lab.CreateVM(context.Background(), backuplab.VMSpec{Name: "web01", Disks: []int64{1 << 20}, PowerOn: true}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	pwFile := filepath.Join(dir, "vc.pw")
	if err := os.WriteFile(pwFile, []byte("pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u := *lab.Server.URL
	user := u.User.Username()
	u.User = nil
	thumb := soap.ThumbprintSHA256(lab.Server.Certificate())
	runEnv := func(env []string, args ...string) (string, string, int) {
		return runVCEnv(t, env, append([]string{"backup", "vm", "--repo", repoDir, "-q"}, args...)...)
	}
	govc := []string{"GOVC_URL=" + u.String(), "GOVC_USERNAME=" + user}
	if out, stderr, code := runEnv(govc, "--vc-password-file", pwFile, "--vc-thumbprint", thumb, "web01"); code != 0 || !strings.Contains(out, "web01: point ") {
		t.Fatalf("GOVC_* with a password file and a thumbprint: exit %d\n%s%s", code, out, stderr)
	}
	if _, stderr, code := runEnv(govc, "--vc-thumbprint", thumb, "web01"); code != exitUsage || !strings.Contains(stderr, "no password for vCenter user "+user) || !strings.Contains(stderr, "--vc-password-file") {
		t.Fatalf("no password: exit %d, %s", code, stderr)
	}
	// rekindle's variables win over govc's: govc's URL is a closed port.
	if out, stderr, code := runEnv([]string{"GOVC_URL=https://127.0.0.1:1/sdk", "REKINDLE_VC_URL=" + u.String(), "REKINDLE_VC_USER=" + user,
		"REKINDLE_VC_PASSWORD=pass"}, "--vc-thumbprint", thumb, "web01"); code != 0 || !strings.Contains(out, "web01: point ") {
		t.Fatalf("REKINDLE_VC_* beside a wrong GOVC_URL: exit %d\n%s%s", code, out, stderr)
	}
	if _, stderr, code := runEnv(append(govc, "GOVC_PASSWORD=pass"), "web01"); code != exitHypervisor || !strings.Contains(stderr, "not trusted") || !strings.Contains(stderr, thumb) {
		t.Fatalf("untrusted certificate: exit %d, %s", code, stderr)
	}
}
