package export

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/vmfolder"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

func setup(t *testing.T) (*repo.Repo, *repo.RestorePoint, string) {
	t.Helper()
	dir := t.TempDir()
	r, err := repo.Init(filepath.Join(dir, "repo"), repo.InitOptions{ChunkSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "app01", Seed: 3, Disks: []vmgen.DiskSpec{
		{Size: 32<<20 + 512, Fill: vmgen.FillMixed, Format: vmgen.FormatFlat},
		{Size: 64 << 20, Fill: vmgen.FillZero, Format: vmgen.FormatFlat},
	}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := ingest.Import(context.Background(), r, folder, ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r, p, folder
}

func TestExport(t *testing.T) {
	r, p, src := setup(t)
	dest := filepath.Join(t.TempDir(), "out")
	// Progress is called from several workers: under -race an unserialized
	// callback fails here, and done must never go backwards.
	var last int64
	progress := func(done, total int64) {
		if done < last {
			t.Errorf("progress went back from %d to %d", last, done)
		}
		last = done
	}
	if err := Export(context.Background(), r, p, dest, Options{Progress: progress, Workers: 8}); err != nil {
		t.Fatal(err)
	}
	if last != 32<<20+512+64<<20 {
		t.Fatalf("progress ended at %d", last)
	}
	for _, f := range []string{"app01.vmx", "app01.nvram", "app01-flat.vmdk", "app01_1-flat.vmdk"} {
		a, _ := os.ReadFile(filepath.Join(src, f))
		b, err := os.ReadFile(filepath.Join(dest, f))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s differs from the source (%v)", f, err)
		}
	}
	// The exported descriptor opens as the disk it describes.
	d, err := vmfolder.OpenDisk(filepath.Join(dest, "app01.vmdk"))
	if err != nil || d.Size() != 32<<20+512 {
		t.Fatalf("exported descriptor: %v", err)
	}
	d.Close()
	// The zero disk takes no space: zero chunks are holes.
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(dest, "app01_1-flat.vmdk"), &st)
	if st.Blocks*512 > 1<<20 {
		t.Fatalf("all-zero disk exported with %d bytes allocated", st.Blocks*512)
	}
	if err := Export(context.Background(), r, p, dest, Options{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("export into a non-empty folder: %v", err)
	}
}

func TestExportCancelledLeavesNothing(t *testing.T) {
	r, p, _ := setup(t)
	dest := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithCancel(context.Background())
	err := Export(ctx, r, p, dest, Options{Progress: func(done, total int64) {
		if done > 4<<20 {
			cancel()
		}
	}})
	if err == nil {
		t.Fatal("cancelled export succeeded")
	}
	ents, _ := os.ReadDir(dest)
	if len(ents) != 0 {
		t.Fatalf("cancelled export left %d files", len(ents))
	}
}

func TestExportDamagedChunk(t *testing.T) {
	r, p, _ := setup(t)
	x, _ := r.LoadIndex(p.Disks[0].Index)
	for _, c := range x.Chunks {
		if !c.IsZero() {
			os.Remove(r.ChunkPath(c))
			break
		}
	}
	err := Export(context.Background(), r, p, filepath.Join(t.TempDir(), "out"), Options{})
	if err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), p.ID) {
		t.Fatalf("export with a missing chunk: %v", err)
	}
}
