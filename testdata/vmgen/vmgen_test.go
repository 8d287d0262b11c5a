package vmgen

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func gen(t *testing.T, dir string, spec Spec) string {
	t.Helper()
	f, err := Generate(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func digests(t *testing.T, folder string) map[string][32]byte {
	t.Helper()
	ents, err := os.ReadDir(folder)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][32]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(folder, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
	}
	return out
}

func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img missing: run scripts/install-deps")
	}
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func smallSpec(seed int64) Spec {
	return Spec{
		Name: "web01", Seed: seed,
		Disks: []DiskSpec{
			{Size: 8<<20 + 512, Fill: FillMixed, Format: FormatFlat},
			{Size: 3 << 20, Fill: FillRandom, Format: FormatRaw},
			{Size: 5 << 20, Fill: FillZero},
		},
		NICs: []NICSpec{{Network: "prod-web"}, {Network: "prod-db", MAC: "00:50:56:01:02:03"}},
	}
}

func TestDeterministic(t *testing.T) {
	a := digests(t, gen(t, t.TempDir(), smallSpec(7)))
	b := digests(t, gen(t, t.TempDir(), smallSpec(7)))
	c := digests(t, gen(t, t.TempDir(), smallSpec(8)))
	want := []string{"web01.vmx", "web01.nvram", "web01.vmdk", "web01-flat.vmdk", "web01_1.img", "web01_2.vmdk", "web01_2-flat.vmdk"}
	if len(a) != len(want) {
		t.Fatalf("files %v, want %v", a, want)
	}
	for _, f := range want {
		if _, ok := a[f]; !ok {
			t.Fatalf("missing %s", f)
		}
		if a[f] != b[f] {
			t.Errorf("%s differs between two runs with the same seed", f)
		}
	}
	for _, f := range []string{"web01.vmx", "web01.nvram", "web01-flat.vmdk", "web01_1.img"} {
		if a[f] == c[f] {
			t.Errorf("%s is the same for seeds 7 and 8", f)
		}
	}
}

func TestDeterministicQemuFormats(t *testing.T) {
	needQemuImg(t)
	spec := Spec{Name: "db01", Seed: 3, Disks: []DiskSpec{
		{Size: 4 << 20, Fill: FillMixed, Format: FormatSparse},
		{Size: 2<<20 + 1024, Fill: FillRandom, Format: FormatStream},
	}}
	a := digests(t, gen(t, t.TempDir(), spec))
	b := digests(t, gen(t, t.TempDir(), spec))
	for f, d := range a {
		if b[f] != d {
			t.Errorf("%s differs between two runs", f)
		}
	}
}

func TestVMX(t *testing.T) {
	folder := gen(t, t.TempDir(), smallSpec(1))
	b, err := os.ReadFile(filepath.Join(folder, "web01.vmx"))
	if err != nil {
		t.Fatal(err)
	}
	vmx := string(b)
	for _, line := range []string{
		`displayName = "web01"`, `scsi0.virtualDev = "pvscsi"`,
		`scsi0:0.fileName = "web01.vmdk"`, `scsi0:1.fileName = "web01_1.img"`, `scsi0:2.fileName = "web01_2.vmdk"`,
		`ethernet0.virtualDev = "vmxnet3"`, `ethernet0.networkName = "prod-web"`, `ethernet0.addressType = "generated"`,
		`ethernet1.networkName = "prod-db"`, `ethernet1.address = "00:50:56:01:02:03"`, `nvram = "web01.nvram"`,
		`virtualHW.version = "19"`, `firmware = "bios"`,
	} {
		if !strings.Contains(vmx, line+"\n") {
			t.Errorf("vmx lacks %s", line)
		}
	}
	for _, key := range []string{"uuid.bios", "vc.uuid", "ethernet0.generatedAddress", "guestOS", "numvcpus", "memSize"} {
		if !strings.Contains(vmx, "\n"+key+" = ") {
			t.Errorf("vmx lacks %s", key)
		}
	}
	disks, err := VMXDisks(filepath.Join(folder, "web01.vmx"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(disks, ",") != "web01.vmdk,web01_1.img,web01_2.vmdk" {
		t.Errorf("VMXDisks = %v", disks)
	}
	desc, _ := os.ReadFile(filepath.Join(folder, "web01.vmdk"))
	for _, line := range []string{`createType="monolithicFlat"`, `RW 16385 FLAT "web01-flat.vmdk" 0`, `ddb.adapterType = "lsilogic"`} {
		if !strings.Contains(string(desc), line+"\n") {
			t.Errorf("descriptor lacks %s:\n%s", line, desc)
		}
	}
}

func TestSizes(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	sizes := []int64{512, 1<<20 + 512, 3 << 20, 10<<20 - 512}
	var spec Spec
	spec.Name, spec.Seed = "sz", 1
	formats := []string{FormatFlat, FormatRaw, FormatSparse, FormatStream}
	for i, f := range formats {
		spec.Disks = append(spec.Disks, DiskSpec{Size: sizes[i], Fill: FillMixed, Format: f})
	}
	folder := gen(t, dir, spec)
	check := func(name string, got, want int64) {
		if got != want {
			t.Errorf("%s: size %d, want %d", name, got, want)
		}
	}
	fi, _ := os.Stat(filepath.Join(folder, "sz-flat.vmdk"))
	check("flat", fi.Size(), sizes[0])
	fi, _ = os.Stat(filepath.Join(folder, "sz_1.img"))
	check("raw", fi.Size(), sizes[1])
	for i, name := range []string{"sz_2.vmdk", "sz_3.vmdk"} {
		out, err := exec.Command("qemu-img", "info", "--output=json", filepath.Join(folder, name)).Output()
		if err != nil {
			t.Fatal(err)
		}
		s := string(out)
		k := strings.Index(s, `"virtual-size": `)
		if k < 0 {
			t.Fatalf("qemu-img info: %s", s)
		}
		v, _ := strconv.ParseInt(strings.TrimRight(strings.Fields(s[k+16:])[0], ","), 10, 64)
		check(name, v, sizes[2+i])
	}
	if _, err := ParseSize("1000"); err == nil {
		t.Error("ParseSize accepted a size that is not a multiple of 512")
	}
	for in, want := range map[string]int64{"512": 512, "64K": 64 << 10, "1.5M": 3 << 19, "256G": 256 << 30, "2T": 2 << 40, "8s": 4096, "4MiB": 4 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// The sparse and stream VMDKs hold the same bytes as the flat extent of a disk with
// the same seed and name.
func TestQemuFormatsContent(t *testing.T) {
	needQemuImg(t)
	var flat string
	for i, f := range []string{FormatFlat, FormatSparse, FormatStream} {
		spec := Spec{Name: "vm" + strconv.Itoa(i), Seed: 5, Disks: []DiskSpec{{Name: "disk", Size: 6<<20 + 4096, Fill: FillMixed, Format: f}}}
		folder := gen(t, t.TempDir(), spec)
		if f == FormatFlat {
			flat = filepath.Join(folder, "disk-flat.vmdk")
			continue
		}
		out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "vmdk", flat, filepath.Join(folder, "disk.vmdk")).CombinedOutput()
		if err != nil {
			t.Errorf("%s differs from flat: %v %s", f, err, out)
		}
	}
}

func TestMixedHasHoles(t *testing.T) {
	const size = 64 << 20
	folder := gen(t, t.TempDir(), Spec{Name: "mx", Seed: 11, Disks: []DiskSpec{{Size: size, Fill: FillMixed, Format: FormatRaw}}})
	path := filepath.Join(folder, "mx.img")
	alloc := allocated(t, path)
	if alloc >= size*9/10 || alloc < size/4 {
		t.Errorf("mixed 64 MiB disk allocates %d bytes", alloc)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ext := Layout(FillMixed, size, 0, 11, "mx")
	kinds := map[string]int64{}
	var end int64
	for _, e := range ext {
		if e.Off != end {
			t.Fatalf("layout gap at %d", end)
		}
		end = e.Off + e.Len
		kinds[e.Kind] += e.Len
		region := data[e.Off : e.Off+e.Len]
		switch e.Kind {
		case "zero":
			if !isZero(region) {
				t.Fatalf("zero extent at %d holds data", e.Off)
			}
		case "random":
			if isZero(region[:min(512, len(region))]) {
				t.Fatalf("random extent at %d starts with zeros", e.Off)
			}
		}
	}
	if end != size {
		t.Fatalf("layout covers %d of %d", end, size)
	}
	for _, k := range []string{"zero", "random", "repeat"} {
		if kinds[k] == 0 {
			t.Errorf("mixed layout has no %s region: %v", k, kinds)
		}
	}
	// every aligned 1 MiB chunk fully inside repeat regions is the same
	var first []byte
	same := 0
	for _, e := range ext {
		if e.Kind != "repeat" {
			continue
		}
		for o := (e.Off + RepeatSize - 1) / RepeatSize * RepeatSize; o+RepeatSize <= e.Off+e.Len; o += RepeatSize {
			c := data[o : o+RepeatSize]
			if first == nil {
				first = c
			} else if !bytes.Equal(first, c) {
				t.Fatalf("repeated chunk at %d differs", o)
			}
			same++
		}
	}
	t.Logf("allocated %d of %d bytes; kinds %v; %d identical 1 MiB chunks", alloc, size, kinds, same)
	// holes, seen by the filesystem
	f, _ := os.Open(path)
	defer f.Close()
	h, err := f.Seek(0, seekHole)
	if err != nil || h >= size {
		t.Errorf("SEEK_HOLE found no hole before the end: %d %v", h, err)
	}
}

func TestBigIsCheap(t *testing.T) {
	dir := t.TempDir()
	folder := gen(t, dir, Spec{Name: "big", Seed: 2, Disks: []DiskSpec{
		{Size: 256 << 30, Fill: FillZero, Format: FormatFlat},
		{Size: 256 << 30, Fill: FillMixed, Format: FormatRaw, MaxData: 16 << 20},
	}})
	if a := allocated(t, filepath.Join(folder, "big-flat.vmdk")); a > 1<<20 {
		t.Errorf("zero 256 GiB disk allocates %d bytes", a)
	}
	a := allocated(t, filepath.Join(folder, "big_1.img"))
	if a > 64<<20 || a < 4<<20 {
		t.Errorf("mixed 256 GiB disk with MaxData 16 MiB allocates %d bytes", a)
	}
	fi, _ := os.Stat(filepath.Join(folder, "big_1.img"))
	if fi.Size() != 256<<30 {
		t.Errorf("size %d", fi.Size())
	}
}

func countChanged(t *testing.T, a, b string) (changed []int64, total int64) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) != len(y) {
		t.Fatalf("sizes %d and %d", len(x), len(y))
	}
	for o := 0; o < len(x); o += BlockSize {
		e := min(o+BlockSize, len(x))
		if !bytes.Equal(x[o:e], y[o:e]) {
			changed = append(changed, int64(o/BlockSize))
		}
		total++
	}
	return changed, total
}

func TestMutate(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Name: "app01", Seed: 4, Disks: []DiskSpec{
		{Size: 32<<20 + 512, Fill: FillMixed, Format: FormatFlat},
		{Size: 16 << 20, Fill: FillZero, Format: FormatRaw},
	}}
	orig := gen(t, filepath.Join(dir, "v1"), spec)
	next := filepath.Join(dir, "v2", "app01")
	os.MkdirAll(filepath.Dir(next), 0o755)
	if err := Copy(orig, next); err != nil {
		t.Fatal(err)
	}
	if d1, d2 := digests(t, orig), digests(t, next); len(d1) != len(d2) {
		t.Fatal("copy lost files")
	} else {
		for f := range d1 {
			if d1[f] != d2[f] {
				t.Fatalf("copy of %s differs", f)
			}
		}
	}
	if a := allocated(t, filepath.Join(next, "app01_1.img")); a > 0 {
		t.Errorf("copy of an all-hole disk allocates %d bytes", a)
	}
	ch, err := MutateReport(next, 10, 99)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ file, data string }{{"app01.vmdk", "app01-flat.vmdk"}, {"app01_1.img", "app01_1.img"}} {
		changed, total := countChanged(t, filepath.Join(orig, c.data), filepath.Join(next, c.data))
		want := (total*10 + 50) / 100
		if int64(len(changed)) != want {
			t.Errorf("%s: %d of %d blocks changed, want %d", c.data, len(changed), total, want)
		}
		if strs(changed) != strs(ch[c.file]) {
			t.Errorf("%s: report %v, actual %v", c.file, ch[c.file], changed)
		}
	}
	d1, _ := os.ReadFile(filepath.Join(orig, "app01.vmdk"))
	d2, _ := os.ReadFile(filepath.Join(next, "app01.vmdk"))
	if bytes.Equal(d1, d2) || !strings.Contains(string(d2), "RW 65537 FLAT") {
		t.Errorf("descriptor after mutate:\n%s", d2)
	}
	// the same mutation again gives the same bytes
	again := filepath.Join(dir, "v3", "app01")
	os.MkdirAll(filepath.Dir(again), 0o755)
	if err := Copy(orig, again); err != nil {
		t.Fatal(err)
	}
	if err := Mutate(again, 10, 99); err != nil {
		t.Fatal(err)
	}
	a, b := digests(t, next), digests(t, again)
	for f := range a {
		if a[f] != b[f] {
			t.Errorf("%s differs between two identical mutations", f)
		}
	}
}

func TestMutateSparse(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	spec := Spec{Name: "db01", Seed: 6, Disks: []DiskSpec{
		{Size: 8 << 20, Fill: FillRandom, Format: FormatSparse},
		{Size: 4 << 20, Fill: FillMixed, Format: FormatStream},
	}}
	orig := gen(t, filepath.Join(dir, "v1"), spec)
	next := filepath.Join(dir, "v2", "db01")
	os.MkdirAll(filepath.Dir(next), 0o755)
	if err := Copy(orig, next); err != nil {
		t.Fatal(err)
	}
	ch, err := MutateReport(next, 25, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"db01.vmdk", "db01_1.vmdk"} {
		ra, rb := filepath.Join(dir, f+".a.raw"), filepath.Join(dir, f+".b.raw")
		for _, c := range [][2]string{{filepath.Join(orig, f), ra}, {filepath.Join(next, f), rb}} {
			if out, err := exec.Command("qemu-img", "convert", "-O", "raw", c[0], c[1]).CombinedOutput(); err != nil {
				t.Fatalf("%v %s", err, out)
			}
		}
		changed, total := countChanged(t, ra, rb)
		if want := (total*25 + 50) / 100; int64(len(changed)) != want || strs(changed) != strs(ch[f]) {
			t.Errorf("%s: changed %v of %d, report %v", f, changed, total, ch[f])
		}
		if out, err := exec.Command("qemu-img", "check", filepath.Join(next, f)).CombinedOutput(); err != nil {
			t.Errorf("qemu-img check %s: %v %s", f, err, out)
		}
	}
}

func TestSource(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	b := make([]byte, 3<<20+512)
	copy(b[1<<20:], "hello")
	b[len(b)-1] = 1
	if err := os.WriteFile(src, b, 0o644); err != nil {
		t.Fatal(err)
	}
	folder := gen(t, dir, Spec{Name: "s", Disks: []DiskSpec{{Source: src}}})
	got, err := os.ReadFile(filepath.Join(folder, "s-flat.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, b) {
		t.Fatal("source disk differs")
	}
	if a := allocated(t, filepath.Join(folder, "s-flat.vmdk")); a > 1<<20 {
		t.Errorf("source copy allocates %d bytes", a)
	}
}

func TestPickBlocks(t *testing.T) {
	p := PickBlocks(1000, 5, 1, "x")
	if len(p) != 50 {
		t.Fatalf("%d blocks", len(p))
	}
	for i := 1; i < len(p); i++ {
		if p[i] <= p[i-1] {
			t.Fatal("not sorted or not distinct")
		}
	}
	if strs(p) != strs(PickBlocks(1000, 5, 1, "x")) || strs(p) == strs(PickBlocks(1000, 5, 2, "x")) {
		t.Fatal("not deterministic per seed")
	}
	if len(PickBlocks(10, 0.01, 1, "x")) != 1 || len(PickBlocks(10, 0, 1, "x")) != 0 || len(PickBlocks(10, 100, 1, "x")) != 10 {
		t.Fatal("edge cases")
	}
}

func strs(v []int64) string {
	var sb strings.Builder
	for _, x := range v {
		sb.WriteString(strconv.FormatInt(x, 10))
		sb.WriteByte(',')
	}
	return sb.String()
}
