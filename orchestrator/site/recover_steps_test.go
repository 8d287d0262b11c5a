package site

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/simlab"
)

// TestRecoverStartDelay: a vApp startup group with a start delay and no
// wait for its guest holds the next group back for the delay, as vCenter's
// own vApp power-on does: in the recovery vCenter's events, the second
// group's VmPoweredOnEvent comes no earlier than the delay after the
// first group's.
func TestRecoverStartDelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const delay = 2 // seconds
	_, pc, members := appSite(t, ctx, 1, 2, func(int) int { return 1 })
	const app, first, second = "DC0_C0_APP0", "DC0_C0_APP0_VM1", "DC0_C0_APP0_VM0"
	spec := types.VAppConfigSpec{Annotation: "rekindle-priority: 1"}
	for _, m := range []struct {
		vm           string
		order, delay int32
	}{{first, 1, delay}, {second, 2, 0}} {
		ref, err := findRef(ctx, pc.Client, "VirtualMachine", m.vm)
		if err != nil {
			t.Fatal(err)
		}
		spec.EntityConfig = append(spec.EntityConfig, types.VAppEntityConfigInfo{Key: &ref, StartOrder: m.order, StartDelay: m.delay,
			StartAction: "powerOn", WaitingForGuest: types.NewBool(false)})
	}
	ref, err := findRef(ctx, pc.Client, "VirtualApp", app)
	if err != nil {
		t.Fatal(err)
	}
	if err := object.NewVirtualApp(pc.Client, ref).UpdateConfig(ctx, spec); err != nil {
		t.Fatal(err)
	}
	_, rec, plan, _ := recoverLab(t, ctx, pc.Client, members, func(lab *simlab.Lab) orchestrator.Driver { return lab.Hosts })
	i := slices.IndexFunc(plan.VApps, func(a PlannedVApp) bool { return a.Name == app })
	if i < 0 {
		t.Fatalf("vApp %s not in the plan: %+v", app, plan.VApps)
	}
	for _, m := range plan.VApps[i].Members {
		if m.VM == first && (m.Group != 1 || m.StartDelay != delay || m.WaitForGuest) {
			t.Fatalf("planned %s: %+v: want group 1, start delay %d s, no wait for the guest", first, m, delay)
		}
	}
	id, err := rec.Create(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	evs, err := simlab.VMEvents(ctx, rec.Client)
	if err != nil {
		t.Fatal(err)
	}
	on := map[string]simlab.VMEvent{}
	for _, e := range evs {
		if _, ok := on[e.VM]; !ok && e.What == simlab.EventPoweredOn {
			on[e.VM] = e
		}
	}
	a, b := on[first], on[second]
	if a.VM == "" || b.VM == "" {
		t.Fatalf("power-on events %+v: want %s and %s", evs, first, second)
	}
	if gap := b.Time.Sub(a.Time); b.Key < a.Key || gap < delay*time.Second {
		t.Errorf("group 2 (%s) powered on %v after group 1 (%s, event %d, then %d): want no earlier than its start delay, %d s",
			second, gap, first, a.Key, b.Key, delay)
	}
}

// TestSiteRecoverFaultAtEachStep: a fault injected by the recovery
// vCenter at each step of a site recovery (networks, pools, folders,
// vApps, a restore session's mount, register, reconcile, guest
// customization and power-on, the startup order), after the step has
// done part of its work; then either a resume finishes the recovery with
// nothing made twice and every VM powered on once, and stop leaves the
// inventory as before; or stop right after the fault leaves it as before.
// One recovery site serves every case: each starts from the inventory the
// case before left, which its stop checked.
func TestSiteRecoverFaultAtEachStep(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, pc := primarySite(t, ctx)
	lab, rec, server := recoveryLab(t, ctx)
	rc := lab.Driver.Client()
	// One datacenter keeps the cases short: a vApp of two startup groups,
	// pools with reservations, a static address, a port group to make.
	dcs := []string{"DC0"}
	inv, err := Extract(ctx, pc, ExtractOptions{Site: "hq", Datacenters: dcs})
	if err != nil {
		t.Fatal(err)
	}
	nics := map[string][]NIC{}
	var protected []string
	for _, dc := range inv.Datacenters {
		for _, vm := range dc.VMs {
			nics[vm.Name] = vm.NICs
			if vm.VApp != "" || strings.Contains(vm.Pool, "RP1") {
				protected = append(protected, vm.Name)
			}
		}
	}
	if _, err := Protect(ctx, pc, lab.Repo, labImporter{lab: lab, dir: t.TempDir(), nics: nics},
		ProtectOptions{ExtractOptions: ExtractOptions{Site: "hq", Datacenters: dcs}, VMs: protected}); err != nil {
		t.Fatal(err)
	}
	pkg, err := Load(lab.Repo, "latest")
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, ctx, rc)
	plan, err := rec.Plan(ctx, []*Package{pkg}, Mapping{Site: "hq"}, RecoveryOptions{Cluster: simlab.Target, Server: server})
	if err != nil {
		t.Fatal(err)
	}
	var vms []string
	for _, vm := range plan.VMs {
		vms = append(vms, vm.Name)
	}
	svc := lab.Model.Service
	for _, tt := range []struct {
		step, method, object string
		skip                 int // calls that succeed before the fault: the step did part of its work
		stop                 bool
	}{
		{StepNetworks, "AddPortGroup", "HostNetworkSystem", 1, false},
		{StepPools, "CreateResourcePool", "ResourcePool", 1, true},
		{StepFolders, "CreateFolder", "Folder", 0, false},
		{StepVApps, "CreateVApp", "ResourcePool", 0, true},
		{"mount", "CreateNasDatastore", "HostDatastoreSystem", 1, false},
		{"register", "RegisterVM_Task", "Folder", 1, true},
		{"reconcile", "ReconfigVM_Task", "VirtualMachine", 1, false},
		{"customize", "CustomizeVM_Task", "VirtualMachine", 0, true},
		// The vApp's second startup group, its first one powered on. (A
		// skip count that runs out while the standalone VMs power on in
		// parallel races inside the simulator's fault injector.)
		{"power-on", "PowerOnVM_Task", "VirtualMachine", 1, false},
		{StepStartOrder, "UpdateVAppConfig", "VirtualApp", 0, false},
	} {
		name := fmt.Sprintf("%s/%s-after-%d/resume", tt.step, tt.method, tt.skip)
		if tt.stop {
			name = strings.TrimSuffix(name, "resume") + "stop"
		}
		if !t.Run(name, func(t *testing.T) {
			evs, err := simlab.VMEvents(ctx, rc)
			if err != nil {
				t.Fatal(err)
			}
			var from int32 // events of this case come after it
			for _, e := range evs {
				from = max(from, e.Key)
			}
			id, err := rec.Create(ctx, plan)
			if err != nil {
				t.Fatal(err)
			}
			msg := "injected fault in " + tt.method
			svc.AddFaultRule(&simulator.FaultInjectionRule{MethodName: tt.method, ObjectType: tt.object, ObjectName: "*",
				Probability: 1, SkipCount: tt.skip, MaxCount: 1, Enabled: true, Message: msg})
			err = rec.Resume(ctx, id)
			svc.ClearFaultRules()
			if err == nil || !strings.Contains(err.Error(), msg) {
				t.Fatalf("recovery with a fault in %s: %v, want the injected fault", tt.method, err)
			}
			want := []string{"step " + tt.step + ":"}
			if !slices.Contains([]string{StepNetworks, StepPools, StepFolders, StepVApps, StepStartOrder}, tt.step) {
				// a restore session's step: a vApp's, or a standalone VM's
				want = []string{"step " + StepVAppPrefix, "step " + StepVMPrefix}
			}
			if !slices.ContainsFunc(want, func(w string) bool { return strings.Contains(err.Error(), w) }) {
				t.Fatalf("the fault in %s failed %v: want it in %v", tt.method, err, want)
			}
			t.Log(err)
			if !tt.stop {
				if err := rec.Resume(ctx, id); err != nil {
					t.Fatalf("resume after a fault in %s: %v", tt.method, err)
				}
				// A duplicate fails the case before its stop: stop does not
				// know what the resume made twice.
				after := snapshot(t, ctx, rc)
				for kind, names := range after {
					seen := map[string]bool{}
					for _, n := range names {
						if seen[n] && !slices.Contains(before[kind], n) {
							t.Fatalf("%s after resume: %s twice: %v", kind, n, names)
						}
						seen[n] = true
					}
				}
				for _, vm := range vms {
					if !slices.Contains(after["VirtualMachine"], vm) {
						t.Errorf("after resume: no VM %s", vm)
					}
				}
				evs, err := simlab.VMEvents(ctx, rc)
				if err != nil {
					t.Fatal(err)
				}
				ons := map[string]int{}
				for _, e := range evs {
					if e.Key > from && e.What == simlab.EventPoweredOn {
						ons[e.VM]++
					}
				}
				for _, vm := range vms {
					if ons[vm] != 1 {
						t.Errorf("%s powered on %d times in this recovery and its resume: want once (%v)", vm, ons[vm], ons)
					}
				}
			}
			if err := rec.Stop(ctx, id); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if d := simlab.SnapshotDiff(snapshot(t, ctx, rc), before); d != "" {
				t.Fatalf("after stop, the recovery vCenter differs from before:\n%s", d)
			}
		}) {
			break // the cases after it would start from what this one left
		}
	}
}
