package repo

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentPages counts the pages of the file at path that the page cache
// holds (mincore of a mapping, which faults nothing in).
func residentPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// evictPages puts the file at path out of the page cache.
func evictPages(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unix.Fdatasync(int(f.Fd()))
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// TestFrameReadReadsNoAhead: a cold read of a chunk's first 4 KiB frame
// (file offset 1080, pages 0 and 1) through the repository's kept-open file
// brings only those pages into the page cache, where a plain read of the
// same bytes starts the kernel's readahead (at a file's first page it reads
// several pages more): chunk files kept for frame reads are advised random.
func TestFrameReadReadsNoAhead(t *testing.T) {
	r := newRepo(t, DefaultChunkSize)
	data := make([]byte, DefaultChunkSize)
	rand.NewChaCha8([32]byte{12}).Read(data)
	d := storeBytes(t, r, data)
	x, _ := r.LoadIndex(d)
	path := r.ChunkPath(x.Chunks[0])
	raw, _ := os.ReadFile(path)
	l, err := parseLayout(raw, int64(len(raw)))
	if err != nil || l.frameSize != 1<<RawFrameShift {
		t.Fatalf("chunk: %v, frames of %d bytes", err, l.frameSize)
	}
	fr := l.frames[0]
	pages := int((fr.off+fr.size-1)/int64(os.Getpagesize())) + 1 // the frame's pages
	evictPages(t, path)
	if n := residentPages(t, path); n != 0 {
		t.Skipf("%d pages of the chunk file stay cached after POSIX_FADV_DONTNEED: nothing to measure here", n)
	}
	plain, _ := os.Open(path)
	plain.ReadAt(make([]byte, fr.size), fr.off)
	plain.Close()
	control := residentPages(t, path)
	if control <= pages {
		t.Skipf("a plain read of the frame cached %d pages: this filesystem reads nothing ahead", control)
	}
	evictPages(t, path)
	dr, err := r.OpenDisk(d, NewCache(CacheOptions{Readahead: -1}), "disk")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := dr.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:4096]) {
		t.Fatalf("read: %v", err)
	}
	if n := residentPages(t, path); n != pages {
		t.Fatalf("a cold read of frame 0 left %d pages of the chunk file cached, want its %d (a plain read: %d)", n, pages, control)
	}
}
