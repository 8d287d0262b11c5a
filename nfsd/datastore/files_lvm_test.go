package datastore

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/testdata/guestimg"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// TestFilesLVM reads, with libnfs's real clients through /files, the
// logical volumes of a volume group lvm2 made over two disks of one VM
// (both imported as one restore point): a linear LV, a striped LV over both
// disks and a linear LV spanning both, every byte of every file; and the
// status entry of a thin LV.
func TestFilesLVM(t *testing.T) {
	dir := t.TempDir()
	a, b, trees := guestimg.LVMDisks(t, dir)
	r, err := repo.Init(filepath.Join(dir, "repo"), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	folder, err := vmgen.Generate(filepath.Join(dir, "vm"), vmgen.Spec{Name: "lvm01", Seed: 1,
		Disks: []vmgen.DiskSpec{{Source: a, Format: vmgen.FormatRaw}, {Source: b, Format: vmgen.FormatRaw}}})
	if err != nil {
		t.Fatal(err)
	}
	pt, err := ingest.Import(context.Background(), r, folder, ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(context.Background(), filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	svc, err := New(context.Background(), Config{Repo: r, Catalog: cat, StateDir: filepath.Join(dir, "state"), NFSListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		svc.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("service did not stop")
		}
	})
	_, port, _ := net.SplitHostPort(svc.NFSAddr().String())
	url := func(p string) string {
		return fmt.Sprintf("nfs://127.0.0.1%s?version=3&nfsport=%s&mountport=%s", p, port, port)
	}
	base := "/files/lvm01/" + pt.ID + "/" + pt.Disks[0].Name
	ls := mustRun(t, "nfs-ls", url(base))
	for _, want := range []string{"lvm-vgdata-root", "lvm-vgdata-striped", "lvm-vgdata-span", "lvm-vgdata-thin1.README.txt", "p1.README.txt"} {
		if !strings.Contains(ls, want) {
			t.Fatalf("disk folder lacks %s:\n%s", want, ls)
		}
	}
	if got := mustRun(t, "nfs-cat", url(base+"/lvm-vgdata-thin1.README.txt")); !strings.Contains(got, "unsupported") || !strings.Contains(got, "thin") {
		t.Fatalf("thin LV status entry: %q", got)
	}
	for lv, tree := range trees {
		for _, p := range tree.Paths() {
			w := tree[p]
			if w.Dir || w.Link != "" {
				continue
			}
			got := mustRun(t, "nfs-cat", url(base+"/lvm-vgdata-"+lv+"/"+p))
			if got != string(tree.Bytes(p)) {
				t.Fatalf("%s/%s over NFS: %d bytes, differs from the source's %d", lv, p, len(got), len(tree.Bytes(p)))
			}
		}
	}
}
