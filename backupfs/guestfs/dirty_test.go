package guestfs

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/guestimg"
)

// TestDirtyVolumeNoted: a volume whose journal needs recovery (as a
// crash-consistent snapshot of a running guest has it) is served as it
// lies, and its status entry says the journal was not replayed:
//
//   - ext4 with needs_recovery (incompat 0x4) set;
//   - NTFS whose $Volume says VOLUME_IS_DIRTY, set in the image made by
//     mkntfs + ntfs-3g by walking the on-disk structure: boot sector ->
//     $MFT -> record 3 -> $VOLUME_INFORMATION;
//   - XFS whose log ends with a transaction, not an unmount record (the
//     record written by hand from the format at the head of mkfs.xfs's
//     log).
func TestDirtyVolumeNoted(t *testing.T) {
	for _, c := range []struct {
		fs        string
		make      func(t *testing.T, img, src string, tree guestimg.Tree)
		want      []string
		ntfsModes bool
	}{
		{"ext4", func(t *testing.T, img, src string, _ guestimg.Tree) {
			guestimg.Ext(t, img, 16<<20, src, "-t", "ext4")
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 4)
			f.ReadAt(b, 1024+0x60)
			b[0] |= 0x4
			f.WriteAt(b, 1024+0x60)
		}, []string{"journal needs recovery and was not replayed"}, false},
		{"ntfs", func(t *testing.T, img, src string, _ guestimg.Tree) {
			guestimg.NTFS(t, img, 16<<20, src)
			setNTFSDirty(t, img)
		}, []string{"marked dirty", "not replayed"}, true},
		{"xfs", func(t *testing.T, img, src string, tree guestimg.Tree) {
			guestimg.XFS(t, img, 32<<20, tree, src)
			guestimg.XFSDirtyLog(t, img)
		}, []string{"XFS log needs recovery and was not replayed"}, false},
	} {
		t.Run(c.fs, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			tree := guestimg.NewTree(9, guestimg.Options{})
			os.MkdirAll(src, 0o755)
			if err := tree.Write(src); err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(dir, "dirty."+c.fs)
			c.make(t, img, src, tree)
			r := newRepo(t)
			pt := importDisks(t, r, "vm03", img)
			fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
			if err != nil {
				t.Fatal(err)
			}
			base := "/vm03/" + pt.ID + "/" + pt.Disks[0].Name
			rd, err := billyReader{fs}.ReadFile(base + "/whole.README.txt")
			for _, w := range c.want {
				if err != nil || !strings.Contains(string(rd), w) {
					t.Fatalf("status entry of a dirty %s volume: %q, %v; want it to say %q", c.fs, rd, err, w)
				}
			}
			tree.Check(t, billyReader{fs}, base+"/whole", c.ntfsModes) // NTFS: default modes
		})
	}
}

// setNTFSDirty sets VOLUME_IS_DIRTY (0x0001) in the flags (offset 10 of the
// value) of the resident $VOLUME_INFORMATION (type 0x70) of MFT record 3.
func setNTFSDirty(t *testing.T, image string) {
	t.Helper()
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	boot := make([]byte, 512)
	if _, err := f.ReadAt(boot, 0); err != nil {
		t.Fatal(err)
	}
	cluster := int64(binary.LittleEndian.Uint16(boot[11:])) * int64(boot[13])
	mft := int64(binary.LittleEndian.Uint64(boot[48:])) * cluster
	recSize := int64(int8(boot[64]))
	if recSize < 0 {
		recSize = 1 << -recSize
	} else {
		recSize *= cluster
	}
	rec := make([]byte, recSize)
	at := mft + 3*recSize
	if _, err := f.ReadAt(rec, at); err != nil {
		t.Fatal(err)
	}
	if string(rec[:4]) != "FILE" {
		t.Fatalf("MFT record 3 at %d: no FILE signature (%q)", at, rec[:4])
	}
	off := int(binary.LittleEndian.Uint16(rec[0x14:]))
	for off+8 <= len(rec) {
		typ := binary.LittleEndian.Uint32(rec[off:])
		if typ == 0xffffffff {
			break
		}
		length := int(binary.LittleEndian.Uint32(rec[off+4:]))
		if length <= 0 {
			break
		}
		if typ == 0x70 && rec[off+8] == 0 { // resident
			flags := off + int(binary.LittleEndian.Uint16(rec[off+0x14:])) + 10
			if flags%512 >= 510 {
				t.Fatalf("flags of $VOLUME_INFORMATION at %d sit under the update sequence: handle the fixup", flags)
			}
			rec[flags] |= 0x01
			if _, err := f.WriteAt(rec[flags:flags+1], at+int64(flags)); err != nil {
				t.Fatal(err)
			}
			return
		}
		off += length
	}
	t.Fatal("MFT record 3 has no resident $VOLUME_INFORMATION")
}
