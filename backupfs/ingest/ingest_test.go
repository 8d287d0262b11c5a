package ingest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

func newRepo(t testing.TB, chunk int) *repo.Repo {
	t.Helper()
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"), repo.InitOptions{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func needTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not found: run `make deps` (scripts/install-deps) first", name)
	}
}

// readDisk reads a whole disk of a restore point through the ReaderAt.
func readDisk(t *testing.T, r *repo.Repo, d repo.Disk) []byte {
	t.Helper()
	dr, err := r.OpenDisk(d.Index, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), d.Name)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, dr.Size())
	if _, err := dr.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	// One raw source image; every format is made from it, so every import
	// must read back exactly these bytes. Sizes are not chunk multiples.
	const size = 5<<20 + 7*512
	rawDir, err := vmgen.Generate(dir, vmgen.Spec{Name: "src", Seed: 7,
		Disks: []vmgen.DiskSpec{{Size: size, Fill: vmgen.FillMixed, Format: vmgen.FormatRaw}}})
	if err != nil {
		t.Fatal(err)
	}
	srcImg := filepath.Join(rawDir, "src.img")
	want, _ := os.ReadFile(srcImg)
	r := newRepo(t, 1<<20)
	for _, format := range []string{vmgen.FormatFlat, vmgen.FormatSparse, vmgen.FormatStream, vmgen.FormatRaw} {
		t.Run(format, func(t *testing.T) {
			vm := "vm-" + format
			folder, err := vmgen.Generate(dir, vmgen.Spec{Name: vm, Seed: 1, Disks: []vmgen.DiskSpec{
				{Source: srcImg, Format: format},
				{Size: 3<<20 + 512, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat},
			}})
			if err != nil {
				t.Fatal(err)
			}
			p, err := Import(context.Background(), r, folder, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if p.VM.Name != vm || len(p.Disks) != 2 || p.Disks[0].Controller != "scsi0:0" {
				t.Fatalf("point %+v", p)
			}
			if got := readDisk(t, r, p.Disks[0]); !bytes.Equal(got, want) {
				t.Fatalf("%s disk reads back different from its source", format)
			}
			second, _ := os.ReadFile(filepath.Join(folder, p.Disks[1].Name+"-flat.vmdk"))
			if got := readDisk(t, r, p.Disks[1]); !bytes.Equal(got, second) {
				t.Fatal("second disk differs")
			}
			nvram, _ := os.ReadFile(filepath.Join(folder, vm+".nvram"))
			var found bool
			for _, f := range p.Files {
				if f.Name == vm+".nvram" {
					found = bytes.Equal(f.Inline, nvram)
				}
			}
			if !found {
				t.Fatalf("nvram not kept: %+v", p.Files)
			}
		})
	}
	// The same bytes in four formats are stored once.
	pts, _ := r.Points()
	var newBytes int64
	for _, p := range pts {
		newBytes += p.Stats.BytesNew
	}
	// The mixed disk is stored once; each VM's random second disk is its own.
	if limit := int64(size + 4*(3<<20+512)); newBytes > limit {
		t.Fatalf("four imports stored %d new bytes, want at most %d", newBytes, limit)
	}
}

func TestIncremental(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 20
	folder, err := vmgen.Generate(dir, vmgen.Spec{Name: "db01", Seed: 3,
		Disks: []vmgen.DiskSpec{{Size: size, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	// 64 KiB chunks, the block size vmgen.Mutate changes.
	r := newRepo(t, 64<<10)
	first, err := Import(context.Background(), r, folder, Options{})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(folder, "db01-flat.vmdk"))
	if err := vmgen.Mutate(folder, 1, 42); err != nil {
		t.Fatal(err)
	}
	second, err := Import(context.Background(), r, folder, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if second.Parent != first.ID {
		t.Fatalf("parent %q, want %q", second.Parent, first.ID)
	}
	frac := float64(second.Stats.BytesNew) / float64(second.Stats.BytesRead)
	t.Logf("second import: %d of %d bytes new (%.2f%%)", second.Stats.BytesNew, second.Stats.BytesRead, 100*frac)
	if frac < 0.005 || frac > 0.02 {
		t.Fatalf("1%% of blocks changed, %.2f%% stored as new", 100*frac)
	}
	after, _ := os.ReadFile(filepath.Join(folder, "db01-flat.vmdk"))
	if got := readDisk(t, r, first.Disks[0]); !bytes.Equal(got, before) {
		t.Fatal("first point no longer reads back intact")
	}
	if got := readDisk(t, r, second.Disks[0]); !bytes.Equal(got, after) {
		t.Fatal("second point reads back wrong")
	}
}

func TestBrokenInputsLeaveNoPoint(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string) string {
		f, err := vmgen.Generate(dir, vmgen.Spec{Name: name, Seed: 5,
			Disks: []vmgen.DiskSpec{{Size: 2 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name, want string
		breakIt    func(folder, vm string)
	}{
		{"missing extent", "flat.vmdk", func(f, vm string) { os.Remove(filepath.Join(f, vm+"-flat.vmdk")) }},
		{"descriptor lies about size", "-flat.vmdk", func(f, vm string) { os.Truncate(filepath.Join(f, vm+"-flat.vmdk"), 1<<20) }},
		{"unreadable vmx", ".vmx", func(f, vm string) {
			os.WriteFile(filepath.Join(f, vm+".vmx"), []byte("displayName = \"x\"\nthis is not a vmx line\n"), 0o644)
		}},
		{"missing disk", ".vmdk", func(f, vm string) { os.Remove(filepath.Join(f, vm+".vmdk")) }},
		{"no vmx", ".vmx", func(f, vm string) { os.Remove(filepath.Join(f, vm+".vmx")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := strings.ReplaceAll(tc.name, " ", "-")
			folder := mk(vm)
			tc.breakIt(folder, vm)
			r := newRepo(t, 1<<20)
			_, err := Import(context.Background(), r, folder, Options{})
			if err == nil {
				t.Fatal("import of a broken VM folder succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name the file (%q)", err, tc.want)
			}
			if pts, _ := r.Points(); len(pts) != 0 {
				t.Fatalf("broken import left %d restore points", len(pts))
			}
		})
	}
}

// TestCrash kills a real import process with SIGKILL while it writes chunks,
// then checks that no restore point names a missing chunk and that the next
// import succeeds.
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	folder, err := vmgen.Generate(dir, vmgen.Spec{Name: "app01", Seed: 9,
		Disks: []vmgen.DiskSpec{{Size: 256 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	r := newRepo(t, 256<<10)
	for attempt := range 3 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "REKINDLE_CRASH_CHILD=1", "REKINDLE_REPO="+r.Dir, "REKINDLE_SRC="+folder)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill once some chunks, but not all, are stored.
		deadline := time.Now().Add(60 * time.Second)
		for countChunks(r) < 100*(attempt+1) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child was not killed mid-import: %v", err)
		}
		pts, err := r.Points()
		if err != nil {
			t.Fatal(err)
		}
		rep, err := r.Verify(context.Background(), pts, nil)
		if err != nil || !rep.OK() {
			t.Fatalf("after kill: %+v %v", rep, err)
		}
		t.Logf("attempt %d: killed with %d chunks stored, %d restore points", attempt, countChunks(r), len(pts))
	}
	r2, err := repo.Open(r.Dir) // cleans the dead writers' temp files
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(r.Dir, "tmp")); len(ents) != 0 {
		t.Fatalf("%d temp files of killed imports left", len(ents))
	}
	p, err := Import(context.Background(), r2, folder, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(folder, "app01-flat.vmdk"))
	if got := readDisk(t, r2, p.Disks[0]); !bytes.Equal(got, want) {
		t.Fatal("import after crash reads back wrong")
	}
	if p.Stats.ChunksNew == p.Stats.ChunksTotal {
		t.Fatal("import after crash reused none of the chunks the killed imports stored")
	}
}

// TestMain runs the import TestCrash kills when started as its child.
func TestMain(m *testing.M) {
	if os.Getenv("REKINDLE_CRASH_CHILD") != "" {
		r, err := repo.Open(os.Getenv("REKINDLE_REPO"))
		if err != nil {
			os.Exit(3)
		}
		Import(context.Background(), r, os.Getenv("REKINDLE_SRC"), Options{Workers: 1})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func countChunks(r *repo.Repo) int {
	n := 0
	filepath.WalkDir(filepath.Join(r.Dir, "chunks"), func(_ string, d os.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func TestDisplayNameOverride(t *testing.T) {
	dir := t.TempDir()
	folder, err := vmgen.Generate(dir, vmgen.Spec{Name: "web01", Seed: 2,
		Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	vmx := filepath.Join(folder, "web01.vmx")
	b, _ := os.ReadFile(vmx)
	b = bytes.Replace(b, []byte(`displayName = "web01"`), []byte(`displayName = "web/01 (prod)"`), 1)
	os.WriteFile(vmx, b, 0o644)
	r := newRepo(t, 1<<20)
	if _, err := Import(context.Background(), r, folder, Options{}); err == nil || !strings.Contains(err.Error(), "--vm") {
		t.Fatalf("import of a VM whose name cannot be a folder: %v", err)
	}
	p, err := Import(context.Background(), r, folder, Options{VM: "web01"})
	if err != nil || p.VM.Name != "web01" {
		t.Fatalf("import with --vm: %v", err)
	}
}
