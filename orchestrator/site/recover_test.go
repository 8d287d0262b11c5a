package site

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/simlab"
	"github.com/rekindle/rekindle/orchestrator/vsphere/vcsimext"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// labImporter is a VMBackuper stand-in for vCenter's backup engine (as
// importer in protect_test.go), into the recovery lab's repository and
// catalog: each VM gets a generated disk and the NICs the primary VM has.
type labImporter struct {
	lab  *simlab.Lab
	dir  string
	nics map[string][]NIC
}

func (im labImporter) BackupVMs(ctx context.Context, names []string) (map[string]string, error) {
	out := map[string]string{}
	for i, n := range names {
		var nics []vmgen.NICSpec
		for _, nic := range im.nics[n] {
			nics = append(nics, vmgen.NICSpec{Network: nic.Network, MAC: nic.MAC})
		}
		folder, err := vmgen.Generate(im.dir, vmgen.Spec{Name: n, Seed: int64(i + 1), NumCPUs: 1, MemoryMB: 64,
			Disks: []vmgen.DiskSpec{{Size: 1 << 20, Format: vmgen.FormatFlat}}, NICs: nics})
		if err != nil {
			return out, err
		}
		p, err := ingest.Import(ctx, im.lab.Repo, folder, ingest.Options{})
		if err != nil {
			return out, err
		}
		if err := im.lab.Catalog.IndexPoint(ctx, p); err != nil {
			return out, err
		}
		out[n] = p.ID
	}
	return out, nil
}

// faultyDriver fails the first power-on of the VM named failOn: a fault
// halfway through a recovery.
type faultyDriver struct {
	orchestrator.Driver
	c      *vim25.Client
	failOn string
	failed atomic.Bool // vApps of one priority power on at once
}

func (d *faultyDriver) PowerOn(ctx context.Context, ref orchestrator.VMRef) error {
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(d.c).RetrieveOne(ctx, types.ManagedObjectReference{Type: "VirtualMachine", Value: string(ref)}, []string{"name"}, &vm); err != nil {
		return err
	}
	if vm.Name == d.failOn && d.failed.CompareAndSwap(false, true) {
		return errors.New("injected power-on failure")
	}
	return d.Driver.PowerOn(ctx, ref)
}

// SetStartOrder passes through to the vsphere driver (the wrapper hides it).
func (d *faultyDriver) SetStartOrder(ctx context.Context, appPath string, members []orchestrator.AppMember) error {
	return d.Driver.(*simlab.SimHosts).SetStartOrder(ctx, appPath, members)
}

// snapshot is the recovery vCenter's inventory as stop must leave it.
func snapshot(t *testing.T, ctx context.Context, c *vim25.Client) map[string][]string {
	t.Helper()
	s, err := simlab.Snapshot(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// primarySite builds the primary: vApps with startup groups and
// priorities, a pool with reservations, a standard port group (VLAN 42) in
// both datacenters, a VM on it with a static address.
func primarySite(t *testing.T, ctx context.Context) (*simulator.Model, *vim25.Client) {
	t.Helper()
	model, gc := primary(t)
	vcsimext.Extend(model.Map(), vcsimext.Options{})
	c := gc.Client
	fi := find.NewFinder(c)
	for _, dcName := range []string{"DC0", "DC1"} {
		dc, err := fi.Datacenter(ctx, dcName)
		if err != nil {
			t.Fatal(err)
		}
		fi.SetDatacenter(dc)
		hosts, err := fi.HostSystemList(ctx, dc.InventoryPath+"/host/...")
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hosts {
			ns, err := h.ConfigManager().NetworkSystem(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := ns.AddPortGroup(ctx, types.HostPortGroupSpec{Name: "app-net", VlanId: 42, VswitchName: "vSwitch0"}); err != nil {
				t.Fatalf("%s: app-net: %v", h.Name(), err)
			}
		}
		app := object.NewVirtualApp(c, byName(t, ctx, c, "VirtualApp", dcName+"_C0_APP0"))
		// DC0's vApp starts after DC1's.
		prio := map[string]string{"DC0": "rekindle-priority: 2", "DC1": "rekindle-priority: 1"}[dcName]
		spec := types.VAppConfigSpec{Annotation: prio}
		for i, vmName := range []string{dcName + "_C0_APP0_VM0", dcName + "_C0_APP0_VM1"} {
			vm, err := fi.VirtualMachine(ctx, vmName)
			if err != nil {
				t.Fatal(err)
			}
			ref := vm.Reference()
			// VM1 first: the startup order is not the name order.
			// Each group waits for the guests of the one before.
			spec.EntityConfig = append(spec.EntityConfig, types.VAppEntityConfigInfo{Key: &ref, StartOrder: int32(2 - i), StartAction: "powerOn",
				WaitingForGuest: types.NewBool(true)})
		}
		if err := app.UpdateConfig(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	dc0, err := fi.Datacenter(ctx, "/DC0")
	if err != nil {
		t.Fatal(err)
	}
	fi.SetDatacenter(dc0)
	// DC0's pool has reservations.
	rp := object.NewResourcePool(c, byName(t, ctx, c, "ResourcePool", "DC0_C0_RP1"))
	r500, r256 := int64(500), int64(256)
	if err := rp.UpdateConfig(ctx, "", &types.ResourceConfigSpec{CpuAllocation: types.ResourceAllocationInfo{Reservation: &r500},
		MemoryAllocation: types.ResourceAllocationInfo{Reservation: &r256}}); err != nil {
		t.Fatal(err)
	}
	// DC0_C0_APP0_VM1's NIC on app-net, with a static address.
	vm, err := fi.VirtualMachine(ctx, "DC0_C0_APP0_VM1")
	if err != nil {
		t.Fatal(err)
	}
	devs, _ := vm.Device(ctx)
	card := devs.SelectByType((*types.VirtualEthernetCard)(nil))[0]
	netObj, err := fi.Network(ctx, "/DC0/network/app-net")
	if err != nil {
		t.Fatal(err)
	}
	backing, _ := netObj.EthernetCardBackingInfo(ctx)
	card.GetVirtualDevice().Backing = backing
	if err := vm.EditDevice(ctx, card); err != nil {
		t.Fatal(err)
	}
	setGuest(t, model, "DC0_C0_APP0_VM1", "10.1.0.7", false)
	setGuest(t, model, "DC1_C0_APP0_VM0", "10.2.0.9", true)
	return model, c
}

func TestSiteRecoverTwoSimulators(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, pc := primarySite(t, ctx)

	lab, _ := newRecoveryLab(t, ctx)
	rc := lab.Driver.Client()
	// The guests take a second to come up after power-on, so a startup
	// group that waits for them shows in vCenter's events.
	lab.Hosts.NoGuest = true
	gctx, stopGuests := context.WithCancel(ctx)
	guests := make(chan error, 1)
	go func() { guests <- simlab.PlayGuests(gctx, rc, time.Second) }()
	defer func() {
		stopGuests()
		if err := <-guests; err != nil {
			t.Error(err)
		}
	}()

	// Protect the primary with the existing protect code.
	inv, err := Extract(ctx, pc, ExtractOptions{Site: "hq"})
	if err != nil {
		t.Fatal(err)
	}
	nics := map[string][]NIC{}
	var protected []string
	for _, dc := range inv.Datacenters {
		for _, vm := range dc.VMs {
			nics[vm.Name] = vm.NICs
			if vm.VApp != "" || vm.Pool != "" && strings.Contains(vm.Pool, "RP1") {
				protected = append(protected, vm.Name)
			}
		}
	}
	pkg, err := Protect(ctx, pc, lab.Repo, labImporter{lab: lab, dir: t.TempDir(), nics: nics},
		ProtectOptions{ExtractOptions: ExtractOptions{Site: "hq"}, VMs: protected})
	if err != nil {
		t.Fatal(err)
	}
	pkg, err = Load(lab.Repo, "latest")
	if err != nil {
		t.Fatal(err)
	}

	before := snapshot(t, ctx, rc)
	fd := &faultyDriver{Driver: lab.Hosts, c: rc, failOn: "DC0_C0_APP0_VM1"}
	o := *lab.Orchestrator
	o.Driver = fd
	rec := &Recoverer{Client: rc, Orchestrator: &o, Datacenter: "/DC0", Customize: true}
	host, _, _ := net.SplitHostPort(lab.Service.NFSAddr().String())
	m := Mapping{Site: "hq"}
	plan, err := rec.Plan(ctx, []*Package{pkg}, m, RecoveryOptions{Cluster: simlab.Target, Server: host})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	plan.Print(&sb)
	t.Log("\n" + sb.String())

	// Networks: one each, however many datacenters name them.
	var names []string
	for _, n := range plan.Networks {
		names = append(names, n.Name)
	}
	if c := slices.Compact(slices.Sorted(slices.Values(names))); len(c) != len(names) {
		t.Fatalf("planned networks %v: a name twice", names)
	}
	appNet := plan.Networks[slices.IndexFunc(plan.Networks, func(n PlannedNet) bool { return n.Name == "app-net" })]
	if appNet.Exists || len(appNet.From) != 2 || appNet.VLAN != 42 {
		t.Fatalf("app-net %+v: want created once for both datacenters, VLAN 42", appNet)
	}

	id, err := rec.Create(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	err = rec.Resume(ctx, id)
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("recovery with a failed power-on: %v", err)
	}
	// Resume finishes it, without duplicates.
	if err := rec.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, ctx, rc)
	for _, kind := range []string{"VirtualMachine", "Network", "VirtualApp", "ResourcePool", "Folder"} {
		seen := map[string]bool{}
		for _, n := range after[kind] {
			if !slices.Contains(before[kind], n) && seen[n] {
				t.Errorf("%s after resume: %s twice: %v", kind, n, after[kind])
			}
			seen[n] = true
		}
	}
	// Networks with VLANs: app-net on every recovery cluster host.
	hosts, _ := find.NewFinder(rc).HostSystemList(ctx, simlab.Target+"/*")
	for _, h := range hosts {
		if !slices.Contains(after["portgroup"], h.Name()+":app-net/42") {
			t.Errorf("host %s: no app-net VLAN 42 (%v)", h.Name(), after["portgroup"])
		}
	}
	// Pools with reservations.
	fi := find.NewFinder(rc)
	rp, err := fi.ResourcePool(ctx, simlab.Target+"/Resources/hq-DC0/DC0_C0_RP1")
	if err != nil {
		t.Fatal(err)
	}
	var pool mo.ResourcePool
	if err := rp.Properties(ctx, rp.Reference(), []string{"config"}, &pool); err != nil {
		t.Fatal(err)
	}
	if *pool.Config.CpuAllocation.Reservation != 500 || *pool.Config.MemoryAllocation.Reservation != 256 {
		t.Errorf("pool reservations cpu %d mem %d: want 500, 256", *pool.Config.CpuAllocation.Reservation, *pool.Config.MemoryAllocation.Reservation)
	}
	// Folders: the datacenter's site-prefixed placeholder holds its VMs.
	if _, err := fi.VirtualMachine(ctx, "/DC0/vm/hq-DC0/DC0_C0_RP1_VM0"); err != nil {
		t.Errorf("DC0_C0_RP1_VM0 not in folder hq-DC0: %v", err)
	}
	// vApps with their startup order.
	app, err := fi.VirtualApp(ctx, simlab.Target+"/Resources/hq-DC0/DC0_C0_APP0")
	if err != nil {
		t.Fatal(err)
	}
	var va mo.VirtualApp
	if err := app.Properties(ctx, app.Reference(), []string{"vAppConfig", "vm"}, &va); err != nil {
		t.Fatal(err)
	}
	order := map[string]int32{}
	for _, ec := range va.VAppConfig.EntityConfig {
		var v mo.VirtualMachine
		if err := property.DefaultCollector(rc).RetrieveOne(ctx, *ec.Key, []string{"name"}, &v); err != nil {
			t.Fatal(err)
		}
		order[v.Name] = ec.StartOrder
	}
	if order["DC0_C0_APP0_VM1"] != 1 || order["DC0_C0_APP0_VM0"] != 2 {
		t.Errorf("startup order %v: want VM1 1, VM0 2", order)
	}
	// VMs on the recreated networks, their static address kept.
	vm1, err := fi.VirtualMachine(ctx, simlab.Target+"/Resources/hq-DC0/DC0_C0_APP0/DC0_C0_APP0_VM1")
	if err != nil {
		t.Fatal(err)
	}
	var v mo.VirtualMachine
	if err := vm1.Properties(ctx, vm1.Reference(), []string{"network", "guest.net", "runtime.powerState"}, &v); err != nil {
		t.Fatal(err)
	}
	var netNames []string
	for _, n := range v.Network {
		var nw mo.Network
		property.DefaultCollector(rc).RetrieveOne(ctx, n, []string{"name"}, &nw)
		netNames = append(netNames, nw.Name)
	}
	if !slices.Equal(netNames, []string{"app-net"}) {
		t.Errorf("DC0_C0_APP0_VM1 networks %v: want app-net", netNames)
	}
	if len(v.Guest.Net) == 0 || v.Guest.Net[0].IpConfig == nil || len(v.Guest.Net[0].IpConfig.IpAddress) == 0 ||
		v.Guest.Net[0].IpConfig.IpAddress[0].IpAddress != "10.1.0.7" {
		t.Errorf("DC0_C0_APP0_VM1 guest addresses %+v: want 10.1.0.7 (its primary address)", v.Guest.Net)
	}
	// Power-on order from the recovery vCenter's events: DC1's vApp
	// (priority 1) before DC0's (2), each in its startup order, the second
	// group powered on only after the first group's guest came up.
	var want []string
	for _, vm := range plan.VMs {
		want = append(want, vm.Name)
	}
	evs, err := simlab.VMEvents(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	got := simlab.PowerOnOrder(evs, want)
	wantOrder := []string{"DC1_C0_APP0_VM1", "DC1_C0_APP0_VM0", "DC0_C0_APP0_VM1", "DC0_C0_APP0_VM0"}
	// The standalone VMs (the last priority) power on in parallel: any order.
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) || len(got) < 4 || !slices.Equal(got[:4], wantOrder) {
		t.Errorf("power-on order in vCenter's events %v: want %v (standalone VMs in any order), %v first", got, want, wantOrder)
	}
	for _, dc := range []string{"DC0", "DC1"} {
		first, second := dc+"_C0_APP0_VM1", dc+"_C0_APP0_VM0"
		up, on := simlab.EventKey(evs, first, simlab.EventGuestUp), simlab.EventKey(evs, second, simlab.EventPoweredOn)
		if up < 0 || on < 0 || on < up {
			t.Errorf("vApp %s: group 2 (%s) powered on at event %d, group 1's guest (%s) up at event %d: group 2 did not wait for it\n%+v",
				dc, second, on, first, up, evs)
		}
	}

	// Stop leaves the recovery vCenter as it was.
	if err := rec.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if d := simlab.SnapshotDiff(snapshot(t, ctx, rc), before); d != "" {
		t.Errorf("after stop, the recovery vCenter differs from before:\n%s", d)
	}
}

func byName(t *testing.T, ctx context.Context, c *vim25.Client, kind, name string) types.ManagedObjectReference {
	t.Helper()
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{kind}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Destroy(ctx)
	refs, err := v.Find(ctx, []string{kind}, property.Match{"name": name})
	if err != nil || len(refs) != 1 {
		t.Fatalf("%s %s: %v %v", kind, name, refs, err)
	}
	return refs[0]
}
