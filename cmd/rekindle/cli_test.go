package main

import (
	"bytes"
	"context"
	bin "encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/testdata/vmgen"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rekindle-cli-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "rekindle")
	// Servers leave their API locators here, not in the user's own folder.
	os.Mkdir(filepath.Join(dir, "run"), 0o700)
	os.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs the rekindle binary and returns stdout; it fails the test on a
// non-zero exit unless wantFail.
// runTimeout bounds every command run: the slowest (an import, a restore on
// the simulator) take seconds.
const runTimeout = 3 * time.Minute

func run(t *testing.T, wantFail bool, args ...string) (string, string) {
	t.Helper()
	// A command that should fail at once but serves instead (a refusal
	// removed) must fail the test, not hang it.
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("rekindle %s: still running after %v, killed\nstdout: %s\nstderr: %s", strings.Join(args, " "), runTimeout, stdout.String(), stderr.String())
	}
	if (err != nil) != wantFail {
		t.Fatalf("rekindle %s: err %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	if !wantFail {
		auditJSON(t, args, stdout.String())
	}
	return stdout.String(), stderr.String()
}

func TestOperatorFlow(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	if _, stderr := run(t, true, "init", "--repo", repoDir); !strings.Contains(stderr, "already exists") {
		t.Fatalf("second init: %q", stderr)
	}

	var ids []string
	for _, vm := range []string{"db01", "app01", "web01"} {
		folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: vm, Seed: int64(len(vm)),
			Disks: []vmgen.DiskSpec{{Size: 3<<20 + 512, Fill: vmgen.FillMixed, Format: vmgen.FormatFlat}}})
		if err != nil {
			t.Fatal(err)
		}
		id, stderr := run(t, false, "backup", "import", "--repo", repoDir, "--app", "shop", folder)
		id = strings.TrimSpace(id)
		if !strings.Contains(stderr, "vm "+vm) || len(id) != 23 {
			t.Fatalf("import printed id %q, stderr %q", id, stderr)
		}
		ids = append(ids, id)
	}
	out, _ := run(t, false, "app", "define", "--repo", repoDir, "../../testdata/apps/shop.yaml")
	if !strings.Contains(out, "app shop: 3 members in 3 startup groups") {
		t.Fatalf("app define: %q", out)
	}

	// Second import of an unchanged VM stores nothing new.
	folder := filepath.Join(dir, "src", "web01")
	out, _ = run(t, false, "backup", "import", "--repo", repoDir, "--json", folder)
	var imp struct {
		Point, Parent string
		Stats         struct {
			BytesNew int64 `json:"bytes_new"`
		}
	}
	json.Unmarshal([]byte(out), &imp)
	if imp.Parent != ids[2] || imp.Stats.BytesNew != 0 {
		t.Fatalf("re-import: %s", out)
	}

	listings := func() []string {
		var all []string
		for _, what := range []string{"vms", "points", "apps"} {
			out, _ := run(t, false, "list", what, "--repo", repoDir, "--json")
			all = append(all, out)
		}
		return all
	}
	before := listings()
	var pts []map[string]any
	json.Unmarshal([]byte(before[1]), &pts)
	if len(pts) != 4 {
		t.Fatalf("list points: %s", before[1])
	}

	// Losing the catalog loses nothing: rebuilt from the repository alone.
	os.Remove(filepath.Join(repoDir, "catalog.db"))
	os.Remove(filepath.Join(repoDir, "catalog.db-wal"))
	os.Remove(filepath.Join(repoDir, "catalog.db-shm"))
	out, _ = run(t, false, "catalog", "rebuild", "--repo", repoDir)
	if !strings.Contains(out, "4 restore points, 1 apps") {
		t.Fatalf("rebuild: %q", out)
	}
	if after := listings(); !equal(before, after) {
		t.Fatalf("catalog answers differ after rebuild:\n%v\n%v", before, after)
	}

	// Full restore is byte-identical and sparse.
	dest := filepath.Join(dir, "out")
	run(t, false, "export", "--repo", repoDir, "--point", ids[0], "--to", dest, "-q")
	want, _ := os.ReadFile(filepath.Join(dir, "src", "db01", "db01-flat.vmdk"))
	got, _ := os.ReadFile(filepath.Join(dest, "db01-flat.vmdk"))
	if !bytes.Equal(want, got) {
		t.Fatal("exported extent differs from the source")
	}
	for _, f := range []string{"db01.vmx", "db01.nvram"} {
		a, _ := os.ReadFile(filepath.Join(dir, "src", "db01", f))
		b, _ := os.ReadFile(filepath.Join(dest, f))
		if !bytes.Equal(a, b) {
			t.Fatalf("exported %s differs", f)
		}
	}
	run(t, true, "export", "--repo", repoDir, "--point", ids[0], "--to", dest, "-q") // not empty

	out, _ = run(t, false, "verify", "--repo", repoDir)
	if !strings.Contains(out, "all ok") {
		t.Fatalf("verify: %q", out)
	}
	// Damage one chunk of web01: verify names both of web01's points and fails.
	var chunk string
	filepath.WalkDir(filepath.Join(repoDir, "chunks"), func(p string, d os.DirEntry, _ error) error {
		if d != nil && !d.IsDir() && chunk == "" {
			chunk = p
		}
		return nil
	})
	b, _ := os.ReadFile(chunk)
	good := bytes.Clone(b)
	b[len(b)-1] ^= 0xff
	os.WriteFile(chunk, b, 0o644)
	out, stderr := run(t, true, "verify", "--repo", repoDir)
	if !strings.Contains(out, filepath.Base(chunk)) || !strings.Contains(out, "needed by restore points") || !strings.Contains(stderr, "damaged or missing") {
		t.Fatalf("verify after damage:\n%s\n%s", out, stderr)
	}
	os.WriteFile(chunk, good, 0o644)

	// One byte inside a 4 KiB frame of a chunk that did not compress (its
	// header's frame size byte is 12): export, which reads the point, fails
	// naming the chunk and the frame's bytes, and verify names the chunk.
	raw := ""
	filepath.WalkDir(filepath.Join(repoDir, "chunks"), func(p string, d os.DirEntry, _ error) error {
		if b, _ := os.ReadFile(p); raw == "" && len(b) > 64<<10 && string(b[:4]) == "RKC2" && b[4] == 12 {
			raw = p
		}
		return nil
	})
	if raw == "" {
		t.Fatal("no chunk in 4 KiB frames in the repository")
	}
	b, _ = os.ReadFile(raw)
	good = bytes.Clone(b)
	k := int(bin.LittleEndian.Uint32(b[44:]))
	frame := 5
	off := 56 + 16*k
	for i := range frame {
		off += int(bin.LittleEndian.Uint32(b[48+16*i:]))
	}
	b[off+1000] ^= 0x01
	os.WriteFile(raw, b, 0o644)
	out, stderr = run(t, true, "verify", "--repo", repoDir)
	if !strings.Contains(out, filepath.Base(raw)) || !strings.Contains(out, fmt.Sprintf("frame %d ", frame)) || !strings.Contains(stderr, "damaged or missing") {
		t.Fatalf("verify after damage inside a 4 KiB frame:\n%s\n%s", out, stderr)
	}
	owner := "" // a point verify says needs the chunk
	for _, id := range ids {
		if strings.Contains(out, id) {
			owner = id
		}
	}
	_, stderr = run(t, true, "export", "--repo", repoDir, "--point", owner, "--to", filepath.Join(dir, "out-damaged"), "-q")
	if want := fmt.Sprintf("chunk %s: corrupt: frame %d (bytes %d–%d): checksum mismatch", filepath.Base(raw), frame, frame*4096, frame*4096+4095); !strings.Contains(stderr, want) {
		t.Fatalf("export of a point with a damaged 4 KiB frame: stderr %s, want %q", stderr, want)
	}
	os.WriteFile(raw, good, 0o644)
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
