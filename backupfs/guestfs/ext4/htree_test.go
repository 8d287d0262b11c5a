package ext4

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// TestHashedDirectory reads a directory that e2fsck -D made into an htree
// (hashed, EXT4_INDEX_FL): every entry listed once, each found by name and
// read back. The index blocks look like empty entries to a linear reader; a
// reader that took them for entries, or stopped at them, fails here.
func TestHashedDirectory(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	big := filepath.Join(src, "big")
	if err := os.MkdirAll(big, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("entry-%05d-%s", i, strings.Repeat("x", i%40))
		if err := os.WriteFile(filepath.Join(big, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "ext4.img")
	guestimg.Ext(t, img, 64<<20, src, "-t", "ext4")
	// mke2fs -d links entries one by one into a linear directory; e2fsck -D
	// rebuilds it as an htree. Exit status 1 means "errors corrected".
	out, err := exec.Command("e2fsck", "-fyD", img).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("e2fsck -fyD: %v\n%s", err, out)
	}
	stat := guestimg.Run(t, "debugfs", "-R", "stat /big", img)
	var flags uint32
	if i := strings.Index(stat, "Flags: 0x"); i >= 0 {
		fmt.Sscanf(stat[i+len("Flags: 0x"):], "%x", &flags)
	}
	if flags&0x1000 == 0 {
		t.Fatalf("e2fsck did not index /big (want EXT4_INDEX_FL 0x1000):\n%.600s", stat)
	}

	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	fs, err := Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	tr := gfs.NewTree(fs, "ext4")
	ents, err := tr.ReadDir("/big")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		if seen[e.Name] {
			t.Fatalf("%s listed twice", e.Name)
		}
		seen[e.Name] = true
	}
	if len(seen) != n {
		t.Fatalf("listed %d entries of the hashed directory, want %d", len(seen), n)
	}
	for i := 0; i < n; i += 97 {
		name := fmt.Sprintf("entry-%05d-%s", i, strings.Repeat("x", i%40))
		_, ra, err := tr.Open("/big/" + name)
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		b, err := io.ReadAll(io.NewSectionReader(ra, 0, int64(len(name))))
		if err != nil || string(b) != name {
			t.Fatalf("%s reads %q, %v", name, b, err)
		}
	}
}
