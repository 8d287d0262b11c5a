package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/storeapi"
)

// Step names, in the order a restore runs them.
const (
	StepExpose    = "expose"    // publish the session export, mount it on every host
	StepApp       = "app"       // create or find the vApp
	StepRegister  = "register"  // register every VM from the export
	StepReconcile = "reconcile" // CPU, memory, disks, NICs from the backup record
	StepBoot      = "boot"      // power on group by group, waiting for readiness
	StepMigrate   = "migrate"   // Storage vMotion to production storage
	StepCleanup   = "cleanup"   // unmount from every host, discard the overlay
)

// Exporter publishes and withdraws session exports: the datastore service
// in process, or its HTTP client.
type Exporter interface {
	Publish(ctx context.Context, req storeapi.PublishRequest) (*storeapi.SessionInfo, error)
	Discard(ctx context.Context, id string) error
}

// Event reports a step starting, progressing or ending.
type Event struct {
	Session  string        `json:"session"`
	Step     string        `json:"step"`
	Phase    string        `json:"phase"` // start, progress, done, failed
	Message  string        `json:"message,omitempty"`
	Percent  int           `json:"percent,omitempty"`
	Duration time.Duration `json:"-"` // MarshalJSON writes duration_s
	Err      string        `json:"error,omitempty"`
}

// MarshalJSON writes the duration in seconds (docs/json.md), left out
// while a step has none.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	return json.Marshal(struct {
		plain
		DurationSeconds float64 `json:"duration_s,omitempty"`
	}{plain(e), e.Duration.Seconds()})
}

// Orchestrator runs restore sessions.
type Orchestrator struct {
	Catalog  *catalog.Catalog
	Driver   Driver
	Exporter Exporter
	Logger   *slog.Logger
	// Events, when set, receives every step's start, progress and end.
	Events func(Event)
}

func (o *Orchestrator) log() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o *Orchestrator) emit(e Event) {
	if o.Events != nil {
		o.Events(e)
	}
}

// Plan resolves req against the catalog and the driver's inventory without
// changing anything: what `--dry-run` shows.
func (o *Orchestrator) Plan(ctx context.Context, req Request) (*Plan, error) {
	ctx = WithMemo(ctx)
	in := Inputs{Points: map[string]*repo.RestorePoint{}}
	if req.App != "" {
		a, err := o.Catalog.App(ctx, req.App)
		if err != nil && !errors.Is(err, catalog.ErrNotFound) {
			return nil, err
		}
		in.App = a
	}
	vms := req.VMs
	if in.App != nil && (req.Kind == KindVApp || req.Kind == KindTest) {
		vms = nil
		for _, m := range in.App.Members {
			vms = append(vms, m.VM)
		}
	}
	for _, vm := range vms {
		ref := ""
		switch req.Kind {
		case KindVM:
			ref = req.Point
		case KindVMs:
			ref = req.Points[vm]
		}
		p, err := o.Catalog.ResolvePoint(ctx, vm, ref, req.Before)
		if err != nil {
			if errors.Is(err, catalog.ErrNotFound) && ref == "" {
				continue // MakePlan names the VM without a point
			}
			return nil, fmt.Errorf("%w: %w", ErrPlan, err)
		}
		in.Points[vm] = p
	}
	if o.Driver == nil {
		// An offline plan (a dry run with no hypervisor to ask): VMs are
		// placed on a stand-in host and the plan says what it did not check.
		in.Hosts = []Host{{Name: UncheckedHost, Connected: true, MemFreeMB: math.MaxInt32}}
		p, err := MakePlan(req, in)
		if err != nil {
			return nil, err
		}
		p.NotChecked = []string{"target", "hosts", "networks", "datastores"}
		return p, nil
	}
	// A driver that can tell whether the target is usable says so now,
	// before a session exists (the vSphere driver; QEMU has no target).
	if tc, ok := o.Driver.(interface {
		CheckTarget(ctx context.Context, target string) error
	}); ok {
		if err := tc.CheckTarget(ctx, req.Target); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPlan, err)
		}
	}
	hosts, err := o.Driver.Hosts(ctx, req.Target)
	if err != nil {
		return nil, fmt.Errorf("list hosts under %q: %w", req.Target, err)
	}
	in.Hosts = hosts
	p, err := MakePlan(req, in)
	if err != nil {
		return nil, err
	}
	if rm, ok := o.Driver.(ReadyMethod); ok {
		m := rm.ReadyMethod()
		for i := range p.VMs {
			if r := &p.VMs[i].Ready; (r.Heartbeat || r.IP) && r.Via == "" {
				r.Via, r.Marker = m.Via, m.Marker
			}
		}
	}
	// The plan's networks, hosts and datastores must exist before anything
	// changes: a real restore plans first, so it fails here too.
	if pc, ok := o.Driver.(PlanChecker); ok {
		if err := pc.CheckPlan(ctx, p, hosts); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPlan, err)
		}
	}
	return p, nil
}

// UncheckedHost stands in for a host in a plan made without a hypervisor.
const UncheckedHost = "(not checked)"

// PlanChecker is a driver that can check a plan against its inventory
// (the networks NICs attach to, the hosts, the datastores) without
// changing anything.
type PlanChecker interface {
	CheckPlan(ctx context.Context, p *Plan, hosts []Host) error
}

// Start plans req, records the session and runs it. It returns the session
// id even when a step fails: the session can then be resumed or stopped.
func (o *Orchestrator) Start(ctx context.Context, req Request) (string, error) {
	ctx = WithMemo(ctx)
	id, err := o.Create(ctx, req)
	if err != nil {
		return "", err
	}
	return id, o.Resume(ctx, id)
}

// Create plans req and records the session with its plan and pending
// steps, without running any: Resume runs them.
func (o *Orchestrator) Create(ctx context.Context, req Request) (string, error) {
	p, err := o.Plan(ctx, req)
	if err != nil {
		return "", err
	}
	id := storeapi.NewSessionID()
	p.Datastore = id
	b, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	kind := map[string]string{KindVApp: catalog.KindVApp, KindPartial: catalog.KindPartial, KindVM: catalog.KindVM,
		KindVMs: catalog.KindVMs, KindTest: catalog.KindTest}[req.Kind]
	s := &catalog.Session{ID: id, Kind: kind, State: catalog.SessionPlanned, Target: req.Target, Hypervisor: o.Driver.Name(),
		Allow: req.Allow, Request: b}
	for _, vm := range p.VMs {
		s.VMs = append(s.VMs, catalog.SessionVM{VM: vm.Source, PointID: vm.Point, Host: vm.Host, Name: vm.Folder})
	}
	for _, st := range p.steps() {
		s.Steps = append(s.Steps, catalog.Step{Name: st})
	}
	if err := o.Catalog.CreateSession(ctx, s); err != nil {
		return "", err
	}
	o.log().Info("restore session created", "session", id, "kind", req.Kind, "vms", len(p.VMs))
	return id, nil
}

// steps lists the steps this plan runs.
func (p *Plan) steps() []string {
	s := []string{StepExpose}
	if p.App != nil {
		s = append(s, StepApp)
	}
	s = append(s, StepRegister, StepReconcile, StepBoot)
	if p.Request.MigrateTo != "" {
		s = append(s, StepMigrate, StepCleanup)
	}
	return s
}

// LoadPlan returns the plan stored with session id.
func (o *Orchestrator) LoadPlan(ctx context.Context, id string) (*catalog.Session, *Plan, error) {
	s, err := o.Catalog.Session(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	var p Plan
	if err := json.Unmarshal(s.Request, &p); err != nil || p.Datastore == "" {
		return nil, nil, fmt.Errorf("session %s has no restore plan (a plain published session? use `rekindle sessions discard`)", id)
	}
	if s.Hypervisor != "" && s.Hypervisor != o.Driver.Name() {
		return nil, nil, fmt.Errorf("session %s runs on %s, not %s: pass --hypervisor %s", id, s.Hypervisor, o.Driver.Name(), s.Hypervisor)
	}
	return s, &p, nil
}

// Resume runs every step of session id that is not done yet, in order.
// Steps are idempotent, so a step that was running when the orchestrator
// died runs again safely. The steps share one memo of the driver's
// lookups (WithMemo).
func (o *Orchestrator) Resume(ctx context.Context, id string) error {
	ctx = WithMemo(ctx)
	s, p, err := o.LoadPlan(ctx, id)
	if err != nil {
		return err
	}
	switch s.State {
	case catalog.SessionStopped, catalog.SessionStopping:
		return fmt.Errorf("session %s was stopped: start a new restore", id)
	case catalog.SessionDone:
		return nil
	}
	done := map[string]bool{}
	for _, st := range s.Steps {
		done[st.Name] = st.State == catalog.StepDone
	}
	if err := o.Catalog.SetSessionState(ctx, id, catalog.SessionRunning, ""); err != nil {
		return err
	}
	for _, name := range p.steps() {
		if done[name] {
			continue
		}
		if err := o.runStep(ctx, id, name, func(ctx context.Context) (any, error) { return o.do(ctx, id, p, name) }); err != nil {
			o.Catalog.SetSessionState(context.WithoutCancel(ctx), id, catalog.SessionFailed, err.Error())
			return err
		}
	}
	final := catalog.SessionRunning // VMs run from the export
	if done[StepCleanup] || slices.Contains(p.steps(), StepCleanup) {
		final = catalog.SessionDone
	}
	return o.Catalog.SetSessionState(ctx, id, final, "")
}

// Migrate moves session id's VMs to datastore and withdraws the export.
func (o *Orchestrator) Migrate(ctx context.Context, id, datastoreName string) error {
	s, p, err := o.LoadPlan(ctx, id)
	if err != nil {
		return err
	}
	if s.State == catalog.SessionStopped || s.State == catalog.SessionDone {
		return fmt.Errorf("session %s is %s: nothing to migrate", id, s.State)
	}
	for _, st := range s.Steps {
		if st.Name == StepBoot && st.State != catalog.StepDone {
			return fmt.Errorf("session %s: boot has not finished (%s): resume it first", id, st.State)
		}
	}
	p.Request.MigrateTo = datastoreName
	b, _ := json.Marshal(p)
	if err := o.Catalog.SetSessionRequest(ctx, id, b); err != nil {
		return err
	}
	return o.Resume(ctx, id)
}

func (o *Orchestrator) runStep(ctx context.Context, id, name string, fn func(context.Context) (any, error)) error {
	if _, err := o.Catalog.StartStep(ctx, id, name); err != nil {
		return err
	}
	start := time.Now()
	o.emit(Event{Session: id, Step: name, Phase: "start"})
	o.log().Info("step started", "session", id, "step", name)
	nctx, n := withNotes(ctx, func(msg string) {
		o.emit(Event{Session: id, Step: name, Phase: "progress", Message: msg})
		o.log().Info("step event", "session", id, "step", name, "event", msg)
	})
	detail, err := fn(nctx)
	detail = n.withEvents(detail)
	d := time.Since(start)
	// Record the outcome even when ctx was cancelled mid-step.
	rctx := context.WithoutCancel(ctx)
	if err != nil {
		err = fmt.Errorf("session %s: step %s: %w", id, name, err)
		o.Catalog.EndStep(rctx, id, name, catalog.StepFailed, detail, err.Error())
		o.emit(Event{Session: id, Step: name, Phase: "failed", Duration: d, Err: err.Error()})
		o.log().Error("step failed", "session", id, "step", name, "duration", d, "err", err)
		return err
	}
	if err := o.Catalog.EndStep(rctx, id, name, catalog.StepDone, detail, ""); err != nil {
		return err
	}
	o.emit(Event{Session: id, Step: name, Phase: "done", Duration: d})
	o.log().Info("step done", "session", id, "step", name, "duration", d)
	return nil
}

// registered returns the VMs session id's register step recorded: the only
// VMs the session acts on. Looking VMs up by name could find someone else's
// VM of the same name, perhaps the production original.
func (o *Orchestrator) registered(ctx context.Context, id string) (map[string]VMRef, error) {
	s, err := o.Catalog.Session(ctx, id)
	if err != nil {
		return nil, err
	}
	refs := map[string]VMRef{}
	for _, st := range s.Steps {
		if st.Name == StepRegister && len(st.Detail) > 0 && string(st.Detail) != "null" {
			if err := json.Unmarshal(st.Detail, &refs); err != nil {
				return nil, fmt.Errorf("session %s: register step record: %w", id, err)
			}
		}
	}
	return refs, nil
}

// vm returns the reference session id registered for the VM named name.
func (o *Orchestrator) vm(ctx context.Context, id, name string) (VMRef, error) {
	refs, err := o.registered(ctx, id)
	if err != nil {
		return "", err
	}
	ref, ok := refs[name]
	if !ok {
		return "", fmt.Errorf("%s was not registered by session %s: %w", name, id, ErrNotFound)
	}
	return ref, nil
}

// placement is where the register step registers vm.
func (p *Plan) placement(vm PlannedVM) Placement {
	return Placement{Name: vm.Name, Host: vm.Host, Datastore: p.Datastore, VMXPath: vm.Folder + "/" + vm.Source + ".vmx", Pool: p.pool()}
}

func (p *Plan) pool() string {
	if p.AppPath != "" {
		return p.AppPath
	}
	return p.Request.Target
}

func (p *Plan) mount() NFSMount {
	return NFSMount{Server: p.Request.Server, Path: storeapi.SessionsExport + "/" + p.Datastore, Name: p.Datastore}
}

// do carries out one step of plan p.
func (o *Orchestrator) do(ctx context.Context, id string, p *Plan, step string) (any, error) {
	d := o.Driver
	switch step {
	case StepExpose:
		req := storeapi.PublishRequest{ID: id, Allow: p.Request.Allow}
		for _, vm := range p.VMs {
			req.VMs = append(req.VMs, storeapi.PublishVM{VM: vm.Source, Point: vm.Point, As: vm.Folder})
		}
		info, err := o.Exporter.Publish(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("publish export: %w", err)
		}
		for _, h := range p.Hosts {
			if err := d.MountNFS(ctx, h, p.mount()); err != nil {
				return nil, fmt.Errorf("mount %s on host %s: %w", info.NFSPath, h, err)
			}
			o.emit(Event{Session: id, Step: step, Phase: "progress", Message: "mounted on " + h})
		}
		return map[string]any{"nfs_path": info.NFSPath, "hosts": p.Hosts}, nil
	case StepApp:
		path, err := d.EnsureApp(ctx, *p.App)
		if err != nil {
			return nil, fmt.Errorf("vApp %s: %w", p.App.Name, err)
		}
		p.AppPath = path
		b, _ := json.Marshal(p)
		return map[string]string{"app": path}, o.Catalog.SetSessionRequest(ctx, id, b)
	case StepRegister:
		refs := map[string]VMRef{}
		for _, vm := range p.VMs {
			ref, err := d.RegisterVM(ctx, p.placement(vm))
			if err != nil {
				return refs, fmt.Errorf("register %s on %s: %w", vm.Name, vm.Host, err)
			}
			refs[vm.Name] = ref
			o.emit(Event{Session: id, Step: step, Phase: "progress", Message: fmt.Sprintf("%s registered on %s", vm.Name, vm.Host)})
		}
		return refs, nil
	case StepReconcile:
		for _, vm := range p.VMs {
			ref, err := o.vm(ctx, id, vm.Name)
			if err != nil {
				return nil, fmt.Errorf("reconcile %s: %w", vm.Name, err)
			}
			spec := vm.Spec
			spec.Disks = slices.Clone(spec.Disks)
			for i := range spec.Disks {
				spec.Disks[i].File = fmt.Sprintf("[%s] %s", p.Datastore, spec.Disks[i].File)
			}
			if err := d.Reconcile(ctx, ref, spec); err != nil {
				return nil, fmt.Errorf("reconcile %s: %w", vm.Name, err)
			}
		}
		if p.App != nil {
			// The vApp's startup order names the VMs, so it is set once they exist.
			if _, err := d.EnsureApp(ctx, *p.App); err != nil {
				return nil, fmt.Errorf("vApp %s startup order: %w", p.App.Name, err)
			}
		}
		return nil, nil
	case StepBoot:
		return o.boot(ctx, id, p)
	case StepMigrate:
		for _, vm := range p.VMs {
			ref, err := o.vm(ctx, id, vm.Name)
			if err != nil {
				return nil, fmt.Errorf("migrate %s: %w", vm.Name, err)
			}
			err = d.Relocate(ctx, ref, p.Request.MigrateTo, func(pct int) {
				o.emit(Event{Session: id, Step: step, Phase: "progress", Percent: pct, Message: vm.Name})
			})
			if err != nil {
				return nil, fmt.Errorf("migrate %s to %s: %w", vm.Name, p.Request.MigrateTo, err)
			}
		}
		return map[string]string{"datastore": p.Request.MigrateTo}, nil
	case StepCleanup:
		for _, h := range p.Hosts {
			if err := d.UnmountNFS(ctx, h, p.Datastore); err != nil {
				return nil, fmt.Errorf("unmount %s from %s: %w", p.Datastore, h, err)
			}
		}
		if err := o.Exporter.Discard(ctx, id); err != nil && !errors.Is(err, storeapi.ErrNotFound) {
			return nil, fmt.Errorf("discard the session overlay: %w", err)
		}
		return nil, nil
	}
	return nil, fmt.Errorf("unknown step %q", step)
}

// boot powers the VMs on group by group. A group starts only when the
// previous one is up: ready (heartbeat) where the member waits for its guest,
// then the longest start delay of the group.
func (o *Orchestrator) boot(ctx context.Context, id string, p *Plan) (any, error) {
	type booted struct {
		VM      string    `json:"vm"`
		Group   int       `json:"group"`
		PowerOn time.Time `json:"power_on"`
		Ready   time.Time `json:"ready"`
	}
	var out []booted
	timeout := p.Request.ReadyTimeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	for gi, names := range p.Groups {
		delay := 0
		var group []booted
		for _, name := range names {
			vm := p.VM(name)
			ref, err := o.vm(ctx, id, name)
			if err != nil {
				return out, fmt.Errorf("power on %s: %w", name, err)
			}
			if err := o.Driver.PowerOn(ctx, ref); err != nil {
				return out, fmt.Errorf("power on %s: %w", name, err)
			}
			group = append(group, booted{VM: name, Group: vm.Group, PowerOn: time.Now().UTC()})
			delay = max(delay, vm.StartDelay)
			o.emit(Event{Session: id, Step: StepBoot, Phase: "progress", Message: fmt.Sprintf("group %d: %s powered on", gi+1, name)})
		}
		for i, name := range names {
			vm := p.VM(name)
			what := o.readyWhat(vm.Ready)
			if what == "" {
				// Nothing says the guest is up: say only what is known.
				o.emit(Event{Session: id, Step: StepBoot, Phase: "progress", Message: fmt.Sprintf("group %d: %s powered on (readiness not checked)", gi+1, name)})
				continue
			}
			ref, err := o.vm(ctx, id, name)
			if err != nil {
				return out, err
			}
			o.emit(Event{Session: id, Step: StepBoot, Phase: "progress", Message: fmt.Sprintf("group %d: %s: waiting for %s", gi+1, name, what)})
			wctx, cancel := context.WithTimeout(ctx, timeout)
			err = o.Driver.WaitReady(wctx, ref, vm.Ready)
			cancel()
			if err != nil {
				return append(out, group...), fmt.Errorf("group %d: %s not ready within %s (waited for %s): %w", gi+1, name, timeout, what, err)
			}
			group[i].Ready = time.Now().UTC()
			o.emit(Event{Session: id, Step: StepBoot, Phase: "progress", Message: fmt.Sprintf("group %d: %s up (%s)", gi+1, name, what)})
		}
		out = append(out, group...)
		if delay > 0 && gi < len(p.Groups)-1 {
			select {
			case <-time.After(time.Duration(delay) * time.Second):
			case <-ctx.Done():
				return out, ctx.Err()
			}
		}
	}
	return out, nil
}

// readyWhat says what the driver waits for to call a VM up; "" when
// readiness is not checked (the plan does not wait, or the driver checks
// nothing).
func (o *Orchestrator) readyWhat(check ReadyCheck) string {
	if !check.Heartbeat && !check.IP {
		return ""
	}
	if rw, ok := o.Driver.(interface{ ReadyWhat(ReadyCheck) string }); ok {
		return rw.ReadyWhat(check)
	}
	var w []string
	if check.Heartbeat {
		w = append(w, "guest heartbeat")
	}
	if check.IP {
		w = append(w, "guest IP address")
	}
	return strings.Join(w, " and ")
}

// Stop undoes session id: powers its VMs off, unregisters them, removes the
// vApp it created, unmounts the datastore from every host and discards the
// overlay, leaving the hypervisor as it was. It is idempotent.
func (o *Orchestrator) Stop(ctx context.Context, id string) error {
	ctx = WithMemo(ctx)
	s, p, err := o.LoadPlan(ctx, id)
	if err != nil {
		return err
	}
	if err := o.Catalog.SetSessionState(ctx, id, catalog.SessionStopping, ""); err != nil {
		return err
	}
	createdApp, registerOpen := false, false
	for _, st := range s.Steps {
		if st.Name == StepApp && st.State != catalog.StepPending {
			createdApp = p.Request.Kind != KindPartial // a partial restore joins a running vApp
		}
		if st.Name == StepRegister {
			registerOpen = st.State != catalog.StepPending && st.State != catalog.StepDone
		}
	}
	var errs []error
	d := o.Driver
	refs, err := o.registered(ctx, id)
	if err != nil {
		return err
	}
	err = o.runStep(ctx, id, "stop", func(ctx context.Context) (any, error) {
		// A register step that did not finish recorded at most the VMs it
		// registered before a fault, nothing when rekindle died in it; yet
		// the hypervisor may have registered more, the last one perhaps as
		// rekindle died. They are found by their files, as a retried
		// RegisterVM adopts them: left registered, they would keep the
		// datastore in use.
		if rf, ok := d.(RegisteredFinder); ok && registerOpen {
			for _, vm := range p.VMs {
				if _, ok := refs[vm.Name]; ok {
					continue
				}
				ref, err := rf.RegisteredVM(ctx, p.placement(vm))
				if err != nil {
					errs = append(errs, err)
				} else if ref != "" {
					refs[vm.Name] = ref
					Note(ctx, "vm %s: registered from the session's files, not recorded by its register step", vm.Name)
				}
			}
		}
		for _, vm := range slices.Backward(p.VMs) {
			ref, ok := refs[vm.Name]
			if !ok {
				continue // never registered by this session
			}
			if err := d.PowerOff(ctx, ref); errors.Is(err, ErrNotFound) {
				Note(ctx, "vm %s: not registered any more (an earlier stop got this far)", vm.Name)
				continue // gone already: an earlier stop got this far
			} else if err != nil {
				errs = append(errs, fmt.Errorf("power off %s: %w", vm.Name, err))
				Note(ctx, "vm %s: power off failed: %v", vm.Name, err)
				continue
			}
			Note(ctx, "vm %s: powered off", vm.Name)
			if err := d.Unregister(ctx, ref); err != nil {
				errs = append(errs, fmt.Errorf("unregister %s: %w", vm.Name, err))
			} else {
				Note(ctx, "vm %s: unregistered", vm.Name)
			}
		}
		if createdApp && p.AppPath != "" {
			if err := d.DestroyApp(ctx, p.AppPath); err != nil {
				errs = append(errs, fmt.Errorf("remove vApp %s: %w", p.AppPath, err))
			} else {
				Note(ctx, "vApp %s removed", p.AppPath)
			}
		}
		for _, h := range p.Hosts {
			if err := d.UnmountNFS(ctx, h, p.Datastore); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s from %s: %w", p.Datastore, h, err))
			} else {
				Note(ctx, "datastore %s unmounted from %s", p.Datastore, h)
			}
		}
		if err := o.Exporter.Discard(ctx, id); err != nil && !errors.Is(err, storeapi.ErrNotFound) {
			errs = append(errs, fmt.Errorf("discard the session overlay: %w", err))
		} else {
			Note(ctx, "export withdrawn, session overlay deleted")
		}
		return nil, errors.Join(errs...)
	})
	if err != nil {
		o.Catalog.SetSessionState(context.WithoutCancel(ctx), id, catalog.SessionFailed, err.Error())
		return err
	}
	return o.Catalog.SetSessionState(ctx, id, catalog.SessionStopped, "")
}
