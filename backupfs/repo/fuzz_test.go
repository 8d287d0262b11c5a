package repo

import (
	"bytes"
	"testing"
)

func FuzzDecodeChunk(f *testing.F) {
	abc := bytes.Repeat([]byte("abc"), 100)
	f.Add(EncodeChunk(Sum(abc), abc))
	f.Add(EncodeChunk(Sum([]byte{1, 2, 3}), []byte{1, 2, 3}))
	f.Add(EncodeChunkV1(Sum(abc), abc))
	long := testDisk(3, 100<<10)
	f.Add(encodeChunkFrames(Sum(long), long, minFrameShift, nil))
	f.Add([]byte("RKC1\x01\x00\x00\x00\xff\xff\xff\xff"))
	f.Add([]byte("RKC2\x0f\x00\x00\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		l, data, err := decodeChunkPayload(raw)
		if err != nil {
			return
		}
		if len(data) == 0 || len(data) > MaxChunkSize || len(data) != l.n {
			t.Fatalf("decoded %d bytes", len(data))
		}
		// Whatever decodes is returned only under the name in its header, and
		// VerifyChunk returns it only when that name is its SHA-256.
		named := Digest(raw[12:44])
		if _, err := DecodeChunk(named, raw); err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeChunk(Sum(append(bytes.Clone(data), 0)), raw); err == nil && named != Sum(append(bytes.Clone(data), 0)) {
			t.Fatal("accepted under a name its header does not give")
		}
		if _, err := VerifyChunk(named, raw); (err == nil) != (Sum(data) == named) {
			t.Fatalf("VerifyChunk: %v", err)
		}
		// Every frame decodes on its own to the same bytes.
		for i, fr := range l.frames {
			lo, hi := l.frameSpan(i)
			dst := make([]byte, hi-lo)
			if err := l.decodeFrame(i, raw[fr.off:fr.off+fr.size], dst); err != nil || !bytes.Equal(dst, data[lo:hi]) {
				t.Fatalf("frame %d alone: %v", i, err)
			}
		}
	})
}

func FuzzDecodeIndex(f *testing.F) {
	x := NewIndex(64<<10, 200000)
	x.Chunks[1] = Sum([]byte("a"))
	f.Add(x.Encode())
	f.Add(NewIndex(1<<20, 0).Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := DecodeIndex(b)
		if err != nil {
			return
		}
		if !bytes.Equal(x.Encode(), b) {
			t.Fatal("decode/encode not identical")
		}
		if int64(len(x.Chunks))*int64(x.ChunkSize) < x.Size {
			t.Fatal("index does not cover its size")
		}
	})
}

func FuzzDecodeRestorePoint(f *testing.F) {
	f.Add([]byte(`{"format":1,"id":"20261121T230748Z-3f9a2c","vm":{"name":"web01"},"created":"2026-11-21T23:07:48Z","files":[{"name":"web01.vmx","size":1,"inline":"YQ=="}],"disks":[{"name":"web01","controller":"scsi0:0","size":1048576,"index":"` + Sum(nil).String() + `"}]}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`{"format":1,"id":"20261121T230748Z-3f9a2c","vm":{"name":"../x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeRestorePoint(b)
		if err != nil {
			return
		}
		if err := ValidName(p.VM.Name); err != nil {
			t.Fatal(err)
		}
		for _, d := range p.Disks {
			if d.Size <= 0 || d.Index.IsZero() || ValidName(d.Name) != nil {
				t.Fatalf("invalid disk accepted: %+v", d)
			}
		}
		for _, f := range p.Files {
			if bytes.ContainsAny([]byte(f.Name), "/\x00") || f.Name == ".." {
				t.Fatalf("file name %q accepted", f.Name)
			}
		}
	})
}

func FuzzDecodeApp(f *testing.F) {
	f.Add([]byte(`{"format":1,"name":"shop","members":[{"vm":"db01","group":1,"wait_for_guest":true},{"vm":"web01","group":2}]}`))
	f.Add([]byte(`{"format":1,"name":"shop","members":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeApp(b)
		if err != nil {
			return
		}
		if len(a.Members) == 0 || ValidName(a.Name) != nil {
			t.Fatalf("invalid app accepted: %+v", a)
		}
		for _, m := range a.Members {
			if m.Group < 1 {
				t.Fatalf("group %d accepted", m.Group)
			}
		}
	})
}
