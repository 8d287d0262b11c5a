package guestfs

import (
	"strings"
	"testing"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// TestNTFSDisk reads an NTFS volume made by mkntfs and filled by ntfs-3g
// through the guest file view: every file's bytes, size and mtime, link
// targets, hard links sharing a file id, compressed and sparse files,
// alternate data streams as "file:stream" entries; a
// BitLocker volume is named encrypted and a damaged NTFS volume damaged
// while the others of the disk are served.
func TestNTFSDisk(t *testing.T) {
	disk, tree := guestimg.NTFSDisk(t, t.TempDir())
	r := newRepo(t)
	pt := importDisks(t, r, "win02", disk)
	fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	statuses := func() string {
		vols, err := fs.Volumes("win02", pt.ID, pt.Disks[0].Name)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, v := range vols {
			got = append(got, v.Name+":"+v.Filesystem+":"+v.Status)
		}
		return strings.Join(got, " ")
	}
	// p3's damage shows when it is opened: asking for its status entry
	// opens it.
	if s := statuses(); s != "p1:ntfs:ok p2:bitlocker:encrypted p3:ntfs:ok" {
		t.Fatalf("volumes %q before any is opened", s)
	}
	base := "/win02/" + pt.ID + "/" + pt.Disks[0].Name
	b, err := billyReader{fs}.ReadFile(base + "/p2.README.txt")
	if err != nil || !strings.Contains(string(b), "BitLocker") {
		t.Fatalf("p2 status entry: %q %v", b, err)
	}
	b, err = billyReader{fs}.ReadFile(base + "/p3.README.txt")
	if err != nil || !strings.Contains(string(b), "damaged") {
		t.Fatalf("p3 status entry: %q %v", b, err)
	}
	if s := statuses(); s != "p1:ntfs:ok p2:bitlocker:encrypted p3:ntfs:damaged" {
		t.Fatalf("volumes %q", s)
	}
	tree.Check(t, billyReader{fs}, base+"/p1", true)
	checkLent(t, fs, base+"/p1", tree, inPlace...)
	fi, err := fs.Lstat(base + "/p1/etc/shadow")
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("default mode of an NTFS file: %v, %v", fi, err)
	}
	checkHuge(t, fs, base+"/p1/huge.bin", tree["huge.bin"])
}
