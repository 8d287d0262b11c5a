package vsphere

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
)

func TestConnect(t *testing.T) {
	s := newSim(t)
	ctx := testContext(t)

	caFile, err := s.server.CertificateFile()
	if err != nil {
		t.Fatal(err)
	}
	good := s.config()
	withCA := good
	withCA.Thumbprint, withCA.CAFile = "", caFile
	insecure := good
	insecure.Thumbprint, insecure.Insecure = "", true
	inURL := good
	inURL.Username, inURL.Password = "", ""
	inURL.URL = strings.Replace(good.URL, "://", "://"+simUser+":"+simPassword+"@", 1)

	for name, cfg := range map[string]Config{"thumbprint": good, "CA file": withCA, "insecure": insecure, "credentials in URL": inURL} {
		d, err := Connect(ctx, cfg, testLogger(t))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d.Datacenter() != "/DC0" {
			t.Errorf("%s: datacenter %q", name, d.Datacenter())
		}
		if err := d.Close(ctx); err != nil {
			t.Errorf("%s: close: %v", name, err)
		}
	}

	wrongPass := good
	wrongPass.Password = "not-the-" + simPassword
	_, err = Connect(ctx, wrongPass, testLogger(t))
	t.Logf("wrong password: %v", err)
	if err == nil || strings.Contains(err.Error(), wrongPass.Password) {
		t.Fatalf("wrong password: want an error that does not show the password, got %v", err)
	}
	if !strings.Contains(err.Error(), "log in") {
		t.Errorf("wrong password: %v", err)
	}

	wrongURLPass := inURL
	wrongURLPass.URL = strings.Replace(inURL.URL, simPassword, "hunter2-wrong", 1)
	_, err = Connect(ctx, wrongURLPass, testLogger(t))
	if err == nil || strings.Contains(err.Error(), "hunter2-wrong") {
		t.Fatalf("wrong password in URL: want an error that does not show it, got %v", err)
	}

	wrongTP := good
	wrongTP.Thumbprint = strings.Repeat("00:", 19) + "00"
	if _, err := Connect(ctx, wrongTP, testLogger(t)); err == nil {
		t.Fatal("a wrong thumbprint connected")
	}
	noTrust := good
	noTrust.Thumbprint = ""
	if _, err := Connect(ctx, noTrust, testLogger(t)); err == nil {
		t.Fatal("an untrusted certificate connected")
	}
}

func TestHosts(t *testing.T) {
	s := newSim(t)
	d := s.connect(t)
	ctx := testContext(t)

	hosts, err := d.Hosts(ctx, cluster)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range hosts {
		t.Logf("%+v", h)
		names = append(names, h.Name)
		if h.Cluster != "DC0_C0" || !h.Connected || h.Maintenance {
			t.Errorf("%+v: want connected, not in maintenance, in cluster DC0_C0", h)
		}
		if h.CPUFreeMHz <= 0 || h.MemFreeMB <= 0 {
			t.Errorf("%+v: want free CPU and memory", h)
		}
		if !slices.Contains(h.Datastores, "LocalDS_0") {
			t.Errorf("%+v: want datastore LocalDS_0", h)
		}
	}
	if want := []string{"DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2"}; !slices.Equal(names, want) {
		t.Fatalf("hosts of %s: %v, want %v", cluster, names, want)
	}

	// The same hosts from a relative path and from the cluster's root pool.
	for _, target := range []string{"DC0_C0", cluster + "/Resources"} {
		got, err := d.Hosts(ctx, target)
		if err != nil || len(got) != 3 {
			t.Errorf("hosts of %s: %d hosts, %v", target, len(got), err)
		}
	}
	all, err := d.Hosts(ctx, "")
	if err != nil || len(all) != 4 {
		t.Errorf("all hosts: %d hosts, %v; want 4", len(all), err)
	}
	for _, h := range all {
		if h.Name == "DC0_H0" && h.Cluster != "" {
			t.Errorf("standalone host in cluster %q", h.Cluster)
		}
	}
	_, err = d.Hosts(ctx, "/DC0/host/NoSuchCluster")
	mustNotFound(t, err, "hosts of a missing cluster")

	// Maintenance mode is reported.
	h2, err := d.host(ctx, "DC0_C0_H2")
	if err != nil {
		t.Fatal(err)
	}
	task, err := object.NewHostSystem(d.Client(), h2).EnterMaintenanceMode(ctx, 0, false, nil)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	hosts, err = d.Hosts(ctx, cluster)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.Maintenance != (h.Name == "DC0_C0_H2") {
			t.Errorf("%s: maintenance %v", h.Name, h.Maintenance)
		}
	}
}

func TestMountNFS(t *testing.T) {
	s := newSim(t)
	d := s.connect(t)
	ctx := testContext(t)
	m := orchestrator.NFSMount{Server: "10.0.0.5", Path: "/rekindle", Name: "rekindle"}

	for _, h := range []string{"DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H0"} { // the last one again
		if err := d.MountNFS(ctx, h, m); err != nil {
			t.Fatal(err)
		}
	}
	hosts, err := d.Hosts(ctx, cluster)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		want := h.Name != "DC0_C0_H2"
		if slices.Contains(h.Datastores, "rekindle") != want {
			t.Errorf("%s: datastores %v", h.Name, h.Datastores)
		}
	}
	// Both hosts see one datastore, backed by the NAS root's folder.
	refs, err := d.byName(ctx, []string{"Datastore"}, "rekindle")
	if err != nil || len(refs) != 1 {
		t.Fatalf("datastores named rekindle: %v, %v", refs, err)
	}
	if fi, err := os.Stat(filepath.Join(s.nasRoot, "rekindle")); err != nil || !fi.IsDir() {
		t.Fatalf("NAS folder: %v", err)
	}

	other := m
	other.Path = "/elsewhere"
	if err := d.MountNFS(ctx, "DC0_C0_H0", other); err == nil || !strings.Contains(err.Error(), "10.0.0.5:/rekindle") {
		t.Errorf("mounting another export under the same name: %v", err)
	}
	err = d.MountNFS(ctx, "no-such-host", m)
	mustNotFound(t, err, "mount on a missing host")

	for _, h := range []string{"DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H1"} {
		if err := d.UnmountNFS(ctx, h, "rekindle"); err != nil {
			t.Fatal(err)
		}
	}
	refs, err = d.byName(ctx, []string{"Datastore"}, "rekindle")
	if err != nil || len(refs) != 0 {
		t.Fatalf("datastore left behind: %v, %v", refs, err)
	}
	// Mountable again after a full unmount.
	if err := d.MountNFS(ctx, "DC0_C0_H2", m); err != nil {
		t.Fatal(err)
	}
}

// TestRestore walks a single-VM vApp restore through the driver: mount,
// vApp, register, reconcile, boot, wait for the guest, migrate, clean up.
func TestRestore(t *testing.T) {
	s := newSim(t)
	d := s.connect(t)
	ctx := testContext(t)

	mount := orchestrator.NFSMount{Server: "10.0.0.5", Path: "/rekindle", Name: "rekindle"}
	hosts := []string{"DC0_C0_H0", "DC0_C0_H1"}
	for _, h := range hosts {
		if err := d.MountNFS(ctx, h, mount); err != nil {
			t.Fatal(err)
		}
	}
	writeVMFolder(t, filepath.Join(s.nasRoot, "rekindle", "s-1", "web01"), "web01")

	// The vApp, twice.
	members := []orchestrator.AppMember{{VM: "web01", Group: 1, StartDelay: 30, WaitForGuest: true, StopAction: "guestShutdown"}}
	app := orchestrator.AppSpec{
		Name: "shop", Parent: cluster, Members: members,
		Resources: orchestrator.Resources{CPUShares: "high", CPUReservationMHz: 500, CPULimitMHz: -1, MemReservationMB: 256},
	}
	appPath, err := d.EnsureApp(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	if want := cluster + "/Resources/shop"; appPath != want {
		t.Fatalf("vApp path %q, want %q", appPath, want)
	}
	if again, err := d.EnsureApp(ctx, app); err != nil || again != appPath {
		t.Fatalf("EnsureApp again: %q, %v", again, err)
	}
	var va mo.VirtualApp
	appRef, err := d.lookupPath(ctx, appPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.pc.RetrieveOne(ctx, appRef, []string{"config"}, &va); err != nil {
		t.Fatal(err)
	}
	if cpu := va.Config.CpuAllocation; *cpu.Reservation != 500 || *cpu.Limit != -1 || cpu.Shares.Level != types.SharesLevelHigh {
		t.Errorf("vApp CPU allocation %+v", cpu)
	}

	// Register, twice.
	place := orchestrator.Placement{Name: "web01", Host: "DC0_C0_H0", Datastore: "rekindle", VMXPath: "s-1/web01/web01.vmx", Pool: appPath}
	vm, err := d.RegisterVM(ctx, place)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := d.RegisterVM(ctx, place); err != nil || again != vm {
		t.Fatalf("RegisterVM again: %q, %v; want %q", again, err, vm)
	}
	if found, err := d.FindVM(ctx, "web01"); err != nil || found != vm {
		t.Fatalf("FindVM: %q, %v", found, err)
	}

	// Startup order, once the VM is in the vApp.
	if err := d.SetStartOrder(ctx, appPath, members); err != nil {
		t.Fatal(err)
	}
	if err := d.pc.RetrieveOne(ctx, appRef, []string{"vAppConfig"}, &va); err != nil {
		t.Fatal(err)
	}
	if ec := va.VAppConfig.EntityConfig; len(ec) != 1 || ec[0].Key.Value != string(vm) || ec[0].StartOrder != 1 ||
		ec[0].StartDelay != 30 || !*ec[0].WaitingForGuest || ec[0].StartAction != "powerOn" || ec[0].StopAction != "guestShutdown" {
		t.Errorf("entity config %+v", ec)
	}
	err = d.SetStartOrder(ctx, appPath, append(members, orchestrator.AppMember{VM: "db01", Group: 0}))
	mustNotFound(t, err, "start order of an unregistered member")
	// EnsureApp, called again once the VMs are registered, records the order
	// too (for callers that only know the Driver interface).
	app.Members[0].StartDelay = 45
	if _, err := d.EnsureApp(ctx, app); err != nil {
		t.Fatal(err)
	}
	if err := d.pc.RetrieveOne(ctx, appRef, []string{"vAppConfig"}, &va); err != nil {
		t.Fatal(err)
	}
	if ec := va.VAppConfig.EntityConfig; len(ec) != 1 || ec[0].StartDelay != 45 {
		t.Errorf("entity config after EnsureApp %+v", ec)
	}
	// The vApp's hosts are its cluster's.
	if got, err := d.Hosts(ctx, appPath); err != nil || len(got) != 3 {
		t.Errorf("hosts of the vApp: %d, %v", len(got), err)
	}

	// The export cannot go while the VM is registered from it.
	err = d.UnmountNFS(ctx, "DC0_C0_H0", "rekindle")
	t.Logf("unmount in use: %v", err)
	if err == nil || !strings.Contains(err.Error(), "web01") {
		t.Fatalf("unmount under a registered VM: %v", err)
	}
	if err := d.DestroyApp(ctx, appPath); err == nil || !strings.Contains(err.Error(), "web01") {
		t.Fatalf("destroy a vApp that holds a VM: %v", err)
	}

	// Reconcile, twice: the simulator registered the VM with no disk or NIC.
	spec := orchestrator.VMSpec{
		NumCPU: 2, MemoryMB: 1024,
		Disks: []orchestrator.DiskSpec{{Controller: "scsi0:0", Adapter: "pvscsi", File: "[rekindle] s-1/web01/web01.vmdk", SizeBytes: 1 << 20}},
		NICs: []orchestrator.NICSpec{
			{Key: "ethernet0", Network: "DC0_DVPG0", Type: "vmxnet3", MAC: "00:50:56:3F:00:01"},
			{Key: "ethernet1", Network: "VM Network", Type: "e1000e"},
		},
	}
	for range 2 {
		if err := d.Reconcile(ctx, vm, spec); err != nil {
			t.Fatal(err)
		}
		checkHardware(t, ctx, d, vm)
	}

	// Boot, twice.
	for range 2 {
		if err := d.PowerOn(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}

	// The guest is not up: WaitReady times out, naming the VM.
	check := orchestrator.ReadyCheck{Heartbeat: true, IP: true}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = d.WaitReady(short, vm, check)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "web01") {
		t.Fatalf("WaitReady before the guest is up: %v", err)
	}
	// Tools running, heartbeat still gray: not ready either.
	playGuest(t, ctx, d, vm, map[string]string{"guest.toolsRunningStatus": "guestToolsRunning", "guest.ipAddress": "10.1.2.3"})
	short, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	err = d.WaitReady(short, vm, check)
	cancel()
	t.Logf("gray heartbeat: %v", err)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "heartbeat") {
		t.Fatalf("WaitReady with a gray heartbeat: %v", err)
	}
	// A waiter returns once the heartbeat turns green.
	ready := make(chan error, 1)
	go func() { ready <- d.WaitReady(ctx, vm, check) }()
	playGuest(t, ctx, d, vm, map[string]string{"guestHeartbeatStatus": "green"})
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("WaitReady did not return after the guest came up")
	}

	// Migrate to production storage, with progress; again is a no-op.
	var reported []int
	if err := d.Relocate(ctx, vm, "LocalDS_0", func(p int) { reported = append(reported, p) }); err != nil {
		t.Fatal(err)
	}
	if len(reported) == 0 || reported[len(reported)-1] != 100 || !slices.IsSorted(reported) {
		t.Errorf("progress %v: want rising to 100", reported)
	}
	var v mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, vmRef(vm), []string{"datastore"}, &v); err != nil {
		t.Fatal(err)
	}
	local, err := d.datastore(ctx, "LocalDS_0")
	if err != nil || !slices.Equal(v.Datastore, []types.ManagedObjectReference{local}) {
		t.Fatalf("datastores after relocation: %v (%v)", v.Datastore, err)
	}
	if err := d.Relocate(ctx, vm, "LocalDS_0", nil); err != nil {
		t.Fatal(err)
	}

	// Clean up, each step twice; nothing is left behind.
	for range 2 {
		if err := d.Unregister(ctx, vm); err != nil {
			t.Fatal(err)
		}
		for _, h := range hosts {
			if err := d.UnmountNFS(ctx, h, "rekindle"); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.DestroyApp(ctx, appPath); err != nil {
			t.Fatal(err)
		}
	}
	_, err = d.FindVM(ctx, "web01")
	mustNotFound(t, err, "VM after cleanup")
	_, err = d.lookupPath(ctx, appPath)
	mustNotFound(t, err, "vApp after cleanup")
	if refs, err := d.byName(ctx, []string{"Datastore"}, "rekindle"); err != nil || len(refs) != 0 {
		t.Fatalf("datastore after cleanup: %v, %v", refs, err)
	}
	if refs, err := d.byName(ctx, []string{"VirtualApp"}, "shop"); err != nil || len(refs) != 0 {
		t.Fatalf("vApp after cleanup: %v, %v", refs, err)
	}
	// The backup's files are still there.
	if _, err := os.Stat(filepath.Join(s.nasRoot, "rekindle", "s-1", "web01", "web01-flat.vmdk")); err != nil {
		t.Fatal(err)
	}
}

// checkHardware asserts what Reconcile should have made of web01.
func checkHardware(t *testing.T, ctx context.Context, d *Driver, vm orchestrator.VMRef) {
	t.Helper()
	var v mo.VirtualMachine
	if err := d.pc.RetrieveOne(ctx, vmRef(vm), []string{"config"}, &v); err != nil {
		t.Fatal(err)
	}
	hw := v.Config.Hardware
	if hw.NumCPU != 2 || hw.MemoryMB != 1024 {
		t.Errorf("CPU %d, memory %d MB", hw.NumCPU, hw.MemoryMB)
	}
	devices := object.VirtualDeviceList(hw.Device)
	disks := devices.SelectByType((*types.VirtualDisk)(nil))
	ctrls := devices.SelectByType((*types.ParaVirtualSCSIController)(nil))
	if len(disks) != 1 || len(ctrls) != 1 {
		t.Fatalf("%d disks, %d pvscsi controllers; want 1 and 1", len(disks), len(ctrls))
	}
	disk := disks[0].(*types.VirtualDisk)
	ctrl := ctrls[0].(*types.ParaVirtualSCSIController)
	if file := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName; file != "[rekindle] s-1/web01/web01.vmdk" {
		t.Errorf("disk file %q", file)
	}
	if disk.ControllerKey != ctrl.Key || *disk.UnitNumber != 0 || ctrl.BusNumber != 0 {
		t.Errorf("disk on controller %d unit %d, controller %d bus %d", disk.ControllerKey, *disk.UnitNumber, ctrl.Key, ctrl.BusNumber)
	}

	nics := devices.SelectByType((*types.VirtualEthernetCard)(nil))
	if len(nics) != 2 {
		t.Fatalf("%d NICs, want 2", len(nics))
	}
	for _, n := range nics {
		card := n.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		switch n.(type) {
		case *types.VirtualVmxnet3:
			b, ok := card.Backing.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo)
			if !ok || b.Port.PortgroupKey == "" || b.Port.SwitchUuid == "" {
				t.Errorf("vmxnet3 backing %#v, want the DVS port group", card.Backing)
			}
			if card.MacAddress != "00:50:56:3f:00:01" || card.AddressType != "manual" {
				t.Errorf("vmxnet3 MAC %s (%s)", card.MacAddress, card.AddressType)
			}
		case *types.VirtualE1000e:
			b, ok := card.Backing.(*types.VirtualEthernetCardNetworkBackingInfo)
			if !ok || b.DeviceName != "VM Network" {
				t.Errorf("e1000e backing %#v, want VM Network", card.Backing)
			}
		default:
			t.Errorf("unexpected NIC %T", n)
		}
	}
}

// TestFaults checks that vCenter's fault text reaches the caller, prefixed
// with what the driver was doing.
func TestFaults(t *testing.T) {
	s := newSim(t)
	d := s.connect(t)
	ctx := testContext(t)

	vm, err := d.FindVM(ctx, "DC0_H0_VM0")
	if err != nil {
		t.Fatal(err)
	}
	const msg = "Insufficient resources to satisfy configured failover level for vSphere HA"
	s.model.Service.AddFaultRule(&simulator.FaultInjectionRule{
		MethodName:  "PowerOffVM_Task",
		ObjectType:  "VirtualMachine",
		ObjectName:  "DC0_H0_VM0",
		Probability: 1,
		FaultType:   simulator.FaultTypeInsufficientResourcesFault,
		Message:     msg,
		Enabled:     true,
	})
	err = d.PowerOff(ctx, vm)
	t.Logf("injected fault: %v", err)
	if err == nil || !strings.Contains(err.Error(), msg) || !strings.HasPrefix(err.Error(), "power off DC0_H0_VM0: ") {
		t.Fatalf("injected fault: %v", err)
	}
	s.model.Service.ClearFaultRules()

	// A task fault: the simulator refuses to power on a VM on a host in
	// maintenance mode.
	if err := d.PowerOff(ctx, vm); err != nil {
		t.Fatal(err)
	}
	h, err := d.host(ctx, "DC0_H0")
	if err != nil {
		t.Fatal(err)
	}
	task, err := object.NewHostSystem(d.Client(), h).EnterMaintenanceMode(ctx, 0, false, nil)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	err = d.PowerOn(ctx, vm)
	t.Logf("task fault: %v", err)
	if err == nil || !strings.Contains(err.Error(), "power on DC0_H0_VM0: InvalidState") {
		t.Fatalf("power on in maintenance mode: %v", err)
	}

	// Missing things.
	_, err = d.FindVM(ctx, "nope")
	mustNotFound(t, err, "FindVM")
	mustNotFound(t, d.PowerOn(ctx, "vm-does-not-exist"), "PowerOn")
	if err := d.Unregister(ctx, "vm-does-not-exist"); err != nil {
		t.Errorf("unregister a missing VM: %v", err)
	}
	if err := d.DestroyApp(ctx, cluster+"/Resources/nope"); err != nil {
		t.Errorf("destroy a missing vApp: %v", err)
	}
	if err := d.UnmountNFS(ctx, "DC0_C0_H0", "nope"); err != nil {
		t.Errorf("unmount a missing datastore: %v", err)
	}
}
