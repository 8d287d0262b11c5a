package repo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	durablefs "github.com/rekindle/rekindle/internal/durable"
	"github.com/rekindle/rekindle/internal/durable/powercut"
)

// fixtureDiskSum is the SHA-256 of the disk of the version 1 fixture.
const fixtureDiskSum = "3693fb8718d1aa37213c65d5370f223bd22bdf89884941b0dcd2ab3c58d15d47"

// fixtureOn copies the version 1 fixture repository to /repo of a new
// powercut disk, all of it synced.
func fixtureOn(t *testing.T) *powercut.FS {
	t.Helper()
	disk := powercut.New()
	src := os.DirFS("testdata/repo-v1")
	err := fs.WalkDir(src, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := path.Join("/repo", p)
		if e.IsDir() {
			return durablefs.MkdirAll(disk, dst, 0o755)
		}
		b, err := fs.ReadFile(src, p)
		if err != nil {
			return err
		}
		return durablefs.WriteFile(disk, dst, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := disk.SyncAll("/"); err != nil {
		t.Fatal(err)
	}
	return disk
}

// checkReadsAndVerifies opens the repository at /repo of fsys and checks
// that its point reads back the fixture's disk and verifies; it returns the
// layouts of its chunk files (layout → count) and its format version.
func checkReadsAndVerifies(t *testing.T, fsys durablefs.FS, when string) (map[int]int, int) {
	t.Helper()
	r, err := OpenFS(fsys, "/repo")
	if err != nil {
		t.Fatalf("%s: the repository does not open: %v", when, err)
	}
	p, err := r.LatestPoint("old01")
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	dr, err := r.OpenDisk(p.Disks[0].Index, NewCache(CacheOptions{ChunkSize: r.ChunkSize()}), "disk old01")
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(dr, 0, dr.Size())); err != nil {
		t.Fatalf("%s: reading the disk: %v", when, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != fixtureDiskSum {
		t.Fatalf("%s: the disk reads as %s, want %s", when, got, fixtureDiskSum)
	}
	rep, err := r.Verify(context.Background(), []*RestorePoint{p}, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("%s: verify: %v %+v", when, err, rep)
	}
	layouts := map[int]int{}
	folders, err := r.objectFolders(filepath.Join(r.Dir, "chunks"))
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range folders {
		ents, err := fsys.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			raw, err := durablefs.ReadFile(fsys, filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			layouts[ChunkLayoutVersion(raw)]++
		}
	}
	if r.Config.Version == 1 && layouts[2] > 0 {
		t.Fatalf("%s: a version 1 repository holds %d layout 2 chunks (unreadable by the releases that made it)", when, layouts[2])
	}
	return layouts, r.Config.Version
}

// TestUpgradeVersion1 upgrades the version 1 fixture: config.json says
// version 2, every chunk is layout 2 under its old name, the disk reads the
// same bytes and verifies; a second run has nothing to do.
func TestUpgradeVersion1(t *testing.T) {
	disk := fixtureOn(t)
	r, err := OpenFS(disk, "/repo")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Upgrade(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.From != 1 || rep.To != 2 || rep.Chunks != 4 || rep.Rewritten != 4 || rep.AlreadyLatest {
		t.Fatalf("upgrade report %+v, want 4 chunks rewritten from version 1 to 2", rep)
	}
	layouts, version := checkReadsAndVerifies(t, disk, "after the upgrade")
	if version != 2 || layouts[1] != 0 || layouts[2] != 4 {
		t.Fatalf("after the upgrade: version %d, layouts %v; want version 2 and 4 layout 2 chunks", version, layouts)
	}
	ents, _ := disk.ReadDir("/repo/tmp")
	for _, e := range ents {
		if strings.Contains(e.Name(), "-upgrade-") {
			t.Errorf("tmp/%s left after the upgrade", e.Name())
		}
	}
	r, _ = OpenFS(disk, "/repo")
	rep, err = r.Upgrade(context.Background(), nil)
	if err != nil || !rep.AlreadyLatest || rep.Rewritten != 0 {
		t.Fatalf("second upgrade: %+v, %v; want nothing to do", rep, err)
	}
}

// TestUpgradePowerCutAtEveryStep cuts the power at every step of an
// upgrade in turn: the disk a reboot finds holds a repository that opens,
// reads the same disk and verifies, whichever layout each chunk is in, and
// a version 1 config never sits beside a layout 2 chunk; a second upgrade
// then finishes the work.
func TestUpgradePowerCutAtEveryStep(t *testing.T) {
	disk := fixtureOn(t)
	r, _ := OpenFS(disk, "/repo")
	disk.CutAt(-1)
	if _, err := r.Upgrade(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	steps := disk.Steps()
	t.Logf("an upgrade of 4 chunks makes %d steps on the disk", steps)
	// Done means durable: a cut right after finds every chunk upgraded.
	if layouts, version := checkReadsAndVerifies(t, disk.Cut(), "cut after the upgrade returned"); version != 2 || layouts[1] != 0 {
		t.Fatalf("cut after the upgrade returned: version %d, layouts %v; want version 2, no layout 1 chunk", version, layouts)
	}
	for n := range steps {
		disk := fixtureOn(t)
		r, err := OpenFS(disk, "/repo")
		if err != nil {
			t.Fatal(err)
		}
		disk.CutAt(n)
		// The last steps are the lock's release, whose failure Upgrade
		// does not see.
		if _, err := r.Upgrade(context.Background(), nil); err != nil && !errors.Is(err, powercut.ErrPowerCut) {
			t.Fatalf("cut at step %d: %v, want the power cut", n, err)
		}
		after := disk.Cut()
		checkReadsAndVerifies(t, after, "cut at step "+itoa(n))
		// The upgrade died with the power; its lock file (of this live
		// process) did not: a reboot's process would find it stale.
		locks, _ := after.ReadDir("/repo/locks")
		for _, l := range locks {
			after.Remove(path.Join("/repo/locks", l.Name()))
		}
		r, err = OpenFS(after, "/repo")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Upgrade(context.Background(), nil); err != nil {
			t.Fatalf("cut at step %d: the upgrade run again: %v", n, err)
		}
		if layouts, version := checkReadsAndVerifies(t, after, "upgraded again after a cut at step "+itoa(n)); version != 2 || layouts[1] != 0 {
			t.Fatalf("cut at step %d, upgraded again: version %d, layouts %v", n, version, layouts)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
