package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// storeBytes writes data as a disk into r the way ingest does and returns its
// index digest.
func storeBytes(t testing.TB, r *Repo, data []byte) Digest {
	t.Helper()
	return storeChunks(t, r, data, func(d Digest, c []byte) error {
		_, _, err := r.PutChunk(d, c)
		return err
	}, r.Sync)
}

// encodeChunkWide is the chunk encoder of the releases before 4 KiB raw
// frames: 32 KiB frames for every chunk, whatever it compresses to. Kept so
// that tests read repositories as those releases wrote them.
func encodeChunkWide(d Digest, data []byte) []byte {
	return encodeChunkFrames(d, data, DefaultFrameShift, nil)
}

// storeBytesAs is storeBytes with the chunk files written by enc (an older
// writer's encoder) instead of the repository's own.
func storeBytesAs(t testing.TB, r *Repo, data []byte, enc func(Digest, []byte) []byte) Digest {
	t.Helper()
	return storeChunks(t, r, data, func(d Digest, c []byte) error {
		p := r.ChunkPath(d)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, enc(d, c), 0o644)
	}, nil)
}

// storeChunks cuts data into r's chunks, stores each that is not all zeros
// with put, calls sync (if any) and writes the index.
func storeChunks(t testing.TB, r *Repo, data []byte, put func(Digest, []byte) error, sync func() error) Digest {
	t.Helper()
	x := NewIndex(r.ChunkSize(), int64(len(data)))
	for i := range x.Chunks {
		off := i * r.ChunkSize()
		c := data[off : off+x.ChunkLen(i)]
		if IsZero(c) {
			continue
		}
		x.Chunks[i] = Sum(c)
		if err := put(x.Chunks[i], c); err != nil {
			t.Fatal(err)
		}
	}
	if sync != nil {
		if err := sync(); err != nil {
			t.Fatal(err)
		}
	}
	d, err := r.PutIndex(x)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// testDisk returns size bytes: random, zero and repeated regions.
func testDisk(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, size)
	for off := 0; off < size; off += 64 << 10 {
		end := min(off+64<<10, size)
		switch rng.IntN(4) {
		case 0: // zeros
		case 1:
			copy(b[off:end], bytes.Repeat([]byte("rekindle"), (end-off)/8+1))
		default:
			for i := off; i < end; i++ {
				b[i] = byte(rng.Uint32())
			}
		}
	}
	return b
}

func newRepo(t testing.TB, chunk int) *Repo {
	t.Helper()
	r, err := Init(filepath.Join(t.TempDir(), "repo"), InitOptions{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInitOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r")
	if _, err := Open(dir); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("open of empty dir: got %v, want ErrNotRepository", err)
	}
	r, err := Init(dir, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.ChunkSize() != DefaultChunkSize {
		t.Fatalf("chunk size %d", r.ChunkSize())
	}
	if _, err := Init(dir, InitOptions{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second init: %v", err)
	}
	for _, bad := range []int{1000, 32 << 10, 3 << 20, 32 << 20} {
		if _, err := Init(filepath.Join(t.TempDir(), "x"), InitOptions{ChunkSize: bad}); err == nil {
			t.Errorf("chunk size %d accepted", bad)
		}
	}
	// A newer format must be refused with a message that says what to do.
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	json.Unmarshal(b, &cfg)
	cfg["version"] = FormatVersion + 1
	b, _ = json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "upgrade rekindle") {
		t.Fatalf("newer format: %v", err)
	}
	cfg["version"] = FormatVersion
	cfg["compression"] = "lz4"
	b, _ = json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "lz4") {
		t.Fatalf("unknown compression: %v", err)
	}
}

func TestChunkCodec(t *testing.T) {
	for _, tc := range []struct {
		name  string
		data  []byte
		codec byte
	}{
		{"text", bytes.Repeat([]byte("hello chunk "), 1000), codecZstd},
		{"random", testDisk(1, 64<<10)[:0:0], codecStored},
	} {
		if tc.name == "random" {
			tc.data = make([]byte, 100000)
			rng := rand.New(rand.NewPCG(2, 2))
			for i := range tc.data {
				tc.data[i] = byte(rng.Uint32())
			}
		}
		for _, layout := range []int{1, 2} {
			enc := EncodeChunk(Sum(tc.data), tc.data)
			codec := enc[chunkHeaderV2+4] // the first frame's
			if layout == 1 {
				enc = EncodeChunkV1(Sum(tc.data), tc.data)
				codec = enc[4]
			}
			if codec != tc.codec || ChunkLayoutVersion(enc) != layout {
				t.Errorf("%s: layout %d, codec %d, want layout %d, codec %d", tc.name, ChunkLayoutVersion(enc), codec, layout, tc.codec)
			}
			got, err := DecodeChunk(Sum(tc.data), enc)
			if err != nil || !bytes.Equal(got, tc.data) {
				t.Fatalf("%s: round trip failed: %v", tc.name, err)
			}
			enc[len(enc)-1] ^= 0x40
			if _, err := DecodeChunk(Sum(tc.data), enc); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: flipped byte not detected: %v", tc.name, err)
			}
			enc[len(enc)-1] ^= 0x40
			// A good chunk stored under another chunk's name is caught by the
			// header, without re-hashing.
			other := Sum([]byte("another chunk"))
			if _, err := DecodeChunk(other, enc); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "holds chunk") {
				t.Errorf("%s: chunk under the wrong name not detected: %v", tc.name, err)
			}
			// A header that lies about the digest passes the cheap check only if
			// its xxhash matches too; VerifyChunk's SHA-256 catches even that.
			forged := bytes.Clone(enc)
			copy(forged[12:44], other[:])
			if layout == 2 { // the header checksum covers the digest
				forged = forgeHeader(forged)
			}
			if _, err := VerifyChunk(other, forged); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "SHA-256") {
				t.Errorf("%s: forged header not caught by verify: %v", tc.name, err)
			}
		}
	}
}

func TestIndexCodec(t *testing.T) {
	x := NewIndex(1<<20, 5<<20+12345)
	if len(x.Chunks) != 6 || x.ChunkLen(5) != 12345 {
		t.Fatalf("index shape %d chunks, last %d", len(x.Chunks), x.ChunkLen(5))
	}
	x.Chunks[2] = Sum([]byte("x"))
	y, err := DecodeIndex(x.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if y.Size != x.Size || y.ChunkSize != x.ChunkSize || y.Chunks[2] != x.Chunks[2] || len(y.Chunks) != 6 {
		t.Fatalf("decoded %+v", y)
	}
	enc := x.Encode()
	for name, b := range map[string][]byte{
		"truncated":   enc[:len(enc)-1],
		"short":       enc[:10],
		"bad magic":   append([]byte("XXXX"), enc[4:]...),
		"extra entry": append(append([]byte{}, enc...), make([]byte, 32)...),
	} {
		if _, err := DecodeIndex(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestReaderRoundTrip(t *testing.T) {
	r := newRepo(t, 64<<10)
	for _, size := range []int{1, 512, 64 << 10, 64<<10 + 1, 3<<20 + 4097} {
		data := testDisk(uint64(size), size)
		d := storeBytes(t, r, data)
		cache := NewCache(CacheOptions{MaxBytes: 1 << 20, ChunkSize: r.ChunkSize()})
		dr, err := r.OpenDisk(d, cache, "disk")
		if err != nil {
			t.Fatal(err)
		}
		// Whole read, sequential reads of odd sizes, random reads.
		got := make([]byte, size)
		if n, err := dr.ReadAt(got, 0); n != size || (err != nil && err != io.EOF) || !bytes.Equal(got, data) {
			t.Fatalf("size %d: whole read n=%d err=%v equal=%v", size, n, err, bytes.Equal(got, data))
		}
		sr := io.NewSectionReader(dr, 0, dr.Size())
		var seq bytes.Buffer
		if _, err := io.CopyBuffer(&seq, sr, make([]byte, 7000)); err != nil || !bytes.Equal(seq.Bytes(), data) {
			t.Fatalf("size %d: sequential read differs (%v)", size, err)
		}
		rng := rand.New(rand.NewPCG(9, 9))
		for range 200 {
			off := rng.IntN(size)
			n := min(rng.IntN(200<<10)+1, size-off)
			buf := make([]byte, n)
			if m, err := dr.ReadAt(buf, int64(off)); m != n || (err != nil && err != io.EOF) || !bytes.Equal(buf, data[off:off+n]) {
				t.Fatalf("size %d: ReadAt(%d, %d) = %d, %v", size, n, off, m, err)
			}
		}
		if n, err := dr.ReadAt(make([]byte, 10), int64(size)); n != 0 || err != io.EOF {
			t.Fatalf("read at end: %d %v", n, err)
		}
		if n, err := dr.ReadAt(make([]byte, 10), int64(size-1)); n != 1 || err != io.EOF {
			t.Fatalf("read across end: %d %v", n, err)
		}
		if st := cache.Stats(); st.Bytes > st.MaxBytes {
			t.Fatalf("cache holds %d bytes, bound %d", st.Bytes, st.MaxBytes)
		}
	}
}

func TestZeroChunksNotStored(t *testing.T) {
	r := newRepo(t, 64<<10)
	data := make([]byte, 10<<20)
	copy(data[5<<20:], "only this chunk has data")
	d := storeBytes(t, r, data)
	var n int
	filepath.Walk(filepath.Join(r.Dir, "chunks"), func(_ string, fi os.FileInfo, _ error) error {
		if fi != nil && !fi.IsDir() {
			n++
		}
		return nil
	})
	if n != 1 {
		t.Fatalf("%d chunk files stored, want 1", n)
	}
	dr, _ := r.OpenDisk(d, NewCache(CacheOptions{}), "d")
	got := make([]byte, len(data))
	dr.ReadAt(got, 0)
	if !bytes.Equal(got, data) {
		t.Fatal("sparse disk reads back wrong")
	}
}

func TestCorruptChunk(t *testing.T) {
	r := newRepo(t, 64<<10)
	data := testDisk(7, 1<<20)
	d := storeBytes(t, r, data)
	x, _ := r.LoadIndex(d)
	var victim Digest
	for _, c := range x.Chunks {
		if !c.IsZero() {
			victim = c
			break
		}
	}
	p := &RestorePoint{ID: NewPointID(time.Now()), VM: VMIdentity{Name: "web01"}, Created: time.Now().UTC(),
		Disks: []Disk{{Name: "web01", Controller: "scsi0:0", Size: int64(len(data)), Index: d}}}
	p2 := *p
	p2.ID = NewPointID(time.Now().Add(time.Second))
	p2.VM.Name = "web02"
	for _, pt := range []*RestorePoint{p, &p2} {
		if err := r.SavePoint(pt); err != nil {
			t.Fatal(err)
		}
	}
	path := r.ChunkPath(victim)
	b, _ := os.ReadFile(path)
	// The last frame's bytes: a damaged header alone is not read when the
	// frame index holds the chunk's table (verify still finds it, below).
	b[len(b)-1] ^= 1
	os.WriteFile(path, b, 0o644)

	dr, _ := r.OpenDisk(d, NewCache(CacheOptions{}), "disk web01")
	if _, err := dr.ReadAt(make([]byte, len(data)), 0); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), victim.String()) {
		t.Fatalf("read of damaged chunk: %v", err)
	}
	pts, _ := r.Points()
	rep, err := r.Verify(context.Background(), pts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].Digest != victim || len(rep.Problems[0].Points) != 2 {
		t.Fatalf("verify report %+v", rep)
	}
	os.Remove(path)
	rep, _ = r.Verify(context.Background(), pts, nil)
	if len(rep.Problems) != 1 || rep.Problems[0].Error != "missing" {
		t.Fatalf("verify of missing chunk: %+v", rep.Problems)
	}
}

func TestManifests(t *testing.T) {
	r := newRepo(t, 64<<10)
	d := storeBytes(t, r, testDisk(3, 100000))
	p := &RestorePoint{ID: NewPointID(time.Now()), VM: VMIdentity{Name: "db01", NumCPU: 2}, App: "shop",
		Created: time.Now().UTC().Truncate(time.Second),
		Files:   []ConfigFile{{Name: "db01.vmx", Size: 3, Inline: []byte("a=1")}},
		Disks:   []Disk{{Name: "db01", Controller: "scsi0:0", Size: 100000, Index: d}}}
	if err := r.SavePoint(p); err != nil {
		t.Fatal(err)
	}
	got, err := r.Point(p.ID)
	if err != nil || got.VM.NumCPU != 2 || got.Disks[0].Index != d || string(got.Files[0].Inline) != "a=1" {
		t.Fatalf("point round trip: %+v %v", got, err)
	}
	if err := r.SavePoint(p); err == nil {
		t.Fatal("overwriting a restore point was allowed")
	}
	if _, err := r.Point("../../etc/passwd"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("path trick: %v", err)
	}
	a := &App{Name: "shop", Members: []AppMember{{VM: "db01", Group: 1, WaitForGuest: true}, {VM: "web01", Group: 2}}}
	if err := r.SaveApp(a); err != nil {
		t.Fatal(err)
	}
	apps, err := r.Apps()
	if err != nil || len(apps) != 1 || apps[0].Members[0].WaitForGuest != true {
		t.Fatalf("apps: %+v %v", apps, err)
	}
	for name, bad := range map[string]*App{
		"no members": {Name: "x"},
		"group 0":    {Name: "x", Members: []AppMember{{VM: "a"}}},
		"dup":        {Name: "x", Members: []AppMember{{VM: "a", Group: 1}, {VM: "a", Group: 2}}},
		"slash":      {Name: "x/y", Members: []AppMember{{VM: "a", Group: 1}}},
	} {
		if err := r.SaveApp(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestStaleTempRemoved(t *testing.T) {
	r := newRepo(t, 64<<10)
	stale := filepath.Join(r.Dir, "tmp", "999999999-123")
	live := filepath.Join(r.Dir, "tmp", "1-456") // pid 1 is alive
	os.WriteFile(stale, []byte("x"), 0o644)
	os.WriteFile(live, []byte("x"), 0o644)
	if _, err := Open(r.Dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Error("stale temp file kept")
	}
	if _, err := os.Stat(live); err != nil {
		t.Error("live writer's temp file removed")
	}
}

func TestReadSlices(t *testing.T) {
	r := newRepo(t, 64<<10)
	data := testDisk(5, 1<<20+3000)
	d := storeBytes(t, r, data)
	dr, _ := r.OpenDisk(d, NewCache(CacheOptions{ChunkSize: r.ChunkSize()}), "disk")
	for _, tc := range []struct {
		off int64
		n   int
	}{{0, 4096}, {60 << 10, 10 << 10}, {0, 1<<20 + 3000}, {1 << 20, 5000}, {100, 1}} {
		parts, n, err := dr.ReadSlices(tc.off, tc.n)
		want := data[tc.off:min(int(tc.off)+tc.n, len(data))]
		if n != len(want) || (err != nil && !errors.Is(err, io.EOF)) || !bytes.Equal(bytes.Join(parts, nil), want) {
			t.Fatalf("ReadSlices(%d, %d) = %d bytes, %v", tc.off, tc.n, n, err)
		}
		if int(tc.off)+tc.n > len(data) && !errors.Is(err, io.EOF) {
			t.Fatalf("ReadSlices past the end: %v", err)
		}
	}
	if _, _, err := dr.ReadSlices(int64(len(data)), 10); err != io.EOF {
		t.Fatalf("at end: %v", err)
	}
	// The bytes lent are the cache's own: equal to a copying read.
	parts, _, _ := dr.ReadSlices(0, 4096)
	b := make([]byte, 4096)
	dr.ReadAt(b, 0)
	if !bytes.Equal(parts[0], b) {
		t.Fatal("slices differ from ReadAt")
	}
}
