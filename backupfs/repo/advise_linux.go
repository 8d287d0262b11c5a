//go:build linux

package repo

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// adviseRandom tells the kernel that f, a chunk file kept open for frame
// reads, is read at random (POSIX_FADV_RANDOM): a frame's pread then reads
// the pages it needs and nothing ahead. Without it, a read at the file's
// start (its first frames) or one right after the previous read of the same
// open file starts the kernel's readahead, which reads ahead of a 4 KiB frame
// up to 32 pages on this machine's disk. Whole-chunk reads (readahead, verify)
// open the file anew and keep the kernel's readahead. Best effort: a file
// that is not an *os.File, or an error, changes nothing.
func adviseRandom(f any) {
	sc, ok := f.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { unix.Fadvise(int(fd), 0, 0, unix.FADV_RANDOM) })
}
