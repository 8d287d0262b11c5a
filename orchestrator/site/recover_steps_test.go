package site

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
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
