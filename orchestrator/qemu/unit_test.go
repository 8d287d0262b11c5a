package qemu

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/orchestrator"
)

// These tests need no VM, no NFS server and no network namespace.

func TestParseDiskFile(t *testing.T) {
	for _, tc := range []struct {
		file, ds, rel, extent, disk string
		bad                         bool
	}{
		{file: "[rk-1] web01/web01.vmdk", ds: "rk-1", rel: "web01/web01.vmdk", extent: "web01/web01-flat.vmdk", disk: "web01"},
		{file: "[rk-1] web01-test/web01_1.vmdk", ds: "rk-1", rel: "web01-test/web01_1.vmdk", extent: "web01-test/web01_1-flat.vmdk", disk: "web01_1"},
		{file: "[ds] a b/disk (1).vmdk", ds: "ds", rel: "a b/disk (1).vmdk", extent: "a b/disk (1)-flat.vmdk", disk: "disk (1)"},
		{file: "[ds] vm/disk.img", ds: "ds", rel: "vm/disk.img", extent: "vm/disk.img", disk: "disk"},
		{file: "web01/web01.vmdk", bad: true},
		{file: "[] web01/web01.vmdk", bad: true},
		{file: "[ds] ../etc/passwd", bad: true},
		{file: "[ds] a/../../b.vmdk", bad: true},
	} {
		ds, rel, err := parseDiskFile(tc.file)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: parsed as %q %q", tc.file, ds, rel)
			}
			continue
		}
		if err != nil || ds != tc.ds || rel != tc.rel {
			t.Errorf("%q: %q %q %v", tc.file, ds, rel, err)
			continue
		}
		if extent, disk := flatExtent(rel); extent != tc.extent || disk != tc.disk {
			t.Errorf("%q: extent %q disk %q, want %q %q", tc.file, extent, disk, tc.extent, tc.disk)
		}
	}
}

func TestNFSURL(t *testing.T) {
	for _, tc := range []struct {
		server, path, rel, want string
	}{
		{"127.0.0.1", "/rekindle/rk-1", "vm/vm-flat.vmdk", "nfs://127.0.0.1/rekindle/rk-1/vm/vm-flat.vmdk"},
		{"::1", "/rekindle/rk-1", "vm/vm-flat.vmdk", "nfs://[::1]/rekindle/rk-1/vm/vm-flat.vmdk"},
		{"nas", "/rekindle/rk-1", "my vm/d-flat.vmdk", "nfs://nas/rekindle/rk-1/my%20vm/d-flat.vmdk"},
	} {
		if got := nfsURL(&mountState{Server: tc.server, Path: tc.path}, tc.rel); got != tc.want {
			t.Errorf("%s:%s %s: %s, want %s", tc.server, tc.path, tc.rel, got, tc.want)
		}
	}
}

func newTestDriver(t *testing.T, cfg Config) *Driver {
	t.Helper()
	cfg.WorkDir = filepath.Join(t.TempDir(), "qemu")
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestQEMUArgs(t *testing.T) {
	d := newTestDriver(t, Config{Networks: map[string]string{"prod": "user,restrict=on"}})
	if err := writeJSON(d.mountPath("rk-1"), mountState{Name: "rk-1", Server: "10.0.0.5", Path: "/rekindle/rk-1"}); err != nil {
		t.Fatal(err)
	}
	v := &vmState{Name: "web,01", NumCPU: 64, MemoryMB: 4096,
		Disks: []diskState{
			{ID: "disk0", Datastore: "rk-1", Extent: "web01/web01-flat.vmdk"},
			{ID: "disk1", Datastore: "rk-1", Extent: "web01/web01_1-flat.vmdk", Local: "/prod/web01/web01_1.raw"},
		},
		NICs: []orchestrator.NICSpec{{Key: "ethernet0", Network: "prod", Type: "vmxnet3", MAC: "00:50:56:aa:bb:cc"}, {Key: "ethernet1", Network: "backup"}},
	}
	args, err := d.qemuArgs(v)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, " ")
	for _, want := range []string{
		"-name web,,01",
		"-accel tcg",
		"-m 512",     // capped by DefaultMemoryCapMB
		"-no-reboot", // a guest that powers off ends its QEMU
		"-daemonize",
		"-drive if=virtio,id=disk0,format=raw,file.driver=nfs,file.server.type=inet,file.server.host=10.0.0.5,file.path=/rekindle/rk-1/web01/web01-flat.vmdk",
		"-drive if=virtio,id=disk1,format=raw,file.driver=file,file.filename=/prod/web01/web01_1.raw",
		"-nic user,restrict=on,model=vmxnet3,mac=00:50:56:aa:bb:cc",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("args lack %q:\n%s", want, joined)
		}
	}
	if i := slices.Index(args, "-smp"); i < 0 || args[i+1] == "64" {
		t.Errorf("-smp not capped to this machine: %s", joined)
	}
	if strings.Count(joined, "-nic ") != 1 {
		t.Errorf("a NIC on an unmapped network got a backend: %s", joined)
	}
	if _, err := d.qemuArgs(&vmState{Name: "x"}); err == nil {
		t.Error("a VM without disks got a command line")
	}
	if _, err := d.qemuArgs(&vmState{Name: "x", Disks: []diskState{{ID: "disk0", Datastore: "gone"}}}); err == nil {
		t.Error("a disk on an unmounted datastore got a command line")
	}
}

// TestInventory covers what needs no QEMU process: registration,
// reconciliation, apps, hosts, and a new Driver finding it all again.
func TestInventory(t *testing.T) {
	ctx := context.Background()
	d := newTestDriver(t, Config{})
	if _, err := d.FindVM(ctx, "web01"); !errors.Is(err, orchestrator.ErrNotFound) {
		t.Fatalf("FindVM of an unknown VM: %v", err)
	}
	if _, err := d.RegisterVM(ctx, orchestrator.Placement{Name: "web01", Host: "esx1"}); !errors.Is(err, orchestrator.ErrNotFound) {
		t.Fatalf("RegisterVM on another host: %v", err)
	}
	p := orchestrator.Placement{Name: "web01", Host: "localhost", Datastore: "rk-1", VMXPath: "web01/web01.vmx"}
	for range 2 {
		if ref, err := d.RegisterVM(ctx, p); err != nil || ref != "web01" {
			t.Fatalf("RegisterVM: %q %v", ref, err)
		}
	}
	// The VM registered from p's files, as a stop whose register step left
	// no record finds it; never one of that name with other files.
	other := p
	other.VMXPath = "web01/other.vmx"
	for _, c := range []struct {
		p    orchestrator.Placement
		want orchestrator.VMRef
	}{{p, "web01"}, {other, ""}, {orchestrator.Placement{Name: "db01", Datastore: "rk-1", VMXPath: "db01/db01.vmx"}, ""}} {
		if got, err := d.RegisteredVM(ctx, c.p); err != nil || got != c.want {
			t.Fatalf("RegisteredVM(%+v): %q %v, want %q", c.p, got, err, c.want)
		}
	}
	spec := orchestrator.VMSpec{NumCPU: 1, MemoryMB: 256, Disks: []orchestrator.DiskSpec{{File: "[rk-1] web01/web01.vmdk"}}}
	if err := d.Reconcile(ctx, "web01", spec); err == nil || !strings.Contains(err.Error(), "not mounted") {
		t.Fatalf("Reconcile with the datastore not mounted: %v", err)
	}
	// MountNFS checks the portmapper; record the mount as it would.
	if err := writeJSON(d.mountPath("rk-1"), mountState{Name: "rk-1", Server: "127.0.0.1", Path: "/rekindle/rk-1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Reconcile(ctx, "web01", spec); err != nil {
		t.Fatal(err)
	}
	if err := d.MountNFS(ctx, "localhost", orchestrator.NFSMount{Server: "127.0.0.1", Path: "/rekindle/rk-1/", Name: "rk-1"}); err != nil {
		t.Fatalf("mounting the same export again: %v", err)
	}
	if err := d.MountNFS(ctx, "localhost", orchestrator.NFSMount{Server: "127.0.0.1", Path: "/rekindle/rk-2", Name: "rk-1"}); err == nil {
		t.Fatal("the same datastore name took another export")
	}

	// A new driver on the same folder (a resumed orchestrator) sees it all.
	d2, err := New(Config{WorkDir: d.cfg.WorkDir})
	if err != nil {
		t.Fatal(err)
	}
	v, err := d2.loadVM("web01")
	if err != nil || len(v.Disks) != 1 || v.Disks[0].URL != "nfs://127.0.0.1/rekindle/rk-1/web01/web01-flat.vmdk" || v.Disks[0].Name != "web01" {
		t.Fatalf("vm record: %+v %v", v, err)
	}
	hosts, err := d2.Hosts(ctx, "ignored")
	if err != nil || len(hosts) != 1 || hosts[0].Name != "localhost" || !hosts[0].Connected || hosts[0].MemFreeMB <= 0 ||
		!slices.Equal(hosts[0].Datastores, []string{"rk-1"}) {
		t.Fatalf("hosts: %+v %v", hosts, err)
	}
	if err := d2.WaitReady(ctx, "web01", orchestrator.ReadyCheck{Heartbeat: true}); err == nil {
		t.Fatal("WaitReady of a VM never powered on succeeded")
	}
	if err := d2.PowerOff(ctx, "web01"); err != nil {
		t.Fatalf("PowerOff of a VM that is off: %v", err)
	}

	path, err := d2.EnsureApp(ctx, orchestrator.AppSpec{Name: "shop"})
	if err != nil || path != "qemu:/apps/shop" {
		t.Fatalf("EnsureApp: %q %v", path, err)
	}
	if _, err := d2.EnsureApp(ctx, orchestrator.AppSpec{Name: "shop"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := d2.DestroyApp(ctx, path); err != nil {
			t.Fatal(err)
		}
	}
	if err := d2.DestroyApp(ctx, "/DC0/vm/shop"); err == nil {
		t.Fatal("DestroyApp took a vSphere path")
	}

	for range 2 {
		if err := d2.UnmountNFS(ctx, "localhost", "rk-1"); err != nil {
			t.Fatal(err)
		}
		if err := d2.Unregister(ctx, "web01"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.FindVM(ctx, "web01"); !errors.Is(err, orchestrator.ErrNotFound) {
		t.Fatalf("FindVM after Unregister: %v", err)
	}
}
