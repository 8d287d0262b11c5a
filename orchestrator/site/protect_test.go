package site

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
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
			errs = append(errs, errors.New(n+": injected backup failure"))
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
