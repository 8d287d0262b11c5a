package xfs

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/testdata/guestimg"
)

// Hand-made log records: guestimg.XFSLogRecord writes them from the
// on-disk format.
type logOp = guestimg.XFSLogOp

var putRecord = guestimg.XFSLogRecord

var (
	unmountOp = guestimg.XFSUnmountOp
	startOp   = logOp{Flags: 0x01}                                     // a transaction's start
	commitOp  = logOp{Flags: 0x02}                                     // its commit
	itemOp    = logOp{Flags: 0, Payload: bytes.Repeat([]byte{7}, 900)} // a logged item
)

// stamp fills BBs [from, to) of log with cycle-stamped data of pass cycle.
func stamp(log []byte, from, to int64, cycle uint32) {
	for bb := from; bb < to; bb++ {
		binary.BigEndian.PutUint32(log[bb*bbSize:], cycle)
	}
}

// TestLogState: hand-made logs, in the states the format allows.
func TestLogState(t *testing.T) {
	const bbs = 4096
	cases := []struct {
		name  string
		build func(log []byte)
		want  int
		why   string
	}{
		{"fresh: one unmount record, the rest never written", func(l []byte) {
			putRecord(l, 0, 1, []logOp{unmountOp})
		}, logClean, ""},
		{"a transaction after the unmount record", func(l []byte) {
			at := putRecord(l, 0, 1, []logOp{unmountOp})
			putRecord(l, at, 1, []logOp{startOp, itemOp, commitOp})
		}, logDirty, "holds 3 operations"},
		{"a lone start operation at the head", func(l []byte) {
			at := putRecord(l, 0, 1, []logOp{unmountOp})
			putRecord(l, at, 1, []logOp{startOp})
		}, logDirty, "not an unmount record"},
		{"transactions, then a clean unmount", func(l []byte) {
			at := putRecord(l, 0, 1, []logOp{unmountOp})
			at += putRecord(l, at, 1, []logOp{startOp, itemOp, commitOp})
			putRecord(l, at, 1, []logOp{unmountOp})
		}, logClean, ""},
		{"second pass: unmount record after the ring wrapped", func(l []byte) {
			stamp(l, 0, bbs, 1)
			at := bbs - 4 + putRecord(l, bbs-4, 1, []logOp{startOp, itemOp, commitOp})
			at += putRecord(l, at, 1, []logOp{startOp, itemOp, commitOp}) // wraps into pass 2
			if at <= bbs {
				panic("the record must wrap")
			}
			putRecord(l, at%bbs, 2, []logOp{unmountOp})
		}, logClean, ""},
		{"second pass: a record wrapping the ring's end is the last", func(l []byte) {
			stamp(l, 0, bbs, 1)
			at := bbs - 6 + putRecord(l, bbs-6, 1, []logOp{unmountOp})
			at += putRecord(l, at, 1, []logOp{startOp, itemOp, itemOp, itemOp, itemOp, itemOp, itemOp, itemOp, itemOp, itemOp, itemOp, itemOp, commitOp})
			if at <= bbs {
				panic("the record must wrap")
			}
		}, logDirty, "holds 13 operations"},
		{"the whole ring of one pass, ending clean at its end", func(l []byte) {
			stamp(l, 0, bbs, 1)
			putRecord(l, bbs-2, 1, []logOp{unmountOp})
		}, logClean, ""},
		{"a record cut short: its last BB still of the old pass", func(l []byte) {
			at := putRecord(l, 0, 1, []logOp{unmountOp})
			n := putRecord(l, at, 1, []logOp{startOp, itemOp, commitOp})
			binary.BigEndian.PutUint32(l[(at+n-1)*bbSize:], 0)
		}, logDirty, "cut short"},
		{"a block of the new pass past the head (written out of order)", func(l []byte) {
			at := putRecord(l, 0, 1, []logOp{unmountOp})
			stamp(l, at+10, at+11, 1)
		}, logDirty, "written after the last whole record"},
		{"never written", func(l []byte) {}, logUnknown, "never written"},
		{"cycles of three passes", func(l []byte) {
			putRecord(l, 0, 5, []logOp{unmountOp})
			stamp(l, 100, bbs, 2)
		}, logUnknown, "cycle"},
		{"no header before the head", func(l []byte) {
			stamp(l, 0, 2000, 1)
		}, logUnknown, "no record header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			log := make([]byte, bbs*bbSize)
			c.build(log)
			got, why := logStateOf(bytes.NewReader(log), bbs, maxLogRead)
			if got != c.want || !strings.Contains(why, c.why) {
				t.Fatalf("state %d (%s), want %d (%q)", got, why, c.want, c.why)
			}
		})
	}
}

// mkfs makes an XFS image of size bytes with mkfs.xfs and args (internal
// log) and returns its path.
func mkfs(t *testing.T, size int64, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "x.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mkfs.xfs", append(append([]string{"-q", "-f"}, args...), img)...)
	cmd.Env = append(os.Environ(), "TEST_DIR="+dir, "TEST_DEV="+img, "QA_CHECK_FS=xfs") // lifts the 300 MB floor
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs %v: %v\n%s", args, err, out)
	}
	return img
}

// internalLog returns where the image's internal log lies and its length
// in BBs, from the superblock.
func internalLog(t *testing.T, img []byte) (off, bbs int64) {
	t.Helper()
	fs, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	off, err = fs.blockOff(binary.BigEndian.Uint64(img[48:]))
	if err != nil {
		t.Fatal(err)
	}
	return off, int64(binary.BigEndian.Uint32(img[96:])) * fs.blockSize / bbSize
}

// TestMkfsLogClean: volumes mkfs.xfs makes (its log one unmount record)
// open with no note; with a transaction record written by hand at the
// log's head, the volume notes that the log needs recovery and was not
// replayed, and its files are still served.
func TestMkfsLogClean(t *testing.T) {
	for _, args := range [][]string{nil, {"-s", "size=4096"}, {"-l", "su=256k"}} {
		t.Run(strings.Join(append([]string{"mkfs"}, args...), " "), func(t *testing.T) {
			img, err := os.ReadFile(mkfs(t, 128<<20, args...)) // su=256k needs a larger log
			if err != nil {
				t.Fatal(err)
			}
			fs, err := Open(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			if n := fs.Notes(); len(n) != 0 {
				t.Fatalf("a volume fresh from mkfs.xfs: notes %q, want none (its log is clean)", n)
			}
			// Dirty it: a transaction record at the head (after mkfs's
			// unmount record, whose length its header gives).
			off, bbs := internalLog(t, img)
			log := img[off : off+bbs*bbSize]
			first, err := parseRecord(log[:bbSize], 0)
			if err != nil {
				t.Fatal(err)
			}
			putRecord(log, first.bbs(), 1, []logOp{startOp, itemOp, commitOp})
			fs, err = Open(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			n := fs.Notes()
			if len(n) != 1 || !strings.Contains(n[0], "needs recovery and was not replayed") {
				t.Fatalf("a volume with a transaction at its log's head: notes %q, want one saying the log was not replayed", n)
			}
			root, err := fs.Root()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fs.ReadDir(root); err != nil {
				t.Fatalf("the dirty volume's root: %v", err)
			}
		})
	}
}

// TestExternalLogNoted: a volume whose log is on another device says it
// cannot tell whether the log was clean.
func TestExternalLogNoted(t *testing.T) {
	dir := t.TempDir()
	logdev := filepath.Join(dir, "log")
	os.WriteFile(logdev, nil, 0o644)
	os.Truncate(logdev, 8<<20)
	img, err := os.ReadFile(mkfs(t, 32<<20, "-l", "logdev="+logdev+",size=1368b"))
	if err != nil {
		t.Fatal(err)
	}
	fs, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if n := fs.Notes(); len(n) != 1 || !strings.Contains(n[0], "external device") {
		t.Fatalf("notes %q, want one about the external log", n)
	}
}
