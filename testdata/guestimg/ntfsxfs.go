package guestimg

import (
	"fmt"
	"os"
	"os/exec"
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

// XFS makes an XFS image of size bytes with mkfs.xfs from a protofile of
// the tree t, whose files' bytes are in dir (t.Write), without mounting
// anything; args go to mkfs.xfs. xfsprogs 6.1's protofile keeps no holes,
// no hard links and no mtimes: a file of t whose Size exceeds its Data is
// given only its data block, then made sparse by moving its extent to its
// end (xfs_db); hard links are refused; mtimes are set after with xfs_db.
func XFS(tb testing.TB, image string, size int64, t Tree, dir string, args ...string) {
	tb.Helper()
	var proto strings.Builder
	proto.WriteString("/dev/null\n0 0\nd--755 0 0\n")
	kids := map[string][]string{}
	for _, p := range t.Paths() {
		d := filepath.ToSlash(filepath.Dir(p))
		if d == "." {
			d = ""
		}
		kids[d] = append(kids[d], p)
	}
	var huge []string
	var walk func(d string, depth int)
	walk = func(d string, depth int) {
		ind := strings.Repeat(" ", depth)
		for _, p := range kids[d] {
			w, name := t[p], filepath.Base(p)
			switch {
			case w.HardTo != "":
				tb.Fatalf("XFS: mkfs.xfs's protofile makes no hard links (%s)", p)
			case w.Dir:
				fmt.Fprintf(&proto, "%s%s d--%o 0 0\n", ind, name, w.Mode)
				walk(p, depth+1)
				proto.WriteString(ind + "$\n")
			case w.Link != "":
				fmt.Fprintf(&proto, "%s%s l--777 0 0 %s\n", ind, name, w.Link)
			default:
				src := filepath.Join(dir, filepath.FromSlash(p))
				// A file with a size but no data anywhere is dir's own file
				// as the caller wrote it (a large one, not held in memory);
				// others with fewer bytes than their size are sparse.
				if w.Size > int64(len(w.Data)) && (w.Data != nil || w.DataAt > 0) {
					src = filepath.Join(filepath.Dir(image), "huge-data-"+strings.ReplaceAll(p, "/", "_"))
					if err := os.WriteFile(src, w.Data, 0o644); err != nil {
						tb.Fatal(err)
					}
					huge = append(huge, p)
				}
				fmt.Fprintf(&proto, "%s%s -%s%s%03o 0 0 %s\n", ind, name, bit(w.Mode&os.ModeSetuid != 0, "u"), bit(w.Mode&os.ModeSetgid != 0, "g"), w.Mode.Perm(), src)
			}
		}
	}
	walk("", 0)
	proto.WriteString("$\n")
	pf := image + ".proto"
	if err := os.WriteFile(pf, []byte(proto.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	Sparse(tb, image, size)
	// mkfs.xfs refuses volumes under 300 MB unless run by fstests, whose
	// environment lifts the limit (small images keep tests fast).
	Run(tb, "mkfs.xfs", "-V")
	cmd := exec.Command("mkfs.xfs", append(append([]string{"-q", "-f", "-p", pf}, args...), image)...)
	cmd.Env = append(os.Environ(), "TEST_DIR="+filepath.Dir(image), "TEST_DEV="+image, "QA_CHECK_FS=xfs", "LC_ALL=C.UTF-8")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("mkfs.xfs -p %s: %v\n%s", pf, err, out)
	}
	bigtime := strings.Contains(Run(tb, "xfs_db", "-r", "-c", "version", image), "BIGTIME")
	var cmds []string
	for _, p := range huge {
		w := t[p]
		if w.DataAt%4096 != 0 {
			tb.Fatalf("XFS: %s's data must start on a 4 KiB block", p)
		}
		cmds = append(cmds, "-c", "path /"+p, "-c", fmt.Sprintf("write core.size %d", w.Size),
			"-c", fmt.Sprintf("write u3.bmx[0].startoff %d", w.DataAt/4096))
	}
	// xfs_db 6.1 treats a timestamp's "sec" field as the whole 64-bit
	// word: write the raw value (seconds<<32|ns, or bigtime's ns since 1901).
	for _, p := range t.Paths() {
		if w := t[p]; !w.Dir && w.Link == "" && w.HardTo == "" {
			raw := uint64(w.Mtime.Unix())<<32 | uint64(w.Mtime.Nanosecond())
			if bigtime {
				raw = uint64(w.Mtime.Unix()+1<<31)*1e9 + uint64(w.Mtime.Nanosecond())
			}
			cmds = append(cmds, "-c", "path /"+p, "-c", fmt.Sprintf("write core.mtime.sec %d", raw))
		}
	}
	if len(cmds) > 0 {
		Run(tb, "xfs_db", append(append([]string{"-x"}, cmds...), image)...)
	}
}

func bit(on bool, c string) string {
	if on {
		return c
	}
	return "-"
}

// XFSDisk builds, in dir, a 160 MiB GPT disk:
//
//	p1  XFS v5 with legacy timestamps (-m bigtime=0): deep folders, Unicode
//	    names, symlinks in the inode, a 5 GiB sparse file with data at its
//	    end, an unwritten (preallocated) extent that reads as zeros
//	p2  XFS v5 as mkfs.xfs makes it today (bigtime, ftype): a 3000-entry
//	    directory (leaf/node form), sparse.bin written out as data
//	p3  XFS whose superblock geometry is destroyed (damaged)
//
// It returns the disk and the trees of p1 and p2.
func XFSDisk(tb testing.TB, dir string) (string, Tree, Tree) {
	tb.Helper()
	t1 := NewTree(11, Options{Huge: 5<<30 + 8192, Symlinks: true, Unicode: true, Deep: 10})
	// No remote (block) symlink: xfsprogs 6.1's protofile writes its block
	// without the v5 header, which the kernel and xfs_db call corrupt.
	t1["prealloc.bin"] = &Want{Data: make([]byte, 64<<10), Size: 64 << 10, Mode: 0o644, Mtime: Mtime}
	t2 := NewTree(12, Options{Symlinks: true, BigDir: 3000})
	build := func(t Tree, name string, size int64, prep func(src string), args ...string) string {
		src := filepath.Join(dir, "src-"+name)
		if err := os.MkdirAll(src, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := t.Write(src); err != nil {
			tb.Fatal(err)
		}
		prep(src)
		img := filepath.Join(dir, name+".img")
		XFS(tb, img, size, t, src, args...)
		return img
	}
	// prealloc.bin holds non-zero bytes in its source; its extent is then
	// marked unwritten, so XFS must read it as zeros (its Want).
	p1 := build(t1, "p1", 64*MiB, func(src string) {
		rnd := make([]byte, 64<<10)
		for i := range rnd {
			rnd[i] = byte(i*31 + 7)
		}
		if err := os.WriteFile(filepath.Join(src, "prealloc.bin"), rnd, 0o644); err != nil {
			tb.Fatal(err)
		}
	}, "-m", "bigtime=0")
	Run(tb, "xfs_db", "-x", "-c", "path /prealloc.bin", "-c", "write u3.bmx[0].extentflag 1", p1)
	p2 := build(t2, "p2", 48*MiB, func(string) {})
	p3 := build(Tree{"f": &Want{Data: []byte("x\n"), Size: 2, Mode: 0o644, Mtime: Mtime}}, "p3", 20*MiB, func(string) {})
	f, err := os.OpenFile(p3, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	f.WriteAt(make([]byte, 8), 84) // agblocks, agcount
	f.Close()
	disk := filepath.Join(dir, "xfs.raw")
	Sparse(tb, disk, 160*MiB)
	Run(tb, "sgdisk", "-n", "1:2048:+64M", "-t", "1:8300", "-n", "2:0:+48M", "-n", "3:0:+20M", disk)
	Place(tb, disk, 2048*512, p1)
	Place(tb, disk, (2048+64*MiB/512)*512, p2)
	Place(tb, disk, (2048+112*MiB/512)*512, p3)
	return disk, t1, t2
}
