package qemu

import (
	"bytes"
	"context"
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
	if _, err := e.orch.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVM, VMs: []string{"vm"}, Server: "127.0.0.1"}); err != nil {
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
	if err := d.PowerOff(ctx, "vm"); err != nil {
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
}
