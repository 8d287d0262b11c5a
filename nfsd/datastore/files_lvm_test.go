package datastore

import (
	"strings"
	"testing"

	"github.com/rekindle/rekindle/testdata/guestimg"
)

// TestFilesLVM reads, with libnfs's real clients through /files, the
// logical volumes of a volume group lvm2 made over two disks of one VM
// (both imported as one restore point): a linear LV, a striped LV over both
// disks and a linear LV spanning both, every byte of every file; and the
// status entry of a thin LV.
func TestFilesLVM(t *testing.T) {
	dir := t.TempDir()
	a, b, trees := guestimg.LVMDisks(t, dir)
	pt, url := serveFiles(t, dir, "lvm01", a, b)
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
