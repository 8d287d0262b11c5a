package guestfs

import (
	"strings"
	"testing"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// TestXFSDisk reads XFS volumes made by mkfs.xfs -p (and edited by xfs_db)
// through the guest file view: bytes, sizes, modes, mtimes (legacy and
// bigtime), symlinks in the inode and in remote blocks, a file with three
// hard links (one file id, nlink 3), a 10 000-entry
// directory (every name once), a 5 GiB sparse file, an unwritten extent; a damaged volume is
// named damaged while the others are served; the served ones' logs are
// clean (no note).
func TestXFSDisk(t *testing.T) {
	disk, t1, t2 := guestimg.XFSDisk(t, t.TempDir())
	r := newRepo(t)
	pt := importDisks(t, r, "db03", disk)
	fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	openEach(t, fs, "db03", pt.ID, pt.Disks[0].Name)
	vols, err := fs.Volumes("db03", pt.ID, pt.Disks[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vols {
		got = append(got, v.Name+":"+v.Filesystem+":"+v.Status)
		if v.Status == StatusOK && len(v.Notes) > 0 { // mkfs.xfs, xfs_db and xfs_repair leave a clean log
			t.Errorf("%s: notes %q, want none", v.Name, v.Notes)
		}
	}
	if s := strings.Join(got, " "); s != "p1:xfs:ok p2:xfs:ok p3:xfs:damaged" {
		t.Fatalf("volumes %q (%v)", s, vols[len(vols)-1].Reason)
	}
	base := "/db03/" + pt.ID + "/" + pt.Disks[0].Name
	t.Run("p1", func(t *testing.T) { t1.Check(t, billyReader{fs}, base+"/p1", false) })
	t.Run("p2", func(t *testing.T) { t2.Check(t, billyReader{fs}, base+"/p2", false) })
	checkLent(t, fs, base+"/p1", t1, inPlace...)
	checkLent(t, fs, base+"/p2", t2, inPlace...)
	checkHuge(t, fs, base+"/p1/huge.bin", t1["huge.bin"])
}
