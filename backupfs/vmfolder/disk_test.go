package vmfolder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fsHasHoles reports whether the file system under dir reports holes
// through SEEK_DATA; on one that does not, HasData is always true and only
// that safe direction can be checked.
func fsHasHoles(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(8 << 20); err != nil {
		t.Fatal(err)
	}
	has, err := fileHasData(f, 0, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	return !has
}

// checkDisk reads d every way a caller may and compares with want.
func checkDisk(t *testing.T, d SourceDisk, want []byte, format string, holes []span) {
	t.Helper()
	if d.Size() != int64(len(want)) {
		t.Fatalf("Size() = %d, want %d", d.Size(), len(want))
	}
	if d.Format() != format {
		t.Errorf("Format() = %q, want %q", d.Format(), format)
	}
	// Sequential reads in an odd chunk size, crossing grains and extents.
	got := make([]byte, 0, len(want))
	buf := make([]byte, 100003)
	for off := int64(0); ; {
		n, err := d.ReadAt(buf, off)
		got = append(got, buf[:n]...)
		off += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("ReadAt(%d): %v", off, err)
		}
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("content differs from the raw source at byte %d (read %d bytes, want %d)", i, len(got), len(want))
	}
	// Random reads, some crossing the end.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		off := rng.Int64N(int64(len(want)))
		n := rng.Int64N(300 << 10)
		p := make([]byte, n)
		k, err := d.ReadAt(p, off)
		wantN := min(n, int64(len(want))-off)
		if int64(k) != wantN || !bytes.Equal(p[:k], want[off:off+wantN]) {
			t.Fatalf("ReadAt(len %d, off %d) = %d bytes (want %d) or wrong content", n, off, k, wantN)
		}
		if (wantN < n) != errors.Is(err, io.EOF) || (err != nil && !errors.Is(err, io.EOF)) {
			t.Fatalf("ReadAt(len %d, off %d): err = %v", n, off, err)
		}
	}
	if n, err := d.ReadAt(make([]byte, 10), int64(len(want))); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at Size() = %d, %v; want 0, io.EOF", n, err)
	}
	if _, err := d.ReadAt(make([]byte, 10), -1); err == nil {
		t.Errorf("ReadAt at -1: no error")
	}
	// HasData false must mean zeros.
	const window = 64 << 10
	for off := int64(0); off < int64(len(want)); off += window {
		has, err := d.HasData(off, window)
		if err != nil {
			t.Fatalf("HasData(%d): %v", off, err)
		}
		end := min(off+window, int64(len(want)))
		if !has && bytes.Count(want[off:end], []byte{0}) != int(end-off) {
			t.Fatalf("HasData(%d, %d) = false but the range holds data", off, window)
		}
	}
	if has, err := d.HasData(0, int64(len(want))); err != nil || !has {
		t.Errorf("HasData(whole disk) = %v, %v; want true", has, err)
	}
	if has, err := d.HasData(int64(len(want)), 4096); err != nil || has {
		t.Errorf("HasData(beyond the end) = %v, %v; want false", has, err)
	}
	for _, h := range holes {
		// Grain-align the hole: a grain touching data is allocated.
		from := (h.off + window - 1) / window * window
		to := (h.off + h.n) / window * window
		has, err := d.HasData(from, to-from)
		if err != nil || has {
			t.Errorf("HasData(hole [%d, %d)) = %v, %v; want false", from, to, has, err)
		}
	}
}

func TestOpenDiskFormats(t *testing.T) {
	dir := t.TempDir()
	rawPath := filepath.Join(dir, "src.raw")
	want := makeRawImage(t, rawPath)
	var holes []span // the holes a raw or flat file keeps, if the file system can tell
	if fsHasHoles(t, dir) {
		holes = testHoles
	}

	// Split flat disks with an offset and a short last extent. qemu-img
	// (7.2) skips ZERO and RDONLY extent lines, so it checks the variant
	// without them and m.vmdk is checked by construction only.
	multi := filepath.Join(dir, "multi")
	writeFile(t, multi, "m-f1.vmdk", want[:1<<20])
	writeFile(t, multi, "m-f2.vmdk", append(bytes.Repeat([]byte{0xee}, 16*512), want[1<<20:3<<20]...))
	writeFile(t, multi, "m-zero.vmdk", want[3<<20:5<<20])
	writeFile(t, multi, "m-f3.vmdk", want[5<<20:])
	const multiHead = `# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="twoGbMaxExtentFlat"

# Extent description
RW 2048 FLAT "m-f1.vmdk" 0
RW 4096 FLAT "m-f2.vmdk" 16
`
	writeFile(t, multi, "m.vmdk", []byte(multiHead+`RW 4096 ZERO
RDONLY 7 FLAT "m-f3.vmdk" 0

#DDB
ddb.adapterType = "lsilogic"
`))
	writeFile(t, multi, "m-qemu.vmdk", []byte(multiHead+`RW 4096 FLAT "m-zero.vmdk" 0
RW 7 FLAT "m-f3.vmdk" 0
`))
	if got := qemuToRaw(t, filepath.Join(multi, "m-qemu.vmdk"), "vmdk"); !bytes.Equal(got, want) {
		t.Fatalf("fixture m-qemu.vmdk: qemu-img reads something else than the source")
	}

	// A VMware-style stream with the grain directory at the end.
	stream := writeFile(t, dir, "stream.vmdk", writeStream(want, streamOptions{descriptor: true}))
	if got := qemuToRaw(t, stream, "vmdk"); !bytes.Equal(got, want) {
		t.Fatalf("fixture stream.vmdk: qemu-img reads something else than the source")
	}

	tests := []struct {
		name      string
		subformat string // for qemu-img; empty: path is a fixture above
		path      string
		format    string
		holes     []span // HasData must find these holes
	}{
		{name: "raw", path: rawPath, format: FormatRaw, holes: holes},
		{name: "monolithicFlat", subformat: "monolithicFlat", format: FormatMonolithicFlat, holes: holes},
		{name: "twoGbMaxExtentFlat", subformat: "twoGbMaxExtentFlat", format: FormatMonolithicFlat, holes: holes},
		{name: "monolithicSparse", subformat: "monolithicSparse", format: FormatMonolithicSparse, holes: testHoles},
		{name: "twoGbMaxExtentSparse", subformat: "twoGbMaxExtentSparse", format: FormatMonolithicSparse, holes: testHoles},
		{name: "streamOptimized", subformat: "streamOptimized", format: FormatStreamOptimized, holes: testHoles},
		{name: "stream with GD at end", path: stream, format: FormatStreamOptimized, holes: testHoles},
		{name: "multi-extent flat", path: filepath.Join(multi, "m-qemu.vmdk"), format: FormatMonolithicFlat},
		{name: "multi-extent flat with ZERO", path: filepath.Join(multi, "m.vmdk"), format: FormatMonolithicFlat, holes: testHoles[1:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if tt.subformat != "" {
				sub := filepath.Join(dir, tt.name)
				if err := os.Mkdir(sub, 0o755); err != nil {
					t.Fatal(err)
				}
				path = filepath.Join(sub, "web01.vmdk")
				qemuConvert(t, rawPath, path, tt.subformat)
			}
			d, err := OpenDisk(path)
			if err != nil {
				t.Fatalf("OpenDisk: %v", err)
			}
			defer d.Close()
			checkDisk(t, d, want, tt.format, tt.holes)
		})
	}
}

// TestOpenDiskConcurrentReads reads one compressed disk from several
// goroutines, as the importer does; run with -race.
func TestOpenDiskConcurrentReads(t *testing.T) {
	dir := t.TempDir()
	want := makeRawImage(t, filepath.Join(dir, "src.raw"))
	path := writeFile(t, dir, "stream.vmdk", writeStream(want, streamOptions{}))
	d, err := OpenDisk(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 4096+w)
			for off := int64(w * 512); off < d.Size(); off += 4096 * 7 {
				n, err := d.ReadAt(p, off)
				if err != nil && !errors.Is(err, io.EOF) {
					errs <- err
					return
				}
				if !bytes.Equal(p[:n], want[off:off+int64(n)]) {
					errs <- fmt.Errorf("worker %d: wrong bytes at %d", w, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestOpenDiskStreamVariants covers stream layouts qemu-img does not write:
// small grains and tables, no embedded descriptor.
func TestOpenDiskStreamVariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	data := make([]byte, 300*512+1024)
	for i := range data[:20000] {
		data[i] = byte(rng.Uint32())
	}
	copy(data[120000:], "tail")
	for _, o := range []streamOptions{
		{grainSize: 8, gtEntries: 4},
		{grainSize: 1, gtEntries: 512, descriptor: true},
		{grainSize: 2048, gtEntries: 1},
	} {
		t.Run(fmt.Sprintf("grain%d-gt%d", o.grainSize, o.gtEntries), func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "s.vmdk", writeStream(data, o))
			d, err := OpenDisk(path)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			got := make([]byte, len(data))
			if n, err := d.ReadAt(got, 0); n != len(data) || err != nil {
				t.Fatalf("ReadAt = %d, %v", n, err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("content differs")
			}
		})
	}
}

// sparseFixture is a monolithicSparse and a streamOptimized file made by
// qemu-img from the test image, to corrupt.
type sparseFixture struct {
	dir          string
	sparse       []byte // monolithicSparse
	stream       []byte // streamOptimized, GD in header
	streamAtEnd  []byte // GD at end
	sparseHeader sparseHeader
	streamHeader sparseHeader
}

func newSparseFixture(t *testing.T) *sparseFixture {
	t.Helper()
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	data := makeRawImage(t, raw)
	fx := &sparseFixture{dir: dir}
	read := func(sub string) []byte {
		p := filepath.Join(dir, sub+".vmdk")
		qemuConvert(t, raw, p, sub)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fx.sparse = read("monolithicSparse")
	fx.stream = read("streamOptimized")
	fx.streamAtEnd = writeStream(data, streamOptions{descriptor: true})
	var err error
	if fx.sparseHeader, err = parseSparseHeader(fx.sparse); err != nil {
		t.Fatal(err)
	}
	if fx.streamHeader, err = parseSparseHeader(fx.stream); err != nil {
		t.Fatal(err)
	}
	return fx
}

// firstGrain returns the file offsets of the first allocated grain's GT
// entry and of the grain itself.
func firstGrain(t *testing.T, b []byte, h sparseHeader) (gteOff, grainOff int64) {
	t.Helper()
	le := binary.LittleEndian
	gt := int64(le.Uint32(b[h.gdOffset*sectorSize:])) * sectorSize
	for i := int64(0); i < int64(h.numGTEsPerGT); i++ {
		if e := le.Uint32(b[gt+4*i:]); e != 0 {
			return gt + 4*i, int64(e) * sectorSize
		}
	}
	t.Fatal("fixture has no allocated grain in its first grain table")
	return 0, 0
}

func TestOpenDiskErrors(t *testing.T) {
	fx := newSparseFixture(t)
	le := binary.LittleEndian
	patch := func(src []byte, f func(b []byte)) []byte {
		b := bytes.Clone(src)
		f(b)
		return b
	}
	sparseGTE, sparseGrain := firstGrain(t, fx.sparse, fx.sparseHeader)
	_, streamGrain := firstGrain(t, fx.stream, fx.streamHeader)
	flat := bytes.Repeat([]byte{1}, 4<<20)

	tests := []struct {
		name  string
		files map[string][]byte // in a fresh folder; the disk is web01.vmdk
		open  []string          // substrings of the OpenDisk error; nil: must open
		read  []string          // substrings of the error reading the whole disk
	}{
		{
			name:  "missing extent",
			files: map[string][]byte{"web01.vmdk": []byte(flatDesc(8192, "web01-flat.vmdk", 0))},
			open:  []string{"web01.vmdk: extent web01-flat.vmdk: no such file"},
		},
		{
			name: "descriptor lies about size",
			files: map[string][]byte{
				"web01.vmdk":      []byte(flatDesc(10240, "web01-flat.vmdk", 0)),
				"web01-flat.vmdk": flat,
			},
			open: []string{"web01.vmdk", "web01-flat.vmdk", "10240 sectors", "4194304 bytes"},
		},
		{
			name: "offset pushes extent past the end",
			files: map[string][]byte{
				"web01.vmdk":      []byte(flatDesc(8192, "web01-flat.vmdk", 1)),
				"web01-flat.vmdk": flat,
			},
			open: []string{"web01-flat.vmdk", "from sector 1"},
		},
		{
			name:  "extent outside the folder",
			files: map[string][]byte{"web01.vmdk": []byte(flatDesc(8192, "../other/web01-flat.vmdk", 0))},
			open:  []string{"outside the VM folder"},
		},
		{
			name:  "absolute extent",
			files: map[string][]byte{"web01.vmdk": []byte(flatDesc(8192, "/vmfs/volumes/ds1/web01/web01-flat.vmdk", 0))},
			open:  []string{"absolute path"},
		},
		{
			name: "snapshot delta",
			files: map[string][]byte{"web01.vmdk": []byte(strings.Replace(flatDesc(8192, "web01-flat.vmdk", 0),
				"parentCID=ffffffff", "parentCID=1234abcd\nparentFileNameHint=\"web01-base.vmdk\"", 1))},
			open: []string{"snapshot delta", "web01-base.vmdk"},
		},
		{
			name: "seSparse extent",
			files: map[string][]byte{"web01.vmdk": []byte(strings.Replace(flatDesc(8192, "web01-sesparse.vmdk", 0),
				"FLAT", "SESPARSE", 1))},
			open: []string{"SESPARSE", "snapshot"},
		},
		{
			name: "raw device mapping",
			files: map[string][]byte{"web01.vmdk": []byte(strings.Replace(flatDesc(8192, "web01-rdmp.vmdk", 0),
				"FLAT", "VMFSRDM", 1))},
			open: []string{"raw device mapping"},
		},
		{
			name:  "malformed extent line",
			files: map[string][]byte{"web01.vmdk": []byte("# Disk DescriptorFile\ncreateType=\"vmfs\"\nRW lots VMFS \"x-flat.vmdk\"\n")},
			open:  []string{"web01.vmdk", "line 3", "lots"},
		},
		{
			name:  "descriptor without extents",
			files: map[string][]byte{"web01.vmdk": []byte("# Disk DescriptorFile\ncreateType=\"vmfs\"\n")},
			open:  []string{"web01.vmdk", "no extent"},
		},
		{
			name: "sparse extent with bad magic",
			files: map[string][]byte{
				"web01.vmdk":   []byte(strings.Replace(flatDesc(10247, "web01-s.vmdk", 0), "FLAT", "SPARSE", 1)),
				"web01-s.vmdk": patch(fx.sparse, func(b []byte) { copy(b, "XXXX") }),
			},
			open: []string{"web01-s.vmdk", "bad magic"},
		},
		{
			name: "sparse extent smaller than its descriptor says",
			files: map[string][]byte{
				"web01.vmdk":   []byte(strings.Replace(flatDesc(20000, "web01-s.vmdk", 0), "FLAT", "SPARSE", 1)),
				"web01-s.vmdk": fx.sparse,
			},
			open: []string{"web01-s.vmdk", "20000 sectors", "10247"},
		},
		{
			name:  "sparse version",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) { le.PutUint32(b[4:], 9) })},
			open:  []string{"web01.vmdk", "version 9"},
		},
		{
			name:  "sparse grain size not a power of two",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) { le.PutUint64(b[20:], 100) })},
			open:  []string{"grain size 100"},
		},
		{
			name:  "sparse grain size huge",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) { le.PutUint64(b[20:], 1<<40) })},
			open:  []string{"grain size"},
		},
		{
			name:  "huge grain table",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) { le.PutUint32(b[44:], 1<<30) })},
			open:  []string{"entries per grain table"},
		},
		{
			name: "huge grain directory",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) {
				le.PutUint64(b[12:], 1<<36) // 32 TiB in 512-byte grains
				le.PutUint64(b[20:], 1)
			})},
			open: []string{"grain directory of", "entries"},
		},
		{
			name: "capacity beyond any disk",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) {
				le.PutUint64(b[12:], 1<<60)
			})},
			open: []string{"capacity"},
		},
		{
			name:  "grain directory beyond the file",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) { le.PutUint64(b[56:], 1<<40) })},
			open:  []string{"grain directory", "outside the file"},
		},
		{
			name: "grain table beyond the file",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) {
				le.PutUint32(b[fx.sparseHeader.gdOffset*sectorSize:], 0xfffffff0)
			})},
			read: []string{"grain table 0", "beyond the end of the file"},
		},
		{
			name:  "grain beyond the file",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) { le.PutUint32(b[sparseGTE:], 0xfffffff0) })},
			read:  []string{"web01.vmdk", "grain 0", "beyond the end of the file"},
		},
		{
			name:  "truncated sparse file",
			files: map[string][]byte{"web01.vmdk": fx.sparse[:sparseGrain+100]},
			read:  []string{"beyond the end of the file"},
		},
		{
			name: "embedded descriptor disagrees with capacity",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) {
				i := bytes.Index(b, []byte("RW 10247 SPARSE"))
				copy(b[i:], "RW 10246 SPARSE")
			})},
			open: []string{"10246 sectors", "10247"},
		},
		{
			name: "inflate failure",
			files: map[string][]byte{"web01.vmdk": patch(fx.stream, func(b []byte) {
				copy(b[streamGrain+grainMarkerSize:], bytes.Repeat([]byte{0xff}, 64))
			})},
			read: []string{"web01.vmdk", "grain 0", "inflate"},
		},
		{
			name: "grain marker with wrong lba",
			files: map[string][]byte{"web01.vmdk": patch(fx.stream, func(b []byte) {
				le.PutUint64(b[streamGrain:], 999)
			})},
			read: []string{"grain 0", "marker says sector 999"},
		},
		{
			name: "compressed grain larger than possible",
			files: map[string][]byte{"web01.vmdk": patch(fx.stream, func(b []byte) {
				le.PutUint32(b[streamGrain+8:], 1<<30)
			})},
			read: []string{"compressed size"},
		},
		{
			name: "stream footer corrupt",
			files: map[string][]byte{"web01.vmdk": patch(fx.streamAtEnd, func(b []byte) {
				copy(b[len(b)-1024:], "XXXX")
			})},
			open: []string{"footer", "bad magic"},
		},
		{
			name:  "stream cut before its footer",
			files: map[string][]byte{"web01.vmdk": fx.streamAtEnd[:len(fx.streamAtEnd)-1536]},
			open:  []string{"footer"},
		},
		{
			name:  "ESX COWD delta",
			files: map[string][]byte{"web01.vmdk": append([]byte("COWD"), make([]byte, 2048)...)},
			open:  []string{"COWD"},
		},
		// A .vmdk is never read as raw: a damaged header is an error.
		{
			name:  "sparse magic damaged",
			files: map[string][]byte{"web01.vmdk": patch(fx.sparse, func(b []byte) { copy(b, "KDMX") })},
			open:  []string{"web01.vmdk: not a VMDK", "damaged", "--raw-disk"},
		},
		{
			name:  "raw bytes named .vmdk",
			files: map[string][]byte{"web01.vmdk": flat},
			open:  []string{"web01.vmdk: not a VMDK", "4194304 bytes"},
		},
		{
			name:  "qcow2 named .vmdk",
			files: map[string][]byte{"web01.vmdk": append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 1024)...)},
			open:  []string{"qcow2", "qemu-img convert"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, b := range tt.files {
				writeFile(t, dir, name, b)
			}
			d, err := OpenDisk(filepath.Join(dir, "web01.vmdk"))
			if tt.open != nil {
				if err == nil {
					d.Close()
					t.Fatalf("OpenDisk: no error, want one containing %q", tt.open)
				}
				t.Log(err)
				for _, s := range tt.open {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("OpenDisk error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenDisk: %v", err)
			}
			defer d.Close()
			_, err = d.ReadAt(make([]byte, d.Size()), 0)
			if err == nil {
				t.Fatalf("ReadAt whole disk: no error, want one containing %q", tt.read)
			}
			t.Log(err)
			for _, s := range tt.read {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("ReadAt error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestOpenDiskMissingExtentIsNotExist(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "web01.vmdk", []byte(flatDesc(8, "web01-flat.vmdk", 0)))
	_, err := OpenDisk(p)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenDisk error %v: want one matching os.ErrNotExist", err)
	}
}

// flatDesc is an ESXi-style descriptor with one extent.
func flatDesc(sectors int64, extent string, offset int64) string {
	return fmt.Sprintf(`# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=a1b2c3d4
parentCID=ffffffff
createType="vmfs"

# Extent description
RW %d FLAT "%s" %d

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.thinProvisioned = "1"
`, sectors, extent, offset)
}

func TestFlatDescriptor(t *testing.T) {
	tests := []struct {
		name, extent, adapter string
		size                  int64
		sectors               int64
		ddbAdapter            string
		cylinders, heads      int
	}{
		{"scsi 40 GiB", "web01-flat.vmdk", "pvscsi", 40 << 30, 40 << 21, "lsilogic", 5221, 255},
		{"lsisas", "a-flat.vmdk", "lsisas1068", 1 << 30, 1 << 21, "lsilogic", 130, 255},
		{"buslogic", "a-flat.vmdk", "buslogic", 1 << 30, 1 << 21, "buslogic", 130, 255},
		{"ide small", "b-flat.vmdk", "ide", 5<<20 + 7*512, 10247, "ide", 10, 16},
		{"ide capped", "b-flat.vmdk", "ide", 100 << 30, 100 << 21, "ide", 16383, 16},
		{"sata", "c-flat.vmdk", "sata", 8 << 30, 8 << 21, "ide", 16383, 16},
		{"nvme", "d-flat.vmdk", "nvme", 8 << 30, 8 << 21, "lsilogic", 1044, 255},
		{"odd size rounds up", "e-flat.vmdk", "lsilogic", 1000, 2, "lsilogic", 1, 255},
		{"quote in name", `f"x-flat.vmdk`, "lsilogic", 512, 1, "lsilogic", 1, 255},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := FlatDescriptor(tt.extent, tt.size, tt.adapter)
			if !bytes.Equal(b, FlatDescriptor(tt.extent, tt.size, tt.adapter)) {
				t.Fatal("two calls gave different bytes")
			}
			d, err := parseDescriptor(b)
			if err != nil {
				t.Fatalf("parse own descriptor: %v\n%s", err, b)
			}
			wantName := strings.ReplaceAll(tt.extent, `"`, "_")
			if len(d.extents) != 1 || d.extents[0] != (extentLine{access: "RW", sectors: tt.sectors, kind: "FLAT", file: wantName}) {
				t.Errorf("extents = %+v", d.extents)
			}
			if d.createType != "monolithicFlat" || d.parentCID != noParentCID {
				t.Errorf("createType %q parentCID %q", d.createType, d.parentCID)
			}
			checks := map[string]string{
				"adaptertype":        tt.ddbAdapter,
				"geometry.cylinders": fmt.Sprint(tt.cylinders),
				"geometry.heads":     fmt.Sprint(tt.heads),
				"geometry.sectors":   "63",
				"virtualhwversion":   "4",
			}
			for k, v := range checks {
				if d.ddb[k] != v {
					t.Errorf("ddb.%s = %q, want %q", k, d.ddb[k], v)
				}
			}
		})
	}
	if bytes.Equal(FlatDescriptor("a-flat.vmdk", 1<<30, "lsilogic"), FlatDescriptor("a-flat.vmdk", 2<<30, "lsilogic")) {
		t.Error("different sizes gave the same descriptor")
	}
}

// TestFlatDescriptorGolden pins the bytes: a served descriptor must never
// change for the same disk, across releases too.
func TestFlatDescriptorGolden(t *testing.T) {
	got := FlatDescriptor("web01-flat.vmdk", 40<<30, "pvscsi")
	golden := filepath.Join("testdata", "flat-descriptor.golden")
	if os.Getenv("REKINDLE_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (REKINDLE_UPDATE_GOLDEN=1 writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("FlatDescriptor changed:\n%s\nwant:\n%s", got, want)
	}
}

// TestFlatDescriptorReadable serves our descriptor to qemu-img and to
// OpenDisk, as a hypervisor would read it.
func TestFlatDescriptorReadable(t *testing.T) {
	dir := t.TempDir()
	want := makeRawImage(t, filepath.Join(dir, "web01-flat.vmdk"))
	desc := writeFile(t, dir, "web01.vmdk", FlatDescriptor("web01-flat.vmdk", int64(len(want)), "lsilogic"))
	if got := qemuToRaw(t, desc, "vmdk"); !bytes.Equal(got, want) {
		t.Fatal("qemu-img reads our descriptor's disk differently")
	}
	d, err := OpenDisk(desc)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	checkDisk(t, d, want, FormatMonolithicFlat, nil)
}

// TestDescriptorStaleTailAfterNUL: qemu-img rewrites a descriptor in place
// with a shorter NUL-terminated string, leaving the old tail after the NUL.
// The text ends at the NUL, as QEMU and VMware read it.
func TestDescriptorStaleTailAfterNUL(t *testing.T) {
	dir := t.TempDir()
	extent := make([]byte, 4096)
	for i := range extent {
		extent[i] = byte(i)
	}
	writeFile(t, dir, "d-flat.vmdk", extent)
	text := "# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 8 FLAT \"d-flat.vmdk\" 0\n"
	desc := append([]byte(text), 0)
	desc = append(desc, []byte("cd\n\nRW 999 FLAT \"gone.vmdk\" 0\n")...) // stale tail
	desc = append(desc, make([]byte, 512-len(desc)%512)...)
	writeFile(t, dir, "d.vmdk", desc)
	d, err := OpenDisk(filepath.Join(dir, "d.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make([]byte, 4096)
	if _, err := d.ReadAt(got, 0); err != nil || d.Size() != 4096 || !bytes.Equal(got, extent) {
		t.Fatalf("size %d, err %v, equal %v", d.Size(), err, bytes.Equal(got, extent))
	}
}

// TestOpenDiskByName: the name says raw (.raw, .img) and nothing else does;
// a file named raw that holds a VMDK is refused rather than served as the
// VMDK's bytes; OpenRawDisk reads any file raw.
func TestOpenDiskByName(t *testing.T) {
	fx := newSparseFixture(t)
	dir := t.TempDir()
	data := bytes.Repeat([]byte{7}, 64<<10)
	writeFile(t, dir, "a.img", data)
	writeFile(t, dir, "b.raw", data)
	writeFile(t, dir, "c.img", fx.sparse)
	writeFile(t, dir, "d.bin", data)
	for _, name := range []string{"a.img", "b.raw"} {
		d, err := OpenDisk(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d.Format() != FormatRaw || d.Size() != int64(len(data)) {
			t.Fatalf("%s: format %s size %d", name, d.Format(), d.Size())
		}
		d.Close()
	}
	if _, err := OpenDisk(filepath.Join(dir, "c.img")); err == nil || !strings.Contains(err.Error(), "named as a raw image (.img) but it is a VMDK") {
		t.Fatalf("sparse VMDK named .img: %v", err)
	}
	if _, err := OpenDisk(filepath.Join(dir, "d.bin")); err == nil || !strings.Contains(err.Error(), "not a VMDK or a raw image named .raw or .img") {
		t.Fatalf("raw bytes named .bin: %v", err)
	}
	d, err := OpenRawDisk(filepath.Join(dir, "d.bin"))
	if err != nil || d.Format() != FormatRaw || d.Size() != int64(len(data)) {
		t.Fatalf("OpenRawDisk: %v", err)
	}
	d.Close()
}
