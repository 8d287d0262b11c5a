package guestfs

import (
	"strings"
	"testing"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// TestTruncatedDisk: a disk image shorter than its partition table says
// (MBR primary and logical partitions, GPT) lists the partitions the cut
// damages as damaged, saying why, with a partition-table status entry, and
// serves its other volumes whole; an ext volume with a damaged superblock
// beside them is damaged too.
func TestTruncatedDisk(t *testing.T) {
	disks := guestimg.TruncatedDisks(t, t.TempDir())
	r := newRepo(t)
	var paths []string
	for _, d := range disks {
		paths = append(paths, d.Path)
	}
	pt := importDisks(t, r, "cut01", paths...)
	fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range disks {
		disk := pt.Disks[i].Name
		t.Run(d.Name, func(t *testing.T) {
			openEach(t, fs, "cut01", pt.ID, disk)
			if got := volStatuses(t, fs, "cut01", pt.ID, disk); got != d.Want {
				t.Fatalf("volumes %s, want %s", got, d.Want)
			}
			base := "/cut01/" + pt.ID + "/" + disk + "/"
			for _, v := range d.Cut {
				rd, err := billyReader{fs}.ReadFile(base + v + ".README.txt")
				if err != nil || !strings.Contains(string(rd), "truncated disk image") {
					t.Errorf("%s status entry: %q, %v", v, rd, err)
				}
			}
			rd, err := billyReader{fs}.ReadFile(base + TableReadme)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range d.Cut {
				if !strings.Contains(string(rd), v+": sectors") {
					t.Errorf("partition table status entry does not name %s: %q", v, rd)
				}
			}
			ents, err := fs.ReadDir(base)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			if !strings.Contains(strings.Join(names, " "), TableReadme) {
				t.Errorf("disk folder lists %q, without %s", names, TableReadme)
			}
			for v, tree := range d.Trees {
				t.Run(v, func(t *testing.T) { tree.Check(t, billyReader{fs}, base+v, false) })
			}
		})
	}
	vols, err := fs.Volumes("cut01", pt.ID, pt.Disks[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	if v := vols[1]; !strings.Contains(v.Reason, "inodes and") || v.Filesystem != "ext" {
		t.Errorf("p2 (damaged superblock): %s %s", v.Filesystem, v.Reason)
	}
	if v := vols[2]; v.Filesystem != "ext" {
		t.Errorf("p3 (cut in its middle): filesystem %q, want the one its first bytes show", v.Filesystem)
	}
}
