package site

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/simlab"
)

// BenchmarkSiteRecover recovers a primary site of 20 vApps of 5 VMs (100
// VMs, four priorities of five vApps) from its site package onto a
// recovery simulator, from the plan to every VM powered on, and, in the
// same run, a site of one 5-VM vApp the same way: the reference. Reported:
// site_s, vapp_s, site/vapp (20 vApps one after another would be 20), the
// protect cycle of the 100-VM site (protect_s; VM backups by the
// generated-disk stand-in for vCenter's backup engine, extract_s alone) and
// its package size.
//
//	go test -run '^$' -bench SiteRecover -benchtime 1x -timeout 30m ./orchestrator/site/
func BenchmarkSiteRecover(b *testing.B) {
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		vapp := recoverSite(b, ctx, 1, func(int) int { return 1 }, nil)
		m := map[string]float64{}
		site := recoverSite(b, ctx, 20, func(i int) int { return 1 + i%4 }, m)
		cancel()
		b.ReportMetric(site.Seconds(), "site_s")
		b.ReportMetric(vapp.Seconds(), "vapp_s")
		b.ReportMetric(site.Seconds()/vapp.Seconds(), "site/vapp")
		for k, v := range m {
			b.ReportMetric(v, k)
		}
	}
}

// recoverSite protects a primary of apps 5-VM vApps and recovers it,
// returning the time from the plan to every VM powered on; m, when set,
// gets the protect cycle's figures.
func recoverSite(b *testing.B, ctx context.Context, apps int, prio func(int) int, m map[string]float64) time.Duration {
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
	b.StartTimer()
	t0 := time.Now()
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
	d := time.Since(t0)
	b.StopTimer()
	vms, err := find.NewFinder(rec.Client).VirtualMachineList(ctx, simlab.Target+"/Resources/...")
	if err != nil {
		b.Fatal(err)
	}
	on := 0
	for _, vm := range vms {
		if st, err := vm.PowerState(ctx); err == nil && st == types.VirtualMachinePowerStatePoweredOn {
			on++
		}
	}
	if on < 5*apps {
		b.Fatalf("%d VMs powered on: want %d", on, 5*apps)
	}
	return d
}
