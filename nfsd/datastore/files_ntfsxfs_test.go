package datastore

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/testdata/guestimg"
)

// TestFilesExportNTFSXFS reads NTFS, XFS and FAT guest files through /files
// with libnfs: every small file with nfs-cat, unaligned ranges of the
// large, sparse and compressed ones from 8 connections at once
// (bench/nfsread), each range's bytes compared with the source's, and
// every name and size of the 10 000-entry folders of NTFS, XFS and FAT32
// listed with nfs-ls (checkBigOverNFS).
func TestFilesExportNTFSXFS(t *testing.T) {
	dir := t.TempDir()
	ntfsDisk, ntfsTree := guestimg.NTFSDisk(t, dir)
	xfsDisk, xfs1, xfs2 := guestimg.XFSDisk(t, dir)
	fatDisk, fatTrees := guestimg.FATDisk(t, dir)
	tool := buildNFSRead(t, dir)
	pt, url := serveFiles(t, dir, "mixed01", ntfsDisk, xfsDisk, fatDisk)
	base := "/files/mixed01/" + pt.ID + "/"
	vols := []struct {
		path string
		tree guestimg.Tree
	}{
		{pt.Disks[0].Name + "/p1", ntfsTree},
		{pt.Disks[1].Name + "/p1", xfs1},
		{pt.Disks[1].Name + "/p2", xfs2},
		{pt.Disks[2].Name + "/p1", fatTrees["p1"]}, // FAT12
		{pt.Disks[2].Name + "/p3", fatTrees["p3"]}, // FAT32
	}
	for _, v := range vols {
		t.Run(v.path, func(t *testing.T) {
			var ranged []string
			for _, p := range v.tree.Paths() {
				w := v.tree[p]
				if w.Dir || w.Link != "" || strings.HasPrefix(p, "big/") {
					continue
				}
				if w.HardTo == "" && w.Size > 100<<10 {
					ranged = append(ranged, p)
					continue
				}
				got := mustRun(t, "nfs-cat", url(base+v.path+"/"+p))
				if got != string(v.tree.Bytes(p)) {
					t.Errorf("%s over NFS: %d bytes, differs from the source's %d", p, len(got), len(v.tree.Bytes(p)))
				}
			}
			if len(ranged) == 0 {
				t.Fatal("no large file to read in ranges")
			}
			for _, p := range ranged {
				checkRangesOverNFS(t, tool, url("/files"), "/mixed01/"+pt.ID+"/"+v.path, v.tree, p)
			}
		})
	}
	t.Run("big", func(t *testing.T) {
		checkBigOverNFS(t, url(base+pt.Disks[0].Name+"/p1/big"), ntfsTree)
		checkBigOverNFS(t, url(base+pt.Disks[1].Name+"/p2/big"), xfs2)
		checkBigOverNFS(t, url(base+pt.Disks[2].Name+"/p3/big"), fatTrees["p3"])
	})
	if got := mustRun(t, "nfs-cat", url(base+pt.Disks[0].Name+"/p2.README.txt")); !strings.Contains(got, "BitLocker") {
		t.Errorf("BitLocker volume's status entry over NFS: %q", got)
	}
}

// buildNFSRead builds bench/nfsread (libnfs, several connections at once)
// into dir.
func buildNFSRead(t *testing.T, dir string) string {
	t.Helper()
	tool := filepath.Join(dir, "nfsread")
	build := exec.Command("go", "build", "-tags", "libnfs", "-o", tool, "../../bench/nfsread")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building bench/nfsread (needs libnfs-dev): %v\n%s", err, out)
	}
	return tool
}

// checkRangesOverNFS reads the file p of tree, at root (a path in the
// export at url) + "/" + p, in ranges at odd offsets and of odd lengths,
// some across the file's end and around a sparse file's data, from 8 NFS
// connections at once (nfsread), and compares each range with the source.
func checkRangesOverNFS(t *testing.T, tool, url, root string, tree guestimg.Tree, p string) {
	t.Helper()
	w := tree[p]
	var spec []string
	var want [][]byte
	add := func(off, n int64) {
		spec = append(spec, fmt.Sprintf("%d:%d", off, n))
		want = append(want, wantRange(tree, p, off, n))
	}
	for i := int64(0); i < 24; i++ {
		add((i*w.Size)/24+i*7+1, 1+(i*40961)%70001)
	}
	add(w.DataAt+w.Size-w.DataAt-333, 4096)
	if w.DataAt > 0 {
		add(w.DataAt-5, 9000)
	}
	out := mustRun(t, tool, "-url", url, "-file", root+"/"+p, "-ranges", strings.Join(spec, ","), "-conns", "8")
	var res struct{ Ranges []string }
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Ranges) != len(want) {
		t.Fatalf("%s: nfsread printed %q (%v)", p, out, err)
	}
	for i, s := range res.Ranges {
		h := sha256.Sum256(want[i])
		if s != hex.EncodeToString(h[:]) {
			t.Errorf("%s: range %s read over NFS differs from the source", p, spec[i])
		}
	}
}

// wantRange is the source's bytes of p in [off, off+n), clamped at its size.
func wantRange(t guestimg.Tree, p string, off, n int64) []byte {
	w := t[p]
	if w.HardTo != "" {
		w = t[w.HardTo]
	}
	end := min(off+n, w.Size)
	if off >= end {
		return nil
	}
	b := make([]byte, end-off)
	for i := range b {
		pos := off + int64(i) - w.DataAt
		if pos >= 0 && pos < int64(len(w.Data)) {
			b[i] = w.Data[pos]
		}
	}
	return b
}
