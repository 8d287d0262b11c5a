package guestfs

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// BenchmarkVolumeMemory measures the memory an open volume holds, per
// filesystem: the live heap (runtime.MemStats.HeapAlloc after a GC) grown
// by opening the same volume 32 times and keeping the 32 open, less what
// the chunk cache grew (warmed beforehand by one open and walk, so file
// data is not counted), divided by 32. Two figures per volume: open-KiB
// (opened, its root listed: what a first access leaves) and walked-KiB
// (every folder of the test tree listed and every file opened: the
// gfs.Tree's folder and file caches filled with what the tree holds):
//
//	go test -run XXX -bench VolumeMemory -benchtime 1x ./backupfs/guestfs
func BenchmarkVolumeMemory(b *testing.B) {
	sub := func(name string) string {
		d := filepath.Join(b.TempDir(), name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		return d
	}
	linux, linuxTrees := guestimg.LinuxDisk(b, sub("linux"))
	xfsDisk, xfsTree, _ := guestimg.XFSDisk(b, sub("xfs"))
	ntfsDisk, ntfsTree := guestimg.NTFSDisk(b, sub("ntfs"))
	fatDisk, fatTrees := guestimg.FATDisk(b, sub("fat"))
	r := newRepo(b)
	type vol struct {
		name, vm, disk string
		tree           guestimg.Tree
	}
	var vols []vol
	add := func(vm, img string, vs map[string]guestimg.Tree, names ...string) {
		pt := importDisks(b, r, vm, img)
		for _, n := range names {
			vols = append(vols, vol{n, "/" + vm + "/" + pt.ID + "/" + pt.Disks[0].Name + "/" + n, pt.Disks[0].Name, vs[n]})
		}
	}
	add("linux", linux, linuxTrees, "p1", "p5", "p6")
	add("xfs", xfsDisk, map[string]guestimg.Tree{"p1": xfsTree}, "p1")
	add("ntfs", ntfsDisk, map[string]guestimg.Tree{"p1": ntfsTree}, "p1")
	add("fat", fatDisk, fatTrees, "p1", "p3")
	{
		a, bd, trees := guestimg.LVMDisks(b, sub("lvm"))
		pt := importDisks(b, r, "lvm", a, bd)
		vols = append(vols, vol{"lvm-vgdata-root", "/lvm/" + pt.ID + "/" + pt.Disks[0].Name + "/lvm-vgdata-root", pt.Disks[0].Name, trees["root"]})
	}
	cache := repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()})
	fs, err := New(r, cache, Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, vv := range vols {
		l := split(vv.vm)
		_, vs, err := fs.volumes(l.vm, l.point, l.disk)
		if err != nil {
			b.Fatal(err)
		}
		var v *Volume
		for _, x := range vs {
			if x.Name == vv.name {
				v = x
			}
		}
		b.Run(v.Filesystem+"-"+vv.name, func(b *testing.B) {
			open := func() *gfs.Tree {
				rd, err := openVolume(v, "volume "+vv.name, 0)
				if err != nil {
					b.Fatal(err)
				}
				t := gfs.NewTree(rd, "volume "+vv.name)
				if _, err := t.ReadDir("/"); err != nil {
					b.Fatal(err)
				}
				return t
			}
			walk := func(t *gfs.Tree) {
				for _, p := range vv.tree.Paths() {
					w := vv.tree[p]
					switch {
					case w.Dir:
						if _, err := t.ReadDir("/" + p); err != nil {
							b.Fatal(err)
						}
					case w.Link != "":
						t.Lstat("/" + p)
					default:
						if _, _, err := t.Open("/" + p); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			walk(open()) // warms the chunk cache
			const n = 32
			heap := func() int64 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return int64(ms.HeapAlloc) - cache.Stats().Bytes
			}
			for i := 0; i < b.N; i++ {
				keep := make([]*gfs.Tree, n)
				h0 := heap()
				for k := range keep {
					keep[k] = open()
				}
				h1 := heap()
				for _, t := range keep {
					walk(t)
				}
				h2 := heap()
				runtime.KeepAlive(keep)
				b.ReportMetric(float64(h1-h0)/n/1024, "open-KiB")
				b.ReportMetric(float64(h2-h0)/n/1024, "walked-KiB")
			}
		})
	}
}
