//go:build libnfs

// Command nfsfiles is the small-file client of bench/nfs.sh's metadata row:
// through libnfs (the client library QEMU's nfs:// driver and fio's nfs
// engine use), it creates N files in one folder of an NFS export, each with
// CREATE, a WRITE of -size bytes (UNSTABLE) and a COMMIT, and prints one JSON
// object: the time of each operation kind (median and 90th percentile, µs),
// CREATE's median over the first and the last -edge files (to show whether
// a CREATE costs more once the folder holds many files), and the whole
// run's wall time.
//
//	go build -tags libnfs -o bin/nfsfiles ./bench/nfsfiles
//	nfsfiles -url 'nfs://127.0.0.1/export?version=3&nfsport=2049&mountport=20048' -dir sub -n 2000
//
// Built only with -tags libnfs (cgo against libnfs-dev), so `go build ./...`
// does not need libnfs.
package main

/*
#cgo pkg-config: libnfs
#include <stdlib.h>
#include <stdint.h>
#include <nfsc/libnfs.h>
*/
import "C"

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"slices"
	"time"
	"unsafe"
)

type result struct {
	Files          int     `json:"files"`
	Seconds        float64 `json:"seconds"`
	FilesPerSecond float64 `json:"files_per_second"`
	CreateMedianUS float64 `json:"create_median_us"`
	CreateP90US    float64 `json:"create_p90_us"`
	WriteMedianUS  float64 `json:"write_median_us"`
	CommitMedianUS float64 `json:"commit_median_us"`
	// Means: files_per_second is 1e6 over their sum, where the medians
	// leave out the stalls (a folder of spares made, a log grown, a
	// scheduler that ran something else).
	CreateMeanUS  float64 `json:"create_mean_us"`
	WriteMeanUS   float64 `json:"write_mean_us"`
	CommitMeanUS  float64 `json:"commit_mean_us"`
	CloseMeanUS   float64 `json:"close_mean_us"` // libnfs COMMITs again on close
	WriteP99US    float64 `json:"write_p99_us"`
	CreateFirstUS float64 `json:"create_first_us"` // median over the first -edge files
	CreateLastUS  float64 `json:"create_last_us"`  // median over the last -edge files
	Edge          int     `json:"edge"`
}

func main() {
	url := flag.String("url", "", "nfs://server/export?version=3&nfsport=N&mountport=N")
	dir := flag.String("dir", "", "folder inside the export to create the files in (must exist)")
	n := flag.Int("n", 2000, "files to create")
	size := flag.Int("size", 4096, "bytes written to each file")
	edge := flag.Int("edge", 10, "files at each end whose CREATE medians are compared")
	prefix := flag.String("prefix", "f", "file name prefix")
	flag.Parse()
	if *url == "" || *n < 1 {
		fmt.Fprintln(os.Stderr, "usage: nfsfiles -url URL [-dir DIR] [-n N] [-size BYTES]")
		os.Exit(2)
	}
	res, err := run(*url, *dir, *prefix, *n, *size, min(*edge, *n))
	if err != nil {
		fmt.Fprintln(os.Stderr, "nfsfiles:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func run(url, dir, prefix string, n, size, edge int) (*result, error) {
	nfs := C.nfs_init_context()
	if nfs == nil {
		return nil, fmt.Errorf("nfs_init_context failed")
	}
	defer C.nfs_destroy_context(nfs)
	fail := func(what string) error { return fmt.Errorf("%s: %s", what, C.GoString(C.nfs_get_error(nfs))) }
	curl := C.CString(url)
	defer C.free(unsafe.Pointer(curl))
	u := C.nfs_parse_url_dir(nfs, curl)
	if u == nil {
		return nil, fail("parse url")
	}
	defer C.nfs_destroy_url(u)
	if C.nfs_mount(nfs, u.server, u.path) != 0 {
		return nil, fail("mount")
	}
	buf := C.malloc(C.size_t(size))
	defer C.free(buf)
	data := unsafe.Slice((*byte)(buf), size)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	creates := make([]time.Duration, n)
	writes := make([]time.Duration, n)
	commits := make([]time.Duration, n)
	closes := make([]time.Duration, n)
	t0 := time.Now()
	for i := range n {
		p := C.CString("/" + path.Join(dir, fmt.Sprintf("%s%05d", prefix, i)))
		var fh *C.struct_nfsfh
		t := time.Now()
		rc := C.nfs_creat(nfs, p, 0o644, &fh)
		creates[i] = time.Since(t)
		C.free(unsafe.Pointer(p))
		if rc != 0 {
			return nil, fail(fmt.Sprintf("create file %d", i))
		}
		t = time.Now()
		if C.nfs_pwrite(nfs, fh, 0, C.uint64_t(size), buf) != C.int(size) {
			return nil, fail(fmt.Sprintf("write file %d", i))
		}
		writes[i] = time.Since(t)
		t = time.Now()
		if C.nfs_fsync(nfs, fh) != 0 {
			return nil, fail(fmt.Sprintf("commit file %d", i))
		}
		commits[i] = time.Since(t)
		t = time.Now()
		if C.nfs_close(nfs, fh) != 0 {
			return nil, fail(fmt.Sprintf("close file %d", i))
		}
		closes[i] = time.Since(t)
	}
	total := time.Since(t0)
	return &result{
		Files: n, Seconds: total.Seconds(), FilesPerSecond: float64(n) / total.Seconds(),
		CreateMedianUS: pct(creates, 50), CreateP90US: pct(creates, 90),
		WriteMedianUS: pct(writes, 50), CommitMedianUS: pct(commits, 50),
		CreateMeanUS: mean(creates), WriteMeanUS: mean(writes), CommitMeanUS: mean(commits), CloseMeanUS: mean(closes),
		WriteP99US:    pct(writes, 99),
		CreateFirstUS: pct(creates[:edge], 50), CreateLastUS: pct(creates[n-edge:], 50), Edge: edge,
	}, nil
}

// pct is the p-th percentile of ds, in µs.
func pct(ds []time.Duration, p int) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[(len(s)-1)*p/100].Nanoseconds()) / 1e3
}

// mean is the mean of ds, in µs.
func mean(ds []time.Duration) float64 {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return float64(sum.Nanoseconds()) / 1e3 / float64(len(ds))
}
