package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/vim25/soap"

	"github.com/rekindle/rekindle/orchestrator/simlab"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// TestVCenterCredentials: govc's variables reach the simulator when
// rekindle's are absent; no password and a wrong password are told apart,
// with the exit status of a usage error and of a vCenter refusal.
func TestVCenterCredentials(t *testing.T) {
	l, err := simlab.New(context.Background(), simlab.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.ImportShop(context.Background(), 1<<20, vmgen.FillRandom); err != nil {
		t.Fatal(err)
	}
	u := *l.Server.URL
	u.User = nil
	base := []string{"restore", "vapp", "shop", "--repo", l.Repo.Dir, "--vc-ca", filepath.Join(l.Dir, "vcsim-ca.pem"),
		"--target", simlab.Target, "--nfs-server", "nfs1.example.com", "--network-map", "VM Network=DC0_DVPG0", "--dry-run"}
	runEnv := func(env []string, args ...string) (string, string, int) {
		return runVCEnv(t, env, args...)
	}
	govc := []string{"GOVC_URL=" + u.String(), "GOVC_USERNAME=rekindle", "GOVC_PASSWORD=demo-only"}
	out, stderr, code := runEnv(govc, base...)
	if code != 0 || !strings.Contains(out, "nothing changed") {
		t.Fatalf("with GOVC_* variables: exit %d\n%s%s", code, out, stderr)
	}
	_, stderr, code = runEnv(govc[:2], base...)
	if code != exitUsage || !strings.Contains(stderr, "no password for vCenter user rekindle") || !strings.Contains(stderr, "--vc-password-file") {
		t.Fatalf("no password: exit %d, %s", code, stderr)
	}
	_, stderr, code = runEnv(append(govc[:2:2], "GOVC_PASSWORD=s3cret-wrong"), base...)
	if code != exitHypervisor || !strings.Contains(stderr, "log in to vCenter") || strings.Contains(stderr, "s3cret-wrong") {
		t.Fatalf("wrong password: exit %d, %s", code, stderr)
	}
	// No --target: refused before anything changes, dry run or not.
	noTarget := []string{"restore", "vapp", "shop", "--repo", l.Repo.Dir, "--vc-ca", filepath.Join(l.Dir, "vcsim-ca.pem"),
		"--nfs-server", "nfs1.example.com", "--network-map", "VM Network=DC0_DVPG0"}
	for _, args := range [][]string{append(noTarget, "--dry-run"), noTarget} {
		_, stderr, code = runEnv(govc, args...)
		if code != exitUsage || !strings.Contains(stderr, "vSphere needs a target: pass --target") || strings.Contains(stderr, "sessions resume") {
			t.Fatalf("%v without --target: exit %d, %s", args, code, stderr)
		}
	}
	if list, err := l.Catalog.Sessions(context.Background()); err != nil || len(list) != 0 {
		t.Fatalf("a refused restore left sessions: %v %v", list, err)
	}
	_, stderr, code = runEnv(govc, append(noTarget, "--dry-run", "--target", "/DC0/host/nosuch")...)
	if code != exitNotFound || !strings.Contains(stderr, "nosuch") {
		t.Fatalf("unknown --target: exit %d, %s", code, stderr)
	}
	// A dry run needs no running rekindle server: it says what it skipped.
	out, stderr, code = runEnv(govc, "restore", "vapp", "shop", "--repo", l.Repo.Dir, "--vc-ca", filepath.Join(l.Dir, "vcsim-ca.pem"),
		"--target", simlab.Target, "--network-map", "VM Network=DC0_DVPG0", "--server", "127.0.0.1:1", "--dry-run")
	if code != 0 || !strings.Contains(out, "nothing changed") || !strings.Contains(out, "not checked: the NFS server") {
		t.Fatalf("dry run without a server: exit %d\n%s%s", code, out, stderr)
	}
	// rekindle's own variable wins over govc's.
	_, stderr, code = runEnv(append(govc, "REKINDLE_VC_PASSWORD=s3cret-wrong"), base...)
	if code != exitHypervisor {
		t.Fatalf("REKINDLE_VC_PASSWORD did not win over GOVC_PASSWORD: exit %d, %s", code, stderr)
	}
}

// TestDryRunChecks: a dry run with no vCenter and no server plans offline
// and says what it did not check; with vCenter, a --network-map to a
// network that does not exist is refused naming it and listing what exists,
// dry run or real restore, and the real one leaves no session.
func TestDryRunChecks(t *testing.T) {
	l, err := simlab.New(context.Background(), simlab.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.ImportShop(context.Background(), 1<<20, vmgen.FillRandom); err != nil {
		t.Fatal(err)
	}
	runEnv := func(env []string, args ...string) (string, string, int) {
		return runVCEnv(t, env, args...)
	}
	out, stderr, code := runEnv(nil, "restore", "vapp", "shop", "--repo", l.Repo.Dir, "--target", simlab.Target,
		"--server", "127.0.0.1:1", "--dry-run")
	if code != 0 || !strings.Contains(out, "nothing changed") || !strings.Contains(out, "not checked: target, hosts, networks, datastores (no vCenter given") ||
		!strings.Contains(out, "not checked: the NFS server") {
		t.Fatalf("offline dry run: exit %d\n%s%s", code, out, stderr)
	}
	u := *l.Server.URL
	u.User = nil
	govc := []string{"GOVC_URL=" + u.String(), "GOVC_USERNAME=rekindle", "GOVC_PASSWORD=demo-only"}
	args := []string{"restore", "vapp", "shop", "--repo", l.Repo.Dir, "--vc-ca", filepath.Join(l.Dir, "vcsim-ca.pem"),
		"--target", simlab.Target, "--nfs-server", "nfs1.example.com", "--network-map", "VM Network=nosuch-net"}
	for _, a := range [][]string{append(args, "--dry-run"), args} {
		out, stderr, code = runEnv(govc, a...)
		if code != exitNotFound || !strings.Contains(stderr, `network "nosuch-net" does not exist`) ||
			!strings.Contains(stderr, "networks there: ") || !strings.Contains(stderr, "DC0_DVPG0") || strings.Contains(out, "nothing changed") {
			t.Fatalf("%v: exit %d\n%s%s", a, code, out, stderr)
		}
	}
	if list, err := l.Catalog.Sessions(context.Background()); err != nil || len(list) != 0 {
		t.Fatalf("a refused restore left sessions: %v %v", list, err)
	}
	out, stderr, code = runEnv(govc, append(args[:len(args)-1], "VM Network=DC0_DVPG0", "--dry-run")...)
	if code != 0 || !strings.Contains(out, "nothing changed") || strings.Contains(out, "not checked: target") {
		t.Fatalf("dry run with vCenter: exit %d\n%s%s", code, out, stderr)
	}
}

// TestVCenterCertificate: the simulator over TLS with its self-signed
// certificate. Not trusted: exit 5 with the server's SHA-256 and SHA-1
// thumbprints and the three ways out; the printed thumbprint pinned, or -k,
// then work; a wrong pin shows the real one; a wrong password says the
// password was refused and where it came from.
func TestVCenterCertificate(t *testing.T) {
	l, err := simlab.New(context.Background(), simlab.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.ImportShop(context.Background(), 1<<20, vmgen.FillRandom); err != nil {
		t.Fatal(err)
	}
	u := *l.Server.URL
	u.User = nil
	env := []string{"GOVC_URL=" + u.String(), "GOVC_USERNAME=rekindle", "GOVC_PASSWORD=demo-only"}
	run := func(env []string, extra ...string) (string, string, int) {
		return runVCEnv(t, env, append([]string{"restore", "vapp", "shop", "--repo", l.Repo.Dir, "--target", simlab.Target,
			"--nfs-server", "nfs1.example.com", "--network-map", "VM Network=DC0_DVPG0", "--dry-run"}, extra...)...)
	}
	sha256, sha1 := soap.ThumbprintSHA256(l.Server.Certificate()), soap.ThumbprintSHA1(l.Server.Certificate())
	_, stderr, code := run(env)
	for _, w := range []string{"not trusted", "SHA-256 thumbprint " + sha256, "SHA-1 thumbprint " + sha1,
		"--vc-thumbprint " + sha256, "--vc-ca", "--vc-insecure (-k"} {
		if code != exitHypervisor || !strings.Contains(stderr, w) {
			t.Fatalf("untrusted certificate: exit %d, no %q in\n%s", code, w, stderr)
		}
	}
	for _, extra := range [][]string{{"--vc-thumbprint", sha256}, {"--vc-thumbprint", sha1}, {"-k"}} {
		if out, stderr, code := run(env, extra...); code != 0 || !strings.Contains(out, "nothing changed") {
			t.Fatalf("%v: exit %d\n%s%s", extra, code, out, stderr)
		}
	}
	if out, stderr, code := run(append(env, "GOVC_INSECURE=1")); code != 0 {
		t.Fatalf("GOVC_INSECURE=1: exit %d\n%s%s", code, out, stderr)
	}
	wrong := strings.Repeat("01:", 31) + "01"
	_, stderr, code = run(env, "--vc-thumbprint", wrong)
	if code != exitHypervisor || !strings.Contains(stderr, "does not match the pinned thumbprint "+wrong) || !strings.Contains(stderr, sha256) {
		t.Fatalf("wrong thumbprint: exit %d\n%s", code, stderr)
	}
	_, stderr, code = run(append(env[:2:2], "GOVC_PASSWORD=s3cret-wrong"), "-k")
	if code != exitHypervisor || !strings.Contains(stderr, `vCenter refused user "rekindle" with the password from GOVC_PASSWORD`) || strings.Contains(stderr, "s3cret-wrong") {
		t.Fatalf("wrong password: exit %d\n%s", code, stderr)
	}
}

// runVCEnv runs the binary with args in the test's environment less any
// GOVC_ or REKINDLE_ variable, plus env: the vCenter settings a test names
// are the only ones the command sees. It returns stdout, stderr and the
// exit code.
func runVCEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GOVC_") && !strings.HasPrefix(e, "REKINDLE_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}
