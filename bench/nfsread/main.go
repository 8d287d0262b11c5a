//go:build libnfs

// Command nfsread reads byte ranges of one file of an NFS export through
// libnfs (the client library of QEMU's nfs:// driver), from several
// connections at once, and prints one JSON object: the SHA-256 of each
// range's bytes (for tests to compare against the source) or, with -whole,
// the time and throughput of reading the whole file in -bs reads.
//
//	go build -tags libnfs -o bin/nfsread ./bench/nfsread
//	nfsread -url 'nfs://127.0.0.1/files?version=3&nfsport=N&mountport=N' -file /vm/pt/disk/p1/a.bin -ranges 0:4096,12345:70001 -conns 4
//	nfsread -url ... -file /points/vm/pt/disk-flat.vmdk -whole -bs 1048576 -limit 1073741824
//
// Each connection is its own libnfs context (a context is not safe for
// concurrent use); ranges are dealt to the connections round-robin and all
// connections read at the same time. Built only with -tags libnfs.
package main

/*
#cgo pkg-config: libnfs
#include <stdlib.h>
#include <stdint.h>
#include <fcntl.h>
#include <nfsc/libnfs.h>
*/
import "C"

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

type rng struct{ off, n int64 }

type result struct {
	Ranges        []string `json:"ranges,omitempty"` // sha256 hex per range, in -ranges order
	Bytes         int64    `json:"bytes"`
	Seconds       float64  `json:"seconds"`
	BytesPerSec   float64  `json:"bytes_per_second"`
	FirstByteSecs float64  `json:"first_read_seconds"`
}

func main() {
	url := flag.String("url", "", "nfs://server/export?version=3&nfsport=N&mountport=N")
	file := flag.String("file", "", "path of the file inside the export")
	ranges := flag.String("ranges", "", "off:len,off:len,...")
	conns := flag.Int("conns", 1, "connections reading at once")
	whole := flag.Bool("whole", false, "read the whole file (up to -limit) in -bs reads")
	bs := flag.Int64("bs", 1<<20, "read size with -whole")
	limit := flag.Int64("limit", 0, "with -whole, read at most this many bytes (0: all)")
	flag.Parse()
	res, err := run(*url, *file, *ranges, *conns, *whole, *bs, *limit)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nfsread:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

type conn struct {
	nfs *C.struct_nfs_context
	fh  *C.struct_nfsfh
}

func dial(url, file string) (*conn, int64, error) {
	nfs := C.nfs_init_context()
	if nfs == nil {
		return nil, 0, fmt.Errorf("nfs_init_context failed")
	}
	fail := func(what string) error {
		err := fmt.Errorf("%s: %s", what, C.GoString(C.nfs_get_error(nfs)))
		C.nfs_destroy_context(nfs)
		return err
	}
	curl := C.CString(url)
	defer C.free(unsafe.Pointer(curl))
	u := C.nfs_parse_url_dir(nfs, curl)
	if u == nil {
		return nil, 0, fail("parse url")
	}
	defer C.nfs_destroy_url(u)
	if C.nfs_mount(nfs, u.server, u.path) != 0 {
		return nil, 0, fail("mount")
	}
	cf := C.CString(file)
	defer C.free(unsafe.Pointer(cf))
	var fh *C.struct_nfsfh
	if C.nfs_open(nfs, cf, C.O_RDONLY, &fh) != 0 {
		return nil, 0, fail("open " + file)
	}
	var st C.struct_nfs_stat_64
	if C.nfs_fstat64(nfs, fh, &st) != 0 {
		return nil, 0, fail("fstat")
	}
	return &conn{nfs: nfs, fh: fh}, int64(st.nfs_size), nil
}

func (c *conn) close() {
	C.nfs_close(c.nfs, c.fh)
	C.nfs_destroy_context(c.nfs)
}

// pread fills b from off (libnfs may return less than asked: loop).
func (c *conn) pread(b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		m := C.nfs_pread(c.nfs, c.fh, C.uint64_t(off+int64(n)), C.uint64_t(len(b)-n), unsafe.Pointer(&b[n]))
		if m < 0 {
			return n, fmt.Errorf("pread at %d: %s", off+int64(n), C.GoString(C.nfs_get_error(c.nfs)))
		}
		if m == 0 {
			break
		}
		n += int(m)
	}
	return n, nil
}

func run(url, file, ranges string, nconn int, whole bool, bs, limit int64) (*result, error) {
	if url == "" || file == "" || nconn < 1 {
		return nil, fmt.Errorf("usage: nfsread -url URL -file PATH (-ranges off:len,... | -whole)")
	}
	cs := make([]*conn, nconn)
	var size int64
	for i := range cs {
		c, sz, err := dial(url, file)
		if err != nil {
			return nil, err
		}
		defer c.close()
		cs[i], size = c, sz
	}
	var rs []rng
	if whole {
		if limit <= 0 || limit > size {
			limit = size
		}
		for off := int64(0); off < limit; off += bs {
			rs = append(rs, rng{off, min(bs, limit-off)})
		}
	} else {
		for _, s := range strings.Split(ranges, ",") {
			a, b, ok := strings.Cut(s, ":")
			off, err1 := strconv.ParseInt(a, 10, 64)
			n, err2 := strconv.ParseInt(b, 10, 64)
			if !ok || err1 != nil || err2 != nil || off < 0 || n < 0 {
				return nil, fmt.Errorf("bad range %q", s)
			}
			rs = append(rs, rng{off, n})
		}
	}
	res := &result{}
	sums := make([]string, len(rs))
	errs := make([]error, nconn)
	var total int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	var first time.Duration
	for w := range cs {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			// With -whole each connection reads its own contiguous share,
			// in order (a sequential stream per connection).
			var mine []int
			if whole {
				per := (len(rs) + nconn - 1) / nconn
				for i := w * per; i < min(len(rs), (w+1)*per); i++ {
					mine = append(mine, i)
				}
			} else {
				for i := w; i < len(rs); i += nconn {
					mine = append(mine, i)
				}
			}
			buf := make([]byte, 0)
			for _, i := range mine {
				r := rs[i]
				if int64(cap(buf)) < r.n {
					buf = make([]byte, r.n)
				}
				b := buf[:r.n]
				n, err := cs[w].pread(b, r.off)
				if err != nil {
					errs[w] = err
					return
				}
				mu.Lock()
				if first == 0 {
					first = time.Since(start)
				}
				total += int64(n)
				mu.Unlock()
				if !whole {
					h := sha256.Sum256(b[:n])
					sums[i] = hex.EncodeToString(h[:])
				}
			}
		}(w)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	el := time.Since(start)
	res.Bytes, res.Seconds, res.FirstByteSecs = total, el.Seconds(), first.Seconds()
	res.BytesPerSec = float64(total) / el.Seconds()
	if !whole {
		res.Ranges = sums
	}
	return res, nil
}
