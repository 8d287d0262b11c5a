package powercut

import (
	"errors"
	"os"
	"testing"

	"github.com/rekindle/rekindle/internal/durable"
)

func write(t *testing.T, fsys *FS, name, data string, sync bool) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
}

func content(fsys *FS, name string) string {
	b, err := durable.ReadFile(fsys, name)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// TestCutKeepsOnlyWhatWasSynced checks the rules the package comment states.
func TestCutKeepsOnlyWhatWasSynced(t *testing.T) {
	fsys := New()
	if err := durable.MkdirAll(fsys, "/s/d", 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, fsys, "/s/d/nosync", "a", false)   // bytes never synced
	write(t, fsys, "/s/d/nodirsync", "b", true) // synced, but its name is not
	write(t, fsys, "/s/d/both", "c", true)      // both synced below
	write(t, fsys, "/s/d/renamed", "d", true)   // its rename is not synced
	if err := durable.SyncDir(fsys, "/s/d"); err != nil {
		t.Fatal(err)
	}
	write(t, fsys, "/s/d/nodirsync2", "e", true)
	f, _ := fsys.OpenFile("/s/d/both", os.O_RDWR, 0)
	f.WriteAt([]byte("X"), 1) // unsynced tail
	f.Close()
	if err := fsys.Rename("/s/d/renamed", "/s/d/moved"); err != nil {
		t.Fatal(err)
	}
	if err := durable.MkdirAll(fsys, "/s/e", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := durable.WriteFile(fsys, "/s/e/replaced", []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	after := fsys.Cut()
	if _, err := fsys.Stat("/s"); !errors.Is(err, ErrPowerCut) {
		t.Errorf("the cut FS still answers: %v", err)
	}
	want := map[string]string{
		"/s/d/nosync":     "",
		"/s/d/nodirsync2": "<open /s/d/nodirsync2: file does not exist>",
		"/s/d/both":       "c",
		"/s/d/renamed":    "d",
		"/s/d/moved":      "<open /s/d/moved: file does not exist>",
		"/s/e/replaced":   "new",
	}
	for name, w := range want {
		if got := content(after, name); got != w {
			t.Errorf("%s after the cut = %q, want %q", name, got, w)
		}
	}
	ents, _ := after.ReadDir("/s/d")
	for _, e := range ents {
		if e.Name() != "nosync" && e.Name() != "nodirsync" && e.Name() != "both" && e.Name() != "renamed" {
			t.Errorf("left after the cut: %s", e.Name())
		}
	}
}

// TestMkdirWithoutDirSyncVanishes is what durable.MkdirAll guards against.
func TestMkdirWithoutDirSyncVanishes(t *testing.T) {
	fsys := New()
	if err := fsys.Mkdir("/a", 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Cut().Stat("/a"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an unsynced mkdir survived the cut: %v", err)
	}
}

// TestCutAt cuts at every step of a durable write in turn: until the
// replace's last step (the directory sync) is done, the old content is what
// a reboot finds; a call at or after the cut fails with ErrPowerCut; SyncAll makes
// unsynced bytes and names durable.
func TestCutAt(t *testing.T) {
	setup := func() *FS {
		fsys := New()
		if err := durable.MkdirAll(fsys, "/d", 0o700); err != nil {
			t.Fatal(err)
		}
		if err := durable.WriteFile(fsys, "/d/f", []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		return fsys
	}
	whole := setup()
	whole.CutAt(-1)
	if err := durable.WriteFile(whole, "/d/f", []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	steps := whole.Steps()
	if steps < 5 {
		t.Fatalf("a durable replace took %d steps", steps)
	}
	for n := 0; n <= steps; n++ {
		fsys := setup()
		fsys.CutAt(n)
		err := durable.WriteFile(fsys, "/d/f", []byte("new"), 0o600)
		if n < steps && !errors.Is(err, ErrPowerCut) {
			t.Errorf("cut at step %d of %d: WriteFile returned %v", n, steps, err)
		}
		got, want := content(fsys.Cut(), "/d/f"), "old"
		if n == steps {
			want = "new"
		}
		if got != want {
			t.Errorf("cut at step %d of %d: /d/f = %q, want %q", n, steps, got, want)
		}
	}

	fsys := New()
	write(t, fsys, "/a", "unsynced", false)
	if err := durable.SyncAll(fsys, "/"); err != nil {
		t.Fatal(err)
	}
	if got := content(fsys.Cut(), "/a"); got != "unsynced" {
		t.Errorf("after SyncAll and a cut: %q", got)
	}
}
