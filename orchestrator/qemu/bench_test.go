package qemu

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/testdata/testvm"
)

// Run in a private network namespace (port 111), e.g.
//
//	unshare -n sh -c 'ip link set lo up && go test -run ^$ -bench . -benchtime 3x ./orchestrator/qemu/'
//
// Each benchmark prints its figures beside the reference measured in the
// same run, and their ratio; the figures are medians over b.N iterations.

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkBootFromExport: seconds from orchestrator Start to the guest's
// boot marker, booting from rekindle's export, against testvm.Boot of the
// same image from a local raw file (the reference).
func BenchmarkBootFromExport(b *testing.B) {
	e := newEnv(b, testVM{name: "vm", mode: testvm.ModeBoot})
	ctx := context.Background()
	var export, local []float64
	for i := 0; i < b.N; i++ {
		start := time.Now()
		id, err := e.orch.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVM, VMs: []string{"vm"}, Server: "127.0.0.1"})
		if err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, bootWithin)
		err = e.drv.WaitReady(wctx, "vm", orchestrator.ReadyCheck{Heartbeat: true})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		export = append(export, e.vm("vm").Ready.Sub(start).Seconds())
		e.waitOff("vm", time.Minute)
		if err := e.orch.Stop(ctx, id); err != nil {
			b.Fatal(err)
		}

		img := testvm.Copy(b, filepath.Join(b.TempDir(), "local.img"))
		if err := testvm.SetMode(img, testvm.ModeBoot, 0); err != nil {
			b.Fatal(err)
		}
		res, err := testvm.Boot(ctx, img, nil)
		if err != nil {
			b.Fatal(err)
		}
		local = append(local, res.BootAt.Seconds())
	}
	b.ReportMetric(median(export), "export-boot-s")
	b.ReportMetric(median(local), "local-boot-s")
	b.ReportMetric(median(export)/median(local), "export/local")
	b.Logf("boot marker after Start (export) %v s, after QEMU start (local file) %v s", export, local)
}

// BenchmarkMigrate: the copy rate of the live mirror off the export
// (Relocate of a running, idle guest's 64 MiB disk) against qemu-img convert
// of the same disk from the same export to a local file (the reference).
func BenchmarkMigrate(b *testing.B) {
	e := newEnv(b, testVM{name: "vm", mode: testvm.ModeIdle})
	ctx := context.Background()
	var mirror, convert []float64
	const mib = 1 << 20
	for i := 0; i < b.N; i++ {
		id, err := e.orch.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVM, VMs: []string{"vm"}, Server: "127.0.0.1"})
		if err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, bootWithin)
		err = e.drv.WaitReady(wctx, "vm", orchestrator.ReadyCheck{Heartbeat: true})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		size := float64(e.vm("vm").Disks[0].SizeBytes)
		url := e.vm("vm").Disks[0].URL
		dir := b.TempDir()
		// Both copies read what the server has cached: the first convert
		// warms it, the second is timed.
		run(b, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, filepath.Join(dir, "warm.raw"))
		start := time.Now()
		run(b, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, filepath.Join(dir, "convert.raw"))
		convert = append(convert, size/mib/time.Since(start).Seconds())

		var took time.Duration
		e.orch.Events = func(ev orchestrator.Event) {
			if ev.Step == orchestrator.StepMigrate && ev.Phase == "done" {
				took = ev.Duration
			}
		}
		if err := e.orch.Migrate(ctx, id, filepath.Join(dir, "prod"+strconv.Itoa(i))); err != nil {
			b.Fatal(err)
		}
		e.orch.Events = nil
		mirror = append(mirror, size/mib/took.Seconds())
		if err := e.drv.PowerOff(ctx, "vm"); err != nil {
			b.Fatal(err)
		}
		if err := e.drv.Unregister(ctx, "vm"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(median(mirror), "mirror-MiB/s")
	b.ReportMetric(median(convert), "convert-MiB/s")
	b.ReportMetric(median(mirror)/median(convert), "mirror/convert")
	b.Logf("live mirror %v MiB/s, qemu-img convert %v MiB/s", mirror, convert)
}
