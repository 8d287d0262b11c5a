package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/testdata/testvm"
)

// bootWithin bounds a TCG boot from the export on a busy 2-core machine.
const bootWithin = 2 * time.Minute

// TestRestoreBootMigrate restores one VM with the orchestrator, boots it
// from the export, then migrates its disk to a local folder while the guest
// writes, and checks every write landed, the backup did not change and the
// session is gone.
func TestRestoreBootMigrate(t *testing.T) {
	// The guest writes for 20 s after boot: long enough to span the mirror.
	e := newEnv(t, testVM{name: "vm", mode: testvm.ModeWrite, seconds: 20})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	id, err := e.orch.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVM, VMs: []string{"vm"}, Server: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, bootWithin)
	err = e.drv.WaitReady(wctx, "vm", orchestrator.ReadyCheck{Heartbeat: true})
	wcancel()
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, e.serial("vm"))
	}
	v := e.vm("vm")
	wantURL := "nfs://127.0.0.1/rekindle/" + id + "/vm/vm-flat.vmdk"
	if len(v.Disks) != 1 || v.Disks[0].URL != wantURL || v.Disks[0].Local != "" {
		t.Fatalf("disk record %+v, want it on %s", v.Disks, wantURL)
	}
	if v.Ready.Before(v.PoweredOn) {
		t.Fatalf("ready %s before power-on %s", v.Ready, v.PoweredOn)
	}
	pid := e.drv.pid("vm")

	// An orchestrator that crashed and came back finds the VM running and
	// starts no second QEMU.
	// It caps the mirror's rate, so the copy takes seconds and the guest
	// demonstrably writes during it.
	d2, err := New(Config{WorkDir: e.drv.cfg.WorkDir, Logger: logger(t), MirrorBytesPerSec: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if ref, err := d2.FindVM(ctx, "vm"); err != nil || ref != "vm" {
		t.Fatalf("a new driver does not find the VM: %q %v", ref, err)
	}
	if err := d2.PowerOn(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	if got := d2.pid("vm"); got != pid {
		t.Fatalf("PowerOn of a running VM: pid %d, was %d", got, pid)
	}
	if err := d2.WaitReady(ctx, "vm", orchestrator.ReadyCheck{Heartbeat: true}); err != nil {
		t.Fatal(err)
	}

	// The export stays while the VM runs from it.
	if err := d2.UnmountNFS(ctx, "localhost", id); err == nil || !strings.Contains(err.Error(), "running VMs vm") {
		t.Fatalf("unmount of the datastore a running VM uses: %v", err)
	}
	// A server whose portmapper does not answer is refused at mount time,
	// not at power-on.
	err = d2.MountNFS(ctx, "localhost", orchestrator.NFSMount{Server: "127.0.0.2", Path: "/rekindle/" + id, Name: "elsewhere"})
	if err == nil || !strings.Contains(err.Error(), "portmapper 127.0.0.2:111 unreachable") {
		t.Fatalf("mount from a server without a portmapper: %v", err)
	}

	log := e.waitSerial("vm", testvm.WroteLine, bootWithin, func(l string) bool { return consoleCount(l, testvm.WroteLine) >= 1 })
	before := consoleCount(log, testvm.WroteLine)

	// Migrate with the second orchestrator, while the guest writes.
	target := filepath.Join(t.TempDir(), "prod")
	var pcts []int
	o2 := &orchestrator.Orchestrator{Catalog: e.cat, Driver: d2, Exporter: e.svc, Logger: logger(t),
		Events: func(ev orchestrator.Event) {
			if ev.Step == orchestrator.StepMigrate && ev.Phase == "progress" {
				pcts = append(pcts, ev.Percent)
			}
		}}
	start := time.Now()
	if err := o2.Migrate(ctx, id, target); err != nil {
		t.Fatal(err)
	}
	t.Logf("migration took %s", time.Since(start).Round(time.Millisecond))
	log = e.serial("vm")
	after := consoleCount(log, testvm.WroteLine)
	if consoleCount(log, testvm.DoneLine) >= 0 {
		t.Fatalf("the guest stopped writing before the migration ended: let it write longer\n%s", log)
	}
	if after <= before {
		t.Fatalf("the guest wrote nothing during the migration (%d blocks before, %d after)", before, after)
	}
	if len(pcts) == 0 || slices.Max(pcts) != 100 {
		t.Fatalf("migration progress %v, want it to reach 100", pcts)
	}
	raw := filepath.Join(target, "vm", "vm.raw")
	if v := e.vm("vm"); v.Disks[0].Local != raw {
		t.Fatalf("disk after migration: %+v, want %s", v.Disks[0], raw)
	}
	mon, err := dialQMP(ctx, e.drv.vmFile("vm", "qmp.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []blockInfo
	err = mon.run(ctx, "query-block", nil, &blocks)
	mon.close()
	if err != nil || len(blocks) != 1 || blocks[0].Inserted == nil || blocks[0].Inserted.File != raw {
		t.Fatalf("QEMU's drive after migration: %+v %v", blocks, err)
	}

	// The session is gone: done in the catalog, no overlay, no export.
	cs, err := e.cat.Session(ctx, id)
	if err != nil || cs.State != catalog.SessionDone {
		t.Fatalf("session after migration: %+v %v", cs, err)
	}
	if _, ok := e.svc.Overlay(id); ok {
		t.Fatal("the session overlay is still served")
	}
	if _, err := os.Stat(filepath.Join(e.state, "sessions", id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the session's upper layer is still in the state folder: %v", err)
	}
	if out, err := tryRun(t, "qemu-img", "info", "-f", "raw", wantURL); err == nil {
		t.Fatalf("the session's disk is still exported:\n%s", out)
	}
	hosts, err := e.drv.Hosts(ctx, "")
	if err != nil || len(hosts) != 1 || len(hosts[0].Datastores) != 0 {
		t.Fatalf("hosts after migration: %+v %v", hosts, err)
	}

	// Every block the guest wrote, before, during and after the mirror, is
	// in the target.
	e.waitOff("vm", 2*time.Minute)
	log = e.serial("vm")
	done := consoleCount(log, testvm.DoneLine)
	if done <= after {
		t.Fatalf("guest reported %d blocks at the end, %d right after the migration:\n%s", done, after, log)
	}
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	n, err := testvm.ReadCounters(f)
	f.Close()
	if err != nil || n != done {
		t.Fatalf("target disk holds %d counters (%v); the guest wrote %d", n, err, done)
	}
	t.Logf("guest wrote %d blocks: %d before the migration, %d by its end; all %d are in %s", done, before, after, n, raw)

	// The restore point is as it was imported.
	p := e.points["vm"]
	rep, err := e.repo.Verify(ctx, []*repo.RestorePoint{p}, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	served := filepath.Join(t.TempDir(), "served.raw")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", "nfs://127.0.0.1/points/vm/"+p.ID+"/vm-flat.vmdk", served)
	if got, want := sha256File(t, served), sha256File(t, e.images["vm"]); got != want {
		t.Fatalf("served restore point sha256 %s, source %s", got, want)
	}

	// The VM stays registered, running from production storage; it is off
	// now and can go.
	if err := d2.Unregister(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.drv.FindVM(ctx, "vm"); !errors.Is(err, orchestrator.ErrNotFound) {
		t.Fatalf("FindVM after Unregister: %v", err)
	}
}

// TestAppStartupOrder restores a three-tier app and proves from the times
// the driver recorded (and the boot step's detail) that each group powered
// on only once the previous one was ready.
func TestAppStartupOrder(t *testing.T) {
	e := newEnv(t,
		testVM{name: "db", mode: testvm.ModeBoot},
		testVM{name: "app", mode: testvm.ModeBoot},
		testVM{name: "web", mode: testvm.ModeBoot})
	e.saveApp(&repo.App{Name: "shop", Members: []repo.AppMember{
		{VM: "web", Group: 3, WaitForGuest: true},
		{VM: "db", Group: 1, WaitForGuest: true},
		{VM: "app", Group: 2, WaitForGuest: true},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	id, err := e.orch.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVApp, App: "shop", Server: "127.0.0.1",
		ReadyTimeout: bootWithin})
	if err != nil {
		t.Fatal(err)
	}
	order := []string{"db", "app", "web"}
	var prev *vmState
	for _, name := range order {
		v := e.vm(name)
		if v.PoweredOn.IsZero() || v.Ready.IsZero() || !v.Ready.After(v.PoweredOn) {
			t.Fatalf("%s: powered on %s, ready %s", name, v.PoweredOn, v.Ready)
		}
		if prev != nil && !v.PoweredOn.After(prev.Ready) {
			t.Fatalf("%s powered on at %s, before %s was ready at %s", name, v.PoweredOn, prev.Name, prev.Ready)
		}
		if !strings.Contains(e.serial(name), testvm.BootMarker) {
			t.Fatalf("%s: no boot marker on its console", name)
		}
		t.Logf("%s: powered on %s, ready after %s", name, v.PoweredOn.Format(time.StampMilli), v.Ready.Sub(v.PoweredOn).Round(time.Millisecond))
		prev = v
	}

	// The orchestrator's own record of the boot says the same.
	cs, err := e.cat.Session(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var boot []struct {
		VM      string    `json:"vm"`
		Group   int       `json:"group"`
		PowerOn time.Time `json:"power_on"`
		Ready   time.Time `json:"ready"`
	}
	for _, st := range cs.Steps {
		if st.Name == orchestrator.StepBoot {
			if err := json.Unmarshal(st.Detail, &boot); err != nil {
				t.Fatalf("boot step detail %s: %v", st.Detail, err)
			}
		}
	}
	if len(boot) != 3 {
		t.Fatalf("boot step detail: %+v", boot)
	}
	for i, b := range boot {
		if b.VM != order[i] || b.Group != i+1 {
			t.Fatalf("boot step %d: %+v, want %s in group %d", i, b, order[i], i+1)
		}
		if i > 0 && !b.PowerOn.After(boot[i-1].Ready) {
			t.Fatalf("boot step: %s powered on before %s was ready: %+v", b.VM, boot[i-1].VM, boot)
		}
	}
	var app appState
	if err := readJSON(e.drv.appPath("shop"), &app); err != nil || len(app.Spec.Members) != 3 {
		t.Fatalf("app record: %+v %v", app, err)
	}

	// A powered-off VM relocates by copy.
	prod := t.TempDir()
	if err := e.drv.Relocate(ctx, "db", prod, nil); err != nil {
		t.Fatal(err)
	}
	db := e.vm("db")
	if db.Disks[0].Local != filepath.Join(prod, "db", "db.raw") {
		t.Fatalf("db's disk after a cold relocation: %+v", db.Disks[0])
	}
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", db.Disks[0].Local, db.Disks[0].URL)

	// Stop undoes it all.
	if err := e.orch.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if names, _ := e.drv.vmNames(); len(names) != 0 {
		t.Fatalf("VMs left after stop: %v", names)
	}
	if ms, _ := e.drv.mounts(); len(ms) != 0 {
		t.Fatalf("datastores left after stop: %+v", ms)
	}
	if _, err := os.Stat(e.drv.appPath("shop")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("app left after stop: %v", err)
	}
}

// TestServerRestartUnderGuest stops the NFS service under a guest that runs
// from it and writes, and starts a new one on the same repository, state
// folder and ports: once at once (a service restart), once after a 5 s
// outage. QEMU's nfs:// driver (libnfs) reconnects to the same address by
// itself; the guest's I/O waits meanwhile, and no write is lost.
//
// What a user must expect, seen here with QEMU 7.2 and libnfs 4.0: while the
// server is away QEMU's main thread spins in libnfs's reconnect loop (one
// core busy) and its QMP monitor does not answer, so PowerOff falls back to
// signals; libnfs never asks the portmapper again, so the server must come
// back on the same NFS port (on another port the guest hangs for good).
func TestServerRestartUnderGuest(t *testing.T) {
	e := newEnv(t, testVM{name: "vm", mode: testvm.ModeWrite, seconds: 25})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	id, err := e.orch.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVM, VMs: []string{"vm"}, Server: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	wrote := func() int { return consoleCount(e.serial("vm"), testvm.WroteLine) }
	e.waitSerial("vm", testvm.WroteLine, bootWithin, func(l string) bool { return consoleCount(l, testvm.WroteLine) >= 1 })
	pid := e.drv.pid("vm")

	for _, outage := range []time.Duration{0, 5 * time.Second} {
		before := wrote()
		e.stopService()
		down := time.Now()
		// The outage: QEMU must stay up all along.
		ok := waitFor(ctx, outage, func() bool { return e.drv.pid("vm") != pid })
		if ok && outage > 0 {
			t.Fatalf("QEMU exited while the server was away:\n%s\nqemu.log: %s", e.serial("vm"), e.drv.logTail("vm"))
		}
		stalled := wrote()
		e.startService()
		t.Logf("server away for %s: the guest had written %d blocks before, %d by the restart", time.Since(down).Round(time.Millisecond), before, stalled)
		e.waitSerial("vm", "writes after the restart", time.Minute, func(l string) bool { return consoleCount(l, testvm.WroteLine) > stalled })
	}

	e.waitOff("vm", 2*time.Minute)
	log := e.serial("vm")
	if strings.Contains(log, testvm.FailLine) || strings.Contains(log, "I/O error") {
		t.Fatalf("the guest saw errors:\n%s", log)
	}
	done := consoleCount(log, testvm.DoneLine)
	fs, ok := e.svc.Overlay(id)
	if !ok {
		t.Fatal("session not re-exported after the restart")
	}
	f, err := fs.Open("vm/vm-flat.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	n, err := testvm.ReadCounters(f)
	f.Close()
	if err != nil || n != done || done <= 0 {
		t.Fatalf("session disk holds %d counters (%v); the guest wrote %d", n, err, done)
	}
	t.Logf("all %d blocks the guest wrote are in the session disk", n)
	if err := e.orch.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
}
