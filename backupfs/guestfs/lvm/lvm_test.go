package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// zeroExtended reads b, then zeros up to size: a device whose first bytes
// are a fixture.
type zeroExtended struct {
	b    []byte
	size int64
}

func (z zeroExtended) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= z.size {
		return 0, io.EOF
	}
	n := 0
	if off < int64(len(z.b)) {
		n = copy(p, z.b[off:])
	}
	end := min(int64(len(p)), z.size-off)
	clear(p[n:end])
	if end < int64(len(p)) {
		return int(end), io.EOF
	}
	return len(p), nil
}

func fixture(t testing.TB, name string) zeroExtended {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return zeroExtended{b: b, size: 64 << 20}
}

// TestReadLVM2 reads the PVs lvm2 wrote (testdata/README.md): the labels'
// and metadata areas' checksums, the newest of three metadata commits, and
// the VG they describe.
func TestReadLVM2(t *testing.T) {
	devs := map[string]io.ReaderAt{}
	var vg *VG
	for _, name := range []string{"pv-a.bin", "pv-b.bin"} {
		d := fixture(t, name)
		pv, err := Read(d, d.size)
		if err != nil {
			t.Fatal(err)
		}
		if pv.Sector != 1 || pv.DeviceSize != 64<<20 || len(pv.Data) != 1 || pv.Data[0].Offset != 1<<20 ||
			len(pv.Metadata) != 1 || pv.Metadata[0].Offset != 4096 || len(pv.Errors) != 0 {
			t.Fatalf("%s: label %+v, errors %v", name, pv.Label, pv.Errors)
		}
		if vg, err = ParseVG(pv.Text); err != nil {
			t.Fatal(err)
		}
		devs[pv.UUID] = d
	}
	if vg.Name != "vgfix" || vg.Seqno != 3 || vg.ExtentSize != 4<<20 || len(vg.PVs) != 2 || len(vg.LVs) != 2 {
		t.Fatalf("vg %+v", vg)
	}
	for _, p := range vg.PVs {
		if devs[p.ID] == nil || p.PEStart != 1<<20 || p.PECount != 15 {
			t.Fatalf("pv %+v is not one of the labels read", p)
		}
	}
	lin, str := vg.LVs[0], vg.LVs[1]
	if lin.Name != "lin" || !lin.Visible || lin.Size(vg) != 16<<20 || len(lin.Segments[0].Stripes) != 1 {
		t.Fatalf("lin %+v", lin)
	}
	s := str.Segments[0]
	if str.Name != "str" || s.StripeSize != 64<<10 || len(s.Stripes) != 2 || s.Stripes[1].PV != "pv1" || str.Size(vg) != 16<<20 {
		t.Fatalf("str %+v seg %+v", str, s)
	}
	if _, err := vg.Open(str, devs); err != nil {
		t.Fatal(err)
	}
	delete(devs, vg.PVs[1].ID)
	if _, err := vg.Open(str, devs); !errors.Is(err, ErrMissingPV) {
		t.Fatalf("striped LV without its second PV opened: %v", err)
	}
}

// TestParseText: the configuration language as vgcfgbackup writes it,
// escapes in strings, comments.
func TestParseText(t *testing.T) {
	b, err := os.ReadFile("testdata/vgfix.txt")
	if err != nil {
		t.Fatal(err)
	}
	root, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := root.String("description")
	if !strings.Contains(d, `filter=["a|^/dev/loop0$|"`) {
		t.Fatalf("description %q: escaped quotes lost", d)
	}
	if v, ok := root.Int("version"); !ok || v != 1 {
		t.Fatalf("version %d %v", v, ok)
	}
	vg := root.Section("vgfix")
	if got := strings.Join(vg.Strings("status"), ","); got != "RESIZEABLE,READ,WRITE" {
		t.Fatalf("status %q", got)
	}
	for _, bad := range []string{"a {", "a = ", "a = [1 2]", `a = "x`, "}", "a b", "a = [[1]]", "a = 1.2.3"} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrSyntax) {
			t.Errorf("%q parsed: %v", bad, err)
		}
	}
}

// TestBounds: a hostile text cannot nest or grow without limit.
func TestBounds(t *testing.T) {
	deep := strings.Repeat("a {\n", MaxDepth+1) + strings.Repeat("}\n", MaxDepth+1)
	if _, err := Parse([]byte(deep)); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("sections %d deep: %v", MaxDepth+1, err)
	}
	ok := strings.Repeat("a {\n", MaxDepth) + strings.Repeat("}\n", MaxDepth)
	if _, err := Parse([]byte(ok)); err != nil {
		t.Fatalf("sections %d deep: %v", MaxDepth, err)
	}
	long := "a = [" + strings.Repeat("1,", maxArray) + "1]"
	if _, err := Parse([]byte(long)); err == nil || !strings.Contains(err.Error(), "array longer") {
		t.Fatalf("array of %d: %v", maxArray+1, err)
	}
	// A metadata area claiming a text larger than MaxText is refused before
	// anything is allocated for it.
	d := fixture(t, "pv-a.bin")
	d.size = 1 << 40
	raw := bytes.Clone(d.b)
	h := raw[4096 : 4096+512]
	binary.LittleEndian.PutUint64(h[32:], 1<<39) // area size
	binary.LittleEndian.PutUint64(h[48:], MaxText+1)
	binary.LittleEndian.PutUint32(h[0:], crc(h[4:]))
	binary.LittleEndian.PutUint64(raw[512+32+40+32+8:], 1<<39) // the PV header's mda size
	binary.LittleEndian.PutUint32(raw[512+16:], crc(raw[512+20:1024]))
	d.b = raw
	pv, err := Read(d, d.size)
	if err != nil {
		t.Fatal(err)
	}
	if pv.Text != nil || len(pv.Errors) != 1 || !strings.Contains(pv.Errors[0], "bound") {
		t.Fatalf("oversized text: %d bytes read, errors %v", len(pv.Text), pv.Errors)
	}
}

// TestWrappedText: metadata text that passes the area's end continues just
// after the mda_header (LVM's circular buffer), and its checksum covers both
// parts.
func TestWrappedText(t *testing.T) {
	src := fixture(t, "pv-a.bin")
	pv, err := Read(src, src.size)
	if err != nil {
		t.Fatal(err)
	}
	text := pv.Text
	const areaOff, areaSize = 4096, 8192
	dev := make([]byte, 1<<20)
	copy(dev, src.b[:1024]) // label and PV header
	binary.LittleEndian.PutUint64(dev[512+32+40+32+8:], areaSize)
	binary.LittleEndian.PutUint32(dev[512+16:], crc(dev[512+20:1024]))
	h := dev[areaOff : areaOff+512]
	copy(h, src.b[areaOff:areaOff+40])
	binary.LittleEndian.PutUint64(h[32:], areaSize)
	start := uint64(areaSize - 700) // 700 bytes before the end, the rest after the header
	binary.LittleEndian.PutUint64(h[40:], start)
	binary.LittleEndian.PutUint64(h[48:], uint64(len(text)))
	binary.LittleEndian.PutUint32(h[56:], crc(text))
	binary.LittleEndian.PutUint32(h[60:], 0)
	binary.LittleEndian.PutUint32(h[0:], crc(h[4:]))
	copy(dev[areaOff+start:], text[:700])
	copy(dev[areaOff+512:], text[700:])
	got, err := Read(bytes.NewReader(dev), int64(len(dev)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Text, text) {
		t.Fatalf("wrapped text read as %d bytes (errors %v), want %d", len(got.Text), got.Errors, len(text))
	}
	dev[areaOff+512+10] ^= 1
	got, err = Read(bytes.NewReader(dev), int64(len(dev)))
	if err != nil || got.Text != nil || len(got.Errors) != 1 || !strings.Contains(got.Errors[0], "checksum") {
		t.Fatalf("a flipped bit in the wrapped part: text %d bytes, %v, %v", len(got.Text), got.Errors, err)
	}
}

// TestLabelChecks: a flipped bit in the label, or a label claiming another
// sector, is damage, not a PV.
func TestLabelChecks(t *testing.T) {
	d := fixture(t, "pv-a.bin")
	for _, at := range []int{512 + 40, 512 + 8} {
		raw := bytes.Clone(d.b)
		raw[at] ^= 1
		if _, err := ReadLabel(zeroExtended{raw, d.size}, d.size); !errors.Is(err, ErrDamaged) {
			t.Errorf("bit %d flipped: %v", at, err)
		}
	}
	if _, err := ReadLabel(zeroExtended{make([]byte, 4096), d.size}, d.size); !errors.Is(err, ErrNoLabel) {
		t.Errorf("zeros: %v", err)
	}
}
