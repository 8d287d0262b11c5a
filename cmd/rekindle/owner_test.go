package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// TestCatalogOwnsRepository: a restore session pins its point in the
// catalog it is recorded in, so a repository is used with that catalog
// only. forget with another --catalog is refused, naming the owning
// catalog and how to proceed, and removes nothing (it would have removed
// the pinned point: its new catalog has no sessions); a lost catalog is
// replaced at its place by the next command; `catalog rebuild
// --take-over` moves the repository to another catalog.
func TestCatalogOwnsRepository(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	var ids []string
	for i := range 2 {
		folder, err := vmgen.Generate(filepath.Join(dir, fmt.Sprint("src", i)), vmgen.Spec{Name: "web01", Seed: int64(i + 1),
			Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillRandom}}})
		if err != nil {
			t.Fatal(err)
		}
		id, _ := run(t, false, "backup", "import", "--repo", repoDir, "-q", folder)
		ids = append(ids, strings.TrimSpace(id))
	}
	pinned := slices.Min(ids)
	own := filepath.Join(repoDir, "catalog.db")
	cat, err := catalog.Open(context.Background(), own)
	if err != nil {
		t.Fatal(err)
	}
	err = cat.CreateSession(context.Background(), &catalog.Session{ID: "s-pinned", Kind: catalog.KindVM, State: catalog.SessionRunning,
		VMs: []catalog.SessionVM{{VM: "web01", PointID: pinned, Name: "web01"}}})
	cat.Close()
	if err != nil {
		t.Fatal(err)
	}

	other := filepath.Join(dir, "other.db")
	_, stderr := run(t, true, "forget", "--repo", repoDir, "--catalog", other, "--keep-last", "1")
	for _, want := range []string{"belongs to another catalog", own, "--catalog " + own, "--take-over"} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("forget with another catalog: stderr %q lacks %q", stderr, want)
		}
	}
	if pts := points(t, repoDir); len(pts) != 2 {
		t.Fatalf("after the refused forget: %d restore points, want 2", len(pts))
	}
	if _, err := os.Stat(other); err == nil {
		t.Fatalf("the refused command left %s behind", other)
	}
	out, _ := run(t, false, "forget", "--repo", repoDir, "--keep-last", "1")
	if !strings.Contains(out, "in use by session s-pinned") || len(points(t, repoDir)) != 2 {
		t.Fatalf("forget with the owning catalog: %q, %d points: want the pinned point kept", out, len(points(t, repoDir)))
	}

	// The catalog is lost: the next command makes a new one in its place.
	for _, f := range []string{own, own + "-wal", own + "-shm"} {
		os.Remove(f)
	}
	if pts := points(t, repoDir); len(pts) != 2 {
		t.Fatalf("after the catalog was lost: %d restore points listed, want 2", len(pts))
	}

	// Moving to another catalog is explicit; the old one is then refused.
	run(t, false, "catalog", "rebuild", "--repo", repoDir, "--catalog", other, "--take-over")
	if out, _ := run(t, false, "list", "points", "--repo", repoDir, "--catalog", other); !strings.Contains(out, pinned) {
		t.Fatalf("list with the new owner: %q", out)
	}
	if _, stderr := run(t, true, "list", "points", "--repo", repoDir); !strings.Contains(stderr, "--catalog "+other) {
		t.Fatalf("list with the old catalog after the take-over: stderr %q, want a refusal naming %s", stderr, other)
	}
}
