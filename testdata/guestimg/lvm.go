package guestimg

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// LVM runs Debian's lvm2 on loop devices over disk image files, so volume
// groups are made by LVM itself. Activation is off (--driverloaded n: no
// device-mapper here), so LVs are never mapped; data goes into them at the
// extents LVM reports (WriteLV). Close detaches the loop devices; the
// images keep the metadata LVM wrote.
type LVM struct {
	tb    testing.TB
	loops map[string]string // image -> /dev/loopN
	conf  string
}

// NewLVM attaches a loop device to each image (partitions are not scanned:
// give an offset with Attach for a PV inside a partition).
func NewLVM(tb testing.TB) *LVM {
	tb.Helper()
	if _, err := exec.LookPath("lvm"); err != nil {
		tb.Fatal("lvm not found: run `make deps` (scripts/install-deps) first")
	}
	l := &LVM{tb: tb, loops: map[string]string{}}
	tb.Cleanup(l.Close)
	return l
}

// Attach makes a loop device over size bytes of image at offset off and
// returns it.
func (l *LVM) Attach(image string, off, size int64) string {
	l.tb.Helper()
	dev := strings.TrimSpace(Run(l.tb, "losetup", "-f", "--show", "-o", strconv.FormatInt(off, 10), "--sizelimit", strconv.FormatInt(size, 10), image))
	l.loops[dev] = image
	var acc []string
	for d := range l.loops {
		acc = append(acc, fmt.Sprintf(`"a|^%s$|"`, d))
	}
	l.conf = fmt.Sprintf(`devices{filter=[%s,"r|.*|"] obtain_device_list_from_udev=0 use_devicesfile=0} `+
		`activation{udev_sync=0 udev_rules=0 monitoring=0} backup{backup=0 archive=0}`, strings.Join(acc, ","))
	return dev
}

// Run runs an lvm command (pvcreate, vgcreate, lvcreate, ...) restricted to
// the attached devices, with activation off.
func (l *LVM) Run(cmd string, args ...string) string {
	l.tb.Helper()
	a := append([]string{cmd, "--config", l.conf}, args...)
	switch cmd {
	case "lvcreate", "lvextend", "vgcfgrestore":
		a = append(a, "--driverloaded", "n")
	}
	c := exec.Command("lvm", a...)
	c.Env = append(os.Environ(), "LVM_SUPPRESS_FD_WARNINGS=1", "LC_ALL=C")
	out, err := c.CombinedOutput()
	if err != nil {
		l.tb.Fatalf("lvm %s: %v\n%s", strings.Join(a, " "), err, out)
	}
	return string(out)
}

// Extent is a run of an LV's extents on one device, as lvs reports it.
type Extent struct {
	Device      string
	PEStart     int64 // bytes from the device's start to its first extent
	First, Last int64 // physical extents
}

// LVSegment is one segment of an LV as lvs reports it.
type LVSegment struct {
	Start, Size int64 // bytes of the LV
	StripeSize  int64 // bytes
	Stripes     []Extent
}

// Segments reports vg/lv's segments and where they lie.
func (l *LVM) Segments(vg, lv string) (segs []LVSegment, extentSize int64) {
	l.tb.Helper()
	type report struct {
		Report []map[string][]map[string]string `json:"report"`
	}
	var pr, sr, vr report
	if err := json.Unmarshal([]byte(l.Run("pvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "pv_name,pe_start")), &pr); err != nil {
		l.tb.Fatal(err)
	}
	if err := json.Unmarshal([]byte(l.Run("vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "vg_extent_size", vg)), &vr); err != nil {
		l.tb.Fatal(err)
	}
	if err := json.Unmarshal([]byte(l.Run("lvs", "--segments", "--reportformat", "json", "--units", "b", "--nosuffix",
		"-o", "seg_start,seg_size,stripe_size,seg_pe_ranges", vg+"/"+lv)), &sr); err != nil {
		l.tb.Fatal(err)
	}
	peStart := map[string]int64{}
	for _, p := range pr.Report[0]["pv"] {
		peStart[p["pv_name"]] = atoi(l.tb, p["pe_start"])
	}
	extentSize = atoi(l.tb, vr.Report[0]["vg"][0]["vg_extent_size"])
	for _, s := range sr.Report[0]["seg"] {
		seg := LVSegment{Start: atoi(l.tb, s["seg_start"]), Size: atoi(l.tb, s["seg_size"]), StripeSize: atoi(l.tb, s["stripe_size"])}
		for _, r := range strings.Fields(s["seg_pe_ranges"]) {
			dev, rng, _ := strings.Cut(r, ":")
			a, b, _ := strings.Cut(rng, "-")
			seg.Stripes = append(seg.Stripes, Extent{Device: dev, PEStart: peStart[dev], First: atoi(l.tb, a), Last: atoi(l.tb, b)})
		}
		segs = append(segs, seg)
	}
	return segs, extentSize
}

func atoi(tb testing.TB, s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		tb.Fatalf("lvs reported %q: %v", s, err)
	}
	return n
}

// WriteLV copies image into vg/lv through the loop devices, placing each
// byte where LVM's report says it lies: on a striped segment, chunk k of
// stripe_size bytes goes to stripe k mod n, row k div n (device-mapper's
// striped target).
func (l *LVM) WriteLV(vg, lv, image string) {
	l.tb.Helper()
	segs, es := l.Segments(vg, lv)
	data, err := os.ReadFile(image)
	if err != nil {
		l.tb.Fatal(err)
	}
	devs := map[string]*os.File{}
	defer func() {
		for _, f := range devs {
			f.Close()
		}
	}()
	write := func(e Extent, off int64, b []byte) {
		f := devs[e.Device]
		if f == nil {
			if f, err = os.OpenFile(e.Device, os.O_WRONLY, 0); err != nil {
				l.tb.Fatal(err)
			}
			devs[e.Device] = f
		}
		if _, err := f.WriteAt(b, e.PEStart+e.First*es+off); err != nil {
			l.tb.Fatal(err)
		}
	}
	for _, s := range segs {
		if s.Start >= int64(len(data)) {
			break
		}
		part := data[s.Start:min(s.Start+s.Size, int64(len(data)))]
		n := int64(len(s.Stripes))
		if n == 1 {
			write(s.Stripes[0], 0, part)
			continue
		}
		for k := int64(0); k*s.StripeSize < int64(len(part)); k++ {
			chunk := part[k*s.StripeSize : min((k+1)*s.StripeSize, int64(len(part)))]
			write(s.Stripes[k%n], (k/n)*s.StripeSize, chunk)
		}
	}
	for _, f := range devs {
		if err := f.Sync(); err != nil {
			l.tb.Fatal(err)
		}
	}
}

// Close detaches the loop devices.
func (l *LVM) Close() {
	for dev := range l.loops {
		exec.Command("losetup", "-d", dev).Run()
		delete(l.loops, dev)
	}
}

// LVMDisks builds, in dir, the two disks of one VM holding one LVM2 volume
// group, vgdata, made by lvm2 itself:
//
//	disk A (96 MiB, MBR): p1 (type 8e) is PV pv0
//	disk B (64 MiB, no partition table): the whole disk is PV pv1
//
// and its logical volumes, each ext4 with its own tree:
//
//	root     linear, on A only
//	striped  2 stripes of 64 KiB over A and B
//	span     linear, 20 MiB on A then 12 MiB on B (a 22 MiB file crosses)
//	pool     a thin pool, and thin1 a thin LV in it (their metadata only:
//	         written with vgcfgrestore, as lvm2 cannot make them without
//	         device-mapper)
//
// It returns the disks' paths and the tree of each of root, striped, span.
func LVMDisks(tb testing.TB, dir string) (a, b string, trees map[string]Tree) {
	tb.Helper()
	fill := make([]byte, 22*MiB)
	for i := range fill {
		fill[i] = byte(i*7 + i>>12)
	}
	trees = map[string]Tree{
		"root":    NewTree(11, Options{Symlinks: true, HardLinks: true, Unicode: true}),
		"striped": NewTree(12, Options{Deep: 4, Symlinks: true}),
		"span":    NewTree(13, Options{}),
	}
	trees["span"]["fill.bin"] = &Want{Data: fill, Size: int64(len(fill)), Mode: 0o644, Mtime: Mtime}
	sizes := map[string]int64{"root": 24 * MiB, "striped": 32 * MiB, "span": 32 * MiB}
	img := func(name string) string { return filepath.Join(dir, name) }

	a, b = img("lvm-a.raw"), img("lvm-b.raw")
	Sparse(tb, a, 96*MiB)
	Sfdisk(tb, a, "label: dos\nstart=2048, type=8e\n")
	Sparse(tb, b, 64*MiB)
	l := NewLVM(tb)
	pv0 := l.Attach(a, 1*MiB, 95*MiB)
	pv1 := l.Attach(b, 0, 64*MiB)
	l.Run("pvcreate", "-q", pv0, pv1)
	l.Run("vgcreate", "-q", "-s", "4m", "vgdata", pv0, pv1)
	l.Run("lvcreate", "-q", "-an", "--zero", "n", "-L", "24m", "-n", "root", "vgdata", pv0)
	l.Run("lvcreate", "-q", "-an", "--zero", "n", "-i", "2", "-I", "64k", "-L", "32m", "-n", "striped", "vgdata", pv0, pv1)
	l.Run("lvcreate", "-q", "-an", "--zero", "n", "-L", "20m", "-n", "span", "vgdata", pv0)
	l.Run("lvextend", "-q", "-L", "+12m", "vgdata/span", pv1)
	addThin(tb, l, img("vgdata.txt"))
	for lv, t := range trees {
		src := img("src-" + lv)
		if err := os.MkdirAll(src, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := t.Write(src); err != nil {
			tb.Fatal(err)
		}
		Ext(tb, img(lv+".img"), sizes[lv], src, "-t", "ext4", "-b", "4096")
		l.WriteLV("vgdata", lv, img(lv+".img"))
	}
	l.Close()
	return a, b, trees
}

// addThin adds a thin pool (its data and metadata LVs on pv0's extents
// 15-18, which the LVs before leave free) and a thin LV to vgdata's
// metadata.
func addThin(tb testing.TB, l *LVM, file string) {
	tb.Helper()
	l.Run("vgcfgbackup", "-q", "-f", file, "vgdata")
	text, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	s := string(text)
	end := strings.LastIndex(s, "\t}\n\n}")
	if end < 0 {
		tb.Fatalf("vgcfgbackup wrote no logical_volumes section I know:\n%s", s)
	}
	n := 0
	lv := func(name, status, seg string) string {
		n++
		id := fmt.Sprintf("thinxx-%04d-aaaa-bbbb-cccc-dddd-eeeeee", n)
		return fmt.Sprintf("\t\t%s {\n\t\t\tid = %q\n\t\t\tstatus = [%s]\n\t\t\tflags = []\n\t\t\tsegment_count = 1\n\t\t\tsegment1 {\n%s\t\t\t}\n\t\t}\n",
			name, id, status, seg)
	}
	linear := func(n, at int) string {
		return fmt.Sprintf("start_extent = 0\nextent_count = %d\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", %d]\n", n, at)
	}
	rw, vis := `"READ", "WRITE"`, `"READ", "WRITE", "VISIBLE"`
	add := lv("pool", vis, "start_extent = 0\nextent_count = 2\ntype = \"thin-pool\"\nmetadata = \"pool_tmeta\"\npool = \"pool_tdata\"\ntransaction_id = 1\nchunk_size = 128\ndiscards = \"passdown\"\nzero_new_blocks = 1\n") +
		lv("thin1", vis, "start_extent = 0\nextent_count = 4\ntype = \"thin\"\nthin_pool = \"pool\"\ntransaction_id = 0\ndevice_id = 1\n") +
		lv("pool_tdata", rw, linear(2, 15)) + lv("pool_tmeta", rw, linear(1, 17)) + lv("lvol0_pmspare", rw, linear(1, 18))
	if err := os.WriteFile(file, []byte(s[:end]+add+s[end:]), 0o644); err != nil {
		tb.Fatal(err)
	}
	l.Run("vgcfgrestore", "-q", "--force", "-f", file, "vgdata")
}

// SameNameVGs builds, in dir, three disks of one VM, each a whole-disk PV
// holding a volume group named vg0 with one LV, root (ext2), made by lvm2:
//
//	a  vg0 made on its own
//	b  another vg0, made on its own (other PV and VG uuids)
//	c  a byte copy of a (a disk cloned from one template: a's PV and VG
//	   uuids) whose root then got other files
//
// It returns the disks and the tree of each one's root.
func SameNameVGs(tb testing.TB, dir string) (disks [3]string, trees [3]Tree) {
	tb.Helper()
	img := func(name string) string { return filepath.Join(dir, name) }
	var rootAt int64
	for i, name := range []string{"a", "b", "c"} {
		trees[i] = NewTree(uint64(31+i), Options{Symlinks: true, HardLinks: true, Deep: 2})
		src := img("src-vg-" + name)
		if err := os.MkdirAll(src, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := trees[i].Write(src); err != nil {
			tb.Fatal(err)
		}
		Ext(tb, img("vg-"+name+".img"), 8*MiB, src, "-t", "ext2")
		disks[i] = img("vg-" + name + ".raw")
		if name == "c" {
			b, err := os.ReadFile(disks[0])
			if err != nil {
				tb.Fatal(err)
			}
			// the old root's bytes go: Place writes only non-zero blocks
			copy(b[rootAt:rootAt+8*MiB], make([]byte, 8*MiB))
			if err := os.WriteFile(disks[2], b, 0o644); err != nil {
				tb.Fatal(err)
			}
			Place(tb, disks[2], rootAt, img("vg-c.img"))
			continue
		}
		Sparse(tb, disks[i], 32*MiB)
		l := NewLVM(tb)
		pv := l.Attach(disks[i], 0, 32*MiB)
		l.Run("pvcreate", "-q", pv)
		l.Run("vgcreate", "-q", "-s", "4m", "vg0", pv)
		l.Run("lvcreate", "-q", "-an", "--zero", "n", "-L", "8m", "-n", "root", "vg0", pv)
		l.WriteLV("vg0", "root", img("vg-"+name+".img"))
		if name == "a" {
			segs, es := l.Segments("vg0", "root")
			rootAt = segs[0].Stripes[0].PEStart + segs[0].Stripes[0].First*es
		}
		l.Close()
	}
	return disks, trees
}
