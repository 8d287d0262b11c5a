package lvm

import (
	"encoding/binary"
	"io"
	"os"
	"testing"
)

// FuzzParseVG feeds metadata text to the configuration-language parser and
// the VG decoder; whatever it accepts must map reads inside its PVs.
func FuzzParseVG(f *testing.F) {
	for _, n := range []string{"testdata/vgfix.txt"} {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		vg, err := ParseVG(text)
		if err != nil {
			return
		}
		devs := map[string]io.ReaderAt{}
		for _, p := range vg.PVs {
			devs[p.ID] = zeroExtended{size: 1 << 50}
		}
		for _, lv := range vg.LVs {
			size := lv.Size(vg)
			if size < 0 {
				t.Fatalf("lv %s size %d", lv.Name, size)
			}
			r, err := vg.Open(lv, devs)
			if err != nil {
				continue
			}
			b := make([]byte, 4096)
			for _, off := range []int64{0, size / 3, size - 100} {
				if off >= 0 {
					r.ReadAt(b, off)
				}
			}
		}
	})
}

// FuzzRead feeds device bytes (zeros beyond them) to the label, PV header
// and metadata area readers, and what they find to the VG decoder.
func FuzzRead(f *testing.F) {
	for _, n := range []string{"testdata/pv-a.bin", "testdata/pv-b.bin"} {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		fix := append([]byte{1}, b[1:]...)
		f.Add(fix)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 && b[0]&1 == 1 {
			fixChecksums(b) // so mutations reach the parsers behind the checksums
		}
		d := zeroExtended{b: b, size: 4 << 20}
		pv, err := Read(d, d.size)
		if err != nil {
			return
		}
		if len(pv.Text) > MaxText {
			t.Fatalf("%d bytes of text", len(pv.Text))
		}
		ParseVG(pv.Text)
	})
}

// fixChecksums rewrites, in place, the checksums of the label, the
// mda_headers and the metadata texts b holds, as a writer would.
func fixChecksums(b []byte) {
	le := binary.LittleEndian
	for s := 0; s < labelScan && (s+1)*sectorSize <= len(b); s++ {
		sec := b[s*sectorSize : (s+1)*sectorSize]
		if string(sec[:8]) != string(labelID) {
			continue
		}
		h := sec[min(int(le.Uint32(sec[20:])), sectorSize):]
		for pos, ends := 40, 0; pos+16 <= len(h) && ends < 2; pos += 16 {
			off, sz := le.Uint64(h[pos:]), le.Uint64(h[pos+8:])
			if off == 0 {
				ends++
				continue
			}
			if ends == 1 && off+mdaHeaderSize <= uint64(len(b)) {
				m := b[off : off+mdaHeaderSize]
				if t, n := le.Uint64(m[40:]), le.Uint64(m[48:]); t+n <= sz && off+t+n <= uint64(len(b)) {
					le.PutUint32(m[56:], crc(b[off+t:off+t+n]))
				}
				le.PutUint32(m[0:], crc(m[4:]))
			}
		}
		le.PutUint32(sec[16:], crc(sec[20:]))
	}
}
