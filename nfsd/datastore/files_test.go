package datastore

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/testdata/guestimg"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// TestFilesExport reads guest files of a restore point through /files with
// libnfs's real clients: every byte of every file of two volumes (the large
// and sparse ones in unaligned ranges from 8 connections at once), every
// name and size of a 10 000-entry hashed directory (checkBigOverNFS), and
// the status entry of a damaged volume; then its file handles and cookies
// across a restart (checkFilesHandles).
func TestFilesExport(t *testing.T) {
	dir := t.TempDir()
	disk, trees := guestimg.LinuxDisk(t, dir)
	f := startFiles(t, dir, "web01", disk)
	pt, url := f.pt, f.url
	base := "/files/web01/" + pt.ID + "/" + pt.Disks[0].Name
	// Volumes open on first use: the disk's first listing shows what their
	// first bytes say (p7's damage lies past them); listing p7 opens it and
	// fails, and the disk's folder lists its status entry from then on.
	ls := mustRun(t, "nfs-ls", url(base))
	for _, want := range []string{"p1", "p5", "p6", "p7"} {
		if !strings.Contains(ls, want) {
			t.Fatalf("disk folder lacks %s:\n%s", want, ls)
		}
	}
	if out, err := run(t, "nfs-ls", url(base+"/p7")); err == nil {
		t.Fatalf("damaged volume listed as a folder: %s", out)
	}
	ls = mustRun(t, "nfs-ls", url(base))
	if !strings.Contains(ls, "p7.README.txt") {
		t.Fatalf("disk folder lacks p7.README.txt after p7 failed to open:\n%s", ls)
	}
	if got := mustRun(t, "nfs-cat", url(base+"/p7.README.txt")); !strings.Contains(got, "damaged") {
		t.Fatalf("p7 status entry: %q", got)
	}
	tool := buildNFSRead(t, dir)
	for _, v := range []string{"p1", "p5"} {
		tree := trees[v]
		for _, p := range tree.Paths() {
			w := tree[p]
			if w.Dir || w.Link != "" {
				continue
			}
			if w.HardTo == "" && w.Size > 100<<10 { // medium, sparse, huge: ranges from 8 clients
				checkRangesOverNFS(t, tool, url("/files"), "/web01/"+pt.ID+"/"+pt.Disks[0].Name+"/"+v, tree, p)
				continue
			}
			got := mustRun(t, "nfs-cat", url(base+"/"+v+"/"+p))
			if got != string(tree.Bytes(p)) {
				t.Fatalf("%s/%s over NFS: %d bytes, differs from the source's %d", v, p, len(got), len(tree.Bytes(p)))
			}
		}
	}
	checkBigOverNFS(t, url(base+"/p6/big"), trees["p6"])
	if out, err := run(t, "nfs-ls", url(base+"/p7")); err == nil {
		t.Fatalf("damaged volume listed as a folder: %s", out)
	}
	t.Run("handles", func(t *testing.T) { checkFilesHandles(t, f, "p6", trees["p6"]) })
}

// checkBigOverNFS lists the folder big/ of tree at u with nfs-ls (READDIRPLUS
// over hundreds of pages, each cookie the server's) and checks the listing
// against the tree: every name exactly once (a page that repeats or skips
// entries fails it) and each file's size.
func checkBigOverNFS(t *testing.T, u string, tree guestimg.Tree) {
	t.Helper()
	ents := nfsLs(t, u)
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.name
		if w := tree["big/"+e.name]; w != nil && (e.size != w.Size || e.mode[0] != '-') {
			t.Errorf("big/%s over NFS: %s of %d bytes, want a file of %d", e.name, e.mode, e.size, w.Size)
		}
	}
	if len(names) < 10000 {
		t.Errorf("big/ lists %d entries over NFS, want 10 000 or more", len(names))
	}
	tree.CheckNames(t, "big", names)
}

// lsEntry is one line of nfs-ls.
type lsEntry struct {
	mode string
	size int64
	name string
}

// nfsLsLine is libnfs 4.0's nfs-ls line: mode, links, uid, gid, size, name.
var nfsLsLine = regexp.MustCompile(`^([-dlcbps][-rwxsStT]{9}) +\d+ +\d+ +\d+ +(\d+) (.+)$`)

// nfsLs lists the folder at the libnfs URL u with nfs-ls and returns its
// entries as printed, in order ("." and ".." left out).
func nfsLs(t *testing.T, u string) []lsEntry {
	t.Helper()
	var out []lsEntry
	for _, l := range strings.Split(strings.TrimSuffix(mustRun(t, "nfs-ls", u), "\n"), "\n") {
		m := nfsLsLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("nfs-ls %s printed %q", u, l)
		}
		if m[3] == "." || m[3] == ".." {
			continue
		}
		size, _ := strconv.ParseInt(m[2], 10, 64)
		out = append(out, lsEntry{m[1], size, m[3]})
	}
	return out
}

// serveFiles imports the raw disks as one restore point of VM vm, serves it
// from a real NFS service on loopback for the rest of the test, and returns
// the point and a libnfs URL maker for paths of the export.
func serveFiles(t *testing.T, dir, vm string, disks ...string) (*repo.RestorePoint, func(string) string) {
	t.Helper()
	f := startFiles(t, dir, vm, disks...)
	return f.pt, f.url
}

// filesEnv is a service serving one restore point, which a test may
// restart (on the same repository, catalog and state folder).
type filesEnv struct {
	t      *testing.T
	pt     *repo.RestorePoint
	cfg    Config
	svc    *Service
	cancel context.CancelFunc
	done   chan error
}

// startFiles imports the raw disks as one restore point of VM vm and
// serves it for the rest of the test.
func startFiles(t *testing.T, dir, vm string, disks ...string) *filesEnv {
	t.Helper()
	var specs []vmgen.DiskSpec
	for _, d := range disks {
		specs = append(specs, vmgen.DiskSpec{Source: d, Format: vmgen.FormatRaw})
	}
	r, err := repo.Init(filepath.Join(dir, "repo"), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	folder, err := vmgen.Generate(filepath.Join(dir, "vm"), vmgen.Spec{Name: vm, Seed: 1, Disks: specs})
	if err != nil {
		t.Fatal(err)
	}
	pt, err := ingest.Import(context.Background(), r, folder, ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Open(context.Background(), filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	f := &filesEnv{t: t, pt: pt, cfg: Config{Repo: r, Catalog: cat, StateDir: filepath.Join(dir, "state"), NFSListen: "127.0.0.1:0"}}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *filesEnv) start() {
	f.t.Helper()
	svc, err := New(context.Background(), f.cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.svc, f.cancel, f.done = svc, cancel, make(chan error, 1)
	go func() { f.done <- svc.Serve(ctx) }()
}

func (f *filesEnv) stop() {
	if f.svc == nil {
		return
	}
	f.cancel()
	f.svc.Close()
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		f.t.Error("service did not stop")
	}
	f.svc = nil
}

// url is a libnfs URL of the path p of the service as it runs now.
func (f *filesEnv) url(p string) string {
	_, port, _ := net.SplitHostPort(f.svc.NFSAddr().String())
	return fmt.Sprintf("nfs://127.0.0.1%s?version=3&nfsport=%s&mountport=%s", p, port, port)
}
