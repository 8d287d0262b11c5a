package overlay

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestLargeWriteAllocates checks that a write of allocateMin or more into
// blocks the session has not written reserves its range of the data file
// before writing (an extent the filesystem knows, not delayed-allocation
// pages) and nothing more of the file, that a small write is left to
// delayed allocation, and that the bytes around both still read as the
// backup's: the bitmap, not the data file's allocation, decides what reads
// the origin.
func TestLargeWriteAllocates(t *testing.T) {
	fx := newFixture(t)
	// Not synced at each write, as a session's overlay: the extents are
	// looked at before anything flushes the pages.
	o := fx.open(t, Options{Salt: "s", BlockSize: DefaultBlockSize})
	model := bytes.Clone(fx.disk)
	const bs = DefaultBlockSize
	big := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{3}).Read(big)
	bigOff := int64(2 << 20)
	writeAt(t, o, diskPath, bigOff, big)
	model = modelWrite(model, bigOff, big)
	id, err := o.FileID(diskPath)
	if err != nil {
		t.Fatal(err)
	}
	data := o.dataPath(id)
	probe, err := os.CreateTemp(fx.upper, "probe")
	if err != nil {
		t.Fatal(err)
	}
	ferr := unix.Fallocate(int(probe.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 4096)
	probe.Close()
	os.Remove(probe.Name())
	if ferr != nil {
		t.Skipf("the upper directory's filesystem cannot fallocate: %v", ferr)
	}
	// Looked at right after the write: a sync of the machine in between
	// would allocate delayed pages too, and hide a missing reservation.
	var reserved int64
	for _, e := range fiemap(t, data) {
		end := e.logical + e.length
		if e.logical < bigOff || end > bigOff+int64(len(big)) {
			t.Errorf("extent [%d, %d) (flags %#x) outside the large write [%d, %d): more of the data file allocated than written", e.logical, end, e.flags, bigOff, bigOff+int64(len(big)))
		}
		if e.flags&fiemapDelalloc == 0 {
			reserved += e.length
		}
	}
	if reserved != int64(len(big)) {
		t.Errorf("data file has %d bytes reserved ahead of the write (extents %+v), want the large write's %d", reserved, fiemap(t, data), len(big))
	}

	// A 4 KiB write inside a block (filled first) is left to delayed
	// allocation. A sync of the machine landing between the write and the
	// look allocates it too: it takes three in a row to fail.
	small := bytes.Repeat([]byte{0xa5}, 4<<10)
	delayed := false
	var seen []fiemapExtent
	for try := int64(0); try < 3 && !delayed; try++ {
		off := (1+try)*bs + 512
		writeAt(t, o, diskPath, off, small)
		model = modelWrite(model, off, small)
		seen = fiemap(t, data)
		lo, hi := off&^4095, (off+int64(len(small))+4095)&^4095 // its pages
		delayed = true
		for _, e := range seen {
			if e.logical < hi && lo < e.logical+e.length && e.flags&fiemapDelalloc == 0 {
				delayed = false
			}
		}
	}
	if !delayed {
		t.Errorf("the small writes were reserved too (extents %+v): a fallocate per 4 KiB write costs more than it saves", seen)
	}
	checkContent(t, o, diskPath, model)
	f, err := o.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.(interface{ Sync() error }).Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	checkContent(t, o, diskPath, model)
}

// FIEMAP (linux/fiemap.h).
const (
	fiemapDelalloc = 0x4 // FIEMAP_EXTENT_DELALLOC
	fsIocFiemap    = 0xc020660b
)

type fiemapExtent struct {
	logical, physical, length int64
	_                         [2]uint64
	flags                     uint32
	_                         [3]uint32
}

// fiemap lists name's extents as the filesystem maps them now, without
// flushing first (delayed-allocation pages show as FIEMAP_EXTENT_DELALLOC).
func fiemap(t *testing.T, name string) []fiemapExtent {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const max = 64
	buf := make([]byte, 32+max*int(unsafe.Sizeof(fiemapExtent{})))
	binary.NativeEndian.PutUint64(buf[8:], ^uint64(0)) // fm_length: the whole file
	binary.NativeEndian.PutUint32(buf[24:], max)       // fm_extent_count
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		t.Skipf("FIEMAP on %s: %v", name, e)
	}
	n := binary.NativeEndian.Uint32(buf[20:]) // fm_mapped_extents
	exts := unsafe.Slice((*fiemapExtent)(unsafe.Pointer(&buf[32])), max)[:n]
	return append([]fiemapExtent(nil), exts...)
}
