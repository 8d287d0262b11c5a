package site

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/simlab"
	"github.com/rekindle/rekindle/orchestrator/vsphere"
)

// BenchmarkSiteRecover recovers a primary site of 20 vApps of 5 VMs (100
// VMs, four priorities of five vApps, each vApp five startup groups of one
// VM) from its site package onto a recovery simulator, from the plan to
// every VM powered on, and, in the same run and configuration, a site of
// one 5-VM vApp the same way (the reference) and the 100-VM site again with
// one vApp at a time (Parallel 1). Two configurations:
//
//   - instant-guests: a guest reports VMware Tools running as its VM
//     powers on (SimHosts' stand-in) and no startup group waits for its
//     guest: the recovery is bound by CPU (rekindle, its NFS server and the
//     vCenter simulator all in this process);
//   - guest-boot-2s: a model of guest boot time: every guest reports tools
//     running 2 s after its VM powers on (simlab.PlayGuests), and every
//     startup group waits for its guest before the next one starts, as a
//     vApp's startup order does: the waiting that recovering the vApps of
//     one priority in parallel overlaps.
//
// Reported per configuration: site_s, site_serial_s, vapp_s, site/vapp,
// site/serial; the process's CPU time on each (site_cpu_s,
// site_serial_cpu_s, vapp_cpu_s, site/vapp_cpu, and per VM), which load on
// a shared machine cannot change; the vCenter calls rekindle made (its
// session's SOAP calls as the simulator counts them; the guest stand-ins
// call on sessions of their own) per VM (site_calls/vm, vapp_calls/vm);
// and, for instant-guests, the protect cycle of the 100-VM site
// (protect_s; VM backups by the generated-disk stand-in for vCenter's
// backup engine, extract_s alone) and its package size.
// REKINDLE_BENCH_STEPS=1 logs the time by step, REKINDLE_BENCH_CALLS=1
// the calls by method.
//
//	go test -run '^$' -bench SiteRecover -benchtime 1x -timeout 30m ./orchestrator/site/
func BenchmarkSiteRecover(b *testing.B) {
	for _, cfg := range []struct {
		name string
		boot time.Duration // 0: instant guests, no group waits for its guest
	}{{"instant-guests", 0}, {"guest-boot-2s", 2 * time.Second}} {
		b.Run(cfg.name, func(b *testing.B) {
			for range b.N {
				ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
				vapp := recoverSite(b, ctx, 1, func(int) int { return 1 }, 0, cfg.boot, nil)
				var m map[string]float64
				if cfg.boot == 0 {
					m = map[string]float64{}
				}
				prio := func(i int) int { return 1 + i%4 }
				site := recoverSite(b, ctx, 20, prio, 0, cfg.boot, m)
				serial := recoverSite(b, ctx, 20, prio, 1, cfg.boot, nil)
				cancel()
				b.ReportMetric(site.took.Seconds(), "site_s")
				b.ReportMetric(serial.took.Seconds(), "site_serial_s")
				b.ReportMetric(vapp.took.Seconds(), "vapp_s")
				b.ReportMetric(site.took.Seconds()/vapp.took.Seconds(), "site/vapp")
				b.ReportMetric(site.took.Seconds()/serial.took.Seconds(), "site/serial")
				b.ReportMetric(site.cpu.Seconds(), "site_cpu_s")
				b.ReportMetric(serial.cpu.Seconds(), "site_serial_cpu_s")
				b.ReportMetric(vapp.cpu.Seconds(), "vapp_cpu_s")
				b.ReportMetric(site.cpu.Seconds()/vapp.cpu.Seconds(), "site/vapp_cpu")
				b.ReportMetric(1000*site.cpu.Seconds()/float64(site.vms), "site_cpu_ms/vm")
				b.ReportMetric(1000*vapp.cpu.Seconds()/float64(vapp.vms), "vapp_cpu_ms/vm")
				b.ReportMetric(float64(site.calls)/float64(site.vms), "site_calls/vm")
				b.ReportMetric(float64(serial.calls)/float64(serial.vms), "serial_calls/vm")
				b.ReportMetric(float64(vapp.calls)/float64(vapp.vms), "vapp_calls/vm")
				for k, v := range m {
					b.ReportMetric(v, k)
				}
			}
		})
	}
}

// benchRecovery is what one recovery of recoverSite measured.
type benchRecovery struct {
	took, cpu time.Duration // from the plan to every VM powered on; the process's CPU time meanwhile
	calls     int           // vCenter calls of rekindle's session meanwhile
	vms       int
}

// recoverSite protects a primary of apps 5-VM vApps and recovers it with
// Recoverer.Parallel parallel; boot > 0 models guest boot time (every
// startup group waits for its guest, which reports up boot after power-on).
// m, when set, gets the protect cycle's figures.
func recoverSite(b *testing.B, ctx context.Context, apps int, prio func(int) int, parallel int, boot time.Duration, m map[string]float64) benchRecovery {
	b.Helper()
	b.StopTimer()
	defer b.StartTimer()
	_, pc, members := appSiteWaiting(b, ctx, apps, 5, prio, boot > 0)
	if m != nil {
		start := time.Now()
		if _, err := Extract(ctx, pc.Client, ExtractOptions{Site: "hq"}); err != nil {
			b.Fatal(err)
		}
		m["extract_s"] = time.Since(start).Seconds()
	}
	// The guests report through a session of their own, so that the calls
	// counted are rekindle's alone.
	var gc *govmomi.Client
	lab, rec, _, took := recoverLab(b, ctx, pc.Client, members, func(l *simlab.Lab) orchestrator.Driver {
		var err error
		if gc, err = govmomi.NewClient(ctx, l.Server.URL, true); err != nil {
			b.Fatal(err)
		}
		l.Hosts.NoGuest = true
		if boot > 0 {
			return l.Hosts // simlab.PlayGuests below
		}
		gd, err := vsphere.New(ctx, gc.Client, "", nil)
		if err != nil {
			b.Fatal(err)
		}
		return &instantGuests{SimHosts: l.Hosts, guests: gd}
	})
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
	calls := countCalls(lab)
	if os.Getenv("REKINDLE_BENCH_CALLS") != "" && (parallel == 1 || apps == 1) {
		// One step at a time: the calls by step and method.
		prev := rec.Orchestrator.Events
		rec.Orchestrator.Events = func(e orchestrator.Event) {
			calls.event(e)
			if prev != nil {
				prev(e)
			}
		}
	}
	if os.Getenv("REKINDLE_BENCH_STEPS") != "" {
		var mu sync.Mutex
		agg := map[string]time.Duration{}
		prev := rec.Orchestrator.Events
		rec.Orchestrator.Events = func(e orchestrator.Event) {
			if prev != nil {
				prev(e)
			}
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
	if boot > 0 {
		gctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- simlab.PlayGuests(gctx, gc.Client, boot) }()
		defer func() {
			stop()
			if err := <-done; err != nil {
				b.Error(err)
			}
		}()
	}
	us, err := session.NewManager(rec.Client).UserSession(ctx)
	if err != nil || us == nil {
		b.Fatalf("rekindle's vCenter session: %v", err)
	}
	calls.session = us.Key
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.StartTimer()
	t0, cpu0 := time.Now(), cpu()
	calls.start()
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
	r := benchRecovery{took: time.Since(t0), cpu: cpu() - cpu0, vms: 5 * apps}
	byMethod := calls.stop()
	r.calls = calls.total
	b.StopTimer()
	if os.Getenv("REKINDLE_BENCH_CALLS") != "" {
		var sb strings.Builder
		fmt.Fprintf(&sb, "%d VMs, parallel %d: %d vCenter calls: %v", r.vms, parallel, r.calls, byMethod)
		for _, st := range slices.Sorted(maps.Keys(calls.bySteps)) {
			fmt.Fprintf(&sb, "\n\tstep %s: %v", st, calls.bySteps[st])
		}
		b.Log(sb.String())
	}
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
	return r
}

// instantGuests is SimHosts whose guests report VMware Tools running (and
// an address) as soon as their VM powers on, through the guests' own
// vCenter session.
type instantGuests struct {
	*simlab.SimHosts
	guests *vsphere.Driver
	n      atomic.Int32
}

func (g *instantGuests) PowerOn(ctx context.Context, vm orchestrator.VMRef) error {
	if err := g.SimHosts.PowerOn(ctx, vm); err != nil {
		return err
	}
	n := g.n.Add(1)
	return simlab.PlayGuest(ctx, g.guests, vm, fmt.Sprintf("10.0.%d.%d", n/200, 10+n%200))
}

// callCounter counts the SOAP calls of one vCenter session (rekindle's) to
// the recovery simulator, by method, while it is started
// (simulator.Registry.Handler sees every call); with event fed the steps'
// events of a recovery that runs one step at a time, by step too.
type callCounter struct {
	session string // the vCenter session key counted

	mu      sync.Mutex
	on      bool
	total   int
	counts  map[string]int
	steps   []string                  // the steps running, innermost last
	bySteps map[string]map[string]int // step kind -> method -> calls
}

func countCalls(lab *simlab.Lab) *callCounter {
	c := &callCounter{}
	m := lab.Model.Map()
	prev := m.Handler
	m.Handler = func(ctx *simulator.Context, call *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		if ctx.Session != nil && ctx.Session.Key == c.session {
			c.mu.Lock()
			if c.on {
				c.counts[call.Name]++
				c.total++
				st := "(none)"
				if len(c.steps) > 0 {
					st = c.steps[len(c.steps)-1]
				}
				if c.bySteps[st] == nil {
					c.bySteps[st] = map[string]int{}
				}
				c.bySteps[st][call.Name]++
			}
			c.mu.Unlock()
		}
		if prev != nil {
			return prev(ctx, call)
		}
		return nil, nil
	}
	return c
}

func (c *callCounter) event(e orchestrator.Event) {
	k := e.Step
	if i := strings.Index(k, ":"); i >= 0 {
		k = k[:i+1]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch e.Phase {
	case "start":
		c.steps = append(c.steps, k)
	case "done", "failed":
		if len(c.steps) > 0 {
			c.steps = c.steps[:len(c.steps)-1]
		}
	}
}

func (c *callCounter) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on, c.total, c.counts, c.bySteps = true, 0, map[string]int{}, map[string]map[string]int{}
}

func (c *callCounter) stop() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = false
	return c.counts
}
