package guestimg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// NTFS makes an NTFS image of size bytes with mkntfs and copies the tree in
// dir into it through ntfs-3g (FUSE), mounted in a private mount namespace
// so nothing of it is seen outside the copy and nothing outlives it. The
// folders named in compressed are made first with NTFS compression on, so
// the files copied into them are LZNT1-compressed; holes stay holes.
func NTFS(tb testing.TB, image string, size int64, dir string, compressed ...string) {
	tb.Helper()
	Sparse(tb, image, size)
	Run(tb, "mkntfs", "-q", "-F", "-f", "-L", "guest", image)
	mnt := filepath.Join(filepath.Dir(image), "mnt-"+filepath.Base(image))
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		tb.Fatal(err)
	}
	var mk strings.Builder
	for _, c := range compressed {
		// FILE_ATTRIBUTE_DIRECTORY|COMPRESSED, big-endian for ntfs-3g's xattr
		mk.WriteString(`mkdir -p "$2/` + c + `" && setfattr -n system.ntfs_attrib_be -v 0x00000810 "$2/` + c + `" && `)
	}
	// ntfs-3g runs in the foreground (no_detach) so the script waits for it
	// to write everything back after the unmount.
	script := `set -e
ntfs-3g -o no_detach,compression "$1" "$2" & pid=$!
i=0; until mountpoint -q "$2"; do i=$((i+1)); [ $i -lt 200 ] || { kill $pid; exit 1; }; sleep 0.05; done
` + mk.String() + `cp -a --sparse=always "$3/." "$2/" && sync -f "$2/." || { umount "$2"; wait $pid; exit 1; }
umount "$2"
wait $pid`
	for _, tool := range []string{"ntfs-3g", "setfattr", "mountpoint"} {
		Run(tb, "sh", "-c", "command -v "+tool+" >/dev/null || { echo '"+tool+" missing: run scripts/install-deps'; exit 1; }")
	}
	Run(tb, "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", image, mnt, dir)
}

// NTFSDisk builds, in dir, a 96 MiB MBR disk:
//
//	p1  NTFS (mkntfs + ntfs-3g): deep folders, a 3000-entry folder, Unicode
//	    names, Interix symlinks (what ntfs-3g writes), hard links, sparse
//	    files and a 5 GiB sparse file, resident (small) and non-resident
//	    files, and compressed/ whose files are LZNT1-compressed
//	p2  a BitLocker volume's signature (detection only)
//	p3  NTFS whose $MFT record is destroyed (damaged; p1 still served)
//
// It returns the disk and p1's tree.
func NTFSDisk(tb testing.TB, dir string) (string, Tree) {
	tb.Helper()
	t := NewTree(8, Options{Huge: 5<<30 + 8192, Symlinks: true, HardLinks: true, Unicode: true, Deep: 12, BigDir: 3000})
	t["compressed"] = &Want{Dir: true, Mode: 0o755, NoMtime: true}
	text := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog 0123456789\n", 6000))
	t["compressed/text.txt"] = &Want{Data: text, Size: int64(len(text)), Mode: 0o644, Mtime: Mtime}
	rnd := t.Bytes("medium.bin")[:200<<10+5]
	t["compressed/random.bin"] = &Want{Data: rnd, Size: int64(len(rnd)), Mode: 0o644, Mtime: Mtime}
	src := filepath.Join(dir, "src-ntfs")
	if err := os.MkdirAll(src, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := t.Write(src); err != nil {
		tb.Fatal(err)
	}
	p1, p3 := filepath.Join(dir, "ntfs-p1.img"), filepath.Join(dir, "ntfs-p3.img")
	NTFS(tb, p1, 48*MiB, src, "compressed")
	NTFS(tb, p3, 8*MiB, src+"/etc")
	destroyMFT(tb, p3)
	disk := filepath.Join(dir, "ntfs.raw")
	Sparse(tb, disk, 96*MiB)
	Sfdisk(tb, disk, "label: dos\nstart=2048, size=98304, type=7\nstart=100352, size=16384, type=7\nstart=116736, size=16384, type=7\n")
	Place(tb, disk, 2048*512, p1)
	Place(tb, disk, 116736*512, p3)
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	// A BitLocker volume's boot sector starts with a jump and "-FVE-FS-".
	if _, err := f.WriteAt([]byte("\xeb\x58\x90-FVE-FS-"), 100352*512); err != nil {
		tb.Fatal(err)
	}
	return disk, t
}

// destroyMFT overwrites the first records of an NTFS image's $MFT (its
// boot sector still says NTFS).
func destroyMFT(tb testing.TB, image string) {
	tb.Helper()
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, 0); err != nil {
		tb.Fatal(err)
	}
	cluster := int64(le16(b[11:])) * int64(b[13])
	mft := int64(le64(b[48:])) * cluster
	junk := make([]byte, 16<<10)
	for i := range junk {
		junk[i] = byte(i*7 + 3)
	}
	if _, err := f.WriteAt(junk, mft); err != nil {
		tb.Fatal(err)
	}
}

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }
func le64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}
