package guestfs

import (
	"testing"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// TestVolumesChargedToChunkCache: open volumes are charged to the chunk
// cache's bound. Under a bound that leaves room for two volumes' charges,
// reading four volumes one after another keeps at most two open, the chunk
// cache shrinks to what they leave, and each closed volume opens again and
// reads whole.
func TestVolumesChargedToChunkCache(t *testing.T) {
	dir := t.TempDir()
	disk, trees := guestimg.LinuxDisk(t, dir)
	whole, wholeTree := guestimg.WholeExt2(t, dir)
	r := newRepo(t)
	pt := importDisks(t, r, "web02", disk, whole)
	bound := int64(4*VolumeCharge) + 4*int64(r.ChunkSize())
	cache := repo.NewCache(repo.CacheOptions{MaxBytes: bound, ChunkSize: r.ChunkSize()})
	fs, err := New(r, cache, Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := "/web02/" + pt.ID + "/"
	check := func(vol string, tree guestimg.Tree) {
		t.Helper()
		t.Run(vol, func(t *testing.T) { tree.Check(t, billyReader{fs}, base+vol, false) })
		st := cache.Stats()
		if n := fs.OpenVolumes(); n > 2 {
			t.Errorf("after %s: %d volumes open, the bound leaves room for 2", vol, n)
		}
		if st.HeldBytes > bound/2 || st.HeldBytes != int64(fs.OpenVolumes())*VolumeCharge {
			t.Errorf("after %s: %d bytes held for %d open volumes (bound %d)", vol, st.HeldBytes, fs.OpenVolumes(), bound)
		}
		if st.Bytes+st.HeldBytes > bound {
			t.Errorf("after %s: chunks %d + volumes %d bytes pass the bound %d", vol, st.Bytes, st.HeldBytes, bound)
		}
	}
	for round := 0; round < 2; round++ {
		for _, v := range []string{"p1", "p5", "p6"} {
			check(pt.Disks[0].Name+"/"+v, trees[v])
		}
		check(pt.Disks[1].Name+"/whole", wholeTree)
	}
}
