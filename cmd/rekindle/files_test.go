package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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

// TestFilesGetNTFSXFS copies whole NTFS and XFS volumes out with `files
// get` (every top folder and file but the 5 GiB sparse one) and compares
// the copies with the trees the images were made from: every byte, size,
// mtime and link target; modes as the guest has them on XFS and NTFS's
// documented defaults (files 0644, folders 0755).
func TestFilesGetNTFSXFS(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	ntfsDisk, ntfsTree := guestimg.NTFSDisk(t, filepath.Join(dir, "ntfs"))
	xfsDisk, xfsTree, _ := guestimg.XFSDisk(t, filepath.Join(dir, "xfs"))
	for _, c := range []struct {
		vm, disk string
		tree     guestimg.Tree
		ntfs     bool
	}{{"win01", ntfsDisk, ntfsTree, true}, {"db01", xfsDisk, xfsTree, false}} {
		t.Run(c.vm, func(t *testing.T) {
			folder, err := vmgen.Generate(filepath.Join(dir, "src-"+c.vm), vmgen.Spec{Name: c.vm, Seed: 4,
				Disks: []vmgen.DiskSpec{{Source: c.disk, Format: vmgen.FormatRaw}}})
			if err != nil {
				t.Fatal(err)
			}
			run(t, false, "backup", "import", "--repo", repoDir, "--quiet", folder)
			tree := guestimg.Tree{}
			args := []string{"files", "get", "--repo", repoDir, "--vm", c.vm, "--to", filepath.Join(dir, "to-"+c.vm), "--json"}
			top := map[string]bool{}
			files, links := 0, 0
			for p, w := range c.tree {
				if p == "huge.bin" {
					continue // 5 GiB of zeros: its end is read over NFS in nfsd/datastore's tests
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
					args = append(args, c.vm+"/p1/"+first)
				}
			}
			out, _ := run(t, false, args...)
			var sum struct{ Files, Dirs, Symlinks int }
			if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Files != files || sum.Symlinks != links {
				t.Fatalf("files get summary: %v %s", err, out)
			}
			to := filepath.Join(dir, "to-"+c.vm)
			tree.Check(t, osReader{}, to, c.ntfs)
			if !c.ntfs {
				return
			}
			for p, w := range tree {
				fi, err := os.Lstat(filepath.Join(to, filepath.FromSlash(p)))
				switch {
				case err != nil:
					t.Errorf("%s: %v", p, err)
				case w.Dir && fi.Mode().Perm() != 0o755, !w.Dir && w.Link == "" && fi.Mode().Perm() != 0o644:
					t.Errorf("%s: mode %v, want NTFS's default", p, fi.Mode())
				}
			}
		})
	}
}
