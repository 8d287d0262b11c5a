package repo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// openChunkFDs lists this process's open file descriptors on r's chunk
// files, as /proc/self/fd shows them (an unlinked one ends in " (deleted)").
func openChunkFDs(t *testing.T, r *Repo) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(l, filepath.Join(r.Dir, "chunks")+"/") {
			out = append(out, l)
		}
	}
	return out
}

// keptInode is the inode of chunk d's kept file, 0 when none is kept.
func keptInode(t *testing.T, r *Repo, d Digest) uint64 {
	t.Helper()
	r.files.mu.Lock()
	defer r.files.mu.Unlock()
	if r.files.open == nil {
		return 0
	}
	f, ok := r.files.open.Peek(d)
	if !ok {
		return 0
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func pathInode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// chunkFilesDisk stores a disk of n chunks, each with a distinct first byte
// so no two are the same chunk, as a restore point.
func chunkFilesDisk(t *testing.T, n int) (*Repo, Digest, []byte) {
	t.Helper()
	r := newRepo(t, DefaultChunkSize)
	data := testDisk(7, n*DefaultChunkSize)
	for i := range n {
		data[i*DefaultChunkSize] = byte(i + 1)
	}
	d := storeBytes(t, r, data)
	if err := r.SavePoint(pointOf(d, len(data))); err != nil {
		t.Fatal(err)
	}
	return r, d, data
}

// readThrough reads 4 KiB at off through a new, empty cache (so the read
// goes to the chunk file) and checks the bytes.
func readThrough(t *testing.T, r *Repo, d Digest, data []byte, off int64) {
	t.Helper()
	dr, err := r.OpenDisk(d, NewCache(CacheOptions{Readahead: -1}), "disk")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := dr.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
		t.Fatalf("read at %d: %v (bytes equal: %v)", off, err, bytes.Equal(buf, data[off:off+4096]))
	}
}

// TestChunkFilesKeptOpen: a second read of a chunk file, through an empty
// chunk cache, reuses the file the first opened; at most the bound stays
// open; with keeping off every read opens and closes.
func TestChunkFilesKeptOpen(t *testing.T) {
	const n = 6
	r, d, data := chunkFilesDisk(t, n)
	readThrough(t, r, d, data, 1<<DefaultFrameShift)
	readThrough(t, r, d, data, 5<<DefaultFrameShift)
	if got := r.files.opens.Load(); got != 1 {
		t.Fatalf("two reads of chunk 0 opened its file %d times, want once (kept open)", got)
	}
	if fds := openChunkFDs(t, r); len(fds) != 1 {
		t.Fatalf("open chunk files after reading one chunk: %v, want 1", fds)
	}

	r.SetOpenChunkFiles(3)
	for i := range n {
		readThrough(t, r, d, data, int64(i*DefaultChunkSize+3<<DefaultFrameShift))
	}
	if fds := openChunkFDs(t, r); len(fds) != 3 {
		t.Fatalf("open chunk files after reading %d chunks with a bound of 3: %d %v", n, len(fds), fds)
	}

	r.SetOpenChunkFiles(0)
	if fds := openChunkFDs(t, r); len(fds) != 0 {
		t.Fatalf("open chunk files after SetOpenChunkFiles(0): %v", fds)
	}
	before := r.files.opens.Load()
	readThrough(t, r, d, data, 2<<DefaultFrameShift)
	readThrough(t, r, d, data, 6<<DefaultFrameShift)
	if got := r.files.opens.Load() - before; got != 2 {
		t.Fatalf("two reads with keeping off opened %d files, want 2", got)
	}
	if fds := openChunkFDs(t, r); len(fds) != 0 {
		t.Fatalf("open chunk files with keeping off: %v", fds)
	}
}

// TestChunkFilesClosedByPrune: prune closes the kept files of the chunks it
// removes (no descriptor of an unlinked chunk is left, which would keep its
// blocks), and a chunk stored again after the prune is read through its new
// file, not the old one.
func TestChunkFilesClosedByPrune(t *testing.T) {
	const n = 4
	r, d, data := chunkFilesDisk(t, n)
	for i := range n {
		readThrough(t, r, d, data, int64(i*DefaultChunkSize+2<<DefaultFrameShift))
	}
	if fds := openChunkFDs(t, r); len(fds) != n {
		t.Fatalf("open chunk files after reading %d chunks: %v", n, fds)
	}
	x, _ := r.LoadIndex(d)
	old := keptInode(t, r, x.Chunks[1])
	if err := r.DeletePoint(pointOf(d, len(data)).ID); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Prune(context.Background(), PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ChunksRemoved != n {
		t.Fatalf("prune removed %d chunks, want %d", rep.ChunksRemoved, n)
	}
	if fds := openChunkFDs(t, r); len(fds) != 0 {
		t.Fatalf("chunk files still open after prune removed them: %v", fds)
	}

	// Stored again (new files), then read: through the new files. (The new
	// file may get the pruned one's inode number, free once it was closed.)
	d2 := storeBytes(t, r, data)
	readThrough(t, r, d2, data, 1*DefaultChunkSize+7<<DefaultFrameShift)
	if got, want := keptInode(t, r, x.Chunks[1]), pathInode(t, r.ChunkPath(x.Chunks[1])); got != want {
		t.Fatalf("chunk stored again after prune: kept file is inode %d, the chunk file is %d (the pruned one was %d)", got, want, old)
	}
	for _, l := range openChunkFDs(t, r) {
		if strings.HasSuffix(l, " (deleted)") {
			t.Fatalf("a removed chunk file is still open: %s", l)
		}
	}
}

// TestChunkFilesReplacedUnderneath: a chunk file replaced behind the
// repository's back (as another process storing a damaged chunk again
// would) while its old file is kept open: a read that fails through the old
// file is retried through the new one, which gives the right bytes and is
// the one kept from then on.
func TestChunkFilesReplacedUnderneath(t *testing.T) {
	r, d, data := chunkFilesDisk(t, 2)
	x, _ := r.LoadIndex(d)
	c := x.Chunks[1]
	path := r.ChunkPath(c)
	readThrough(t, r, d, data, DefaultChunkSize+1<<DefaultFrameShift)
	old := keptInode(t, r, c)
	if old != pathInode(t, path) {
		t.Fatal("chunk 1's file is not the one kept open")
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := parseLayout(good, int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	// Damage frame 4 of the kept (old) file in place, then put a good copy
	// in its place under a new inode.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5}, 64), l.frames[4].off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	tmp := filepath.Join(r.Dir, "tmp", "replaced")
	if err := os.WriteFile(tmp, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	lo, _ := l.frameSpan(4)
	readThrough(t, r, d, data, int64(DefaultChunkSize+lo+100))
	if got, want := keptInode(t, r, c), pathInode(t, path); got != want || got == old {
		t.Fatalf("after a failed read through the replaced file: kept inode %d, chunk file %d (old %d)", got, want, old)
	}
}
