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

// openEach lists the root of every volume of a disk the probe found
// servable, opening it (one whose open fails is damaged from then on).
func openEach(t *testing.T, fs *FS, vm, id, disk string) {
	t.Helper()
	vols, err := fs.Volumes(vm, id, disk)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.Servable() {
			fs.ReadDir("/" + vm + "/" + id + "/" + disk + "/" + v.Name)
		}
	}
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

// TestLVMSameName: three disks of one VM each hold a volume group named
// vg0: two made apart (other uuids) and one a clone of the first (the same
// uuids, other files). Each is read from its own disk: the groups of one
// name are told apart by uuid in their volumes' names, the clone's LV is
// listed under its own disk, and none is merged or dropped.
func TestLVMSameName(t *testing.T) {
	disks, trees := guestimg.SameNameVGs(t, t.TempDir())
	r := newRepo(t)
	pt := importDisks(t, r, "lvm03", disks[:]...)
	fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	uuids := make([]string, 3)
	for i := range disks {
		vols, err := fs.Volumes("lvm03", pt.ID, pt.Disks[i].Name)
		if err != nil {
			t.Fatal(err)
		}
		if len(vols) != 2 || vols[1].Kind != KindLV || vols[1].Status != StatusOK || vols[1].VG != "vg0" {
			t.Fatalf("disk %d volumes: %s", i, volStatuses(t, fs, "lvm03", pt.ID, pt.Disks[i].Name))
		}
		uuids[i] = vols[1].VGUUID
		if want := "lvm-vg0@" + uuids[i][:6] + "-root"; vols[1].Name != want {
			t.Errorf("disk %d: LV named %s, want %s", i, vols[1].Name, want)
		}
		base := "/lvm03/" + pt.ID + "/" + pt.Disks[i].Name + "/" + vols[1].Name
		t.Run(pt.Disks[i].Name, func(t *testing.T) { trees[i].Check(t, billyReader{fs}, base, false) })
	}
	if uuids[0] == uuids[1] || uuids[0] != uuids[2] {
		t.Errorf("VG uuids %v: want a's and c's equal (a clone), b's other", uuids)
	}
}
