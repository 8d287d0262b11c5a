package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/rekindle/rekindle/testdata/guestimg"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// osReader reads a copied tree from the local filesystem.
type osReader struct{}

func (osReader) Lstat(p string) (os.FileInfo, error) { return os.Lstat(p) }
func (osReader) ReadDir(p string) ([]os.FileInfo, error) {
	ents, err := os.ReadDir(p)
	var out []os.FileInfo
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			return nil, err
		}
		out = append(out, fi)
	}
	return out, err
}
func (osReader) Readlink(p string) (string, error) { return os.Readlink(p) }
func (osReader) ReadFile(p string) ([]byte, error) { return os.ReadFile(p) }
func (osReader) Fileid(os.FileInfo) uint64         { return 0 } // copies are separate files

func TestFilesCommands(t *testing.T) {
	dir := t.TempDir()
	disk, tree := guestimg.WholeExt2(t, dir)
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 3,
		Disks: []vmgen.DiskSpec{{Source: disk, Format: vmgen.FormatRaw}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, false, "backup", "import", "--repo", repoDir, "--quiet", folder)

	out, _ := run(t, false, "files", "ls", "--repo", repoDir, "--vm", "web01", "--point", "latest")
	if !strings.Contains(out, "web01/") {
		t.Fatalf("files ls of the point: %s", out)
	}
	out, _ = run(t, false, "files", "ls", "--repo", repoDir, "--vm", "web01", "web01", "--json")
	var vols []struct {
		Name   string
		Type   string
		Volume struct{ Filesystem, Status string }
	}
	if err := json.Unmarshal([]byte(out), &vols); err != nil || len(vols) != 1 || vols[0].Name != "whole" || vols[0].Volume.Status != "ok" || vols[0].Volume.Filesystem != "ext" {
		t.Fatalf("files ls of the disk: %v %s", err, out)
	}
	out, _ = run(t, false, "files", "ls", "--repo", repoDir, "--vm", "web01", "web01/whole/etc")
	if !strings.Contains(out, "hostname") || !strings.Contains(out, "-rw-------") {
		t.Fatalf("files ls of etc: %s", out)
	}
	to := filepath.Join(dir, "restored")
	out, _ = run(t, false, "files", "get", "--repo", repoDir, "--vm", "web01", "--to", to, "--json", "web01/whole")
	var sum struct{ Files, Symlinks int }
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Files == 0 || sum.Symlinks != 2 {
		t.Fatalf("files get summary: %v %s", err, out)
	}
	tree.Check(t, osReader{}, filepath.Join(to, "whole"), false)

	out, _ = run(t, false, "files", "find", "--repo", repoDir, "--vm", "web01", "--name", "bottom*")
	if strings.TrimSpace(out) != "web01/whole/deep/d00/d01/d02/bottom.txt" {
		t.Fatalf("files find: %q", out)
	}
	if _, stderr := run(t, true, "files", "ls", "--repo", repoDir, "--vm", "web01", "web01/whole/nothere"); !strings.Contains(stderr, "files ls") {
		t.Fatalf("files ls of a missing path: %s", stderr)
	}
	// Nothing is overwritten.
	if _, stderr := run(t, true, "files", "get", "--repo", repoDir, "--vm", "web01", "--to", to, "web01/whole"); !strings.Contains(stderr, "nothing is overwritten") {
		t.Fatalf("second get into the same folder: %s", stderr)
	}
}

// TestFilesGetNTFSXFS copies whole NTFS, XFS and FAT12/16/32 volumes out
// with `files get` (every top folder and file but the 5 GiB sparse one)
// and compares the copies with the trees the images were made from: every
// byte, size, mtime and link target, every folder's names each once (the
// 10 000-entry folders of NTFS, XFS and FAT32 too); modes as the guest has
// them on XFS and NTFS's documented defaults (files 0644, folders 0755). XFS's 5 GiB
// sparse file is then got alone: its size, mtime and the data at its end,
// and the copy keeps its hole.
func TestFilesGetNTFSXFS(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	ntfsDisk, ntfsTree := guestimg.NTFSDisk(t, filepath.Join(dir, "ntfs"))
	xfsDisk, xfs1, xfs2 := guestimg.XFSDisk(t, filepath.Join(dir, "xfs"))
	fatDisk, fatTrees := guestimg.FATDisk(t, filepath.Join(dir, "fat"))
	// FAT keeps mtimes in 2 s steps: the tree's mtime is on a step, so the
	// copies must carry it exactly (Check compares with Equal).
	if guestimg.Mtime.Second()%2 != 0 || guestimg.Mtime.Nanosecond() != 0 {
		t.Fatalf("guestimg.Mtime %v is not on FAT's 2 s step: compare FAT mtimes to the step", guestimg.Mtime)
	}
	for _, c := range []struct {
		vm, disk string
		trees    map[string]guestimg.Tree // volume -> its tree
		ntfs     bool                     // modes are NTFS's defaults
		fat      bool                     // FAT keeps no modes
	}{
		{"win01", ntfsDisk, map[string]guestimg.Tree{"p1": ntfsTree}, true, false},
		{"db01", xfsDisk, map[string]guestimg.Tree{"p1": xfs1, "p2": xfs2}, false, false},
		{"win02", fatDisk, fatTrees, false, true}, // p1 FAT12, p2 FAT16, p3 FAT32
	} {
		t.Run(c.vm, func(t *testing.T) {
			folder, err := vmgen.Generate(filepath.Join(dir, "src-"+c.vm), vmgen.Spec{Name: c.vm, Seed: 4,
				Disks: []vmgen.DiskSpec{{Source: c.disk, Format: vmgen.FormatRaw}}})
			if err != nil {
				t.Fatal(err)
			}
			run(t, false, "backup", "import", "--repo", repoDir, "--quiet", folder)
			for _, vol := range slices.Sorted(maps.Keys(c.trees)) {
				to := filepath.Join(dir, "to-"+c.vm+"-"+vol)
				tree := filesGetTree(t, repoDir, c.vm, vol, to, c.trees[vol])
				tree.Check(t, osReader{}, to, c.ntfs || c.fat)
				if c.ntfs {
					for p, w := range tree {
						fi, err := os.Lstat(filepath.Join(to, filepath.FromSlash(p)))
						switch {
						case err != nil:
							t.Errorf("%s: %v", p, err)
						case w.Dir && fi.Mode().Perm() != 0o755, !w.Dir && w.Link == "" && fi.Mode().Perm() != 0o644:
							t.Errorf("%s: mode %v, want NTFS's default", p, fi.Mode())
						}
					}
				}
			}
			if w := c.trees["p1"]["huge.bin"]; w != nil {
				filesGetHuge(t, repoDir, c.vm, filepath.Join(dir, "to-"+c.vm+"-huge"), w)
			}
		})
	}
}

// filesGetTree gets every top folder and file of tree (but huge.bin) from
// vm's first disk's volume vol into to, checks the --json summary's counts
// and returns the tree it got.
func filesGetTree(t *testing.T, repoDir, vm, vol, to string, all guestimg.Tree) guestimg.Tree {
	t.Helper()
	tree := guestimg.Tree{}
	args := []string{"files", "get", "--repo", repoDir, "--vm", vm, "--to", to, "--json"}
	top := map[string]bool{}
	files, links := 0, 0
	for p, w := range all {
		if p == "huge.bin" {
			continue // 5 GiB of zeros: got alone by filesGetHuge
		}
		tree[p] = w
		switch {
		case w.Link != "":
			links++
		case !w.Dir:
			files++
		}
		if first, _, _ := strings.Cut(p, "/"); !top[first] {
			top[first] = true
			args = append(args, vm+"/"+vol+"/"+first)
		}
	}
	out, _ := run(t, false, args...)
	var sum struct{ Files, Dirs, Symlinks int }
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Files != files || sum.Symlinks != links {
		t.Fatalf("files get summary of %s/%s: %v %s (want %d files, %d symlinks)", vm, vol, err, out, files, links)
	}
	return tree
}

// filesGetHuge gets vm's p1/huge.bin alone into to and checks its size,
// mtime, the data at its end, the --json summary, and that the copy's
// hole stayed a hole.
func filesGetHuge(t *testing.T, repoDir, vm, to string, w *guestimg.Want) {
	t.Helper()
	out, _ := run(t, false, "files", "get", "--repo", repoDir, "--vm", vm, "--to", to, "--json", vm+"/p1/huge.bin")
	var sum struct {
		Files, Dirs, Symlinks int
		Bytes                 int64
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Files != 1 || sum.Dirs != 0 || sum.Bytes != w.Size {
		t.Fatalf("files get summary of huge.bin: %v %s (want 1 file of %d bytes)", err, out, w.Size)
	}
	f, err := os.Open(filepath.Join(to, "huge.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != w.Size || !fi.ModTime().Equal(w.Mtime) {
		t.Errorf("huge.bin: size %d mtime %v, want %d and %v", fi.Size(), fi.ModTime(), w.Size, w.Mtime)
	}
	end := make([]byte, len(w.Data)+1)
	n, err := f.ReadAt(end, w.DataAt-1)
	if n != len(end) || !bytes.Equal(end[1:], w.Data) || end[0] != 0 {
		t.Errorf("huge.bin: %d bytes at %d (%v), want a zero then its %d bytes of data", n, w.DataAt-1, err, len(w.Data))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 > 16<<20 {
		t.Errorf("huge.bin: the copy allocates %d bytes: its hole was written out", st.Blocks*512)
	}
}
