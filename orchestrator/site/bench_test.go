package site

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/simlab"
)

// BenchmarkSiteRecover recovers a primary site of 20 vApps of 5 VMs (100
// VMs, four priorities of five vApps) from its site package onto a
// recovery simulator, from the plan to every VM powered on, and, in the
// same run, a site of one 5-VM vApp the same way (the reference) and the
// 100-VM site again with one vApp at a time (Parallel 1). Reported:
// site_s, site_serial_s, vapp_s, site/vapp, site/serial; the CPU time the
// process (rekindle, the NFS server and the simulator: all in process)
// spent on each (site_cpu_s, site_serial_cpu_s, vapp_cpu_s,
// site/vapp_cpu), which load on a shared machine cannot change; the
// protect cycle of the 100-VM site (protect_s; VM backups by the
// generated-disk stand-in for vCenter's backup engine, extract_s alone) and
// its package size.
//
//	go test -run '^$' -bench SiteRecover -benchtime 1x -timeout 30m ./orchestrator/site/
func BenchmarkSiteRecover(b *testing.B) {
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		vapp, vappCPU := recoverSite(b, ctx, 1, func(int) int { return 1 }, 0, nil)
		m := map[string]float64{}
		prio := func(i int) int { return 1 + i%4 }
		site, siteCPU := recoverSite(b, ctx, 20, prio, 0, m)
		serial, serialCPU := recoverSite(b, ctx, 20, prio, 1, nil)
		cancel()
		b.ReportMetric(site.Seconds(), "site_s")
		b.ReportMetric(serial.Seconds(), "site_serial_s")
		b.ReportMetric(vapp.Seconds(), "vapp_s")
		b.ReportMetric(site.Seconds()/vapp.Seconds(), "site/vapp")
		b.ReportMetric(site.Seconds()/serial.Seconds(), "site/serial")
		b.ReportMetric(siteCPU.Seconds(), "site_cpu_s")
		b.ReportMetric(serialCPU.Seconds(), "site_serial_cpu_s")
		b.ReportMetric(vappCPU.Seconds(), "vapp_cpu_s")
		b.ReportMetric(siteCPU.Seconds()/vappCPU.Seconds(), "site/vapp_cpu")
		for k, v := range m {
			b.ReportMetric(v, k)
		}
	}
}

// recoverSite protects a primary of apps 5-VM vApps and recovers it with
// Recoverer.Parallel parallel, returning the time from the plan to every
// VM powered on and the process's CPU time meanwhile; m, when set, gets the
// protect cycle's figures.
func recoverSite(b *testing.B, ctx context.Context, apps int, prio func(int) int, parallel int, m map[string]float64) (time.Duration, time.Duration) {
	b.Helper()
	b.StopTimer()
	defer b.StartTimer()
	_, pc, members := appSite(b, ctx, apps, 5, prio)
	if m != nil {
		start := time.Now()
		if _, err := Extract(ctx, pc.Client, ExtractOptions{Site: "hq"}); err != nil {
			b.Fatal(err)
		}
		m["extract_s"] = time.Since(start).Seconds()
	}
	lab, rec, _, took := recoverLab(b, ctx, pc.Client, members, func(l *simlab.Lab) orchestrator.Driver { return l.Hosts })
	pkg, err := Load(lab.Repo, "latest")
	if err != nil {
		b.Fatal(err)
	}
	if m != nil {
		m["protect_s"] = took.Seconds()
		fi, err := os.Stat(filepath.Join(lab.Repo.Dir, "sites", pkg.ID+".json"))
		if err != nil {
			b.Fatal(err)
		}
		m["package_bytes"] = float64(fi.Size())
	}
	host, _, _ := net.SplitHostPort(lab.Service.NFSAddr().String())
	rec.Parallel = parallel
	if os.Getenv("REKINDLE_BENCH_STEPS") != "" {
		var mu sync.Mutex
		agg := map[string]time.Duration{}
		rec.Orchestrator.Events = func(e orchestrator.Event) {
			if e.Phase == "done" {
				k := e.Step
				switch {
				case strings.HasPrefix(k, StepVMPrefix):
					k = StepVMPrefix
				case strings.HasPrefix(k, StepVAppPrefix):
					k = StepVAppPrefix
				}
				mu.Lock()
				agg[k] += e.Duration
				mu.Unlock()
			}
		}
		defer func() { b.Logf("%d VMs: step time by step: %v", 5*apps, agg) }()
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.StartTimer()
	t0, cpu0 := time.Now(), cpu()
	plan, err := rec.Plan(ctx, []*Package{pkg}, Mapping{Site: "hq"}, RecoveryOptions{Cluster: simlab.Target, Server: host})
	if err != nil {
		b.Fatal(err)
	}
	id, err := rec.Create(ctx, plan)
	if err != nil {
		b.Fatal(err)
	}
	if err := rec.Resume(ctx, id); err != nil {
		b.Fatal(err)
	}
	d, dcpu := time.Since(t0), cpu()-cpu0
	b.StopTimer()
	v, err := view.NewManager(rec.Client).CreateContainerView(ctx, rec.Client.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Destroy(ctx)
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "runtime.powerState"}, &vms); err != nil {
		b.Fatal(err)
	}
	on := map[string]bool{}
	for _, vm := range vms {
		on[vm.Name] = vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
	}
	for _, ms := range members {
		for _, n := range ms {
			if !on[n] {
				b.Fatalf("%s not powered on after the recovery", n)
			}
		}
	}
	return d, dcpu
}
