package datastore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/testdata/guestimg"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// BenchmarkFilesVsPoints copies one large guest file (1 GiB; BENCH_FILE_MB
// to change) out of an ext4, an XFS and an NTFS volume over /files, and
// reads the same number of bytes of the same disk over /points, each through
// libnfs (bench/nfsread, 1 MiB reads, one connection) from a server started
// for that read (an empty chunk cache). It reports each read's MB/s, their
// ratio (files/points; the filesystem layer's cost), the server's CPU time
// per MiB of each (steadier than throughput on a shared machine), and the
// time from the cold start to the first listing of the volume's root
// (nfs-ls: mount, LOOKUPs that scan the disk's layout and open its volumes,
// READDIRPLUS of the root), beside a cold nfs-ls of the restore point's
// folder over /points (the client's own cost, and the manifest's):
//
//	scripts/netns-run go test -run XXX -bench FilesVsPoints -benchtime 5x ./nfsd/datastore
//
// Each subbenchmark logs a "row" line: the row of docs/benchmarks.md
// (medians over the iterations of each iteration's figures and ratios,
// files read back to back with points), with this command and the load
// average.
func BenchmarkFilesVsPoints(b *testing.B) {
	mb := int64(1024)
	if s := os.Getenv("BENCH_FILE_MB"); s != "" {
		mb, _ = strconv.ParseInt(s, 10, 64)
	}
	size := mb << 20
	dir := b.TempDir()
	tool := filepath.Join(dir, "nfsread")
	if out, err := exec.Command("go", "build", "-tags", "libnfs", "-o", tool, "../../bench/nfsread").CombinedOutput(); err != nil {
		b.Fatalf("building bench/nfsread: %v\n%s", err, out)
	}
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	f, err := os.Create(filepath.Join(src, "big.bin"))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4<<20)
	for w := int64(0); w < size; w += int64(len(buf)) {
		rand.Read(buf)
		f.Write(buf[:min(int64(len(buf)), size-w)])
	}
	f.Close()
	tree := guestimg.Tree{"big.bin": &guestimg.Want{Size: size, Mode: 0o644}}
	imgSize := size + size/8 + 64<<20
	imgs := map[string]string{}
	imgs["ext4"] = filepath.Join(dir, "ext4.raw")
	guestimg.Ext(b, imgs["ext4"], imgSize, src, "-t", "ext4", "-b", "4096")
	imgs["xfs"] = filepath.Join(dir, "xfs.raw")
	// One allocation group: mkfs.xfs -p (xfsprogs 6.1) writes a file larger
	// than an AG only up to the end of its first one (a hole after).
	guestimg.XFS(b, imgs["xfs"], imgSize, tree, src, "-d", "agcount=1")
	imgs["ntfs"] = filepath.Join(dir, "ntfs.raw")
	guestimg.NTFS(b, imgs["ntfs"], imgSize, src)
	os.RemoveAll(src)
	r, err := repo.Init(filepath.Join(dir, "repo"), repo.InitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	cat, err := catalog.Open(context.Background(), filepath.Join(dir, "catalog.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer cat.Close()
	pts := map[string]*repo.RestorePoint{}
	for _, fs := range []string{"ext4", "xfs", "ntfs"} {
		vm := "bench-" + fs
		folder, err := vmgen.Generate(filepath.Join(dir, "vm-"+fs), vmgen.Spec{Name: vm, Seed: 1,
			Disks: []vmgen.DiskSpec{{Source: imgs[fs], Format: vmgen.FormatRaw}}})
		if err != nil {
			b.Fatal(err)
		}
		if pts[fs], err = ingest.Import(context.Background(), r, folder, ingest.Options{}); err != nil {
			b.Fatal(err)
		}
		os.Remove(imgs[fs])
	}
	serve := func() (url func(string) string, stop func()) {
		svc, err := New(context.Background(), Config{Repo: r, Catalog: cat, StateDir: filepath.Join(dir, "state"), NFSListen: "127.0.0.1:0"})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- svc.Serve(ctx) }()
		_, port, _ := net.SplitHostPort(svc.NFSAddr().String())
		return func(p string) string {
				return fmt.Sprintf("nfs://127.0.0.1%s?version=3&nfsport=%s&mountport=%s", p, port, port)
			}, func() {
				cancel()
				svc.Close()
				<-done
			}
	}
	// cpu is the process's CPU time (the server's: the client is another
	// process), a steadier measure than wall time on a shared machine.
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	read := func(url, file string) float64 {
		out, err := exec.Command(tool, "-url", url, "-file", file, "-whole", "-bs", "1048576", "-limit", strconv.FormatInt(size, 10)).CombinedOutput()
		if err != nil {
			b.Fatalf("nfsread %s: %v\n%s", file, err, out)
		}
		var res struct {
			Bytes       int64   `json:"bytes"`
			BytesPerSec float64 `json:"bytes_per_second"`
		}
		if err := json.Unmarshal(out, &res); err != nil || res.Bytes != size {
			b.Fatalf("nfsread %s: %s (%v)", file, out, err)
		}
		return res.BytesPerSec / 1e6
	}
	// coldList is the time nfs-ls takes to list url, in ms; it must list
	// big.bin (the volume's root) or the point's disk.
	coldList := func(url string) float64 {
		t0 := time.Now()
		out, err := exec.Command("nfs-ls", url).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ".bin") && !strings.Contains(string(out), ".vmdk") {
			b.Fatalf("nfs-ls %s: %v\n%s", url, err, out)
		}
		return time.Since(t0).Seconds() * 1000
	}
	for _, fs := range []string{"ext4", "xfs", "ntfs"} {
		b.Run(fs, func(b *testing.B) {
			pt := pts[fs]
			vm := "bench-" + fs
			// Per iteration: files then points, back to back. The figures
			// are each one's best over the iterations (a shared machine
			// only ever slows a run down: the best is the least disturbed),
			// the ratio that of the bests; every iteration is logged.
			var files, points, ratio, list, listPoints, filesCPU, pointsCPU []float64
			mib := float64(size >> 20)
			for i := 0; i < b.N; i++ {
				url, stop := serve()
				list = append(list, coldList(url("/files/"+vm+"/"+pt.ID+"/"+pt.Disks[0].Name+"/whole")))
				c0 := cpu()
				f := read(url("/files"), "/"+vm+"/"+pt.ID+"/"+pt.Disks[0].Name+"/whole/big.bin")
				filesCPU = append(filesCPU, float64((cpu()-c0).Microseconds())/mib)
				stop()
				url, stop = serve()
				listPoints = append(listPoints, coldList(url("/points/"+vm+"/"+pt.ID)))
				c0 = cpu()
				p := read(url("/points"), "/"+vm+"/"+pt.ID+"/"+vm+"-flat.vmdk")
				pointsCPU = append(pointsCPU, float64((cpu()-c0).Microseconds())/mib)
				stop()
				files, points, ratio = append(files, f), append(points, p), append(ratio, f/p)
			}
			b.ReportMetric(slices.Max(files), "files-MB/s")
			b.ReportMetric(slices.Max(points), "points-MB/s")
			b.ReportMetric(slices.Max(files)/slices.Max(points), "ratio")
			b.ReportMetric(slices.Min(list), "cold-list-ms")
			b.ReportMetric(slices.Min(listPoints), "cold-list-points-ms")
			b.ReportMetric(slices.Min(filesCPU), "files-cpu-us/MiB")
			b.ReportMetric(slices.Min(pointsCPU), "points-cpu-us/MiB")
			cpuRatio := make([]float64, len(filesCPU))
			for i := range filesCPU {
				cpuRatio[i] = filesCPU[i] / pointsCPU[i]
			}
			// The row of docs/benchmarks.md: medians over the iterations
			// of each iteration's ratio (files and points read back to
			// back), the load average beside them.
			load, _ := os.ReadFile("/proc/loadavg")
			b.Logf("row (%s; load %s): | %s | %d MiB | %.0f | %.0f | %.2f | %.0f / %.0f | %.2f | %.1f / %.1f |",
				filesBenchCmd, strings.Join(strings.Fields(string(load))[:3], " "), fs, mb,
				median(files), median(points), median(ratio), median(filesCPU), median(pointsCPU), median(cpuRatio),
				median(list), median(listPoints))
			b.Logf("per iteration: ratio %.2f, files MB/s %.0f, points MB/s %.0f, files/points CPU µs per MiB %.0f / %.0f, cold listing ms %.1f / %.1f",
				ratio, files, points, filesCPU, pointsCPU, list, listPoints)
		})
	}
}

// filesBenchCmd reproduces BenchmarkFilesVsPoints's rows.
const filesBenchCmd = "scripts/netns-run go test -run XXX -bench FilesVsPoints -benchtime 5x ./nfsd/datastore"

// median is the middle of xs (the mean of the middle two when even).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
