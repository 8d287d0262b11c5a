package guestfs

import (
	"strings"
	"testing"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

func volStatuses(t *testing.T, fs *FS, vm, id, disk string) string {
	t.Helper()
	vols, err := fs.Volumes(vm, id, disk)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vols {
		got = append(got, v.Name+":"+v.Status)
	}
	return strings.Join(got, " ")
}

// TestLVM reads a volume group lvm2 made over two disks of one VM: a
// linear LV, a striped one over both disks, a linear one spanning both; a
// thin pool and thin LV are listed as unsupported.
func TestLVM(t *testing.T) {
	a, b, trees := guestimg.LVMDisks(t, t.TempDir())
	r := newRepo(t)
	pt := importDisks(t, r, "lvm01", a, b)
	fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	da, db := pt.Disks[0].Name, pt.Disks[1].Name
	want := "p1:lvm-pv lvm-vgdata-root:ok lvm-vgdata-striped:ok lvm-vgdata-span:ok lvm-vgdata-pool:unsupported lvm-vgdata-thin1:unsupported"
	if got := volStatuses(t, fs, "lvm01", pt.ID, da); got != want {
		t.Fatalf("disk A volumes\n %s, want\n %s", got, want)
	}
	if got := volStatuses(t, fs, "lvm01", pt.ID, db); got != "whole:lvm-pv" {
		t.Fatalf("disk B volumes %s", got)
	}
	base := "/lvm01/" + pt.ID + "/" + da + "/"
	for lv, tree := range trees {
		t.Run(lv, func(t *testing.T) { tree.Check(t, billyReader{fs}, base+"lvm-vgdata-"+lv, false) })
		checkLent(t, fs, base+"lvm-vgdata-"+lv, tree, inPlace...)
	}
	rd, err := billyReader{fs}.ReadFile(base + "lvm-vgdata-thin1.README.txt")
	if err != nil || !strings.Contains(string(rd), `segment type "thin" is not read`) {
		t.Fatalf("thin LV status entry: %q, %v", rd, err)
	}
	rd, err = billyReader{fs}.ReadFile(base + "p1.README.txt")
	if err != nil || !strings.Contains(string(rd), "volume group vgdata") {
		t.Fatalf("PV status entry: %q, %v", rd, err)
	}
}

// TestLVMMissingPV: a point holding only one disk of a two-disk volume
// group serves the LVs wholly on it, and names the missing PV for the
// others.
func TestLVMMissingPV(t *testing.T) {
	a, _, trees := guestimg.LVMDisks(t, t.TempDir())
	r := newRepo(t)
	pt := importDisks(t, r, "lvm02", a)
	fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	da := pt.Disks[0].Name
	want := "p1:lvm-pv lvm-vgdata-root:ok lvm-vgdata-striped:incomplete lvm-vgdata-span:incomplete lvm-vgdata-pool:unsupported lvm-vgdata-thin1:unsupported"
	if got := volStatuses(t, fs, "lvm02", pt.ID, da); got != want {
		t.Fatalf("volumes\n %s, want\n %s", got, want)
	}
	base := "/lvm02/" + pt.ID + "/" + da + "/"
	trees["root"].Check(t, billyReader{fs}, base+"lvm-vgdata-root", false)
	rd, err := billyReader{fs}.ReadFile(base + "lvm-vgdata-striped.README.txt")
	if err != nil || !strings.Contains(string(rd), "pv1 (uuid ") {
		t.Fatalf("striped LV status entry: %q, %v", rd, err)
	}
}
