package guestimg

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// MiB is 2^20 bytes.
const MiB = 1 << 20

// LinuxDisk builds, in dir, a 64 MiB raw disk with an MBR table:
//
//	p1  ext4 (extents, 4 KiB blocks): deep folders, symlinks, hard links,
//	    Unicode names, sparse files and a 5 GiB sparse file
//	p5  ext3, a logical partition (block-mapped files, 1 KiB blocks, the
//	    5 GiB file through triple indirect blocks)
//	p6  ext4 with inline_data and a 10 000-entry hashed directory
//	p7  ext4 whose superblock is damaged (not served; the others are)
//
// It returns the disk's path and the tree each served volume holds.
func LinuxDisk(tb testing.TB, dir string) (string, map[string]Tree) {
	tb.Helper()
	trees := map[string]Tree{
		"p1": NewTree(1, Options{Huge: 5<<30 + 12345, Symlinks: true, HardLinks: true, Unicode: true, Deep: 24}),
		"p5": NewTree(5, Options{Huge: 5<<30 + 4096, Symlinks: true, HardLinks: true}),
		"p6": NewTree(6, Options{BigDir: 10000, Symlinks: true}),
	}
	img := func(name string) string { return filepath.Join(dir, name) }
	for v, t := range trees {
		src := img("src-" + v)
		if err := os.MkdirAll(src, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := t.Write(src); err != nil {
			tb.Fatal(err)
		}
	}
	Ext(tb, img("p1.img"), 20*MiB, img("src-p1"), "-t", "ext4", "-b", "4096")
	Ext(tb, img("p5.img"), 12*MiB, img("src-p5"), "-t", "ext3", "-b", "1024")
	Ext(tb, img("p6.img"), 16*MiB, img("src-p6"), "-t", "ext4", "-b", "4096", "-O", "inline_data", "-I", "256", "-N", "12000")
	if err := os.MkdirAll(img("src-p7"), 0o755); err != nil {
		tb.Fatal(err)
	}
	Ext(tb, img("p7.img"), 4*MiB, img("src-p7"), "-t", "ext4")
	damage(tb, img("p7.img"))

	disk := img("linux.raw")
	Sparse(tb, disk, 64*MiB)
	Sfdisk(tb, disk, `label: dos
start=2048, size=40960, type=83
start=43008, type=5
start=45056, size=24576, type=83
start=71680, size=32768, type=83
start=106496, size=8192, type=83
`)
	Place(tb, disk, 2048*512, img("p1.img"))
	Place(tb, disk, 45056*512, img("p5.img"))
	Place(tb, disk, 71680*512, img("p6.img"))
	Place(tb, disk, 106496*512, img("p7.img"))
	return disk, trees
}

// damage zeroes the block group descriptors of an ext image: its
// superblock still says ext, its inode tables are gone.
func damage(tb testing.TB, image string) {
	tb.Helper()
	f, err := os.OpenFile(image, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	// 4 MiB ext4 uses 1 KiB blocks: descriptors from block 2.
	if _, err := f.WriteAt(make([]byte, 4096), 2048); err != nil {
		tb.Fatal(err)
	}
}

// WholeExt2 builds a 16 MiB disk holding an ext2 filesystem with no
// partition table, and returns it with its tree.
func WholeExt2(tb testing.TB, dir string) (string, Tree) {
	tb.Helper()
	t := NewTree(2, Options{Symlinks: true, HardLinks: true, Deep: 3})
	src := filepath.Join(dir, "src-whole")
	if err := os.MkdirAll(src, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := t.Write(src); err != nil {
		tb.Fatal(err)
	}
	disk := filepath.Join(dir, "whole.raw")
	Ext(tb, disk, 16*MiB, src, "-t", "ext2")
	return disk, t
}

// GPTDisk builds a 32 MiB disk with a GPT (sgdisk): p1 ext4 with a tree,
// p2 starting with a LUKS header's magic (detection only: rekindle never
// reads further), p3 left unformatted.
func GPTDisk(tb testing.TB, dir string) (string, Tree) {
	tb.Helper()
	t := NewTree(3, Options{Symlinks: true, Unicode: true})
	src := filepath.Join(dir, "src-gpt")
	if err := os.MkdirAll(src, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := t.Write(src); err != nil {
		tb.Fatal(err)
	}
	img := filepath.Join(dir, "gpt-p1.img")
	Ext(tb, img, 12*MiB, src, "-t", "ext4")
	disk := filepath.Join(dir, "gpt.raw")
	Sparse(tb, disk, 32*MiB)
	Run(tb, "sgdisk", "-n", "1:2048:+12M", "-c", "1:root", "-t", "1:8300",
		"-n", "2:0:+4M", "-t", "2:8309", "-n", "3:0:+4M", disk)
	Place(tb, disk, 2048*512, img)
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	p2 := int64(2048+12*MiB/512) * 512
	if _, err := f.WriteAt([]byte("LUKS\xba\xbe\x00\x02"), p2); err != nil {
		tb.Fatal(err)
	}
	return disk, t
}

// FATDisk builds, in dir, a 96 MiB MBR disk with FAT12 (p1), FAT16 (p2)
// and FAT32 (p3, 1 KiB clusters) volumes made by mkfs.vfat and filled by
// mcopy, and returns it with each volume's tree (FAT keeps no modes,
// owners or links): the same tree on each, p3's with a 10 000-entry folder
// big/ too (long names, Unicode of the basic plane: Names). mtools finds
// no room for a long name of more slots than a cluster holds (16 in a
// 512-byte one), hence p3's clusters, and so its size: FAT32 needs 65 525
// clusters. The disk is made once (see cachedImage).
func FATDisk(tb testing.TB, dir string) (string, map[string]Tree) {
	tb.Helper()
	t := NewTree(4, Options{Unicode: true, Deep: 3})
	// mtools writes long names as UCS-2: a character outside the BMP (the
	// emoji) loses its high bits, so it has no place in a FAT made here.
	delete(t, "ünïcødé/emoji-🦀.txt")
	big := NewTree(4, Options{BigDir: 10000, BigNames: Names(NameRules{Spaces: true})})
	t32, bigOnly := Tree{}, Tree{}
	for p, w := range t {
		t32[p] = w
	}
	for p, w := range big {
		if p == "big" || strings.HasPrefix(p, "big/") {
			t32[p], bigOnly[p] = w, w
		}
	}
	trees := map[string]Tree{"p1": t, "p2": t, "p3": t32}
	return cachedImage(tb, dir, "fat", func(dir string) string { return fatDisk(tb, dir, t, t32, bigOnly) }), trees
}

func fatDisk(tb testing.TB, dir string, t, t32, bigOnly Tree) string {
	tb.Helper()
	src, srcBig := filepath.Join(dir, "src-fat"), filepath.Join(dir, "src-fat-big")
	for _, d := range []string{src, srcBig} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	if err := t.Write(src); err != nil {
		tb.Fatal(err)
	}
	if err := bigOnly.Write(srcBig); err != nil {
		tb.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		tb.Fatal(err)
	}
	disk := filepath.Join(dir, "fat.raw")
	Sparse(tb, disk, 96*MiB)
	Sfdisk(tb, disk, "label: dos\nstart=2048, size=8192, type=1\nstart=10240, size=32768, type=6\nstart=43008, size=147456, type=c\n")
	for i, v := range []struct {
		start, sectors int64
		args           []string
		tree           Tree
	}{{2048, 8192, []string{"-F", "12"}, t}, {10240, 32768, []string{"-F", "16"}, t}, {43008, 147456, []string{"-F", "32", "-s", "2"}, t32}} {
		img := filepath.Join(dir, "fat"+string(rune('1'+i))+".img")
		Sparse(tb, img, v.sectors*512)
		Run(tb, "mkfs.vfat", append(v.args, img)...)
		args := []string{"-s", "-m", "-i", img}
		for _, e := range ents {
			args = append(args, filepath.Join(src, e.Name()))
		}
		if v.tree["big"] != nil {
			args = append(args, filepath.Join(srcBig, "big"))
		}
		Run(tb, "mcopy", append(args, "::/")...)
		Place(tb, disk, v.start*512, img)
	}
	return disk
}

// TruncatedDisk is a disk image cut short of what its partition table
// says, as an interrupted copy leaves it.
type TruncatedDisk struct {
	Name  string
	Path  string
	Want  string          // the volumes' "name:status" in listing order
	Trees map[string]Tree // the volumes served whole
	Cut   []string        // the volumes the cut damages
}

// TruncatedDisks builds, in dir, three disks holding small ext2 volumes
// and cut short (the image file truncated after the tables are written):
//
//	mbr-primary  MBR: p1 whole, p2 ext4 with a damaged superblock, p3
//	             primary cut in its middle
//	mbr-logical  MBR: p1 whole, extended p2 holding p5 whole and p6 cut in
//	             its middle, p3 primary wholly past the cut
//	gpt          GPT (its backup header lost with the cut): p1 and p2
//	             whole, p3 cut in its middle
func TruncatedDisks(tb testing.TB, dir string) []TruncatedDisk {
	tb.Helper()
	t := NewTree(21, Options{Symlinks: true, HardLinks: true, Deep: 2})
	src := filepath.Join(dir, "src-trunc")
	if err := os.MkdirAll(src, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := t.Write(src); err != nil {
		tb.Fatal(err)
	}
	n := 0
	ext2 := func(disk string, startMiB int64) {
		n++
		img := filepath.Join(dir, fmt.Sprintf("trunc-%d.img", n))
		Ext(tb, img, 6*MiB, src, "-t", "ext2")
		Place(tb, disk, startMiB*MiB, img)
	}
	cut := func(disk string, mib int64) {
		if err := os.Truncate(disk, mib*MiB); err != nil {
			tb.Fatal(err)
		}
	}
	const s = MiB / 512 // sectors per MiB
	var out []TruncatedDisk

	d := filepath.Join(dir, "mbr-primary.raw")
	Sparse(tb, d, 40*MiB)
	Sfdisk(tb, d, fmt.Sprintf("label: dos\nstart=%d, size=%d, type=83\nstart=%d, size=%d, type=83\nstart=%d, size=%d, type=83\n", 1*s, 8*s, 9*s, 8*s, 17*s, 8*s))
	ext2(d, 1)
	img := filepath.Join(dir, "trunc-badsb.img")
	Ext(tb, img, 6*MiB, src, "-t", "ext4")
	damageSuperblock(tb, img)
	Place(tb, d, 9*MiB, img)
	ext2(d, 17)
	cut(d, 21)
	out = append(out, TruncatedDisk{Name: "mbr-primary", Path: d, Want: "p1:ok p2:damaged p3:damaged",
		Trees: map[string]Tree{"p1": t}, Cut: []string{"p3"}})

	d = filepath.Join(dir, "mbr-logical.raw")
	Sparse(tb, d, 40*MiB)
	Sfdisk(tb, d, fmt.Sprintf("label: dos\nstart=%d, size=%d, type=83\nstart=%d, size=%d, type=5\nstart=%d, size=%d, type=83\nstart=%d, size=%d, type=83\nstart=%d, size=%d, type=83\n",
		1*s, 8*s, 9*s, 20*s, 30*s, 8*s, 10*s, 8*s, 20*s, 8*s))
	ext2(d, 1)
	ext2(d, 10)
	ext2(d, 20)
	ext2(d, 30)
	cut(d, 24)
	out = append(out, TruncatedDisk{Name: "mbr-logical", Path: d, Want: "p1:ok p3:damaged p5:ok p6:damaged",
		Trees: map[string]Tree{"p1": t, "p5": t}, Cut: []string{"p3", "p6"}})

	d = filepath.Join(dir, "gpt-cut.raw")
	Sparse(tb, d, 40*MiB)
	Run(tb, "sgdisk", "-n", "1:2048:+8M", "-n", "2:0:+8M", "-n", "3:0:+8M", d)
	ext2(d, 1)
	ext2(d, 9)
	ext2(d, 17)
	cut(d, 21)
	out = append(out, TruncatedDisk{Name: "gpt", Path: d, Want: "p1:ok p2:ok p3:damaged",
		Trees: map[string]Tree{"p1": t, "p2": t}, Cut: []string{"p3"}})
	return out
}

// damageSuperblock zeroes an ext image's inodes per group: its magic still
// says ext, its geometry is impossible.
func damageSuperblock(tb testing.TB, image string) {
	tb.Helper()
	f, err := os.OpenFile(image, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 4), 1024+0x28); err != nil {
		tb.Fatal(err)
	}
}
