package overlay

import (
	"bytes"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"

	"github.com/rekindle/rekindle/internal/durable"
)

// BenchmarkSeqWrite writes a 128 MiB disk in 1 MiB WRITEs into a fresh
// session, as a VM's sequential writes arrive over NFS: unsynced with one
// sync at the end (UNSTABLE + COMMIT) or synced after each (FILE_SYNC), into
// a data file whose range each write reserves first (durable.Allocator) or
// one that leaves ext4 to allocate per page (noAllocFS):
//
//	go test -run '^$' -bench SeqWrite -benchtime 1x -count 5 ./backupfs/overlay/
//
// cpu-us/op is the process's CPU per write.
func BenchmarkSeqWrite(b *testing.B) {
	const size, bs = 128 << 20, 1 << 20
	for _, sync := range []bool{false, true} {
		for _, fsys := range []struct {
			name string
			fs   durable.FS
		}{{"allocate", durable.OS()}, {"noalloc", noAllocFS{durable.OS()}}} {
			b.Run(fmt.Sprintf("sync=%v/%s", sync, fsys.name), func(b *testing.B) {
				root := b.TempDir()
				if err := os.MkdirAll(root+"/base", 0o755); err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(root+"/base/disk", bytes.Repeat([]byte{1}, size), 0o644); err != nil {
					b.Fatal(err)
				}
				buf := bytes.Repeat([]byte{2}, bs)
				var cpu time.Duration
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					upper := fmt.Sprintf("%s/upper%d", root, i)
					o, err := New(readOnlyFS{Filesystem: osfs.New(root + "/base"), opens: new(atomic.Int64)}, upper, Options{Salt: "s", BlockSize: 4096, FS: fsys.fs})
					if err != nil {
						b.Fatal(err)
					}
					f, err := o.OpenFile("/disk", os.O_RDWR, 0)
					if err != nil {
						b.Fatal(err)
					}
					syscall.Sync()
					c0 := cpuTime()
					b.StartTimer()
					for off := int64(0); off < size; off += bs {
						if _, err := f.(interface {
							WriteAt([]byte, int64) (int, error)
						}).WriteAt(buf, off); err != nil {
							b.Fatal(err)
						}
						if sync {
							if err := f.(interface{ Sync() error }).Sync(); err != nil {
								b.Fatal(err)
							}
						}
					}
					if err := f.(interface{ Sync() error }).Sync(); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					cpu += cpuTime() - c0
					f.Close()
					o.Close()
					os.RemoveAll(upper)
				}
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*size/bs), "cpu-us/op")
			})
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// noAllocFS is the real filesystem with files that cannot Allocate.
type noAllocFS struct{ durable.FS }

type noAllocFile struct{ durable.File }

func (n noAllocFS) OpenFile(name string, flag int, perm os.FileMode) (durable.File, error) {
	f, err := n.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return noAllocFile{f}, nil
}
