package view

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/memfs"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// storePoint puts a point with one disk holding data into a new repository.
func storePoint(t *testing.T, data []byte) (*repo.Repo, *repo.RestorePoint) {
	t.Helper()
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"), repo.InitOptions{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	x := repo.NewIndex(r.ChunkSize(), int64(len(data)))
	for i := range x.Chunks {
		c := data[i*r.ChunkSize() : i*r.ChunkSize()+x.ChunkLen(i)]
		if !repo.IsZero(c) {
			x.Chunks[i] = repo.Sum(c)
			r.PutChunk(x.Chunks[i], c)
		}
	}
	d, err := r.PutIndex(x)
	if err != nil {
		t.Fatal(err)
	}
	p := &repo.RestorePoint{ID: repo.NewPointID(time.Now()), VM: repo.VMIdentity{Name: "web01"}, Created: time.Now().UTC(),
		Files: []repo.ConfigFile{{Name: "web01.vmx", Size: 11, Inline: []byte("displayName")}},
		Disks: []repo.Disk{{Name: "web01", Controller: "scsi0:0", Adapter: "pvscsi", Size: int64(len(data)), Index: d}}}
	if err := r.SavePoint(p); err != nil {
		t.Fatal(err)
	}
	return r, p
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestPointFS(t *testing.T) {
	data := randBytes(300<<10 + 512)
	r, p := storePoint(t, data)
	fs, err := NewPointFS(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}))
	if err != nil {
		t.Fatal(err)
	}
	dir := "/web01/" + p.ID
	ents, err := fs.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "web01-flat.vmdk web01.vmdk web01.vmx" {
		t.Fatalf("folder holds %q", got)
	}
	f, err := fs.Open(dir + "/web01-flat.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("extent reads back wrong (%v)", err)
	}
	desc, _ := fs.Open(dir + "/web01.vmdk")
	db, _ := io.ReadAll(desc)
	if !bytes.Contains(db, []byte(`RW 601 FLAT "web01-flat.vmdk" 0`)) {
		t.Fatalf("descriptor:\n%s", db)
	}
	for _, bad := range []func() error{
		func() error { _, err := fs.Create(dir + "/x"); return err },
		func() error { _, err := fs.OpenFile(dir+"/web01.vmx", os.O_RDWR, 0); return err },
		func() error { return fs.Remove(dir + "/web01.vmx") },
		func() error { return fs.Rename(dir+"/web01.vmx", dir+"/y") },
	} {
		if err := bad(); !errors.Is(err, os.ErrPermission) {
			t.Errorf("write to restore point view: %v, want permission error", err)
		}
	}
	if _, err := fs.Stat("/web01/../../etc/passwd"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("path trick: %v", err)
	}
	// Ids are stable across instances (server restarts) and resolve back.
	fs2, _ := NewPointFS(r, repo.NewCache(repo.CacheOptions{}))
	for _, path := range []string{"/", "/web01", dir, dir + "/web01-flat.vmdk"} {
		a, _ := fs.FileID(path)
		b, _ := fs2.FileID(path)
		back, err := fs2.PathOf(a)
		if a != b || err != nil || back != path {
			t.Errorf("%s: ids %x/%x, back %q %v", path, a, b, back, err)
		}
	}
}

func TestMountFS(t *testing.T) {
	data := randBytes(100 << 10)
	r, p := storePoint(t, data)
	pfs, _ := NewPointFS(r, repo.NewCache(repo.CacheOptions{}))
	sub, err := Sub(pfs, "/web01/"+p.ID)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMountFS("test")
	if err := m.Mount("web01", sub); err != nil {
		t.Fatal(err)
	}
	rw := memfs.New()
	m.Mount("scratch", rw)
	if err := m.Mount("web01", sub); !errors.Is(err, os.ErrExist) {
		t.Fatalf("double mount: %v", err)
	}
	for _, bad := range []string{"", "..", "a/b"} {
		if err := m.Mount(bad, rw); err == nil {
			t.Errorf("mount name %q accepted", bad)
		}
	}
	fi, err := m.Stat("/web01")
	if err != nil || !fi.IsDir() || fi.Name() != "web01" {
		t.Fatalf("stat mount: %v %v", fi, err)
	}
	f, err := m.Open("/web01/web01-flat.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, data) {
		t.Fatal("read through mount differs")
	}
	// Ids through the mount are the point view's own, and resolve back.
	id, _ := m.FileID("/web01/web01-flat.vmdk")
	pid, _ := pfs.FileID("/web01/" + p.ID + "/web01-flat.vmdk")
	if back, err := m.PathOf(id); id != pid || back != "/web01/web01-flat.vmdk" || err != nil {
		t.Fatalf("id %x vs %x, back %q %v", id, pid, back, err)
	}
	if _, err := m.Create("/stray.txt"); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("create in root: %v", err)
	}
	if err := m.Remove("/web01"); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("remove mount: %v", err)
	}
	w, err := m.Create("/scratch/a")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	w.Close()
	if err := m.Rename("/scratch/a", "/web01/a"); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("cross-mount rename: %v", err)
	}
	if err := m.Rename("/scratch/a", "/scratch/b"); err != nil {
		t.Fatal(err)
	}
	ents, _ := m.ReadDir("/")
	if len(ents) != 2 || ents[0].Name() != "scratch" || ents[1].Name() != "web01" {
		t.Fatalf("root lists %v", ents)
	}
	m.Unmount("scratch")
	if _, err := m.Stat("/scratch/b"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after unmount: %v", err)
	}
}

func TestWritableModes(t *testing.T) {
	r, p := storePoint(t, randBytes(1000))
	pfs, _ := NewPointFS(r, repo.NewCache(repo.CacheOptions{}))
	sub, _ := Sub(pfs, "/web01/"+p.ID)
	w := Writable(sub)
	fi, err := w.Stat("/web01.vmx")
	if err != nil || fi.Mode() != 0o644 {
		t.Fatalf("file mode %v %v", fi.Mode(), err)
	}
	root, _ := w.Stat("/")
	ents, _ := w.ReadDir("/")
	if root.Mode() != os.ModeDir|0o755 || len(ents) != 3 || ents[0].Mode() != 0o644 {
		t.Fatalf("modes: root %v, entries %v", root.Mode(), ents)
	}
	id, _ := w.(IDer).FileID("/web01.vmx")
	pid, _ := pfs.FileID("/web01/" + p.ID + "/web01.vmx")
	if id != pid {
		t.Fatal("wrapper changed the file id")
	}
	if _, err := w.Create("/x"); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("wrapper made the view writable: %v", err)
	}
}
