package orchestrator_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/drivertest"
	"github.com/rekindle/rekindle/orchestrator/storeapi"
)

// memExporter is a stand-in for the datastore service: it records the
// sessions it publishes.
type memExporter struct {
	mu        sync.Mutex
	published map[string]storeapi.PublishRequest
	discarded []string
}

func (e *memExporter) Publish(ctx context.Context, req storeapi.PublishRequest) (*storeapi.SessionInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.published == nil {
		e.published = map[string]storeapi.PublishRequest{}
	}
	e.published[req.ID] = req
	return &storeapi.SessionInfo{ID: req.ID, NFSPath: "10.0.0.5:/rekindle/" + req.ID, Export: "/rekindle/" + req.ID}, nil
}

func (e *memExporter) Discard(ctx context.Context, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.published[id]; !ok {
		return fmt.Errorf("session %s: %w", id, storeapi.ErrNotFound)
	}
	delete(e.published, id)
	e.discarded = append(e.discarded, id)
	return nil
}

type rig struct {
	o   *orchestrator.Orchestrator
	d   *drivertest.Memory
	exp *memExporter
	cat *catalog.Catalog
}

// newRig indexes a three-tier vApp "shop" (db, then app, then web, each
// waiting for its guest) and wires an orchestrator to a Memory driver.
func newRig(t *testing.T, manual bool) *rig {
	t.Helper()
	ctx := context.Background()
	cat, err := catalog.Open(ctx, filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	created := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	for i, vm := range []string{"db", "app", "web"} {
		p := &repo.RestorePoint{Format: 1, ID: fmt.Sprintf("20261121T100000Z-%06x", i), App: "shop", Created: created,
			VM:    repo.VMIdentity{Name: vm, NumCPU: 1 + i, MemoryMB: 512},
			Disks: []repo.Disk{{Name: vm, Controller: "scsi0:0", Adapter: "pvscsi", Size: 1 << 30, Index: repo.Digest{byte(i + 1)}}},
			NICs:  []repo.NIC{{Key: "ethernet0", Network: "prod", Type: "vmxnet3", MAC: fmt.Sprintf("00:50:56:00:00:%02x", i)}}}
		if err := cat.IndexPoint(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := cat.IndexApp(ctx, &repo.App{Format: 1, Name: "shop", Updated: created, Members: []repo.AppMember{
		{VM: "web", Group: 3, WaitForGuest: true}, {VM: "db", Group: 1, WaitForGuest: true}, {VM: "app", Group: 2, WaitForGuest: true}}}); err != nil {
		t.Fatal(err)
	}
	d := drivertest.NewMemory(manual, "h0", "h1")
	exp := &memExporter{}
	return &rig{o: &orchestrator.Orchestrator{Catalog: cat, Driver: d, Exporter: exp}, d: d, exp: exp, cat: cat}
}

var shop = orchestrator.Request{Kind: orchestrator.KindVApp, App: "shop", Target: "/dc/host/c0", Server: "10.0.0.5"}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// callIndex is the position of the first call with the given text, -1 if none.
func callIndex(calls []string, call string) int { return slices.Index(calls, call) }

func TestSessionRunsStepsInOrder(t *testing.T) {
	r := newRig(t, false)
	ctx := ctxT(t)
	id, err := r.o.Start(ctx, shop)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.exp.published[id]; !ok || len(r.exp.published[id].VMs) != 3 {
		t.Fatalf("published %v: want session %s with 3 VMs", r.exp.published, id)
	}
	vms := r.d.VMs()
	if len(vms) != 3 {
		t.Fatalf("VMs %v: want db, app, web", vms)
	}
	calls := r.d.Calls()
	for _, name := range []string{"db", "app", "web"} {
		v := vms[name]
		if !v.On || v.Placement.Datastore != id || v.Placement.VMXPath != name+"/"+name+".vmx" || v.Placement.Pool != "/dc/host/c0/shop" {
			t.Errorf("%s: %+v: want on, from %s/%s/%s.vmx, in the vApp", name, v, id, name, name)
		}
		if len(v.Spec.Disks) != 1 || v.Spec.Disks[0].File != fmt.Sprintf("[%s] %s/%s.vmdk", id, name, name) || len(v.Spec.NICs) != 1 {
			t.Errorf("%s: reconciled %+v", name, v.Spec)
		}
	}
	// Mount before register, register before power-on; groups in order.
	mount := callIndex(calls, "MountNFS h0 "+id)
	reg := callIndex(calls, "RegisterVM db")
	if mount < 0 || reg < mount {
		t.Errorf("calls %v: want MountNFS before RegisterVM", calls)
	}
	var on []int
	for _, ref := range []string{refOf(r.d, "db"), refOf(r.d, "app"), refOf(r.d, "web")} {
		on = append(on, callIndex(calls, "PowerOn "+ref))
	}
	if !slices.IsSorted(on) || on[0] < reg {
		t.Errorf("power-on positions %v in %v: want db, app, web after registration", on, calls)
	}
	s, err := r.cat.Session(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range s.Steps {
		if st.State != catalog.StepDone {
			t.Errorf("step %s: %s", st.Name, st.State)
		}
	}
}

func refOf(d *drivertest.Memory, name string) string {
	ref, _ := d.FindVM(context.Background(), name)
	return string(ref)
}

// TestSessionBootWaitsForGuest: a group starts only once the previous
// group's guests are up.
func TestSessionBootWaitsForGuest(t *testing.T) {
	r := newRig(t, true)
	ctx := ctxT(t)
	done := make(chan error, 1)
	go func() {
		_, err := r.o.Start(ctx, shop)
		done <- err
	}()
	// until polls cond until it holds.
	until := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("never: %s; calls %v", what, r.d.Calls())
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	order := []string{"db", "app", "web"}
	for i, name := range order {
		until(name+" powered on", func() bool { v, ok := r.d.VMs()[name]; return ok && v.On })
		ref := refOf(r.d, name)
		// The runner now waits for this guest, or (wrongly) powers on the
		// next group: whichever comes first.
		until("a wait for "+name+" or a later power-on", func() bool {
			if slices.Contains(r.d.Calls(), "WaitReady "+ref) {
				return true
			}
			for _, later := range order[i+1:] {
				if r.d.VMs()[later].On {
					return true
				}
			}
			return false
		})
		for _, later := range order[i+1:] {
			if r.d.VMs()[later].On {
				t.Fatalf("%s powered on before %s's guest was up", later, name)
			}
		}
		if err := r.d.SetReady(orchestrator.VMRef(ref)); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSessionResumeAfterFault fails each step's driver call once, resumes,
// and checks nothing was made twice.
func TestSessionResumeAfterFault(t *testing.T) {
	for _, method := range []string{"MountNFS", "EnsureApp", "RegisterVM", "Reconcile", "PowerOn"} {
		t.Run(method, func(t *testing.T) {
			r := newRig(t, false)
			ctx := ctxT(t)
			fault := errors.New("injected fault")
			r.d.Fail(method, fault)
			id, err := r.o.Start(ctx, shop)
			if !errors.Is(err, fault) || id == "" {
				t.Fatalf("Start with a failing %s: %q, %v", method, id, err)
			}
			s, _ := r.cat.Session(ctx, id)
			if s.State != catalog.SessionFailed {
				t.Fatalf("session state %s, want failed", s.State)
			}
			if err := r.o.Resume(ctx, id); err != nil {
				t.Fatal(err)
			}
			vms := r.d.VMs()
			if len(vms) != 3 || len(r.d.Apps()) != 1 || len(r.exp.published) != 1 {
				t.Fatalf("after resume: %d VMs, apps %v, sessions %v: want 3, 1, 1", len(vms), r.d.Apps(), r.exp.published)
			}
			for name, v := range vms {
				if !v.On {
					t.Errorf("%s is off after resume", name)
				}
			}
		})
	}
}

// TestSessionStop undoes a restore: no VM, vApp, mount or export is left.
func TestSessionStop(t *testing.T) {
	r := newRig(t, false)
	ctx := ctxT(t)
	id, err := r.o.Start(ctx, shop)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.o.Stop(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if vms, apps := r.d.VMs(), r.d.Apps(); len(vms) != 0 || len(apps) != 0 {
		t.Fatalf("after stop: VMs %v, apps %v", vms, apps)
	}
	for _, h := range []string{"h0", "h1"} {
		if m := r.d.Mounts(h); len(m) != 0 {
			t.Errorf("host %s still mounts %v", h, m)
		}
	}
	if len(r.exp.published) != 0 || !slices.Contains(r.exp.discarded, id) {
		t.Errorf("export of %s not discarded: %v", id, r.exp.published)
	}
	s, _ := r.cat.Session(ctx, id)
	if s.State != catalog.SessionStopped {
		t.Errorf("state %s, want stopped", s.State)
	}
	if err := r.o.Resume(ctx, id); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("resume of a stopped session: %v", err)
	}
}

// TestSessionSeveralVMs: a vms session restores several VMs from one
// export (one mount per host), each from the point Points names (or its
// latest), into the target with no vApp of its own, powered on in the
// order named with no wait between them.
func TestSessionSeveralVMs(t *testing.T) {
	r := newRig(t, true) // manual: nothing is ready unless told; a wait would hang
	ctx := ctxT(t)
	newer := &repo.RestorePoint{Format: 1, ID: "20261122T100000Z-000009", Created: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC),
		VM:    repo.VMIdentity{Name: "db", NumCPU: 1, MemoryMB: 512},
		Disks: []repo.Disk{{Name: "db", Controller: "scsi0:0", Adapter: "pvscsi", Size: 1 << 30, Index: repo.Digest{9}}}}
	if err := r.cat.IndexPoint(ctx, newer); err != nil {
		t.Fatal(err)
	}
	id, err := r.o.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVMs, VMs: []string{"web", "db"}, Target: "/dc/host/c0",
		Server: "10.0.0.5", Points: map[string]string{"db": "20261121T100000Z-000000"}})
	if err != nil {
		t.Fatal(err)
	}
	points := map[string]string{}
	for _, v := range r.exp.published[id].VMs {
		points[v.VM] = v.Point
	}
	if want := map[string]string{"db": "20261121T100000Z-000000", "web": "20261121T100000Z-000002"}; !maps.Equal(points, want) {
		t.Errorf("published points %v: want %v (db's older point as named, web's latest)", points, want)
	}
	s, err := r.cat.Session(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, st := range s.Steps {
		steps = append(steps, st.Name)
	}
	if s.Kind != catalog.KindVMs || !slices.Equal(steps, []string{orchestrator.StepExpose, orchestrator.StepRegister, orchestrator.StepReconcile, orchestrator.StepBoot}) {
		t.Errorf("session kind %s steps %v: want vms, no app step", s.Kind, steps)
	}
	calls := r.d.Calls()
	mounts := 0
	for _, c := range calls {
		if strings.HasPrefix(c, "MountNFS ") {
			mounts++
		}
	}
	hosts := map[string]bool{}
	for _, v := range r.d.VMs() {
		hosts[v.Placement.Host] = true
	}
	if mounts != len(hosts) {
		t.Errorf("%d mounts for 2 VMs on %d hosts (calls %v): want one per host", mounts, len(hosts), calls)
	}
	for name, v := range r.d.VMs() {
		if !v.On || v.Placement.Pool != "/dc/host/c0" || v.Placement.Datastore != id {
			t.Errorf("%s: %+v: want on, in the target, from the session's datastore", name, v)
		}
	}
	if w, d := callIndex(calls, "PowerOn "+refOf(r.d, "web")), callIndex(calls, "PowerOn "+refOf(r.d, "db")); w < 0 || d < w {
		t.Errorf("power-on positions web %d, db %d in %v: want the order named", w, d, calls)
	}
	if _, err := r.o.Plan(ctx, orchestrator.Request{Kind: orchestrator.KindVMs, Target: "/dc/host/c0", Server: "10.0.0.5"}); !errors.Is(err, orchestrator.ErrPlan) {
		t.Errorf("a vms restore naming no VM: %v, want ErrPlan", err)
	}
}
