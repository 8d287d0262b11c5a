// Package drivertest is the conformance suite every orchestrator.Driver
// passes (after restic's backend test suite): one set of tests of the
// contract the orchestrator relies on (idempotent calls, ErrNotFound for
// what is missing, an export that stays while a running VM uses it, a
// WaitReady that honours its context), run against vsphere (govmomi's
// simulator), qemu (real QEMU) and Memory.
//
// Memory is an in-memory Driver, a stand-in for a hypervisor, so the
// orchestrator's session runner has unit tests of its own: it records every
// call and can be told to fail one.
package drivertest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/rekindle/rekindle/orchestrator"
)

// Fixture is what a driver's test hands the suite: a driver, a host it can
// run a VM on, and an NFS export that holds one VM folder.
type Fixture struct {
	Driver orchestrator.Driver
	// Target is passed to Hosts; Host must be among the hosts it returns.
	Target string
	Host   string
	// Pool is the parent of the suite's vApp (a cluster or resource pool).
	Pool string
	// Mount is an export holding the VM; mounting it on Host must work.
	Mount orchestrator.NFSMount
	// VM is the VM folder on Mount: its name, its .vmx path inside the
	// export and its hardware (disk files as "[<Mount.Name>] folder/disk.vmdk").
	VMName  string
	VMXPath string
	Spec    orchestrator.VMSpec
	// PlayGuest makes the powered-on VM's guest report itself up, for
	// platforms that do not run a guest (the simulator); nil when the guest
	// comes up by itself (QEMU boots the real test VM).
	PlayGuest func(ctx context.Context, vm orchestrator.VMRef) error
	// ReadyWithin bounds the wait for the guest (default 30 s).
	ReadyWithin time.Duration
}

// Run runs the suite against the fixture. The subtests share it and run in
// order; each leaves the platform as it found it, so a driver whose
// fixture is expensive (a QEMU boot) builds it once.
func Run(t *testing.T, f *Fixture) {
	if f.ReadyWithin == 0 {
		f.ReadyWithin = 30 * time.Second
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, f *Fixture)
	}{
		{"Hosts", testHosts},
		{"NotFound", testNotFound},
		{"Mount", testMount},
		{"App", testApp},
		{"Lifecycle", testLifecycle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute+f.ReadyWithin)
			defer cancel()
			tc.fn(t, ctx, f)
		})
	}
}

func host(t *testing.T, ctx context.Context, f *Fixture) orchestrator.Host {
	t.Helper()
	hosts, err := f.Driver.Hosts(ctx, f.Target)
	if err != nil {
		t.Fatalf("Hosts(%q): %v", f.Target, err)
	}
	for _, h := range hosts {
		if h.Name == f.Host {
			return h
		}
	}
	t.Fatalf("Hosts(%q) = %v: no host %s", f.Target, hosts, f.Host)
	return orchestrator.Host{}
}

func testHosts(t *testing.T, ctx context.Context, f *Fixture) {
	if f.Driver.Name() == "" {
		t.Error("Name() is empty")
	}
	h := host(t, ctx, f)
	if !h.Connected || h.Maintenance {
		t.Errorf("host %+v: want connected, not in maintenance", h)
	}
	if h.MemFreeMB <= 0 || h.CPUFreeMHz <= 0 {
		t.Errorf("host %+v: want free memory and CPU: host selection places VMs by them", h)
	}
}

func mustNotFound(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, orchestrator.ErrNotFound) {
		t.Errorf("%s: want an error matching orchestrator.ErrNotFound, got %v", what, err)
	}
}

func testNotFound(t *testing.T, ctx context.Context, f *Fixture) {
	_, err := f.Driver.FindVM(ctx, "rekindle-suite-no-such-vm")
	mustNotFound(t, err, "FindVM of a VM that does not exist")
	err = f.Driver.MountNFS(ctx, "rekindle-suite-no-such-host", f.Mount)
	mustNotFound(t, err, "MountNFS on a host that does not exist")
	// Stopping twice must work: undoing what is not there is success.
	if err := f.Driver.UnmountNFS(ctx, f.Host, "rekindle-suite-never-mounted"); err != nil {
		t.Errorf("UnmountNFS of a datastore that is not mounted: %v", err)
	}
}

func datastores(t *testing.T, ctx context.Context, f *Fixture) []string {
	t.Helper()
	return host(t, ctx, f).Datastores
}

func testMount(t *testing.T, ctx context.Context, f *Fixture) {
	d := f.Driver
	for i := range 2 {
		if err := d.MountNFS(ctx, f.Host, f.Mount); err != nil {
			t.Fatalf("MountNFS #%d: %v", i+1, err)
		}
	}
	if ds := datastores(t, ctx, f); !slices.Contains(ds, f.Mount.Name) {
		t.Errorf("after MountNFS, host %s lists datastores %v: no %s", f.Host, ds, f.Mount.Name)
	}
	other := f.Mount
	other.Path += "-other"
	if err := d.MountNFS(ctx, f.Host, other); err == nil {
		t.Errorf("MountNFS of another export under the name %s succeeded: two exports would share one datastore name", f.Mount.Name)
	}
	for i := range 2 {
		if err := d.UnmountNFS(ctx, f.Host, f.Mount.Name); err != nil {
			t.Fatalf("UnmountNFS #%d: %v", i+1, err)
		}
	}
	if ds := datastores(t, ctx, f); slices.Contains(ds, f.Mount.Name) {
		t.Errorf("after UnmountNFS, host %s still lists %s", f.Host, f.Mount.Name)
	}
}

func testApp(t *testing.T, ctx context.Context, f *Fixture) {
	d := f.Driver
	app := orchestrator.AppSpec{Name: "rekindle-suite-app", Parent: f.Pool,
		Resources: orchestrator.Resources{CPUShares: "normal", MemReservationMB: 64}}
	p1, err := d.EnsureApp(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := d.EnsureApp(ctx, app)
	if err != nil || p2 != p1 {
		t.Fatalf("EnsureApp again: %q, %v; want %q (found, not made twice)", p2, err, p1)
	}
	for i := range 2 {
		if err := d.DestroyApp(ctx, p1); err != nil {
			t.Fatalf("DestroyApp #%d: %v", i+1, err)
		}
	}
}

// testLifecycle walks one VM through what a restore does and stop undoes,
// each call twice.
func testLifecycle(t *testing.T, ctx context.Context, f *Fixture) {
	d := f.Driver
	if err := d.MountNFS(ctx, f.Host, f.Mount); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.UnmountNFS(context.Background(), f.Host, f.Mount.Name) })
	place := orchestrator.Placement{Name: f.VMName, Host: f.Host, Datastore: f.Mount.Name, VMXPath: f.VMXPath, Pool: f.Pool}
	ref, err := d.RegisterVM(ctx, place)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = d.PowerOff(ctx, ref)
		_ = d.Unregister(ctx, ref)
	})
	if again, err := d.RegisterVM(ctx, place); err != nil || again != ref {
		t.Fatalf("RegisterVM again: %q, %v; want %q (found, not registered twice)", again, err, ref)
	}
	if found, err := d.FindVM(ctx, f.VMName); err != nil || found != ref {
		t.Fatalf("FindVM(%s): %q, %v; want %q", f.VMName, found, err, ref)
	}
	if rf, ok := d.(orchestrator.RegisteredFinder); ok {
		// The VM RegisterVM registered, found by its files; never a VM of
		// that name with other files, nor one of another name.
		other, unknown := place, place
		other.VMXPath += ".other"
		unknown.Name += "-unknown"
		for _, c := range []struct {
			p    orchestrator.Placement
			want orchestrator.VMRef
		}{{place, ref}, {other, ""}, {unknown, ""}} {
			if got, err := rf.RegisteredVM(ctx, c.p); err != nil || got != c.want {
				t.Fatalf("RegisteredVM(%+v): %q, %v; want %q", c.p, got, err, c.want)
			}
		}
	}
	for i := range 2 {
		if err := d.Reconcile(ctx, ref, f.Spec); err != nil {
			t.Fatalf("Reconcile #%d: %v", i+1, err)
		}
	}
	for i := range 2 {
		if err := d.PowerOn(ctx, ref); err != nil {
			t.Fatalf("PowerOn #%d: %v", i+1, err)
		}
	}
	check := orchestrator.ReadyCheck{Heartbeat: true}
	if f.PlayGuest != nil {
		// Before the guest is up, WaitReady ends with its context.
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := d.WaitReady(short, ref, check)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitReady before the guest is up: %v, want an error matching context.DeadlineExceeded", err)
		}
		if err := f.PlayGuest(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, f.ReadyWithin)
	err = d.WaitReady(wctx, ref, check)
	cancel()
	if err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	// The export stays while a running VM uses it.
	if err := d.UnmountNFS(ctx, f.Host, f.Mount.Name); err == nil {
		t.Fatalf("UnmountNFS under the running VM %s succeeded", f.VMName)
	}
	for i := range 2 {
		if err := d.PowerOff(ctx, ref); err != nil {
			t.Fatalf("PowerOff #%d: %v", i+1, err)
		}
	}
	for i := range 2 {
		if err := d.Unregister(ctx, ref); err != nil {
			t.Fatalf("Unregister #%d: %v", i+1, err)
		}
	}
	_, err = d.FindVM(ctx, f.VMName)
	mustNotFound(t, err, "FindVM after Unregister")
	// Stop, run again after a crash, skips what is gone by this error.
	mustNotFound(t, d.PowerOff(ctx, ref), "PowerOff after Unregister")
	if err := d.UnmountNFS(ctx, f.Host, f.Mount.Name); err != nil {
		t.Fatalf("UnmountNFS after the VM is gone: %v", err)
	}
}
