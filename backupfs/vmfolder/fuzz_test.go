package vmfolder

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/klauspost/compress/zlib"
)

// The decoders here read files from datastores rekindle does not control.
// Each fuzz target checks that hostile input cannot panic them or make
// them allocate without bound, and that what they accept is consistent.
// Seed corpora live in testdata/fuzz/<target>/.

func FuzzParseVMX(f *testing.F) {
	f.Add([]byte(esxiVMX))
	f.Add([]byte("a = \"|22|7C|zz|\"\r\n# c\nb=1 # x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseVMX(bytes.NewReader(data))
		if err != nil {
			if v != nil {
				t.Fatal("error with a non-nil VMX")
			}
			return
		}
		keys := v.Keys()
		if len(keys) > bytes.Count(data, []byte("="))+0 {
			t.Fatalf("%d keys from %d '=' signs", len(keys), bytes.Count(data, []byte("=")))
		}
		for _, k := range keys {
			if k == "" || strings.ContainsAny(k, " \t\"#\n") {
				t.Fatalf("bad key %q", k)
			}
			a, ok1 := v.Get(k)
			b, ok2 := v.Get(upperASCII(k))
			if !ok1 || !ok2 || a != b {
				t.Fatalf("Get(%q) not case-insensitive", k)
			}
			if len(a) > len(data) {
				t.Fatalf("value of %q longer than the input", k)
			}
		}
	})
}

func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func FuzzParseDescriptor(f *testing.F) {
	f.Add([]byte(flatDesc(8192, "web01-flat.vmdk", 0)))
	f.Add(FlatDescriptor("a b-flat.vmdk", 5<<20+7*512, "ide"))
	f.Add([]byte("createType=\"twoGbMaxExtentSparse\"\nRW 4192256 SPARSE \"x-s001.vmdk\"\nRW 100 ZERO\nRDONLY 3 VMFS \"y\" 7 extra\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		looksLikeDescriptor(data)
		d, err := parseDescriptor(data)
		if err != nil {
			return
		}
		if len(d.extents) == 0 || len(d.extents) > maxExtents {
			t.Fatalf("%d extents accepted", len(d.extents))
		}
		if n := d.totalSectors(); n < 0 || n > maxDiskSectors {
			t.Fatalf("total %d sectors accepted", n)
		}
		for _, e := range d.extents {
			if e.sectors < 0 || e.offset < 0 || e.offset > maxDiskSectors {
				t.Fatalf("extent %+v accepted", e)
			}
			if (e.kind == "ZERO") != (e.file == "") {
				t.Fatalf("extent %+v: file name and kind disagree", e)
			}
		}
		if d.extents[0].file == "" {
			return
		}
		// What we write for such a disk must parse back to the same size.
		out, err := parseDescriptor(FlatDescriptor(d.extents[0].file, d.totalSectors()*sectorSize, d.ddb["adaptertype"]))
		if err != nil {
			t.Fatalf("own descriptor does not parse: %v", err)
		}
		if out.totalSectors() != d.totalSectors() {
			t.Fatalf("own descriptor: %d sectors, want %d", out.totalSectors(), d.totalSectors())
		}
	})
}

// tinySparse builds a minimal valid sparse extent: header, one grain
// directory entry, one grain table of gtEntries, then grains of one sector.
func tinySparse(compressed bool) []byte {
	le := binary.LittleEndian
	const gtEntries = 4
	b := make([]byte, 4*sectorSize)
	le.PutUint32(b[0:], sparseMagic)
	le.PutUint32(b[4:], 1)
	flags := uint32(1)
	if compressed {
		flags |= flagCompressed | flagMarkers
		le.PutUint16(b[77:], compressionDeflate)
	}
	le.PutUint32(b[8:], flags)
	le.PutUint64(b[12:], gtEntries) // capacity in sectors
	le.PutUint64(b[20:], 1)         // grain size
	le.PutUint32(b[44:], gtEntries)
	le.PutUint64(b[56:], 1) // GD at sector 1
	le.PutUint32(b[1*sectorSize:], 2)
	le.PutUint32(b[2*sectorSize:], 3) // grain 0 at sector 3
	if compressed {
		var zb bytes.Buffer
		zw := zlib.NewWriter(&zb)
		zw.Write(bytes.Repeat([]byte("A"), sectorSize))
		zw.Close()
		z := zb.Bytes()
		le.PutUint64(b[3*sectorSize:], 0)
		le.PutUint32(b[3*sectorSize+8:], uint32(len(z)))
		copy(b[3*sectorSize+12:], z)
	} else {
		copy(b[3*sectorSize:], bytes.Repeat([]byte("A"), sectorSize))
	}
	return b
}

func FuzzSparse(f *testing.F) {
	f.Add(tinySparse(false))
	f.Add(tinySparse(true))
	f.Add(writeStream(bytes.Repeat([]byte("rekindle"), 64), streamOptions{grainSize: 1, gtEntries: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		sp, err := openSparse("fuzz.vmdk", bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if sp.size() <= 0 || sp.size() > maxDiskSectors*sectorSize {
			t.Fatalf("capacity %d bytes accepted", sp.size())
		}
		if uint64(len(sp.gd))*4 > uint64(len(data)) {
			t.Fatalf("grain directory of %d entries from a %d-byte file", len(sp.gd), len(data))
		}
		// Read a bounded window at each end; where hasData says no data,
		// the bytes must be zeros.
		for _, off := range []int64{0, max(0, sp.size()-64<<10)} {
			n := min(64<<10, sp.size()-off)
			p := bytes.Repeat([]byte{0xaa}, int(n))
			if err := sp.readAt(p, off); err != nil {
				continue
			}
			has, err := sp.hasData(off, n)
			if err == nil && !has && bytes.Count(p, []byte{0}) != len(p) {
				t.Fatalf("hasData(%d, %d) false but read non-zero bytes", off, n)
			}
		}
	})
}
