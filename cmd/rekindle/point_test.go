package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/testdata/vmgen"
)

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"2026-11-20T23:07:48Z", time.Date(2026, 11, 20, 23, 7, 48, 0, time.UTC)},
		{"2026-11-20T23:07:48+01:00", time.Date(2026, 11, 20, 22, 7, 48, 0, time.UTC)},
		{"2026-11-20", time.Date(2026, 11, 20, 0, 0, 0, 0, time.Local)},
		{"2026-11-20 23:07", time.Date(2026, 11, 20, 23, 7, 0, 0, time.Local)},
		{"36h", now.Add(-36 * time.Hour)},
		{"90m", now.Add(-90 * time.Minute)},
		{"2d", now.AddDate(0, 0, -2)},
		{"1w", now.AddDate(0, 0, -7)},
	} {
		got, err := parseWhen(tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-2d", "2026-13-01", "d"} {
		if _, err := parseWhen(bad, now); err == nil || !strings.Contains(err.Error(), "36h, 2d") {
			t.Errorf("parseWhen(%q): %v, want an error listing the forms", bad, err)
		}
	}
}

// TestChoosingAPoint: latest, full ids and unique prefixes choose the
// same point in every command; a wrong id is named as such (exit 3), an
// ambiguous prefix is a usage error (exit 2), --before takes ages.
func TestChoosingAPoint(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 1, MemoryMB: 256,
		Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := run(t, false, "backup", "import", "--repo", repoDir, "-q", folder)
	first = strings.TrimSpace(first)
	second, _ := run(t, false, "backup", "import", "--repo", repoDir, "-q", folder)
	second = strings.TrimSpace(second)
	random := first[strings.IndexByte(first, '-')+1:]

	out, _ := run(t, false, "list", "points", "--repo", repoDir)
	if zone := time.Now().Format("MST"); !strings.Contains(out, " "+zone) {
		t.Fatalf("list points prints times without their zone %s:\n%s", zone, out)
	}

	plan := func(args ...string) (string, string, int) {
		return runCode(t, append([]string{"restore", "vm", "web01", "--repo", repoDir, "--hypervisor", "qemu",
			"--target", filepath.Join(dir, "vms"), "--nfs-server", "127.0.0.1", "--dry-run"}, args...)...)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, second},
		{[]string{"--point", "latest"}, second},
		{[]string{"--point", first}, first},
		{[]string{"--point", random[:5]}, first},
	} {
		out, stderr, code := plan(tc.args...)
		if code != 0 || !strings.Contains(out, "web01@"+tc.want) {
			t.Fatalf("restore %v: exit %d, want point %s\n%s%s", tc.args, code, tc.want, out, stderr)
		}
	}
	_, stderr, code := plan("--point", "20991231T000000Z-abcdef")
	if code != exitNotFound || !strings.Contains(stderr, "vm web01 has no restore point 20991231T000000Z-abcdef") {
		t.Fatalf("wrong point id: exit %d, stderr %s", code, stderr)
	}
	_, stderr, code = plan("--point", first[:4])
	if code != exitUsage || !strings.Contains(stderr, "matches") || !strings.Contains(stderr, first) {
		t.Fatalf("ambiguous prefix: exit %d, stderr %s", code, stderr)
	}
	_, stderr, code = plan("--before", "2d")
	if code != exitNotFound || !strings.Contains(stderr, "vm web01 has no restore point at or before") {
		t.Fatalf("--before 2d: exit %d, stderr %s", code, stderr)
	}
	_, stderr, code = plan("--before", "last tuesday")
	if code != exitUsage || !strings.Contains(stderr, "--before") {
		t.Fatalf("--before garbage: exit %d, stderr %s", code, stderr)
	}
	if out, _, code := plan("--before", time.Now().Add(time.Hour).Format(time.RFC3339)); code != 0 || !strings.Contains(out, "web01@"+second) {
		t.Fatalf("--before in an hour: exit %d\n%s", code, out)
	}

	run(t, false, "export", "--repo", repoDir, "--vm", "web01", "--point", "latest", "--to", filepath.Join(dir, "out"), "-q")
	out, _ = run(t, false, "verify", "--repo", repoDir, "--point", random[:5], "-q")
	if !strings.Contains(out, "checked 1 restore points") {
		t.Fatalf("verify --point PREFIX: %s", out)
	}
	_, stderr, code = runCode(t, "export", "--repo", repoDir, "--point", "latest", "--to", filepath.Join(dir, "out2"))
	if code != exitNotFound || !strings.Contains(stderr, "name the VM") {
		t.Fatalf("export --point latest without --vm: exit %d, %s", code, stderr)
	}
}
