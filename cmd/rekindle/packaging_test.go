package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackaging: the example config is one `rekindle serve` accepts, a
// config with a key serve does not have is refused, and the systemd unit
// passes systemd-analyze verify with its ExecStart pointed at this build.
func TestPackaging(t *testing.T) {
	out, _ := run(t, false, "serve", "--config", "../../packaging/rekindle.yaml", "--check")
	if !strings.Contains(out, "settings ok: repository /var/lib/rekindle/repo") {
		t.Fatalf("--check of the example config: %q", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("repo: /r\ncache_mb: 10\n"), 0o644)
	_, stderr, code := runCode(t, "serve", "--config", bad, "--check")
	if code != 2 || !strings.Contains(stderr, `"cache_mb" is not a flag of rekindle serve`) {
		t.Fatalf("unknown config key: exit %d, %s", code, stderr)
	}
	os.WriteFile(bad, []byte("repo: /r\ncache-mb: 4GB?\n"), 0o644)
	if _, stderr, code = runCode(t, "serve", "--config", bad, "--check"); code != 2 || !strings.Contains(stderr, "--cache-mb") {
		t.Fatalf("bad size in config: exit %d, %s", code, stderr)
	}

	unit, err := os.ReadFile("../../packaging/rekindle.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"User=rekindle", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/rekindle",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "--config /etc/rekindle/rekindle.yaml --check"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is needed (scripts/install-deps installs systemd)")
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "rekindle.service")
	os.WriteFile(f, []byte(strings.ReplaceAll(string(unit), "/usr/bin/rekindle", binary)), 0o644)
	if out, err := exec.Command("systemd-analyze", "verify", f).CombinedOutput(); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, conf := range []string{"rekindle.sysusers.conf", "rekindle.tmpfiles.conf"} {
		b, err := os.ReadFile("../../packaging/" + conf)
		if err != nil || !strings.Contains(string(b), "rekindle") {
			t.Errorf("%s: %v", conf, err)
		}
	}
}
