package guestimg

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// NTFSStreams adds the alternate data streams of t (its StreamOf paths)
// to the NTFS image, through ntfs-3g's user.* extended attributes (its
// streams_interface=xattr), and puts back the mtimes of the files they
// belong to (a folder with a stream gets the stream's).
func NTFSStreams(tb testing.TB, image string, t Tree) {
	tb.Helper()
	var sc strings.Builder
	sc.WriteString(`set -e
ntfs-3g -o no_detach,streams_interface=xattr "$1" "$2" & pid=$!
i=0; until mountpoint -q "$2"; do i=$((i+1)); [ $i -lt 200 ] || { kill $pid; exit 1; }; sleep 0.05; done
ok=0
{ `)
	for _, p := range t.Paths() {
		w := t[p]
		if w.StreamOf == "" {
			continue
		}
		_, stream, _ := strings.Cut(p[len(w.StreamOf):], ":")
		if len(w.Data) > 64<<10 {
			tb.Fatalf("NTFS stream %s: %d bytes do not fit one setfattr argument", p, len(w.Data))
		}
		f := `"$2/` + w.StreamOf + `"`
		fmt.Fprintf(&sc, "setfattr -n 'user.%s' -v 0s%s %s && ", stream, base64.StdEncoding.EncodeToString(w.Data), f)
		mtime := t[w.StreamOf].Mtime
		if t[w.StreamOf].Dir { // a folder's stream shows the folder's mtime
			mtime = w.Mtime
		}
		fmt.Fprintf(&sc, "touch -m -d @%d %s && ", mtime.Unix(), f)
	}
	sc.WriteString(`sync -f "$2/." && ok=1; } || true
umount "$2"
wait $pid
[ $ok = 1 ]`)
	mnt := filepath.Join(filepath.Dir(image), "mnt-streams-"+filepath.Base(image))
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		tb.Fatal(err)
	}
	Run(tb, "unshare", "-m", "--propagation", "private", "sh", "-c", sc.String(), "sh", image, mnt)
}

// NTFSDisk builds, in dir, a 96 MiB MBR disk:
//
//	p1  NTFS (mkntfs + ntfs-3g): deep folders, a 10 000-entry folder (long,
//	    Unicode and spaced names: Names), Unicode names, Interix symlinks (what ntfs-3g writes), hard links, sparse
//	    files and a 5 GiB sparse file, resident (small) and non-resident
//	    files, compressed/ whose files are LZNT1-compressed, and alternate
//	    data streams (resident, non-resident, of a folder)
//	p2  a BitLocker volume's signature (detection only)
//	p3  NTFS whose $MFT record is destroyed (damaged; p1 still served)
//
// It returns the disk (made once, see cachedImage) and p1's tree.
func NTFSDisk(tb testing.TB, dir string) (string, Tree) {
	tb.Helper()
	t := NewTree(8, Options{Huge: 5<<30 + 8192, Symlinks: true, HardLinks: true, Unicode: true, Deep: 12,
		BigDir: 10000, BigNames: Names(NameRules{Spaces: true, Astral: true})})
	t["compressed"] = &Want{Dir: true, Mode: 0o755, NoMtime: true}
	text := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog 0123456789\n", 6000))
	t["compressed/text.txt"] = &Want{Data: text, Size: int64(len(text)), Mode: 0o644, Mtime: Mtime}
	rnd := t.Bytes("medium.bin")[:200<<10+5]
	t["compressed/random.bin"] = &Want{Data: rnd, Size: int64(len(rnd)), Mode: 0o644, Mtime: Mtime}
	// Alternate data streams: resident, non-resident, on a folder.
	stream := func(p, of string, b []byte) {
		t[p] = &Want{Data: b, Size: int64(len(b)), Mode: 0o644, Mtime: Mtime, StreamOf: of}
	}
	stream("etc/hostname:Zone.Identifier", "etc/hostname", []byte("[ZoneTransfer]\r\nZoneId=3\r\n"))
	stream("odd.bin:big", "odd.bin", t.Bytes("medium.bin")[1000:1000+48<<10])
	stream("etc:folder-note", "etc", []byte("a stream of a folder\n"))
	return cachedImage(tb, dir, "ntfs", func(dir string) string { return ntfsDisk(tb, dir, t) }), t
}

func ntfsDisk(tb testing.TB, dir string, t Tree) string {
	tb.Helper()
	src := filepath.Join(dir, "src-ntfs")
	if err := os.MkdirAll(src, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := t.Write(src); err != nil {
		tb.Fatal(err)
	}
	p1, p3 := filepath.Join(dir, "ntfs-p1.img"), filepath.Join(dir, "ntfs-p3.img")
	NTFS(tb, p1, 48*MiB, src, "compressed")
	NTFSStreams(tb, p1, t)
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
	return disk
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
// no hard links and no mtimes, and writes a remote (block) symlink's block
// without its v5 header; so, after mkfs.xfs:
//
//   - a file of t whose Size exceeds its Data is given only its data block,
//     then made sparse by moving its extent to its end (xfs_db);
//   - mtimes are set with xfs_db;
//   - a remote symlink's block gets its header (magic, bytes, owner, block
//     number, uuid, CRC32c), written here;
//   - a hard link is made as a file of its own, then its directory entry
//     (a short-form directory's) is pointed at the target's inode with
//     xfs_db, the target's link count raised, the orphan inode cleared and
//     freed by xfs_repair.
//
// xfs_repair -n then checks the image is consistent.
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
				fmt.Fprintf(&proto, "%s%s ---%03o 0 0 %s\n", ind, name, t[w.HardTo].Mode.Perm(), filepath.Join(dir, filepath.FromSlash(w.HardTo)))
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
	// The edits go to one xfs_db through its standard input (a 10 000-entry
	// folder's commands exceed what arguments hold); each write prints its
	// field, counted to know every path was found.
	var cmds []string
	writes := 0
	for _, p := range huge {
		w := t[p]
		if w.DataAt%4096 != 0 {
			tb.Fatalf("XFS: %s's data must start on a 4 KiB block", p)
		}
		cmds = append(cmds, "path /"+p, fmt.Sprintf("write core.size %d", w.Size),
			fmt.Sprintf("write u3.bmx[0].startoff %d", w.DataAt/4096))
		writes += 2
	}
	// xfs_db 6.1 treats a timestamp's "sec" field as the whole 64-bit
	// word: write the raw value (seconds<<32|ns, or bigtime's ns since 1901).
	for _, p := range t.Paths() {
		if w := t[p]; !w.Dir && w.Link == "" && w.HardTo == "" {
			raw := uint64(w.Mtime.Unix())<<32 | uint64(w.Mtime.Nanosecond())
			if bigtime {
				raw = uint64(w.Mtime.Unix()+1<<31)*1e9 + uint64(w.Mtime.Nanosecond())
			}
			cmds = append(cmds, "path /"+p, fmt.Sprintf("write core.mtime.sec %d", raw))
			writes++
		}
	}
	if len(cmds) > 0 {
		for _, c := range cmds {
			if strings.ContainsAny(c, "\n") {
				tb.Fatalf("XFS: xfs_db command %q holds a newline", c)
			}
		}
		cmd := exec.Command("xfs_db", "-x", image)
		cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
		out, err := cmd.CombinedOutput()
		if n := strings.Count(string(out), " = "); err != nil || n != writes {
			tb.Fatalf("xfs_db -x %s: %v: %d of %d fields written\n%.4000s", image, err, n, writes, out)
		}
	}
	fixed := false
	for _, p := range t.Paths() {
		if w := t[p]; w.Link != "" && xfsRemoteSymlink(tb, image, p, w.Link) {
			fixed = true
		}
	}
	links := map[string]int{}
	for _, p := range t.Paths() {
		if w := t[p]; w.HardTo != "" {
			links[w.HardTo]++
			xfsHardLink(tb, image, p, w.HardTo, links[w.HardTo]+1)
			fixed = true
		}
	}
	if fixed {
		cmd := exec.Command("xfs_repair", image)
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("xfs_repair %s: %v\n%s", image, err, out)
		}
		cmd = exec.Command("xfs_repair", "-n", image)
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("xfs_repair -n %s after the edits: %v\n%s", image, err, out)
		}
	}
}

// xfsField returns the value of "name = value" in xfs_db's output.
func xfsField(tb testing.TB, out, name string) string {
	tb.Helper()
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, " = "); ok && k == name {
			return v
		}
	}
	tb.Fatalf("xfs_db printed no %s:\n%s", name, out)
	return ""
}

// xfsNum parses xfs_db's "0x60 (96)" or "131".
func xfsNum(tb testing.TB, v string) int64 {
	tb.Helper()
	if i := strings.Index(v, "("); i >= 0 {
		v = strings.TrimSuffix(v[i+1:], ")")
	}
	n, err := strconv.ParseInt(strings.Fields(v)[0], 0, 64)
	if err != nil {
		tb.Fatalf("xfs_db printed %q: %v", v, err)
	}
	return n
}

// xfsRemoteSymlink gives the symlink at p, if its target lies in a block,
// the v5 header xfsprogs 6.1's protofile leaves out, and reports whether
// it did.
func xfsRemoteSymlink(tb testing.TB, image, p, target string) bool {
	tb.Helper()
	out := Run(tb, "xfs_db", "-r", "-c", "path /"+p, "-c", "print core.format v3.inumber", "-c", "bmap", image)
	if !strings.HasPrefix(xfsField(tb, out, "core.format"), "2") {
		return false
	}
	var fsb int64
	if _, err := fmt.Sscanf(out[strings.Index(out, "data offset"):], "data offset 0 startblock %d", &fsb); err != nil {
		tb.Fatalf("xfs_db bmap of %s: %v\n%s", p, err, out)
	}
	ino := xfsNum(tb, xfsField(tb, out, "v3.inumber"))
	geo := Run(tb, "xfs_db", "-r", "-c", fmt.Sprintf("convert fsblock %d byte", fsb), "-c", fmt.Sprintf("convert fsblock %d daddr", fsb),
		"-c", "sb 0", "-c", "print uuid meta_uuid blocksize", image)
	lines := strings.Split(geo, "\n")
	off, daddr := xfsNum(tb, lines[0]), xfsNum(tb, lines[1])
	id := xfsField(tb, geo, "meta_uuid")
	if id == "00000000-0000-0000-0000-000000000000" {
		id = xfsField(tb, geo, "uuid")
	}
	bs := xfsNum(tb, xfsField(tb, geo, "blocksize"))
	const hdr = 56
	if int64(len(target))+hdr > bs {
		tb.Fatalf("XFS: symlink %s: a target of %d bytes spans blocks; one is made here", p, len(target))
	}
	blk := make([]byte, bs)
	be := binary.BigEndian
	be.PutUint32(blk[0:], 0x58534c4d) // XSLM
	be.PutUint32(blk[8:], uint32(len(target)))
	u, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	if err != nil || len(u) != 16 {
		tb.Fatalf("xfs_db printed uuid %q", id)
	}
	copy(blk[16:], u)
	be.PutUint64(blk[32:], uint64(ino))
	be.PutUint64(blk[40:], uint64(daddr))
	copy(blk[hdr:], target)
	binary.LittleEndian.PutUint32(blk[12:], crc32.Checksum(blk, crc32.MakeTable(crc32.Castagnoli)))
	f, err := os.OpenFile(image, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(blk, off); err != nil {
		tb.Fatal(err)
	}
	return true
}

// xfsHardLink points the directory entry of p (a file of its own) at the
// inode of target, and gives that inode nlink links; p's own inode is
// cleared (mode 0) for xfs_repair to free.
func xfsHardLink(tb testing.TB, image, p, target string, nlink int) {
	tb.Helper()
	dir, name := filepath.ToSlash(filepath.Dir(p)), filepath.Base(p)
	if dir == "." {
		dir = ""
	}
	ino := func(q string) int64 {
		return xfsNum(tb, xfsField(tb, Run(tb, "xfs_db", "-r", "-c", "path /"+q, "-c", "print v3.inumber", image), "v3.inumber"))
	}
	to, own := ino(target), ino(p)
	out := Run(tb, "xfs_db", "-r", "-c", "path /"+dir, "-c", "print core.format u3.sfdir3.list", image)
	if !strings.HasPrefix(xfsField(tb, out, "core.format"), "1") {
		tb.Fatalf("XFS: hard link %s: its directory is not in short form (keep hard links in small folders)", p)
	}
	entry := ""
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, " = "); ok && strings.HasSuffix(k, ".name") && v == strconv.Quote(name) {
			entry = strings.TrimSuffix(k, ".name")
		}
	}
	if entry == "" {
		tb.Fatalf("XFS: hard link %s: no entry %q in xfs_db's listing:\n%s", p, name, out)
	}
	Run(tb, "xfs_db", "-x", "-c", "path /"+dir, "-c", fmt.Sprintf("write %s.inumber.i4 %d", entry, to),
		"-c", fmt.Sprintf("inode %d", to), "-c", fmt.Sprintf("write core.nlinkv2 %d", nlink),
		"-c", fmt.Sprintf("inode %d", own), "-c", "write core.mode 0", image)
}

func bit(on bool, c string) string {
	if on {
		return c
	}
	return "-"
}

// XFSDisk builds, in dir, a 208 MiB GPT disk:
//
//	p1  XFS v5 with legacy timestamps (-m bigtime=0): deep folders, Unicode
//	    names, symlinks in the inode and in a remote block, a file with three
//	    hard links, a 5 GiB sparse file with data at its end, an unwritten
//	    (preallocated) extent that reads as zeros
//	p2  XFS v5 as mkfs.xfs makes it today (bigtime, ftype): a 10 000-entry
//	    directory (node form; long and Unicode names: Names), sparse.bin
//	    written out as data
//	p3  XFS whose superblock geometry is destroyed (damaged)
//
// It returns the disk (made once, see cachedImage) and the trees of p1 and
// p2.
func XFSDisk(tb testing.TB, dir string) (string, Tree, Tree) {
	tb.Helper()
	t1 := NewTree(11, Options{Huge: 5<<30 + 8192, Symlinks: true, Unicode: true, Deep: 10})
	t1["prealloc.bin"] = &Want{Data: make([]byte, 64<<10), Size: 64 << 10, Mode: 0o644, Mtime: Mtime}
	// Hard links (three names of one inode) and a symlink whose target
	// lies in a block of its own, in a short-form folder.
	t1["links"] = &Want{Dir: true, Mode: 0o755, NoMtime: true}
	t1["links/a"] = &Want{Data: t1.Bytes("small.bin")[:777], Size: 777, Mode: 0o640, Mtime: Mtime}
	t1["links/b"] = &Want{HardTo: "links/a"}
	t1["links/c"] = &Want{HardTo: "links/a"}
	t1["links/remote"] = &Want{Link: "/" + strings.Repeat("a-long-component/", 22) + "target", Mode: 0o777, Mtime: Mtime}
	t2 := NewTree(12, Options{Symlinks: true, BigDir: 10000, BigNames: Names(NameRules{Astral: true})})
	return cachedImage(tb, dir, "xfs", func(dir string) string { return xfsDisk(tb, dir, t1, t2) }), t1, t2
}

func xfsDisk(tb testing.TB, dir string, t1, t2 Tree) string {
	tb.Helper()
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
	p2 := build(t2, "p2", 96*MiB, func(string) {})
	p3 := build(Tree{"f": &Want{Data: []byte("x\n"), Size: 2, Mode: 0o644, Mtime: Mtime}}, "p3", 20*MiB, func(string) {})
	f, err := os.OpenFile(p3, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	f.WriteAt(make([]byte, 8), 84) // agblocks, agcount
	f.Close()
	disk := filepath.Join(dir, "xfs.raw")
	Sparse(tb, disk, 208*MiB)
	Run(tb, "sgdisk", "-n", "1:2048:+64M", "-t", "1:8300", "-n", "2:0:+96M", "-n", "3:0:+20M", disk)
	Place(tb, disk, 2048*512, p1)
	Place(tb, disk, (2048+64*MiB/512)*512, p2)
	Place(tb, disk, (2048+160*MiB/512)*512, p3)
	return disk
}
