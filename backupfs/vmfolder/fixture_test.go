package vmfolder

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zlib"
)

// Test fixtures are generated at test time: a raw image with holes, which
// qemu-img converts to each VMDK flavour, and a VMware-style stream with its
// grain directory at the end, which qemu-img cannot write.

// span is a byte range [off, off+n).
type span struct{ off, n int64 }

const (
	testImageSize = 5<<20 + 7*512 // not a multiple of the 64 KiB grain
)

// testHoles are the big all-zero ranges of the test image, left as holes in
// the raw file.
var testHoles = []span{
	{64 << 10, 1536 << 10},
	{3 << 20, 2 << 20},
}

// requireTool fails the test when an external tool is missing: these tests
// check our readers against a real implementation and must not pass silently
// without it.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH: run `make deps` (installs qemu-utils): %v", name, err)
	}
	return p
}

// makeRawImage writes the test image to dir/name as a sparse file and
// returns its bytes.
func makeRawImage(t *testing.T, path string) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, testImageSize)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(testImageSize); err != nil {
		t.Fatal(err)
	}
	fill := func(off, n int64, compressible bool) {
		b := data[off : off+n]
		for i := range b {
			if compressible {
				b[i] = "rekindle keeps backups "[i%23]
			} else {
				b[i] = byte(rng.Uint32())
			}
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	fill(0, 64<<10, false)                  // first grain
	fill(1600<<10+1000, 3000, false)        // small unaligned write
	fill(2560<<10, 512<<10, true)           // compressible
	fill(2560<<10+100, 10, false)           //   with a dent
	fill(5<<20, testImageSize-5<<20, false) // the partial last grain
	// Allocated zeros: data to the file system, a hole to qemu-img.
	if _, err := f.WriteAt(make([]byte, 256<<10), 1792<<10); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return data
}

// qemuConvert converts a raw image to a VMDK of the given subformat.
func qemuConvert(t *testing.T, src, dst, subformat string) {
	t.Helper()
	qemu := requireTool(t, "qemu-img")
	out, err := exec.Command(qemu, "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+subformat, src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img convert to %s: %v\n%s", subformat, err, out)
	}
}

// qemuToRaw has qemu-img read a disk and write it back as raw, to check
// fixtures we build by hand against a real implementation.
func qemuToRaw(t *testing.T, src, format string) []byte {
	t.Helper()
	qemu := requireTool(t, "qemu-img")
	dst := filepath.Join(t.TempDir(), "back.raw")
	out, err := exec.Command(qemu, "convert", "-f", format, "-O", "raw", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img convert %s to raw: %v\n%s", src, err, out)
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// streamOptions tune writeStream.
type streamOptions struct {
	grainSize  uint64 // sectors
	gtEntries  uint32
	descriptor bool // embed a descriptor
}

// writeStream writes data as a streamOptimized extent the way VMware's
// exporters do: header with gdOffset = GD_AT_END, compressed grains behind
// markers, then grain tables, grain directory and footer each behind a
// metadata marker, and an end-of-stream marker.
func writeStream(data []byte, o streamOptions) []byte {
	if o.grainSize == 0 {
		o.grainSize = 128
	}
	if o.gtEntries == 0 {
		o.gtEntries = 512
	}
	le := binary.LittleEndian
	capacity := (uint64(len(data)) + sectorSize - 1) / sectorSize
	var out bytes.Buffer
	pad := func() {
		if r := out.Len() % sectorSize; r != 0 {
			out.Write(make([]byte, sectorSize-r))
		}
	}
	header := func(gdOffset uint64, descSectors uint64) []byte {
		h := make([]byte, sectorSize)
		le.PutUint32(h[0:], sparseMagic)
		le.PutUint32(h[4:], 3)
		le.PutUint32(h[8:], 1|flagCompressed|flagMarkers)
		le.PutUint64(h[12:], capacity)
		le.PutUint64(h[20:], o.grainSize)
		if descSectors > 0 {
			le.PutUint64(h[28:], 1)
			le.PutUint64(h[36:], descSectors)
		}
		le.PutUint32(h[44:], o.gtEntries)
		le.PutUint64(h[56:], gdOffset)
		le.PutUint64(h[64:], 1+descSectors)
		copy(h[73:], "\n \r\n")
		le.PutUint16(h[77:], compressionDeflate)
		return h
	}
	marker := func(sectors uint64, typ uint32) {
		m := make([]byte, sectorSize)
		le.PutUint64(m[0:], sectors)
		le.PutUint32(m[12:], typ)
		out.Write(m)
	}
	var desc []byte
	if o.descriptor {
		desc = fmt.Appendf(nil, "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n# Extent description\nRW %d SPARSE \"stream.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n", capacity)
	}
	descSectors := uint64(len(desc)+sectorSize-1) / sectorSize
	out.Write(header(gdAtEnd, descSectors))
	out.Write(desc)
	pad()

	grainBytes := int(o.grainSize) * sectorSize
	grains := (len(data) + grainBytes - 1) / grainBytes
	gte := make([]uint32, (uint64(grains)+uint64(o.gtEntries)-1)/uint64(o.gtEntries)*uint64(o.gtEntries))
	for g := 0; g < grains; g++ {
		chunk := data[g*grainBytes : min(len(data), (g+1)*grainBytes)]
		if bytes.Count(chunk, []byte{0}) == len(chunk) {
			continue
		}
		var z bytes.Buffer
		zw := zlib.NewWriter(&z)
		zw.Write(chunk)
		zw.Close()
		gte[g] = uint32(out.Len() / sectorSize)
		var m [grainMarkerSize]byte
		le.PutUint64(m[0:], uint64(g)*o.grainSize)
		le.PutUint32(m[8:], uint32(z.Len()))
		out.Write(m[:])
		out.Write(z.Bytes())
		pad()
	}
	gtSectors := (uint64(o.gtEntries)*4 + sectorSize - 1) / sectorSize
	gd := make([]uint32, len(gte)/int(o.gtEntries))
	for i := range gd {
		marker(gtSectors, 1) // grain table
		gd[i] = uint32(out.Len() / sectorSize)
		binary.Write(&out, le, gte[i*int(o.gtEntries):(i+1)*int(o.gtEntries)])
		pad()
	}
	marker((uint64(len(gd))*4+sectorSize-1)/sectorSize, 2) // grain directory
	gdOffset := uint64(out.Len() / sectorSize)
	binary.Write(&out, le, gd)
	pad()
	marker(1, 3) // footer
	out.Write(header(gdOffset, descSectors))
	marker(0, 0) // end of stream
	return out.Bytes()
}

// writeFile writes b to dir/name and returns the path.
func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
