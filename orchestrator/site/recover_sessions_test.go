package site

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/simlab"
	"github.com/rekindle/rekindle/orchestrator/vsphere"
)

// nasMounts counts the recovery simulator's CreateNasDatastore calls:
// how many times each datastore (by name) was mounted on each host.
type nasMounts struct {
	mu     sync.Mutex
	counts map[string]map[string]int // datastore -> host -> calls
	calls  int
}

// countNASMounts hooks the counter in front of lab's simulator handlers.
func countNASMounts(lab *simlab.Lab) *nasMounts {
	n := &nasMounts{counts: map[string]map[string]int{}}
	m := lab.Model.Map()
	prev := m.Handler
	m.Handler = func(ctx *simulator.Context, call *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		if req, ok := call.Body.(*types.CreateNasDatastore); ok {
			host := call.This.Value
			if dss, ok := ctx.Map.Get(call.This).(*simulator.HostDatastoreSystem); ok {
				host = dss.Host.Name
			}
			n.mu.Lock()
			if n.counts[req.Spec.LocalPath] == nil {
				n.counts[req.Spec.LocalPath] = map[string]int{}
			}
			n.counts[req.Spec.LocalPath][host]++
			n.calls++
			n.mu.Unlock()
		}
		if prev != nil {
			return prev(ctx, call)
		}
		return nil, nil
	}
	return n
}

// checkMounts says whether every restore session of plan p mounted its
// datastore once on each host its plan names, and nothing else was mounted;
// it returns how many datastores were mounted.
func (n *nasMounts) checkMounts(t *testing.T, ctx context.Context, rec *Recoverer, p *RecoveryPlan) int {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	want := map[string]map[string]int{}
	for key, sid := range p.Sessions {
		s, err := rec.cat().Session(ctx, sid)
		if err != nil {
			t.Fatal(err)
		}
		var sp orchestrator.Plan
		if err := json.Unmarshal(s.Request, &sp); err != nil {
			t.Fatal(err)
		}
		want[sp.Datastore] = map[string]int{}
		for _, h := range sp.Hosts {
			want[sp.Datastore][h] = 1
		}
		t.Logf("%s: session %s, %d VMs on hosts %v", key, sid, len(sp.VMs), sp.Hosts)
	}
	if len(want) != len(n.counts) {
		t.Errorf("%d datastores mounted, the plan's %d restore sessions have %d", len(n.counts), len(p.Sessions), len(want))
	}
	for ds, hosts := range n.counts {
		for h, c := range hosts {
			if want[ds][h] != c {
				t.Errorf("datastore %s mounted %d times on %s: want %d (the session's hosts %v)", ds, c, h, want[ds][h], want[ds])
			}
		}
	}
	return len(n.counts)
}

// TestRecoverOneSessionPerVApp: a site recovery runs one restore session
// per vApp, so each vApp's members share one export and one NFS datastore
// per host (counted in the recovery simulator's CreateNasDatastore calls),
// not one per VM; every VM powers on, and stop removes it all.
func TestRecoverOneSessionPerVApp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, pc, members := appSite(t, ctx, 2, 3, func(int) int { return 1 })
	lab, rec, plan, _ := recoverLab(t, ctx, pc.Client, members, func(l *simlab.Lab) orchestrator.Driver { return l.Hosts })
	before := snapshot(t, ctx, rec.Client)
	mounts := countNASMounts(lab)
	id, err := rec.Create(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, p, err := rec.LoadRecovery(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range p.Sessions {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	wantKeys := []string{StepVAppPrefix + simlab.Target + "/Resources/hq-DC0/DC0_C0_APP0", StepVAppPrefix + simlab.Target + "/Resources/hq-DC0/DC0_C0_APP1"}
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("restore sessions %v: want one per vApp %v", keys, wantKeys)
	}
	if got := mounts.checkMounts(t, ctx, rec, p); got != 2 {
		t.Errorf("%d datastores for 2 vApps of 3 VMs: want one per vApp", got)
	}
	evs := powerOnTimes(t, ctx, rec.Client)
	for app, ms := range members {
		for _, vm := range ms {
			if _, ok := evs[vm]; !ok {
				t.Errorf("%s of %s never powered on", vm, app)
			}
		}
	}
	if err := rec.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if d := simlab.SnapshotDiff(snapshot(t, ctx, rec.Client), before); d != "" {
		t.Errorf("after stop, the recovery vCenter differs from before:\n%s", d)
	}
}

// TestRecoverResumesPerVMPlan: a recovery recorded before sessions were
// per vApp (a plan without sessions_per, with one "vm:" step and session
// per VM) resumes with one session per VM, in each vApp's startup order,
// and stops cleanly.
func TestRecoverResumesPerVMPlan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, pc, members := appSite(t, ctx, 1, 2, func(int) int { return 1 })
	lab, rec, plan, _ := recoverLab(t, ctx, pc.Client, members, func(l *simlab.Lab) orchestrator.Driver { return l.Hosts })
	before := snapshot(t, ctx, rec.Client)
	plan.SessionsPer = "" // as recorded by an older rekindle
	mounts := countNASMounts(lab)
	id, err := rec.Create(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	s, err := rec.cat().Session(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, st := range s.Steps {
		steps = append(steps, st.Name)
	}
	wantSteps := []string{StepNetworks, StepPools, StepFolders, StepVApps, "vm:DC0_C0_APP0_VM1", "vm:DC0_C0_APP0_VM0", StepStartOrder}
	if !slices.Equal(steps, wantSteps) {
		t.Fatalf("steps of a per-VM plan %v: want %v", steps, wantSteps)
	}
	if err := rec.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, p, err := rec.LoadRecovery(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Sessions) != 2 || p.Sessions["DC0_C0_APP0_VM0"] == "" || p.Sessions["DC0_C0_APP0_VM1"] == "" {
		t.Errorf("restore sessions of a per-VM plan %v: want one per VM", p.Sessions)
	}
	if got := mounts.checkMounts(t, ctx, rec, p); got != 2 {
		t.Errorf("%d datastores: want one per VM (the plan's layout)", got)
	}
	evs := powerOnTimes(t, ctx, rec.Client)
	if a, b := evs["DC0_C0_APP0_VM1"], evs["DC0_C0_APP0_VM0"]; a.Key == 0 || b.Key == 0 || b.Key < a.Key {
		t.Errorf("power-on events VM1 %d, VM0 %d: want VM1 (group 1) first", a.Key, b.Key)
	}
	if err := rec.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if d := simlab.SnapshotDiff(snapshot(t, ctx, rec.Client), before); d != "" {
		t.Errorf("after stop, the recovery vCenter differs from before:\n%s", d)
	}
}

// TestRecoverLooksUpOnce: a site recovery looks the recovery site's
// hosts and networks up by name (container views) once for the whole
// recovery (one memo for all its restore sessions), not once per VM.
// Counted in the recovery simulator: rekindle's session's
// CreateContainerView calls for 2 vApps of 5 VMs; before, a VM took two
// (its host to register it on, its NIC's network).
func TestRecoverLooksUpOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, pc, members := appSite(t, ctx, 2, 5, func(int) int { return 1 })
	var gc *govmomi.Client
	lab, rec, plan, _ := recoverLab(t, ctx, pc.Client, members, func(l *simlab.Lab) orchestrator.Driver {
		var err error
		if gc, err = govmomi.NewClient(ctx, l.Server.URL, true); err != nil {
			t.Fatal(err)
		}
		gd, err := vsphere.New(ctx, gc.Client, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		l.Hosts.NoGuest = true // the guests report on a session of their own
		return &instantGuests{SimHosts: l.Hosts, guests: gd}
	})
	us, err := session.NewManager(rec.Client).UserSession(ctx)
	if err != nil || us == nil {
		t.Fatalf("rekindle's vCenter session: %v", err)
	}
	calls := countCalls(lab)
	calls.session = us.Key
	calls.start()
	id, err := rec.Create(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	n := calls.stop()
	t.Logf("%d calls for 10 VMs: %v", calls.total, n)
	// The recovery's own inventory read, each of the 3 hosts, the
	// networks (the restore plans' check, the NICs' backing): 6.
	if v := n["CreateContainerView"]; v > 6 {
		t.Errorf("%d lookups by name (CreateContainerView) for 10 VMs on 3 hosts and 1 network: want at most 6, once each", v)
	}
	evs := powerOnTimes(t, ctx, rec.Client)
	for _, ms := range members {
		for _, vm := range ms {
			if _, ok := evs[vm]; !ok {
				t.Errorf("%s never powered on", vm)
			}
		}
	}
}
