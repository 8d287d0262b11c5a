package simlab

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// Demo runs rekindle's main job end to end in a lab under a temporary
// folder, narrating to out: back up a 3-VM vApp, serve it over NFS, restore
// it on the simulated vCenter in startup order, migrate it to production
// storage, withdraw the export.
func Demo(ctx context.Context, out io.Writer, keep bool) error {
	dir, err := os.MkdirTemp("", "rekindle-demo-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	start := time.Now()
	var stepStart time.Time
	l, err := New(ctx, Options{Dir: dir, Events: func(e orchestrator.Event) {
		switch e.Phase {
		case "start":
			stepStart = time.Now()
			fmt.Fprintf(out, "  %-10s ...\n", e.Step)
		case "progress":
			if e.Step == orchestrator.StepMigrate {
				if e.Percent == 100 {
					fmt.Fprintf(out, "  %-10s   %s moved (+%s)\n", "", e.Message, time.Since(stepStart).Round(time.Millisecond))
				}
				return
			}
			fmt.Fprintf(out, "  %-10s   %s (+%s)\n", "", e.Message, time.Since(stepStart).Round(time.Millisecond))
		case "done":
			fmt.Fprintf(out, "  %-10s done in %s\n", e.Step, e.Duration.Round(time.Millisecond))
		case "failed":
			fmt.Fprintf(out, "  %-10s FAILED: %s\n", e.Step, e.Err)
		}
	}})
	if err != nil {
		return err
	}
	defer l.Close()
	say("rekindle demo (working folder %s)", dir)
	say("1. back up the vApp \"shop\": db01, app01, web01 (64 MiB disks each)")
	pts, err := l.ImportShop(ctx, 64<<20, vmgen.FillMixed)
	if err != nil {
		return err
	}
	for _, p := range pts {
		say("   %-6s restore point %s: %d MiB read, %d MiB stored", p.VM.Name, p.ID, p.Stats.BytesRead>>20, p.Stats.BytesStored>>20)
	}
	say("2. serve the repository over NFS on %s; vCenter simulator at %s", l.Service.NFSAddr(), l.Server.URL.Host)
	req := l.Request(orchestrator.KindVApp)
	plan, err := l.Orchestrator.Plan(ctx, req)
	if err != nil {
		return err
	}
	say("3. plan (computed without touching vCenter):")
	for gi, g := range plan.Groups {
		for _, name := range g {
			vm := plan.VM(name)
			say("   group %d: %-6s on %s", gi+1, name, vm.Host)
		}
	}
	say("4. instant recovery: expose the backup, register, rebuild the vApp, boot in order")
	t0 := time.Now()
	id, err := l.Orchestrator.Start(ctx, req)
	if err != nil {
		return fmt.Errorf("restore (session %s): %w", id, err)
	}
	say("   all %d VMs powered on in %s, straight from the backup (session %s)", len(plan.VMs), time.Since(t0).Round(time.Millisecond), id)
	if err := l.describe(ctx, out, id); err != nil {
		return err
	}
	say("5. migrate to production storage (Storage vMotion to LocalDS_0), then withdraw the export")
	if err := l.Orchestrator.Migrate(ctx, id, "LocalDS_0"); err != nil {
		return err
	}
	if err := l.describe(ctx, out, id); err != nil {
		return err
	}
	s, err := l.Catalog.Session(ctx, id)
	if err != nil {
		return err
	}
	rep, err := l.Repo.Verify(ctx, pts, nil)
	if err != nil {
		return err
	}
	say("6. session %s is %s; backups verified intact (%d chunks re-hashed, %d problems)", id, s.State, rep.Chunks, len(rep.Problems))
	say("done in %s", time.Since(start).Round(time.Millisecond))
	return nil
}

// describe prints where each VM of the session runs and from which datastore.
func (l *Lab) describe(ctx context.Context, out io.Writer, id string) error {
	_, plan, err := l.Orchestrator.LoadPlan(ctx, id)
	if err != nil {
		return err
	}
	f := find.NewFinder(l.Driver.Client(), true)
	dc, err := f.Datacenter(ctx, "DC0")
	if err != nil {
		return err
	}
	f.SetDatacenter(dc)
	pc := property.DefaultCollector(l.Driver.Client())
	for _, vm := range plan.VMs {
		o, err := f.VirtualMachine(ctx, vm.Name)
		if err != nil {
			return err
		}
		var m mo.VirtualMachine
		if err := pc.RetrieveOne(ctx, o.Reference(), []string{"runtime.powerState", "datastore", "guest.ipAddress"}, &m); err != nil {
			return err
		}
		var ds []string
		for _, r := range m.Datastore {
			var d mo.Datastore
			if err := pc.RetrieveOne(ctx, r, []string{"name"}, &d); err == nil {
				ds = append(ds, d.Name)
			}
		}
		fmt.Fprintf(out, "   %-6s %-10s datastore %v ip %s\n", vm.Name, m.Runtime.PowerState, ds, m.Guest.IpAddress)
	}
	dss, _ := f.DatastoreList(ctx, "*")
	var names []string
	for _, d := range dss {
		names = append(names, d.Name())
	}
	fmt.Fprintf(out, "   datastores now: %v\n", names)
	return nil
}
