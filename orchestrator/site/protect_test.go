package site

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/retention"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// importer is a VMBackuper stand-in for vCenter's backup engine: it imports
// a generated VM folder of each name into the repository (real restore
// points), failing the names in fail.
type importer struct {
	r    *repo.Repo
	dir  string
	fail map[string]bool
}

func (im importer) BackupVMs(ctx context.Context, names []string) (map[string]string, error) {
	out := map[string]string{}
	var errs []error
	for i, n := range names {
		if im.fail[n] {
			errs = append(errs, &VMError{VM: n, Err: errors.New("injected backup failure")})
			continue
		}
		folder, err := vmgen.Generate(im.dir, vmgen.Spec{Name: n, Seed: int64(i + 1), NumCPUs: 1, MemoryMB: 64,
			Disks: []vmgen.DiskSpec{{Size: 1 << 20}}})
		if err != nil {
			return out, err
		}
		p, err := ingest.Import(ctx, im.r, folder, ingest.Options{})
		if err != nil {
			return out, err
		}
		out[n] = p.ID
	}
	return out, errors.Join(errs...)
}

func TestProtect(t *testing.T) {
	_, c := primary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := importer{r: r, dir: t.TempDir(), fail: map[string]bool{"DC0_C0_APP0_VM1": true}}
	p, err := Protect(ctx, c.Client, r, b, ProtectOptions{ExtractOptions: ExtractOptions{Site: "hq", Datacenters: []string{"DC0"}},
		VMs: []string{"DC0_C0_APP0_VM0", "DC0_C0_APP0_VM1"}})
	if err == nil || p == nil {
		t.Fatalf("a cycle with a failed backup: %v, %v: want the package stored and the failure named", p, err)
	}
	t.Log(err)
	if len(p.Datacenters) != 1 {
		t.Fatalf("datacenters %v: want DC0 only", p.Datacenters)
	}
	if vm := findVM(p.Datacenters[0].VMs, "DC0_C0_APP0_VM0"); vm == nil || vm.Point == "" {
		t.Errorf("protected VM %+v: want its point", vm)
	}
	if vm := findVM(p.Datacenters[0].VMs, "DC0_C0_APP0_VM1"); vm == nil || vm.Point != "" {
		t.Errorf("failed VM %+v: want no point", vm)
	}
	got, err := Load(r, "latest")
	if err != nil || got.ID != p.ID || len(got.Points()) != 1 {
		t.Fatalf("stored package: %+v, %v", got, err)
	}
}

// repoCatalog is a new repository and a catalog beside it.
func repoCatalog(t *testing.T) (*repo.Repo, *catalog.Catalog) {
	t.Helper()
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(context.Background(), filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	return r, cat
}

// TestProtectHistory: a cycle is recorded in the catalog as a run of job
// protect:<site>, with its package, each VM's point, and the failed VM's
// error; a cycle that backs up nothing is recorded failed, without a
// package.
func TestProtectHistory(t *testing.T) {
	_, c := primary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, cat := repoCatalog(t)
	vms := []string{"DC0_C0_APP0_VM0", "DC0_C0_APP0_VM1"}
	opt := ProtectOptions{ExtractOptions: ExtractOptions{Site: "hq", Datacenters: []string{"DC0"}}, VMs: vms, History: cat, Trigger: "schedule"}
	p, perr := Protect(ctx, c.Client, r, importer{r: r, dir: t.TempDir(), fail: map[string]bool{"DC0_C0_APP0_VM1": true}}, opt)
	if p == nil {
		t.Fatal(perr)
	}
	_, ferr := Protect(ctx, c.Client, r, importer{r: r, dir: t.TempDir(), fail: map[string]bool{vms[0]: true, vms[1]: true}}, opt)
	if ferr == nil {
		t.Fatal("a cycle that backed up nothing: no error")
	}
	runs, err := cat.JobRuns(ctx, catalog.ProtectJob("hq"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 {
		t.Fatalf("%d cycles recorded: want 2 (%+v)", len(runs), runs)
	}
	failed, partial := runs[0], runs[1] // newest first
	if partial.State != catalog.RunPartial || partial.Package != p.ID || partial.VMsOK != 1 || partial.VMsFailed != 1 ||
		partial.Trigger != "schedule" || partial.Ended.Before(partial.Started) || partial.Error == "" {
		t.Errorf("partial cycle recorded as %+v: want partial, package %s, 1 VM ok, 1 failed, ended", partial, p.ID)
	}
	if failed.State != catalog.RunFailed || failed.Package != "" || failed.VMsFailed != 2 {
		t.Errorf("failed cycle recorded as %+v: want failed, no package, 2 VMs failed", failed)
	}
	full, err := cat.JobRun(ctx, partial.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range full.VMs {
		switch v.VM {
		case vms[0]:
			if pt := findVM(p.Datacenters[0].VMs, vms[0]).Point; v.PointID != pt || v.Error != "" {
				t.Errorf("%s recorded %+v: want point %s", v.VM, v, pt)
			}
		case vms[1]:
			if v.PointID != "" || v.Error != "injected backup failure" {
				t.Errorf("%s recorded %+v: want its own error", v.VM, v)
			}
		}
	}
	if len(full.VMs) != 2 {
		t.Errorf("cycle VMs %+v: want both", full.VMs)
	}
}

// TestProtectRetention: a cycle applies its retention to the VMs it backed
// up: with keep-last 1, two cycles leave each VM one point, the newest
// package's.
func TestProtectRetention(t *testing.T) {
	_, c := primary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, cat := repoCatalog(t)
	vms := []string{"DC0_C0_APP0_VM0", "DC0_C0_APP0_VM1"}
	opt := ProtectOptions{ExtractOptions: ExtractOptions{Site: "hq", Datacenters: []string{"DC0"}}, VMs: vms, History: cat,
		Retention: &retention.Policy{Last: 1}}
	var p *Package
	var err error
	for range 2 {
		if p, err = Protect(ctx, c.Client, r, catalogImporter{importer{r: r, dir: t.TempDir()}, cat}, opt); err != nil {
			t.Fatal(err)
		}
	}
	pts, err := r.Points()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, pt := range pts {
		got = append(got, pt.ID)
	}
	want := p.Points()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("points after two cycles with keep-last 1: %v, want the newest package's %v", got, want)
	}
	for _, vm := range vms {
		if ps, err := cat.Points(ctx, vm); err != nil || len(ps) != 1 {
			t.Errorf("catalog points of %s: %v, %v: want 1", vm, ps, err)
		}
	}
}

// catalogImporter indexes what importer backs up, as vcbackup does.
type catalogImporter struct {
	importer
	cat *catalog.Catalog
}

func (im catalogImporter) BackupVMs(ctx context.Context, names []string) (map[string]string, error) {
	out, err := im.importer.BackupVMs(ctx, names)
	for _, id := range out {
		p, lerr := im.r.Point(id)
		if lerr == nil {
			lerr = im.cat.IndexPoint(ctx, p)
		}
		err = errors.Join(err, lerr)
	}
	return out, err
}
