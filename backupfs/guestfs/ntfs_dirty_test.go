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

// TestNTFSDirtyVolume: an NTFS volume whose $Volume says VOLUME_IS_DIRTY
// (as a crash-consistent snapshot of a running Windows has it) is served as
// it lies, and its status entry says $LogFile was not replayed. The flag is
// set in the image made by mkntfs + ntfs-3g by walking the on-disk
// structure: boot sector -> $MFT -> record 3 -> $VOLUME_INFORMATION.
func TestNTFSDirtyVolume(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	tree := guestimg.NewTree(9, guestimg.Options{})
	os.MkdirAll(src, 0o755)
	if err := tree.Write(src); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "dirty.ntfs")
	guestimg.NTFS(t, img, 16<<20, src)
	setNTFSDirty(t, img)
	r := newRepo(t)
	pt := importDisks(t, r, "win03", img)
	fs, err := New(r, repo.NewCache(repo.CacheOptions{ChunkSize: r.ChunkSize()}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := "/win03/" + pt.ID + "/" + pt.Disks[0].Name
	rd, err := billyReader{fs}.ReadFile(base + "/whole.README.txt")
	if err != nil || !strings.Contains(string(rd), "marked dirty") || !strings.Contains(string(rd), "not replayed") {
		t.Fatalf("status entry of a dirty NTFS volume: %q, %v", rd, err)
	}
	tree.Check(t, billyReader{fs}, base+"/whole", true) // NTFS: default modes
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
