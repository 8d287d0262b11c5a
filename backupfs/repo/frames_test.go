package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// forgeHeader recomputes a version 2 chunk's header checksum after a test
// changed its header on purpose.
func forgeHeader(raw []byte) []byte {
	tab := chunkHeaderLen(raw) - 8
	binary.LittleEndian.PutUint64(raw[tab:], xxhash.Sum64(raw[:tab]))
	return raw
}

// readyFrames counts the decoded frames of chunk d in c.
func readyFrames(c *Cache, d Digest) (ready, total int) {
	e, ok := c.lru.Peek(d)
	if !ok {
		return 0, 0
	}
	for i := range e.ready {
		if e.ready[i].Load() {
			ready++
		}
	}
	return ready, len(e.ready)
}

func TestColdSmallReadDecodesOneFrame(t *testing.T) {
	r := newRepo(t, DefaultChunkSize)
	data := bytes.Repeat([]byte("a compressible disk block "), 2*DefaultChunkSize/26+1)[:2*DefaultChunkSize]
	d := storeBytes(t, r, data)
	x, _ := r.LoadIndex(d)
	c := NewCache(CacheOptions{Readahead: -1})
	dr := NewDiskReader(r, x, c, "disk")
	buf := make([]byte, 4096)
	off := int64(DefaultChunkSize + 5*32<<10 + 100) // chunk 1, frame 5
	if _, err := dr.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
		t.Fatalf("read: %v", err)
	}
	if ready, total := readyFrames(c, x.Chunks[1]); ready != 1 || total != DefaultChunkSize>>DefaultFrameShift {
		t.Fatalf("a cold 4 KiB read decoded %d of %d frames, want 1", ready, total)
	}
	// A read across a frame boundary decodes the two frames it touches.
	off = int64(DefaultChunkSize + 2*32<<10 - 10)
	if _, err := dr.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
		t.Fatalf("read across frames: %v", err)
	}
	if ready, _ := readyFrames(c, x.Chunks[1]); ready != 3 {
		t.Fatalf("%d frames decoded after reads of frames 1, 2 and 5", ready)
	}
	// The whole chunk reads the same, decoding the rest.
	got, err := c.Get(r, x.Chunks[1])
	if err != nil || !bytes.Equal(got, data[DefaultChunkSize:]) {
		t.Fatalf("whole chunk: %v", err)
	}
}

// TestCorruptFrameIsNamed damages one frame of a chunk at a time, in a chunk
// of 4 KiB frames as today's writer stores a chunk mostly of random bytes and
// in the same chunk in 32 KiB frames as earlier releases stored it: a read
// of the frame fails naming the chunk and the frame's bytes, the frames
// around it still read, and a whole-chunk read and verify find it.
func TestCorruptFrameIsNamed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		enc       func(Digest, []byte) []byte
		frameSize int
	}{
		{"raw 4 KiB frames", nil, 1 << RawFrameShift},
		{"32 KiB frames (earlier releases)", encodeChunkWide, 1 << DefaultFrameShift},
	} {
		t.Run(tc.name, func(t *testing.T) { testCorruptFrameIsNamed(t, tc.enc, tc.frameSize) })
	}
}

func testCorruptFrameIsNamed(t *testing.T, enc func(Digest, []byte) []byte, frameSize int) {
	r := newRepo(t, DefaultChunkSize)
	data := testDisk(5, DefaultChunkSize)
	copy(data[:64<<10], bytes.Repeat([]byte("text "), 64<<10/5+1)) // frames zstd and stored
	var d Digest
	if enc == nil {
		d = storeBytes(t, r, data)
	} else {
		d = storeBytesAs(t, r, data, enc)
	}
	x, _ := r.LoadIndex(d)
	c := x.Chunks[0]
	path := r.ChunkPath(c)
	good, _ := os.ReadFile(path)
	l, err := parseLayout(good, int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	if l.frameSize != frameSize {
		t.Fatalf("chunk stored in frames of %d bytes, want %d", l.frameSize, frameSize)
	}
	stored := -1 // a frame stored as it is, after the text
	for i := len(l.frames) - 2; i > 0; i-- {
		if l.frames[i].codec == codecStored {
			stored = i
		}
	}
	for _, frame := range []int{0, 3, stored, len(l.frames) - 1} {
		b := bytes.Clone(good)
		f := l.frames[frame]
		b[f.off+f.size/2] ^= 0x10
		os.WriteFile(path, b, 0o600)
		cache := NewCache(CacheOptions{Readahead: -1})
		dr := NewDiskReader(r, x, cache, "disk web01")
		lo, hi := l.frameSpan(frame)
		_, err := dr.ReadAt(make([]byte, 4096), int64(lo))
		want := fmt.Sprintf("chunk %s: corrupt: frame %d (bytes %d–%d)", c, frame, lo, hi-1)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Errorf("frame %d damaged: read error %v, want it to contain %q", frame, err, want)
		}
		// The frames around it are checked on their own and still read.
		other := (frame + 1) % len(l.frames)
		olo, _ := l.frameSpan(other)
		buf := make([]byte, 4096)
		if _, err := dr.ReadAt(buf, int64(olo)); err != nil || !bytes.Equal(buf, data[olo:olo+4096]) {
			t.Errorf("frame %d damaged: read of frame %d: %v", frame, other, err)
		}
		// Reading the whole chunk (readahead, verify) fails and says where.
		if _, err := r.GetChunk(c); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("frame %d ", frame)) {
			t.Errorf("frame %d damaged: GetChunk: %v", frame, err)
		}
		if rep, _ := r.Verify(context.Background(), []*RestorePoint{pointOf(d, len(data))}, nil); rep == nil || len(rep.Problems) != 1 ||
			rep.Problems[0].Digest != c || !strings.Contains(rep.Problems[0].Error, fmt.Sprintf("frame %d ", frame)) {
			t.Errorf("frame %d damaged: verify found %+v, want chunk %s named with its frame", frame, rep, c)
		}
	}
	// A damaged frame table is caught by the header checksum.
	b := bytes.Clone(good)
	b[chunkHeaderV2+3*frameEntrySize+8] ^= 1 // frame 3's xxhash
	os.WriteFile(path, b, 0o600)
	dr := NewDiskReader(r, x, NewCache(CacheOptions{Readahead: -1}), "disk")
	if _, err := dr.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "header checksum") {
		t.Errorf("damaged frame table: %v", err)
	}
	// A chunk cut short is an error, not zeros.
	os.WriteFile(path, good[:len(good)-100], 0o600)
	dr = NewDiskReader(r, x, NewCache(CacheOptions{Readahead: -1}), "disk")
	if _, err := dr.ReadAt(make([]byte, 10), int64(len(data)-10)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated chunk: %v", err)
	}
}

// TestRawChunksGet4KiBFrames checks the writer's choice of frame size: a
// chunk that does not compress (random bytes, with or without zero runs) is
// stored in 4 KiB frames, costing only its longer frame table; a chunk that
// compresses keeps 32 KiB frames where 4 KiB ones would store it larger; no
// choice stores a chunk in more than 1/64 more bytes than 32 KiB frames.
func TestRawChunksGet4KiBFrames(t *testing.T) {
	random := func(n int, seed byte) []byte {
		b := make([]byte, n)
		rand.NewChaCha8([32]byte{seed}).Read(b)
		return b
	}
	// Words from a small vocabulary: compresses, but needs zstd's window.
	words := func(n int) []byte {
		rng := rand.New(rand.NewPCG(8, 8))
		vocab := strings.Fields("the quick brown fox jumps over a lazy dog while rekindle serves its backup over nfs to a guest that boots and logs")
		var b bytes.Buffer
		for b.Len() < n {
			b.WriteString(vocab[rng.IntN(len(vocab))])
			b.WriteByte(" \n"[rng.IntN(2)])
		}
		return b.Bytes()[:n]
	}
	half := func(a, b []byte) []byte { return append(bytes.Clone(a[:len(a)/2]), b[len(b)/2:]...) }
	cs := DefaultChunkSize
	for _, tc := range []struct {
		name  string
		data  []byte
		shift int
	}{
		{"random", random(cs, 1), RawFrameShift},
		{"random, short last chunk", random(10000, 2), RawFrameShift},
		{"random and zeros", half(random(cs, 3), make([]byte, cs)), RawFrameShift},
		{"text", bytes.Repeat([]byte("a log line that repeats "), cs/24+1)[:cs], DefaultFrameShift},
		{"words", words(cs), DefaultFrameShift},
		{"words and random", half(words(cs), random(cs, 4)), DefaultFrameShift},
	} {
		d := Sum(tc.data)
		enc, wide := EncodeChunk(d, tc.data), encodeChunkWide(d, tc.data)
		l, err := parseLayout(enc, int64(len(enc)))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if l.frameSize != 1<<tc.shift {
			t.Errorf("%s: frames of %d bytes (%d stored, 32 KiB frames: %d), want %d", tc.name, l.frameSize, len(enc), len(wide), 1<<tc.shift)
		}
		if len(enc) > len(wide)+len(wide)/64 {
			t.Errorf("%s: %d bytes stored, 32 KiB frames %d: more than 1/64 larger", tc.name, len(enc), len(wide))
		}
		if l.frameSize == 1<<RawFrameShift && tc.name == "random" && len(enc)-len(wide) != (len(l.frames)-cs>>DefaultFrameShift)*frameEntrySize {
			t.Errorf("random: 4 KiB frames cost %d bytes over 32 KiB ones, want only the longer table", len(enc)-len(wide))
		}
		if got, err := VerifyChunk(d, enc); err != nil || !bytes.Equal(got, tc.data) {
			t.Errorf("%s: round trip: %v", tc.name, err)
		}
	}
}

// TestColdRawReadReads4KiB: a cold 4 KiB read of a chunk that does not
// compress reads 4 KiB from its chunk file (8 KiB when it straddles two
// frames), where the same chunk in 32 KiB frames, as earlier releases wrote
// it and which still reads, costs a 32 KiB read.
func TestColdRawReadReads4KiB(t *testing.T) {
	for _, tc := range []struct {
		name        string
		enc         func(Digest, []byte) []byte
		aligned, un int64 // bytes read for an aligned and an unaligned 4 KiB read
	}{
		{"today's writer", nil, 4096, 8192},
		{"32 KiB frames (earlier releases)", encodeChunkWide, 32 << 10, 32 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &readLog{FS: durablefs.OS()}
			r, err := InitFS(log, filepath.Join(t.TempDir(), "repo"), InitOptions{ChunkSize: DefaultChunkSize})
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, 4*DefaultChunkSize)
			rand.NewChaCha8([32]byte{6}).Read(data)
			var d Digest
			if tc.enc == nil {
				d = storeBytes(t, r, data)
			} else {
				d = storeBytesAs(t, r, data, tc.enc)
			}
			for i, off := range []int64{2*DefaultChunkSize + 40<<10, DefaultChunkSize + 100<<10 + 1000} {
				dr, err := r.OpenDisk(d, NewCache(CacheOptions{Readahead: -1}), "disk") // through its frame index
				if err != nil {
					t.Fatal(err)
				}
				log.take()
				buf := make([]byte, 4096)
				if _, err := dr.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
					t.Fatalf("read at %d: %v", off, err)
				}
				want := []int64{tc.aligned, tc.un}[i]
				if got := log.take(); len(got) != 1 || got[0].n != want {
					t.Errorf("cold 4 KiB read at %d: reads %v, want one of %d bytes", off, got, want)
				}
			}
		})
	}
}

func pointOf(d Digest, size int) *RestorePoint {
	return &RestorePoint{ID: "20260101T000000Z-000000", VM: VMIdentity{Name: "web01"},
		Disks: []Disk{{Name: "web01", Size: int64(size), Index: d}}}
}

// TestConcurrentFrameLoads has many readers touch the frames of the same
// cold chunks at once (run with -race): every read gets its bytes, and
// readers of one frame share its decode.
func TestConcurrentFrameLoads(t *testing.T) {
	r := newRepo(t, 64<<10)
	data := testDisk(9, 1<<20)
	d := storeBytes(t, r, data)
	x, _ := r.LoadIndex(d)
	for round := range 3 {
		c := NewCache(CacheOptions{ChunkSize: 64 << 10, Readahead: -1 + 2*(round%2)}) // readahead on in round 1
		dr := NewDiskReader(r, x, c, "disk")
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(g), uint64(round)))
				for range 300 {
					off := rng.Int64N(int64(len(data)))
					n := 1 + rng.IntN(70000)
					buf := make([]byte, n)
					got, err := dr.ReadAt(buf, off)
					if err != nil && !errors.Is(err, io.EOF) {
						errs <- err
						return
					}
					if !bytes.Equal(buf[:got], data[off:off+int64(got)]) {
						errs <- fmt.Errorf("read %d at %d: wrong bytes", n, off)
						return
					}
					if round == 2 {
						parts, got, err := dr.ReadSlices(off, n)
						if err != nil && !errors.Is(err, io.EOF) {
							errs <- err
							return
						}
						if !bytes.Equal(bytes.Join(parts, nil), data[off:off+int64(got)]) {
							errs <- fmt.Errorf("slices %d at %d: wrong bytes", n, off)
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
}

func TestVersion1RepositoryKeepsVersion1Chunks(t *testing.T) {
	for _, v := range []int{1, 2} {
		r, err := Init(filepath.Join(t.TempDir(), "r"), InitOptions{ChunkSize: 64 << 10, Version: v})
		if err != nil {
			t.Fatal(err)
		}
		data := testDisk(4, 200<<10)
		d := storeBytes(t, r, data)
		x, _ := r.LoadIndex(d)
		for _, c := range x.Chunks {
			if c.IsZero() {
				continue
			}
			raw, _ := r.ReadChunkRaw(c)
			if got := ChunkLayoutVersion(raw); got != v {
				t.Fatalf("repository version %d wrote a chunk of layout %d", v, got)
			}
		}
		r2, err := Open(r.Dir)
		if err != nil || r2.Config.Version != v {
			t.Fatalf("reopen: version %d, %v", r2.Config.Version, err)
		}
		buf := make([]byte, len(data))
		dr := NewDiskReader(r2, x, NewCache(CacheOptions{ChunkSize: 64 << 10}), "disk")
		if _, err := dr.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data) {
			t.Fatalf("version %d read back: %v", v, err)
		}
	}
	if _, err := Init(filepath.Join(t.TempDir(), "r"), InitOptions{Version: FormatVersion + 1}); err == nil {
		t.Fatal("init of an unknown version accepted")
	}
}

// TestRepositoryVersion1Fixture reads testdata/repo-v1, written by rekindle
// before chunk frames existed (see its README.md), through today's code.
func TestRepositoryVersion1Fixture(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := os.CopyFS(dir, os.DirFS("testdata/repo-v1")); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Config.Version != 1 {
		t.Fatalf("fixture version %d", r.Config.Version)
	}
	p, err := r.LatestPoint("old01")
	if err != nil {
		t.Fatal(err)
	}
	const want = "3693fb8718d1aa37213c65d5370f223bd22bdf89884941b0dcd2ab3c58d15d47"
	for _, readahead := range []int{-1, 0} {
		dr, err := r.OpenDisk(p.Disks[0].Index, NewCache(CacheOptions{ChunkSize: r.ChunkSize(), Readahead: readahead}), "disk old01")
		if err != nil {
			t.Fatal(err)
		}
		if got := diskSHA256(t, dr); got != want {
			t.Fatalf("disk reads as %s, want %s", got, want)
		}
	}
	rep, err := r.Verify(context.Background(), []*RestorePoint{p}, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	// New chunks written into it stay version 1, so the release that wrote
	// it still reads it.
	fresh := bytes.Repeat([]byte("a new chunk "), 6000)
	if _, _, err := r.PutChunk(Sum(fresh), fresh); err != nil {
		t.Fatal(err)
	}
	raw, _ := r.ReadChunkRaw(Sum(fresh))
	if ChunkLayoutVersion(raw) != 1 {
		t.Fatal("a chunk written into a version 1 repository is not version 1")
	}
	var n int
	fs.WalkDir(os.DirFS(dir), "chunks", func(_ string, e fs.DirEntry, _ error) error {
		if !e.IsDir() {
			n++
		}
		return nil
	})
	if n != 5 {
		t.Fatalf("%d chunk files, want the fixture's 4 and the new one", n)
	}
}

// TestRepositoryVersion2Fixture reads testdata/repo-v2-32k, written by the
// release before 4 KiB raw frames (every chunk in 32 KiB frames, its frame
// index too; see its README.md), through today's code, which writes a chunk
// of the same kind in 4 KiB frames beside them.
func TestRepositoryVersion2Fixture(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := os.CopyFS(dir, os.DirFS("testdata/repo-v2-32k")); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.LatestPoint("old02")
	if err != nil {
		t.Fatal(err)
	}
	x, err := r.LoadIndex(p.Disks[0].Index)
	if err != nil {
		t.Fatal(err)
	}
	var random Digest // chunk 1: random bytes, stored frames
	for i, c := range x.Chunks {
		if c.IsZero() {
			continue
		}
		raw, _ := r.ReadChunkRaw(c)
		l, err := parseLayout(raw, int64(len(raw)))
		if err != nil || l.frameSize != 1<<DefaultFrameShift {
			t.Fatalf("fixture chunk %d: %v, frames of %d bytes: not the old writer's 32 KiB", i, err, l.frameSize)
		}
		if i == 1 {
			random = c
		}
	}
	if err := r.verifyFrameIndex(p.Disks[0].Index); err != nil {
		t.Fatalf("the old release's frame index: %v", err)
	}
	const want = "cc1cb138b2751a0d32221ad40037e33e8e5bb528957bf58105b116c3812d7464"
	for _, readahead := range []int{-1, 0} {
		dr, err := r.OpenDisk(p.Disks[0].Index, NewCache(CacheOptions{ChunkSize: r.ChunkSize(), Readahead: readahead}), "disk old02")
		if err != nil {
			t.Fatal(err)
		}
		if got := diskSHA256(t, dr); got != want {
			t.Fatalf("disk reads as %s, want %s", got, want)
		}
	}
	rep, err := r.Verify(context.Background(), []*RestorePoint{p}, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	// Today's writer stores the random chunk's bytes in 4 KiB frames, and a
	// new random chunk in this repository too; the old chunk stays as it is.
	data, err := r.GetChunk(random)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := parseLayout(EncodeChunk(random, data), -1); l == nil || l.frameSize != 1<<RawFrameShift {
		t.Fatal("today's writer keeps 32 KiB frames for the fixture's random chunk")
	}
	fresh := bytes.Clone(data)
	fresh[0]++
	if _, _, err := r.PutChunk(Sum(fresh), fresh); err != nil {
		t.Fatal(err)
	}
	for c, size := range map[Digest]int{Sum(fresh): 1 << RawFrameShift, random: 1 << DefaultFrameShift} {
		raw, _ := r.ReadChunkRaw(c)
		if l, err := parseLayout(raw, int64(len(raw))); err != nil || l.frameSize != size {
			t.Fatalf("chunk %s after a write into the fixture: %v, frames of %d bytes, want %d", c, err, l.frameSize, size)
		}
	}
}

// TestReadaheadRamps checks the readahead window grows with the stream: a
// read that happens to follow another fetches 2 chunks ahead, a long
// sequential reader the whole window.
func TestReadaheadRamps(t *testing.T) {
	r := newRepo(t, 64<<10)
	data := make([]byte, 64*64<<10) // random: every chunk its own cache entry
	rand.NewChaCha8([32]byte{21}).Read(data)
	d := storeBytes(t, r, data)
	x, _ := r.LoadIndex(d)
	settle := func(c *Cache) int {
		deadline := time.Now().Add(20 * time.Second)
		for len(c.ahead) > 0 {
			if time.Now().After(deadline) {
				t.Fatal("readahead fetches never finished")
			}
			runtime.Gosched()
		}
		return c.Stats().Entries
	}
	c := NewCache(CacheOptions{ChunkSize: 64 << 10, Readahead: 16, Parallel: 64})
	dr := NewDiskReader(r, x, c, "disk")
	buf := make([]byte, 4096)
	dr.ReadAt(buf, 10*64<<10)
	dr.ReadAt(buf, 11*64<<10)
	if n := settle(c); n != 2 {
		t.Fatalf("two adjacent reads (a random reader's, as likely as a stream's start) left %d chunks cached, want only them", n)
	}
	dr.ReadAt(buf, 12*64<<10)
	if n := settle(c); n != 5 {
		t.Fatalf("three adjacent reads left %d chunks cached, want them and 2 ahead", n)
	}
	for i := int64(13); i < 20; i++ {
		if _, err := dr.ReadAt(buf, i*64<<10); err != nil {
			t.Fatal(err)
		}
	}
	if n := settle(c); n != 10+16 {
		t.Fatalf("a sequential reader of chunks 10-19 left %d chunks cached, want 26 (a full window ahead)", n)
	}
}

func TestCachedSlicesDoNoIO(t *testing.T) {
	r := newRepo(t, 64<<10)
	data := make([]byte, 4*64<<10)
	rand.NewChaCha8([32]byte{3}).Read(data)
	clear(data[2*64<<10 : 3*64<<10]) // chunk 2 is a zero chunk
	d := storeBytes(t, r, data)
	x, _ := r.LoadIndex(d)
	c := NewCache(CacheOptions{ChunkSize: 64 << 10, Readahead: -1})
	dr := NewDiskReader(r, x, c, "disk")
	if _, _, ok, _ := dr.CachedSlices(100, 4096); ok {
		t.Fatal("CachedSlices of a cold chunk answered")
	}
	if c.Stats().Entries != 0 {
		t.Fatal("CachedSlices of a cold chunk loaded it")
	}
	if parts, n, ok, err := dr.CachedSlices(2*64<<10+5, 100); !ok || err != nil || n != 100 || !bytes.Equal(bytes.Join(parts, nil), data[2*64<<10+5:2*64<<10+105]) {
		t.Fatalf("zero chunk: ok %v, %d bytes, %v", ok, n, err)
	}
	dr.ReadAt(make([]byte, 4096), 100) // decodes the frames holding it (random: 4 KiB frames, two)
	e, _ := c.lru.Peek(x.Chunks[0])
	first, last := e.framesOf(100, 4196)
	parts, n, ok, err := dr.CachedSlices(100, 4096)
	if !ok || err != nil || n != 4096 || !bytes.Equal(bytes.Join(parts, nil), data[100:4196]) {
		t.Fatalf("cached frames: ok %v, %d bytes, %v", ok, n, err)
	}
	if _, _, ok, _ := dr.CachedSlices(40<<10, 100); ok {
		t.Fatal("CachedSlices of a frame not decoded answered")
	}
	if ready, _ := readyFrames(c, x.Chunks[0]); ready != last-first+1 {
		t.Fatalf("CachedSlices decoded frames: %d ready, want %d", ready, last-first+1)
	}
}

// readLog is a filesystem that records every read of a chunk file: which
// file, where, how many bytes.
type readLog struct {
	durablefs.FS
	mu    sync.Mutex
	reads []chunkRead
}

type chunkRead struct {
	name   string
	off, n int64
}

type loggedFile struct {
	durablefs.File
	log *readLog
}

func (l *readLog) OpenFile(name string, flag int, perm os.FileMode) (durablefs.File, error) {
	f, err := l.FS.OpenFile(name, flag, perm)
	if err != nil || !strings.Contains(name, string(filepath.Separator)+"chunks"+string(filepath.Separator)) {
		return f, err
	}
	return loggedFile{f, l}, nil
}

func (f loggedFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	f.log.mu.Lock()
	f.log.reads = append(f.log.reads, chunkRead{filepath.Base(f.Name()), off, int64(len(p))})
	f.log.mu.Unlock()
	return n, err
}

func (f loggedFile) Read(p []byte) (int, error) {
	n, err := f.File.Read(p)
	f.log.mu.Lock()
	f.log.reads = append(f.log.reads, chunkRead{filepath.Base(f.Name()), -1, int64(len(p))})
	f.log.mu.Unlock()
	return n, err
}

func (l *readLog) SyncAll(dir string) error { return durablefs.SyncAll(l.FS, dir) }

func (l *readLog) take() []chunkRead {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.reads
	l.reads = nil
	return r
}

// TestColdReadReadsOnlyItsFrame checks what a cold 4 KiB read costs on disk:
// the chunk's first 16 KiB (header and frame table, and the first frames
// when they fit) and then the frame it needs, nothing else; once the frame
// table is kept, a read of an evicted chunk is one read of its frame. The
// frame tables count in the cache's bytes and stay within their share. The
// chunks are written as releases before 4 KiB raw frames wrote them (32 KiB
// frames, encodeChunkWide): such repositories keep reading this way.
func TestColdReadReadsOnlyItsFrame(t *testing.T) {
	log := &readLog{FS: durablefs.OS()}
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := InitFS(log, dir, InitOptions{ChunkSize: DefaultChunkSize})
	if err != nil {
		t.Fatal(err)
	}
	const chunks = 8
	data := testDisk(9, chunks*DefaultChunkSize)
	for i := range chunks { // no zero chunk: every chunk has a file
		data[i*DefaultChunkSize] = 1
	}
	d := storeBytesAs(t, r, data, encodeChunkWide)
	x, _ := r.LoadIndex(d)
	log.take()
	// A cache bound of 5 frames: reading 8 chunks evicts the first.
	c := NewCache(CacheOptions{Readahead: -1, MaxBytes: 5<<DefaultFrameShift + 8<<10})
	dr := NewDiskReader(r, x, c, "disk")
	read := func(off int64) {
		t.Helper()
		buf := make([]byte, 4096)
		if _, err := dr.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	layoutOf := func(k int) *chunkLayout {
		raw, err := os.ReadFile(r.ChunkPath(x.Chunks[k]))
		if err != nil {
			t.Fatal(err)
		}
		l, err := parseLayout(raw, int64(len(raw)))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	frame := 6
	off := int64(0*DefaultChunkSize + frame<<DefaultFrameShift + 100)
	read(off)
	fr := layoutOf(0).frames[frame]
	want := []chunkRead{{x.Chunks[0].String(), 0, headRead}, {x.Chunks[0].String(), fr.off, fr.size}}
	if got := log.take(); !slices.Equal(got, want) {
		t.Fatalf("cold read of frame %d: reads %v, want the first %d bytes and the frame's %d bytes at %d: %v", frame, got, headRead, fr.size, fr.off, want)
	}
	for k := 1; k < chunks; k++ {
		read(int64(k*DefaultChunkSize + 3<<DefaultFrameShift))
	}
	if _, ok := c.lru.Peek(x.Chunks[0]); ok {
		t.Fatalf("chunk 0 still cached after reads of 7 more chunks in a 5-frame cache (%+v)", c.Stats())
	}
	st := c.Stats()
	if st.Tables != chunks || st.TableBytes != chunks*layoutBytes(DefaultChunkSize>>DefaultFrameShift) {
		t.Fatalf("stats %+v: want the %d chunks' frame tables kept and counted", st, chunks)
	}
	if st.Bytes > st.MaxBytes || st.Bytes < st.TableBytes+int64(st.Entries)<<DefaultFrameShift {
		t.Fatalf("stats %+v: bytes must count frames and tables, within the bound", st)
	}
	log.take()
	frame = 2
	read(int64(frame<<DefaultFrameShift + 7))
	fr = layoutOf(0).frames[frame]
	want = []chunkRead{{x.Chunks[0].String(), fr.off, fr.size}}
	if got := log.take(); !slices.Equal(got, want) {
		t.Fatalf("read of an evicted chunk whose frame table is kept: reads %v, want only its frame %v", got, want)
	}
	if c.Stats().TableHits != 1 {
		t.Fatalf("stats %+v: want 1 frame table hit", c.Stats())
	}
	// Frame 0 lies in the first 16 KiB read when it compresses well.
	copy(data[:DefaultChunkSize], bytes.Repeat([]byte("boot sector "), DefaultChunkSize/12+1))
	d = storeBytesAs(t, r, data, encodeChunkWide)
	x, _ = r.LoadIndex(d)
	log.take()
	dr = NewDiskReader(r, x, NewCache(CacheOptions{Readahead: -1}), "disk")
	read(100)
	if got := log.take(); len(got) != 1 || got[0].off != 0 {
		t.Fatalf("cold read of a small frame 0: reads %v, want one read at offset 0", got)
	}
}

// TestTableBound checks that frame tables stay within their share of the
// cache's bound, counted in bytes: the oldest go, also when the tables are
// larger than the cache's chunk size foretold (a cache shared with a
// repository of larger chunks).
func TestTableBound(t *testing.T) {
	r := newRepo(t, DefaultChunkSize)
	const chunks = 24
	data := testDisk(4, chunks*DefaultChunkSize)
	for i := range chunks {
		data[i*DefaultChunkSize] = byte(i + 1)
	}
	d := storeBytesAs(t, r, data, encodeChunkWide) // tables of one size
	x, _ := r.LoadIndex(d)
	k := DefaultChunkSize >> DefaultFrameShift
	max := 10 * tableShare * layoutBytes(k) // room for 10 tables of this repository's chunks
	c := NewCache(CacheOptions{Readahead: -1, ChunkSize: 64 << 10, MaxBytes: max})
	dr := NewDiskReader(r, x, c, "disk")
	for i := range chunks {
		if _, err := dr.ReadAt(make([]byte, 10), int64(i*DefaultChunkSize)); err != nil {
			t.Fatal(err)
		}
	}
	st := c.Stats()
	if st.TableBytes > max/tableShare || st.Tables != 10 {
		t.Fatalf("stats %+v: want 10 tables within %d bytes", st, max/tableShare)
	}
	if _, ok := c.table(r, x.Chunks[0]); ok {
		t.Fatal("the oldest table is still kept")
	}
	if _, ok := c.table(r, x.Chunks[chunks-1]); !ok {
		t.Fatal("the newest table is not kept")
	}
}

// TestKeptTableOfARewrittenChunk: a chunk file stored again in another
// layout (pruned, then backed up again by another release) reads right,
// though its kept frame table describes the old file.
func TestKeptTableOfARewrittenChunk(t *testing.T) {
	r := newRepo(t, DefaultChunkSize)
	data := testDisk(11, DefaultChunkSize)
	copy(data, bytes.Repeat([]byte("log line "), DefaultChunkSize/9+1))
	d := storeBytes(t, r, data)
	x, _ := r.LoadIndex(d)
	c := NewCache(CacheOptions{Readahead: -1})
	dr := NewDiskReader(r, x, c, "disk")
	buf := make([]byte, 4096)
	off := int64(5<<DefaultFrameShift + 1)
	if _, err := dr.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	c.lru.Remove(x.Chunks[0])
	if err := os.WriteFile(r.ChunkPath(x.Chunks[0]), encodeChunkFrames(x.Chunks[0], data, 13, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dr.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
		t.Fatalf("read after the chunk was stored again with 8 KiB frames: %v", err)
	}
}

// TestFlatZstdFrames checks decodeFlatZstd against the zstd encoder's own
// frames: frames of one repeated byte (RLE blocks) and of random bytes (raw
// blocks) decode without the zstd decoder and give the encoded bytes, with or
// without zstd's checksum, in one block or several; frames with compressed
// blocks, cut short or of another length are left to the decoder.
func TestFlatZstdFrames(t *testing.T) {
	zstdCodecs()
	rnd := make([]byte, 300<<10)
	rand.NewChaCha8([32]byte{8}).Read(rnd)
	for _, n := range []int{1, 100, 4096, 32 << 10, 128<<10 + 5, 1 << 20} {
		for _, kind := range []string{"zeros", "0xab", "random"} {
			data := make([]byte, n)
			switch kind {
			case "0xab":
				for i := range data {
					data[i] = 0xab
				}
			case "random":
				copy(data, rnd)
				if n > len(rnd) {
					continue
				}
			}
			for _, enc := range []*zstd.Encoder{zstdFrameEnc, zstdEnc} {
				z := enc.EncodeAll(data, nil)
				dst := make([]byte, n)
				ok := decodeFlatZstd(z, dst)
				if ok && !bytes.Equal(dst, data) {
					t.Fatalf("%d bytes of %s: decoded wrong bytes", n, kind)
				}
				if !ok && kind != "random" && n >= 4096 && n < 1<<20 { // a 1 MiB run is matches, fast in zstd
					t.Errorf("%d bytes of %s (%d-byte frame): not decoded as a flat frame", n, kind, len(z))
				}
				if ok && (decodeFlatZstd(z[:len(z)-1], dst) || decodeFlatZstd(z, make([]byte, n+1)) || (n > 1 && decodeFlatZstd(z, dst[:n-1]))) {
					t.Errorf("%d bytes of %s: a cut frame or a frame of another length decoded", n, kind)
				}
			}
		}
	}
	z := zstdFrameEnc.EncodeAll(bytes.Repeat([]byte("rekindle"), 4096), nil)
	if decodeFlatZstd(z, make([]byte, 8*4096)) {
		t.Error("a frame of compressed blocks decoded as flat")
	}
}

// TestJoinedFramesLendOneSlice: frames decoded together (a whole chunk, or
// the frames one cold read spans) are lent as one slice, so a large read of
// a chunk in 4 KiB frames is not dozens of slices; frames decoded apart are
// lent apart; every slice lent is capped at its own bytes.
func TestJoinedFramesLendOneSlice(t *testing.T) {
	r := newRepo(t, DefaultChunkSize)
	data := make([]byte, 3*DefaultChunkSize)
	rand.NewChaCha8([32]byte{9}).Read(data) // random: 4 KiB frames
	d := storeBytes(t, r, data)
	x, _ := r.LoadIndex(d)
	c := NewCache(CacheOptions{Readahead: -1})
	dr := NewDiskReader(r, x, c, "disk")
	check := func(off int64, n, wantSlices int) {
		t.Helper()
		parts, got, err := dr.ReadSlices(off, n)
		if err != nil || got != n || !bytes.Equal(bytes.Join(parts, nil), data[off:off+int64(n)]) {
			t.Fatalf("ReadSlices(%d, %d): %d bytes, %v", off, n, got, err)
		}
		if len(parts) != wantSlices {
			t.Errorf("ReadSlices(%d, %d): %d slices, want %d", off, n, len(parts), wantSlices)
		}
		for _, p := range parts {
			if cap(p) != len(p) {
				t.Errorf("ReadSlices(%d, %d): a slice of %d bytes with room for %d", off, n, len(p), cap(p))
			}
		}
	}
	// Chunk 0 whole (as readahead and verify read it): one slice.
	if _, err := c.Get(r, x.Chunks[0]); err != nil {
		t.Fatal(err)
	}
	check(100, DefaultChunkSize-200, 1)
	// Chunk 1: one cold read of 20 KiB spans 6 frames, decoded together.
	check(DefaultChunkSize+1000, 20<<10, 1)
	// Two cold reads of frames 10 and 11 apart, then one across both.
	base := int64(2*DefaultChunkSize + 10<<RawFrameShift)
	check(base, 100, 1)
	check(base+1<<RawFrameShift, 100, 1)
	check(base+100, 1<<RawFrameShift, 2)
	// A read spanning chunks 0 and 1: a slice per chunk.
	check(DefaultChunkSize-4096, 8192+1000, 2)
}

// TestZeroFrameIsTheEncoders: the kept encoding of a frame of zeros is the
// zstd encoder's own, and a chunk with zero runs decodes and verifies.
func TestZeroFrameIsTheEncoders(t *testing.T) {
	zstdCodecs()
	for _, shift := range []uint{RawFrameShift, DefaultFrameShift} {
		if got, want := zeroFrame(shift), zstdFrameEnc.EncodeAll(make([]byte, 1<<shift), nil); !bytes.Equal(got, want) {
			t.Errorf("frames of 2^%d zeros: kept encoding %x, the encoder's %x", shift, got, want)
		}
	}
	data := make([]byte, DefaultChunkSize)
	rand.NewChaCha8([32]byte{13}).Read(data[:100<<10])
	if got, err := VerifyChunk(Sum(data), EncodeChunk(Sum(data), data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("chunk with zero frames: %v", err)
	}
}

// diskSHA256 reads dr whole in 4 KiB reads, as a guest makes them, and
// returns the SHA-256 of its bytes in hex.
func diskSHA256(t *testing.T, dr *DiskReader) string {
	t.Helper()
	h := sha256.New()
	buf := make([]byte, 4096)
	for off := int64(0); off < dr.Size(); off += int64(len(buf)) {
		n, err := dr.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		h.Write(buf[:n])
	}
	return hex.EncodeToString(h.Sum(nil))
}
