package site

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/retention"
)

// TestForgetKeepsPackagePoints: a backup after the protect cycle makes the
// package's point no longer its VM's newest; forget --keep-last 1 would
// remove it, and the newest package would name a missing point. With the
// package's pins it stays, and says why.
func TestForgetKeepsPackagePoints(t *testing.T) {
	_, c := primary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := importer{r: r, dir: t.TempDir()}
	vm := "DC0_C0_APP0_VM0"
	p, err := Protect(ctx, c.Client, r, b, ProtectOptions{ExtractOptions: ExtractOptions{Site: "hq", Datacenters: []string{"DC0"}},
		VMs: []string{vm}})
	if err != nil {
		t.Fatal(err)
	}
	named := findVM(p.Datacenters[0].VMs, vm).Point
	// A later backup of the same VM, outside the cycle.
	if _, err := (importer{r: r, dir: t.TempDir()}).BackupVMs(ctx, []string{vm}); err != nil {
		t.Fatal(err)
	}
	pins, err := Pins(r)
	if err != nil {
		t.Fatal(err)
	}
	if why := pins[named]; !strings.Contains(why, p.ID) {
		t.Fatalf("pins %v: want %s pinned by package %s", pins, named, p.ID)
	}
	ds, err := retention.Forget(ctx, r, retention.Policy{Last: 1}, retention.ForgetOptions{Pins: pins})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.ID == named && !d.Keep {
			t.Fatalf("forget removed %s, which the newest site package names", named)
		}
	}
	if _, err := r.Point(named); err != nil {
		t.Fatalf("the package's point after forget: %v", err)
	}
}
