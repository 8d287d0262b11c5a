// Command evict puts files out of the page cache, and only them: bench/nfs.sh
// runs it before every write run on the servers' targets (Ganesha's copy of
// the disk, rekindle's repositories), so that each run starts from the state
// a restored VM's disk is in, without dropping the whole machine's cache
// (echo 3 > /proc/sys/vm/drop_caches), which would also empty the page cache
// of every other program running beside the benchmark.
//
//	evict PATH...
//
// Each PATH is a file or a folder (every regular file under it). A file is
// fdatasynced first, so that its pages are clean, then dropped with
// posix_fadvise(POSIX_FADV_DONTNEED). It prints how many files and bytes it
// evicted (fincore(1) shows what stayed cached).
package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: evict PATH...")
		os.Exit(2)
	}
	var files, size int64
	for _, root := range os.Args[1:] {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			n, err := evict(p)
			if err != nil {
				return err
			}
			files, size = files+1, size+n
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "evict:", err)
			os.Exit(1)
		}
	}
	fmt.Printf("evicted %d files, %d bytes\n", files, size)
}

// evict drops name's pages and returns its size and the bytes still cached.
func evict(name string) (int64, error) {
	f, err := os.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Fdatasync(fd); err != nil {
		return 0, fmt.Errorf("fdatasync %s: %w", name, err)
	}
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return 0, fmt.Errorf("fadvise %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
