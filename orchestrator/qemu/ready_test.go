package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/testdata/testvm"
)

// syncBuffer is a bytes.Buffer for a logger written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestReadyWaitsForTheGuest: with --ready-marker set to a line the test
// guest's init prints after the kernel has booted (REKINDLE-IDLE), the boot
// step says what it waits for and returns only once the guest printed it:
// right after power-on the console does not have it, when the session says
// "up" it does. A marker the guest never prints, and a guest agent the
// guest does not run, time out naming what was waited for.
func TestReadyWaitsForTheGuest(t *testing.T) {
	e := newEnv(t, testVM{name: "vm", mode: testvm.ModeIdle})
	e.saveApp(&repo.App{Name: "one", Members: []repo.AppMember{{VM: "vm", Group: 1, WaitForGuest: true}}})
	d, err := New(Config{WorkDir: e.drv.cfg.WorkDir, Logger: logger(t), ReadyMarker: testvm.IdleLine, Stop: StopTimeouts{Powerdown: -1}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		msgs   []string
		onLog  string // the console when the VM was powered on
		upLog  string // the console when the session said up
		events = func(ev orchestrator.Event) {
			mu.Lock()
			defer mu.Unlock()
			msgs = append(msgs, ev.Message)
			switch {
			case strings.HasSuffix(ev.Message, "vm powered on"):
				onLog = e.serial("vm")
			case strings.Contains(ev.Message, "vm up"):
				upLog = e.serial("vm")
			}
		}
	)
	o := &orchestrator.Orchestrator{Catalog: e.cat, Driver: d, Exporter: e.svc, Logger: logger(t), Events: events}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	req := orchestrator.Request{Kind: orchestrator.KindVApp, App: "one", Server: "127.0.0.1", ReadyTimeout: bootWithin}
	if _, err := o.Start(ctx, req); err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, e.serial("vm"))
	}
	mu.Lock()
	all := strings.Join(msgs, "\n")
	mu.Unlock()
	want := `waiting for "` + testvm.IdleLine + `" on the serial console`
	if !strings.Contains(all, want) || !strings.Contains(all, "vm up ("+`"`+testvm.IdleLine) {
		t.Fatalf("session messages do not say what they waited for (%s):\n%s", want, all)
	}
	if strings.Contains(onLog, testvm.IdleLine) || !strings.Contains(upLog, testvm.IdleLine) {
		t.Fatalf("console at power-on %q, at up %q: the wait was not for the guest", onLog, upLog)
	}
	v := e.vm("vm")
	if v.Ready.Sub(v.PoweredOn) < time.Second {
		t.Fatalf("up %s after power-on: no boot under TCG is that fast", v.Ready.Sub(v.PoweredOn))
	}

	// A marker the guest never prints: the wait ends with what it was for.
	never, err := New(Config{WorkDir: e.drv.cfg.WorkDir, Logger: logger(t), ReadyMarker: "NEVER-PRINTED", Stop: StopTimeouts{Powerdown: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := never.PowerOff(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	if err := never.PowerOn(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	e.waitSerial("vm", testvm.IdleLine, bootWithin, func(log string) bool { return strings.Contains(log, testvm.IdleLine) })
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	err = never.WaitReady(wctx, "vm", orchestrator.ReadyCheck{Heartbeat: true})
	wcancel()
	if err == nil || !strings.Contains(err.Error(), `for the guest to print "NEVER-PRINTED" on its serial console`) {
		t.Fatalf("a marker never printed: %v", err)
	}

	// The guest agent's channel: this guest runs no agent.
	agent, err := New(Config{WorkDir: e.drv.cfg.WorkDir, Logger: logger(t), Ready: ReadyAgent, Stop: StopTimeouts{Powerdown: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.PowerOff(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	if err := agent.PowerOn(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	e.waitSerial("vm", testvm.IdleLine, bootWithin, func(log string) bool { return strings.Contains(log, testvm.IdleLine) })
	wctx, wcancel = context.WithTimeout(ctx, 5*time.Second)
	err = agent.WaitReady(wctx, "vm", orchestrator.ReadyCheck{Heartbeat: true})
	wcancel()
	if err == nil || !strings.Contains(err.Error(), "for the QEMU guest agent to answer guest-ping") || !strings.Contains(err.Error(), agentPort) {
		t.Fatalf("no agent in the guest: %v", err)
	}
	if _, err := os.Stat(agent.vmFile("vm", "qga.sock")); err != nil {
		t.Fatalf("QEMU has no guest agent channel: %v", err)
	}
	// Readiness not checked: the VM is powered on, never called up.
	none, err := New(Config{WorkDir: e.drv.cfg.WorkDir, Ready: ReadyNone})
	if err != nil {
		t.Fatal(err)
	}
	if w := none.ReadyWhat(orchestrator.ReadyCheck{Heartbeat: true}); w != "" {
		t.Fatalf("ready none waits for %q", w)
	}
}

// TestGuestAgentPing: pingAgent against the real qemu-ga (the QEMU guest
// agent, run on this machine listening on a unix socket: the same protocol
// it speaks on a guest's virtio-serial port) succeeds; a socket nobody
// answers on fails within the try's bound.
func TestGuestAgentPing(t *testing.T) {
	qga, err := exec.LookPath("qemu-ga")
	if err != nil {
		t.Fatal("qemu-ga not found: scripts/install-deps installs qemu-guest-agent")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "qga.sock")
	cmd := exec.Command(qga, "-m", "unix-listen", "-p", sock, "-f", filepath.Join(dir, "qga.pid"), "-t", dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if !waitFor(ctx, 10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil }) {
		t.Fatalf("qemu-ga made no socket: %s", out.String())
	}
	var last error
	if !waitFor(ctx, 10*time.Second, func() bool { last = pingAgent(ctx, sock); return last == nil }) {
		t.Fatalf("guest-ping to qemu-ga: %v\n%s", last, out.String())
	}
	// A listener that never answers: a guest whose agent is not running.
	l, err := net.Listen("unix", filepath.Join(dir, "silent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	if err := pingAgent(ctx, filepath.Join(dir, "silent.sock")); err == nil || time.Since(start) > agentTry+time.Second {
		t.Fatalf("silent channel: %v after %s", err, time.Since(start))
	}
}

// TestStopEscalates: a QEMU whose monitor and main loop do not answer
// (stopped with SIGSTOP, as one stuck on an export that went away ignores
// everything but SIGKILL) is stopped by the escalation system_powerdown,
// quit, SIGTERM, SIGKILL, each bounded and logged; a running idle guest
// that ignores the ACPI power button is ended by QMP quit.
func TestStopEscalates(t *testing.T) {
	e := newEnv(t, testVM{name: "vm", mode: testvm.ModeIdle})
	var logs syncBuffer
	d, err := New(Config{WorkDir: e.drv.cfg.WorkDir, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Stop: StopTimeouts{Powerdown: 2 * time.Second, Quit: 2 * time.Second, Term: time.Second, Kill: 5 * time.Second, QMP: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	id, err := e.orch.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVM, VMs: []string{"vm"}, Server: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitSerial("vm", testvm.IdleLine, bootWithin, func(log string) bool { return strings.Contains(log, testvm.IdleLine) })

	// Responsive QEMU, guest deaf to ACPI: system_powerdown, then quit.
	if err := d.PowerOff(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	got := logs.String()
	if !strings.Contains(got, "step=system_powerdown") || !strings.Contains(got, `by="QMP quit"`) {
		t.Fatalf("stop of a responsive QEMU logged:\n%s", got)
	}

	// Stuck QEMU: every step up to SIGKILL.
	if err := d.PowerOn(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	e.waitSerial("vm", testvm.IdleLine, bootWithin, func(log string) bool { return strings.Contains(log, testvm.IdleLine) })
	pid := d.pid("vm")
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	logs.mu.Lock()
	logs.b.Reset()
	logs.mu.Unlock()
	// `sessions stop`: the session's stop step records each escalation and
	// the export withdrawn, where `sessions show` and the API read them.
	o := &orchestrator.Orchestrator{Catalog: e.cat, Driver: d, Exporter: e.svc, Logger: logger(t)}
	if err := o.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	got = logs.String()
	for _, w := range []string{"step=system_powerdown", "step=quit", "step=terminated", `by=killed`} {
		if !strings.Contains(got, w) {
			t.Fatalf("stop of a stuck QEMU: no %q in the log:\n%s", w, got)
		}
	}
	if alive(pid) {
		t.Fatalf("QEMU pid %d still alive", pid)
	}
	info, err := e.svc.Session(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, st := range info.Steps {
		if st.Name == "stop" {
			var detail struct{ Events []orchestrator.StepEvent }
			if err := json.Unmarshal(st.Detail, &detail); err != nil {
				t.Fatalf("stop step detail %s: %v", st.Detail, err)
			}
			for _, ev := range detail.Events {
				if ev.Time.IsZero() {
					t.Errorf("event %q has no time", ev.Message)
				}
				events = append(events, ev.Message)
			}
		}
	}
	all := strings.Join(events, "\n")
	for _, w := range []string{"vm vm: system_powerdown: no answer", "QMP quit next", "vm vm: quit: no answer",
		"vm vm: SIGTERM: no exit within 1s", "vm vm: SIGKILL sent", "ended by killed", "vm vm: unregistered", "export withdrawn"} {
		if !strings.Contains(all, w) {
			t.Errorf("the session's stop step does not record %q; it has:\n%s", w, all)
		}
	}
}

// TestReadinessKeptWithSession: the readiness a session was made with
// (--ready-marker, here the idle line) is in its stored plan, and a resume
// by a driver started with other flags (--qemu-ready agent, which this
// guest, running no agent, would never satisfy) still waits for the
// marker and says so; the plan keeps saying marker.
func TestReadinessKeptWithSession(t *testing.T) {
	e := newEnv(t, testVM{name: "vm", mode: testvm.ModeIdle})
	e.saveApp(&repo.App{Name: "one", Members: []repo.AppMember{{VM: "vm", Group: 1, WaitForGuest: true}}})
	made, err := New(Config{WorkDir: e.drv.cfg.WorkDir, Logger: logger(t), ReadyMarker: testvm.IdleLine, Stop: StopTimeouts{Powerdown: -1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	o := &orchestrator.Orchestrator{Catalog: e.cat, Driver: made, Exporter: e.svc, Logger: logger(t)}
	id, err := o.Create(ctx, orchestrator.Request{Kind: orchestrator.KindVApp, App: "one", Server: "127.0.0.1", ReadyTimeout: bootWithin})
	if err != nil {
		t.Fatal(err)
	}
	planReady := func() orchestrator.ReadyCheck {
		_, p, err := o.LoadPlan(ctx, id)
		if err != nil || len(p.VMs) != 1 {
			t.Fatalf("plan of %s: %v", id, err)
		}
		return p.VMs[0].Ready
	}
	if r := planReady(); r.Via != ReadyMarker || r.Marker != testvm.IdleLine {
		t.Fatalf("plan records readiness %+v, want marker %q", r, testvm.IdleLine)
	}

	// The process that resumes was started with --qemu-ready agent.
	resumer, err := New(Config{WorkDir: e.drv.cfg.WorkDir, Logger: logger(t), Ready: ReadyAgent, Stop: StopTimeouts{Powerdown: -1}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var msgs []string
	o2 := &orchestrator.Orchestrator{Catalog: e.cat, Driver: resumer, Exporter: e.svc, Logger: logger(t),
		Events: func(ev orchestrator.Event) { mu.Lock(); msgs = append(msgs, ev.Message); mu.Unlock() }}
	if err := o2.Resume(ctx, id); err != nil {
		t.Fatalf("resume with other flags: %v\nconsole:\n%s", err, e.serial("vm"))
	}
	mu.Lock()
	all := strings.Join(msgs, "\n")
	mu.Unlock()
	if !strings.Contains(all, `vm up ("`+testvm.IdleLine+`" on the serial console)`) {
		t.Fatalf("the resume did not wait for the session's marker:\n%s", all)
	}
	if r := planReady(); r.Via != ReadyMarker {
		t.Fatalf("plan after the resume: %+v", r)
	}
	info, err := e.svc.Session(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"ready":{"heartbeat":true,"ip":false,"via":"marker","marker":"` + testvm.IdleLine + `"}`; !strings.Contains(string(info.Plan), want) {
		t.Fatalf("the API's session has no readiness %s in its plan:\n%s", want, info.Plan)
	}
	if err := o2.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// TestReadyByAgentInGuest: a guest that runs the real QEMU guest agent
// (qemu-ga inside the test VM, testvm.ModeAgent) is up for --qemu-ready
// agent only once its agent answered guest-ping over the virtio-serial
// port: the agent had started (the guest said so on its console) when the
// session said up.
func TestReadyByAgentInGuest(t *testing.T) {
	e := newEnv(t, testVM{name: "vm", mode: testvm.ModeAgent})
	e.saveApp(&repo.App{Name: "one", Members: []repo.AppMember{{VM: "vm", Group: 1, WaitForGuest: true}}})
	d, err := New(Config{WorkDir: e.drv.cfg.WorkDir, Logger: logger(t), Ready: ReadyAgent, Stop: StopTimeouts{Powerdown: -1}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var upLog string
	var msgs []string
	o := &orchestrator.Orchestrator{Catalog: e.cat, Driver: d, Exporter: e.svc, Logger: logger(t),
		Events: func(ev orchestrator.Event) {
			mu.Lock()
			defer mu.Unlock()
			msgs = append(msgs, ev.Message)
			if strings.Contains(ev.Message, "vm up") {
				upLog = e.serial("vm")
			}
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	id, err := o.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVApp, App: "one", Server: "127.0.0.1", ReadyTimeout: bootWithin})
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, e.serial("vm"))
	}
	mu.Lock()
	all, up := strings.Join(msgs, "\n"), upLog
	mu.Unlock()
	if !strings.Contains(all, "vm up (the QEMU guest agent (guest-ping on virtio-serial "+agentPort+"))") {
		t.Fatalf("the session did not say the agent answered:\n%s", all)
	}
	if !strings.Contains(up, testvm.AgentLine) {
		t.Fatalf("up before the guest started its agent; console:\n%s", up)
	}
	if err := o.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
}
