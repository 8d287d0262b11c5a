package guestfs

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-billy/v5"
	"github.com/willscott/go-nfs/file"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/guestimg"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// importDisks records raw disk images as one restore point of vm.
func importDisks(t testing.TB, r *repo.Repo, vm string, disks ...string) *repo.RestorePoint {
	t.Helper()
	spec := vmgen.Spec{Name: vm, Seed: 1}
	for _, d := range disks {
		spec.Disks = append(spec.Disks, vmgen.DiskSpec{Source: d, Format: vmgen.FormatRaw})
	}
	folder, err := vmgen.Generate(filepath.Join(t.TempDir(), "vm"), spec)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ingest.Import(context.Background(), r, folder, ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newRepo(t testing.TB) *repo.Repo {
	t.Helper()
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// billyReader reads a guest tree through a billy.Filesystem.
type billyReader struct{ fs billy.Filesystem }

func (b billyReader) Lstat(p string) (os.FileInfo, error)     { return b.fs.Lstat(p) }
func (b billyReader) ReadDir(p string) ([]os.FileInfo, error) { return b.fs.ReadDir(p) }
func (b billyReader) Readlink(p string) (string, error)       { return b.fs.Readlink(p) }
func (b billyReader) ReadFile(p string) ([]byte, error) {
	f, err := b.fs.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
func (b billyReader) Fileid(fi os.FileInfo) uint64 { return fi.Sys().(file.FileInfo).Fileid }
func (b billyReader) Nlink(fi os.FileInfo) uint32  { return fi.Sys().(file.FileInfo).Nlink }

func TestLinuxDisk(t *testing.T) {
	dir := t.TempDir()
	disk, trees := guestimg.LinuxDisk(t, dir)
	whole, wholeTree := guestimg.WholeExt2(t, dir)
	r := newRepo(t)
	pt := importDisks(t, r, "web01", disk, whole)
	cache := repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()})
	fs, err := New(r, cache, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if fs.OpenVolumes() != 0 {
		t.Fatalf("%d volumes open before any access", fs.OpenVolumes())
	}
	d0, d1 := pt.Disks[0].Name, pt.Disks[1].Name
	base := "/web01/" + pt.ID + "/"
	lsDisk := func() string {
		t.Helper()
		ents, err := fs.ReadDir(base + d0)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, " ")
	}
	// Listing a disk opens none of its volumes: the probe of their first
	// bytes names them (p7's damage is past them: it shows on its open).
	if got := lsDisk(); got != "p1 p5 p6 p7" {
		t.Fatalf("disk folder lists %q, want the probe's p1 p5 p6 p7", got)
	}
	if n, h := fs.OpenVolumes(), cache.Stats().Holdings; n != 0 || h != 1 {
		t.Fatalf("after listing the disk: %d volumes open, %d holdings (want 0 and the layout's 1)", n, h)
	}
	// The first access of a volume opens that one alone.
	if _, err := fs.ReadDir(base + d0 + "/p5"); err != nil {
		t.Fatal(err)
	}
	if keys := fs.trees.Keys(); len(keys) != 1 || keys[0] != pt.ID+"/"+d0+"/p5" {
		t.Fatalf("after listing p5: volumes open %q, want p5's alone", keys)
	}
	// p7's open fails: the access says why, and the disk's folder lists
	// its status entry instead of a folder from then on.
	if _, err := fs.ReadDir(base + d0 + "/p7"); err == nil || !strings.Contains(err.Error(), "p7.README.txt") {
		t.Fatalf("listing the damaged p7: %v, want an error naming its status entry", err)
	}
	if got := lsDisk(); got != "p1 p5 p6 p7.README.txt" {
		t.Fatalf("disk folder lists %q after p7 failed to open", got)
	}
	rd, err := billyReader{fs}.ReadFile(base + d0 + "/p7.README.txt")
	if err != nil || !strings.Contains(string(rd), "damaged") || !strings.Contains(string(rd), "cannot be opened") {
		t.Fatalf("p7 status: %q, %v", rd, err)
	}
	if _, err := fs.Lstat(base + d0 + "/p7"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("p7 after its failed open: %v, want not found", err)
	}
	for v, tree := range trees {
		t.Run(v, func(t *testing.T) { tree.Check(t, billyReader{fs}, base+d0+"/"+v, false) })
	}
	t.Run("whole", func(t *testing.T) { wholeTree.Check(t, billyReader{fs}, base+d1+"/whole", false) })
	for v, tree := range trees {
		checkLent(t, fs, base+d0+"/"+v, tree, inPlace...)
	}
	checkLent(t, fs, base+d1+"/whole", wholeTree, inPlace...)

	// The huge files' data at their ends, read at an unaligned offset and
	// copied without reading their holes.
	for _, v := range []string{"p1", "p5"} {
		checkHuge(t, fs, base+d0+"/"+v+"/huge.bin", trees[v]["huge.bin"])
	}
}

func TestGPTDisk(t *testing.T) {
	disk, tree := guestimg.GPTDisk(t, t.TempDir())
	r := newRepo(t)
	pt := importDisks(t, r, "db01", disk)
	fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := "/db01/" + pt.ID + "/" + pt.Disks[0].Name
	vols, err := fs.Volumes("db01", pt.ID, pt.Disks[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vols {
		got = append(got, v.Name+":"+v.Status)
	}
	if s := strings.Join(got, " "); s != "p1:ok p2:encrypted p3:empty" {
		t.Fatalf("volumes %q", s)
	}
	if vols[0].Offset != 2048*512 || vols[0].Size != 12<<20 {
		t.Fatalf("p1 at %d+%d", vols[0].Offset, vols[0].Size)
	}
	b, err := billyReader{fs}.ReadFile(base + "/p2.README.txt")
	if err != nil || !strings.Contains(string(b), "LUKS") {
		t.Fatalf("p2 status entry: %q %v", b, err)
	}
	tree.Check(t, billyReader{fs}, base+"/p1", false)
	checkLent(t, fs, base+"/p1", tree, inPlace...)
}

// TestFATDisk reads FAT12, FAT16 and FAT32 volumes made by mkfs.vfat and
// mcopy through the guest file view: every file's bytes, size and mtime,
// and every name of each folder once, the 10 000 of FAT32's big/ too.
func TestFATDisk(t *testing.T) {
	disk, trees := guestimg.FATDisk(t, t.TempDir())
	r := newRepo(t)
	pt := importDisks(t, r, "win01", disk)
	fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := "/win01/" + pt.ID + "/" + pt.Disks[0].Name
	for _, v := range []string{"p1", "p2", "p3"} {
		t.Run(v, func(t *testing.T) { trees[v].Check(t, billyReader{fs}, base+"/"+v, true) })
	}
}
