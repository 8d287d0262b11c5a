package repo

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// TestFrameIndex: an index stored by PutIndex gets a frame index, and a disk
// opened through OpenDisk with nothing cached reads a cold 4 KiB block with
// one read of its frame (no header read). A stale table (the chunk stored
// again with other frames) still reads right and verify names it; a missing
// frame index is rebuilt; prune removes it with its index.
func TestFrameIndex(t *testing.T) {
	log := &readLog{FS: durablefs.OS()}
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := InitFS(log, dir, InitOptions{ChunkSize: DefaultChunkSize})
	if err != nil {
		t.Fatal(err)
	}
	const chunks = 8
	data := testDisk(11, chunks*DefaultChunkSize)
	for i := range chunks {
		data[i*DefaultChunkSize] = 1
	}
	d := storeBytes(t, r, data)
	if err := r.SavePoint(pointOf(d, len(data))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.frameIndexPath(d)); err != nil {
		t.Fatalf("no frame index after PutIndex: %v", err)
	}
	x, _ := r.LoadIndex(d)
	read := func(c *Cache, off int64) []chunkRead {
		t.Helper()
		dr, err := r.OpenDisk(d, c, "disk")
		if err != nil {
			t.Fatal(err)
		}
		log.take()
		buf := make([]byte, 4096)
		if _, err := dr.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
			t.Fatalf("read at %d: %v", off, err)
		}
		return log.take()
	}
	var tableBytes int64 // the chunks' tables, as the cache counts them
	for _, c := range x.Chunks {
		raw, _ := os.ReadFile(r.ChunkPath(c))
		l, _ := parseLayout(raw, int64(len(raw)))
		tableBytes += layoutBytes(len(l.frames))
	}
	k, frame := 3, 6
	raw, _ := os.ReadFile(r.ChunkPath(x.Chunks[k]))
	l, _ := parseLayout(raw, int64(len(raw)))
	fr := l.frames[frame]
	lo, _ := l.frameSpan(frame)
	off := int64(k*DefaultChunkSize + lo + 100)
	c := NewCache(CacheOptions{Readahead: -1})
	want := []chunkRead{{x.Chunks[k].String(), fr.off, fr.size}}
	if got := read(c, off); !slices.Equal(got, want) {
		t.Fatalf("cold read through a frame index: reads %v, want only the frame %v", got, want)
	}
	if st := c.Stats(); st.Tables != chunks || st.TableBytes != tableBytes {
		t.Fatalf("stats %+v: want %d tables loaded and counted", st, chunks)
	}

	// Stale: chunk k stored again with 8 KiB frames.
	chunk := data[k*DefaultChunkSize : (k+1)*DefaultChunkSize]
	if err := os.WriteFile(r.ChunkPath(x.Chunks[k]), encodeChunkFrames(x.Chunks[k], chunk, 13, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	read(NewCache(CacheOptions{Readahead: -1}), off) // checks the bytes
	rep, err := r.Verify(context.Background(), []*RestorePoint{pointOf(d, len(data))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != "frames" || !strings.Contains(rep.Problems[0].Error, "stale") {
		t.Fatalf("verify with a stale frame index: problems %+v, want one of kind frames naming it stale", rep.Problems)
	}

	// Missing: rebuilt in the background on open, from the chunks as they are now.
	if err := os.Remove(r.frameIndexPath(d)); err != nil {
		t.Fatal(err)
	}
	read(NewCache(CacheOptions{Readahead: -1}), off)
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(r.frameIndexPath(d)); err == nil {
			if _, busy := frameIndexBuilds.Load(frameIndexKey{r, d}); !busy {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("frame index not rebuilt after an open found it missing")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.verifyFrameIndex(d); err != nil {
		t.Fatalf("rebuilt frame index: %v", err)
	}

	// Damaged: ignored (each read checks), verify names it.
	b, _ := os.ReadFile(r.frameIndexPath(d))
	b[60] ^= 1
	if err := os.WriteFile(r.frameIndexPath(d), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.verifyFrameIndex(d); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("verify of a damaged frame index: %v, want a checksum mismatch", err)
	}
	if err := os.WriteFile(r.frameIndexPath(d), b, 0o644); err != nil { // keep it damaged for prune
		t.Fatal(err)
	}

	if err := r.DeletePoint(pointOf(d, len(data)).ID); err != nil {
		t.Fatal(err)
	}
	for _, busy := frameIndexBuilds.Load(frameIndexKey{r, d}); busy; _, busy = frameIndexBuilds.Load(frameIndexKey{r, d}) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := r.Prune(context.Background(), PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.frameIndexPath(d)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("frame index after prune removed its index: %v", err)
	}
}

// TestFrameIndexRebuildAndPrune: a reader's background rebuild of a missing
// frame index and a prune removing its index do not race into an orphan
// ".frames". While a prune holds the exclusive lock (index still there) the
// rebuild writes nothing and says the repository is locked; after a prune
// removed the index it writes nothing; a rebuild started from an open while
// a real prune runs (from its progress callback) leaves nothing behind; with
// no prune about it is written, and its shared lock is released.
func TestFrameIndexRebuildAndPrune(t *testing.T) {
	r := newRepo(t, DefaultChunkSize)
	data := testDisk(12, 4*DefaultChunkSize)
	for i := range 4 {
		data[i*DefaultChunkSize] = 1
	}
	d := storeBytes(t, r, data)
	x, err := r.LoadIndex(d)
	if err != nil {
		t.Fatal(err)
	}
	gone := func(what string) {
		t.Helper()
		if _, err := os.Stat(r.frameIndexPath(d)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: frame index %v, want none", what, err)
		}
	}
	if err := os.Remove(r.frameIndexPath(d)); err != nil {
		t.Fatal(err)
	}

	// A prune holds the repository, the index is not removed yet.
	prune, err := r.Lock(context.Background(), LockExclusive, "prune")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.rebuildFrameIndex(d, x); !errors.Is(err, ErrLocked) {
		t.Fatalf("rebuild while a prune holds the repository: %v, want ErrLocked", err)
	}
	gone("rebuild while a prune holds the repository")
	if err := prune.Unlock(); err != nil {
		t.Fatal(err)
	}

	// Nothing about: rebuilt, and no lock left behind.
	if err := r.rebuildFrameIndex(d, x); err != nil {
		t.Fatal(err)
	}
	if err := r.verifyFrameIndex(d); err != nil {
		t.Fatalf("rebuilt frame index: %v", err)
	}
	if locks, err := r.Locks(); err != nil || len(locks) != 0 {
		t.Fatalf("locks after a rebuild: %v %v, want none", locks, err)
	}
	if err := os.Remove(r.frameIndexPath(d)); err != nil {
		t.Fatal(err)
	}

	// A rebuild started from an open during a real prune that removes the
	// index: the callback runs while the prune holds its lock.
	if err := r.SavePoint(pointOf(d, len(data))); err != nil {
		t.Fatal(err)
	}
	if err := r.DeletePoint(pointOf(d, len(data)).ID); err != nil {
		t.Fatal(err)
	}
	started := false
	rep, err := r.Prune(context.Background(), PruneOptions{Progress: func(kind string, c Digest) {
		if started {
			return
		}
		started = true
		NewCache(CacheOptions{Readahead: -1}).LoadFrameIndex(r, d, x)
		for _, busy := frameIndexBuilds.Load(frameIndexKey{r, d}); busy; _, busy = frameIndexBuilds.Load(frameIndexKey{r, d}) {
			time.Sleep(5 * time.Millisecond)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !started || rep.IndexesRemoved != 1 {
		t.Fatalf("prune %+v: want index %s removed with the rebuild started in it", rep, d)
	}
	gone("rebuild during a prune")

	// The prune is over, the index is gone: a rebuild that read its chunks
	// before writes nothing.
	if err := r.rebuildFrameIndex(d, x); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("rebuild after its index was pruned: %v, want its index not found", err)
	}
	gone("rebuild after its index was pruned")
}
