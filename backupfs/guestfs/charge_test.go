package guestfs

import (
	"fmt"
	"sync"
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
		if st.HeldBytes > bound/2 || st.HeldBytes != fs.countedHolds(VolumeCharge) {
			t.Errorf("after %s: %d bytes held for %d open volumes (bound %d)", vol, st.HeldBytes, fs.OpenVolumes(), bound)
		}
		if st.Bytes+st.HeldBytes > bound {
			t.Errorf("after %s: chunks %d + held %d bytes pass the bound %d", vol, st.Bytes, st.HeldBytes, bound)
		}
	}
	for round := 0; round < 2; round++ {
		for _, v := range []string{"p1", "p5", "p6"} {
			check(pt.Disks[0].Name+"/"+v, trees[v])
		}
		check(pt.Disks[1].Name+"/whole", wholeTree)
	}
}

// TestLayoutsAndListingsCharged: point layouts and folder listings are
// charged their counted size to the chunk cache's bound, beside the open
// volumes. With a bound whose half (what holdings may take) has room for
// about three points' layout, listing and volume, listing the root of ten
// points in turn, twice, keeps the held bytes under that half, equal to the
// counted sizes of what is still cached (fewer than ten layouts: the oldest
// were dropped), and every listing is whole again when its point comes back
// (dropped layouts and listings rebuilt, volumes reopened).
func TestLayoutsAndListingsCharged(t *testing.T) {
	dir := t.TempDir()
	whole, tree := guestimg.WholeExt2(t, dir)
	r := newRepo(t)
	const points = 10
	var ids []string
	for i := 0; i < points; i++ {
		ids = append(ids, importDisks(t, r, fmt.Sprintf("vm%02d", i), whole).ID)
	}
	const volCharge = 4 << 10
	// One point's layout and root listing, counted on an unbounded view.
	probe, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{VolumeCharge: volCharge})
	if err != nil {
		t.Fatal(err)
	}
	rootOf := func(i int) string {
		vm := fmt.Sprintf("vm%02d", i)
		pt, _ := probe.point(vm, ids[i])
		return fmt.Sprintf("/%s/%s/%s/whole", vm, ids[i], pt.Disks[0].Name)
	}
	want, err := probe.ReadDir(rootOf(0))
	if err != nil {
		t.Fatal(err)
	}
	l0, _ := probe.layouts.Get(ids[0])
	per := layoutBytes(l0) + listingBytes(rootOf(0), want) + volCharge
	if lb := layoutBytes(l0); lb < volumeBytes {
		t.Fatalf("a layout with a volume counted %d bytes, less than a volume (%d)", lb, volumeBytes)
	}
	bound := 2 * 3 * per
	cache := repo.NewCache(repo.CacheOptions{MaxBytes: bound, ChunkSize: r.ChunkSize()})
	fs, err := New(r, cache, Options{VolumeCharge: volCharge})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		for i := 0; i < points; i++ {
			got, err := fs.ReadDir(rootOf(i))
			if err != nil {
				t.Fatalf("round %d point %d: %v", round, i, err)
			}
			if len(got) != len(want) {
				t.Fatalf("round %d point %d: %d entries listed, want %d", round, i, len(got), len(want))
			}
			if i == 0 || round == 1 {
				tree.Check(t, billyReader{fs}, rootOf(i), false)
			}
			held := cache.Stats().HeldBytes
			if held > bound/2 {
				t.Fatalf("round %d point %d: %d bytes held, over half the bound %d", round, i, held, bound)
			}
			counted := fs.countedHolds(volCharge)
			if held != counted {
				t.Fatalf("round %d point %d: %d bytes held, the cached layouts, listings and volumes count %d", round, i, held, counted)
			}
		}
	}
	if n := fs.layouts.Len(); n >= points {
		t.Errorf("%d layouts kept under a bound with room for about 3", n)
	}
}

// countedHolds is what the cached layouts, listings and open volumes count,
// each volume charged volCharge.
func (fs *FS) countedHolds(volCharge int64) int64 {
	var n int64
	for _, id := range fs.layouts.Keys() {
		if l, ok := fs.layouts.Peek(id); ok {
			fs.volMu.RLock()
			n += layoutBytes(l)
			fs.volMu.RUnlock()
		}
	}
	for _, p := range fs.listings.Keys() {
		if e, ok := fs.listings.Peek(p); ok {
			n += listingBytes(p, e.out)
		}
	}
	return n + int64(fs.OpenVolumes())*volCharge
}

// TestChargesUnderConcurrentDrops: layouts, listings and volumes cached
// while other goroutines' charges push them out. Four points of one ext2
// disk, a bound whose half has room for about two volumes' charges and a
// few listings, eight goroutines listing every folder of the points in
// turn: every charge makes room by dropping others, some while the thing
// dropped is being cached. When they are done, the bytes held are exactly
// what the cached layouts, listings and open volumes count, and there is
// one holding per cached thing: none cached uncharged, no charge left for
// something gone.
func TestChargesUnderConcurrentDrops(t *testing.T) {
	dir := t.TempDir()
	whole, tree := guestimg.WholeExt2(t, dir)
	r := newRepo(t)
	var roots []string
	for i := 0; i < 4; i++ {
		vm := fmt.Sprintf("vm%02d", i)
		pt := importDisks(t, r, vm, whole)
		roots = append(roots, "/"+vm+"/"+pt.ID+"/"+pt.Disks[0].Name+"/whole")
	}
	var folders []string
	for _, root := range roots {
		folders = append(folders, root)
		for _, p := range tree.Paths() {
			if tree[p].Dir {
				folders = append(folders, root+"/"+p)
			}
		}
	}
	const volCharge = 64 << 10
	bound := int64(2*2*volCharge) + 16<<10
	cache := repo.NewCache(repo.CacheOptions{MaxBytes: bound, ChunkSize: r.ChunkSize()})
	fs, err := New(r, cache, Options{VolumeCharge: volCharge, MaxVolumes: 3, MaxPoints: 3})
	if err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 8, 6
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds*len(folders); i++ {
				p := folders[(i*7+w*13)%len(folders)]
				if _, err := fs.ReadDir(p); err != nil {
					errs <- fmt.Errorf("worker %d: %s: %w", w, p, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := cache.Stats()
	counted := fs.countedHolds(volCharge)
	things := fs.layouts.Len() + fs.listings.Len() + fs.OpenVolumes()
	if st.HeldBytes != counted || st.Holdings != things {
		t.Fatalf("%d bytes held in %d holdings; the cached layouts, listings and volumes (%d) count %d bytes",
			st.HeldBytes, st.Holdings, things, counted)
	}
	if st.HeldBytes > bound/2+volCharge {
		t.Fatalf("%d bytes held, past half the bound %d", st.HeldBytes, bound)
	}
	t.Logf("%d folders listed %d times by %d goroutines: %d holdings, %d bytes held at the end", len(folders), rounds, workers, st.Holdings, st.HeldBytes)
}

// TestChargeSetAfterRelease: a charge set after its thing left the cache
// (the cache dropped it between caching and charging) is given back at
// once; one set over another gives the older back.
func TestChargeSetAfterRelease(t *testing.T) {
	cache := repo.NewCache(repo.CacheOptions{MaxBytes: 1 << 20, ChunkSize: 4096})
	var c charge
	c.set(cache.Hold(100, func() {}))
	c.set(cache.Hold(200, func() {}))
	if st := cache.Stats(); st.HeldBytes != 200 || st.Holdings != 1 {
		t.Fatalf("after a charge replaced: %d bytes in %d holdings, want 200 in 1", st.HeldBytes, st.Holdings)
	}
	c.release()
	c.set(cache.Hold(300, func() {}))
	if st := cache.Stats(); st.HeldBytes != 0 || st.Holdings != 0 {
		t.Fatalf("a charge set after its thing was released: %d bytes in %d holdings, want none", st.HeldBytes, st.Holdings)
	}
}
