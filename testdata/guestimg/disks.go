package guestimg

import (
	"os"
	"path/filepath"
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

// FATDisk builds a 64 MiB MBR disk with FAT12 (p1), FAT16 (p2) and FAT32
// (p3) volumes made by mkfs.vfat and filled by mcopy, each holding the
// returned tree (FAT keeps no modes, owners or links).
func FATDisk(tb testing.TB, dir string) (string, Tree) {
	tb.Helper()
	t := NewTree(4, Options{Unicode: true, Deep: 3})
	// mtools writes long names as UCS-2: a character outside the BMP (the
	// emoji) loses its high bits, so it has no place in a FAT made here.
	delete(t, "ünïcødé/emoji-🦀.txt")
	src := filepath.Join(dir, "src-fat")
	if err := os.MkdirAll(src, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := t.Write(src); err != nil {
		tb.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		tb.Fatal(err)
	}
	disk := filepath.Join(dir, "fat.raw")
	Sparse(tb, disk, 64*MiB)
	Sfdisk(tb, disk, "label: dos\nstart=2048, size=8192, type=1\nstart=10240, size=32768, type=6\nstart=43008, size=86016, type=c\n")
	for i, v := range []struct {
		start, sectors int64
		args           []string
	}{{2048, 8192, []string{"-F", "12"}}, {10240, 32768, []string{"-F", "16"}}, {43008, 86016, []string{"-F", "32", "-s", "1"}}} {
		img := filepath.Join(dir, "fat"+string(rune('1'+i))+".img")
		Sparse(tb, img, v.sectors*512)
		Run(tb, "mkfs.vfat", append(v.args, img)...)
		args := []string{"-s", "-m", "-i", img}
		for _, e := range ents {
			args = append(args, filepath.Join(src, e.Name()))
		}
		Run(tb, "mcopy", append(args, "::/")...)
		Place(tb, disk, v.start*512, img)
	}
	return disk, t
}
