package site

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator/simlab"
)

// recoveryLab is a recovery site (simlab) and a recoverer on it.
func recoveryLab(t *testing.T, ctx context.Context) (*simlab.Lab, *Recoverer, string) {
	t.Helper()
	lab, err := simlab.New(ctx, simlab.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Close)
	host, _, _ := net.SplitHostPort(lab.Service.NFSAddr().String())
	return lab, &Recoverer{Client: lab.Driver.Client(), Orchestrator: lab.Orchestrator, Datacenter: "/DC0", Customize: true}, host
}

// addPortGroup adds a standard port group to every host of the cluster.
func addPortGroup(t *testing.T, ctx context.Context, c *vim25.Client, cluster, name string, vlan int32) {
	t.Helper()
	hosts, err := find.NewFinder(c).HostSystemList(ctx, cluster+"/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		ns, err := h.ConfigManager().NetworkSystem(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := ns.AddPortGroup(ctx, types.HostPortGroupSpec{Name: name, VlanId: vlan, VswitchName: "vSwitch0"}); err != nil {
			t.Fatalf("%s: port group %s: %v", h.Name(), name, err)
		}
	}
}

// TestSiteRecoverNetworks: a recovery refuses a network of the recovery
// site with the package's name and another VLAN, creating nothing; --map
// moves it to a name of its own; a distributed switch the recovery site
// lacks is created with its port groups and their VLANs; stop removes it
// all.
func TestSiteRecoverNetworks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, pc := primarySite(t, ctx) // app-net, VLAN 42, in both datacenters
	// The primary's DC0 has a distributed switch with two port groups.
	fi := find.NewFinder(pc)
	dc0, err := fi.Datacenter(ctx, "/DC0")
	if err != nil {
		t.Fatal(err)
	}
	folders, err := dc0.Folders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	task, err := folders.NetworkFolder.CreateDVS(ctx, types.DVSCreateSpec{ConfigSpec: &types.VMwareDVSConfigSpec{DVSConfigSpec: types.DVSConfigSpec{Name: "prod-dvs"}}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dvs := object.NewDistributedVirtualSwitch(pc, info.Result.(types.ManagedObjectReference))
	for name, vlan := range map[string]int32{"web-pg": 100, "db-pg": 200} {
		task, err := dvs.AddPortgroup(ctx, []types.DVPortgroupConfigSpec{{Name: name, Type: "earlyBinding", NumPorts: 8,
			DefaultPortConfig: &types.VMwareDVSPortSetting{Vlan: &types.VmwareDistributedVirtualSwitchVlanIdSpec{VlanId: vlan}}}})
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	pkg, err := Extract(ctx, pc, ExtractOptions{Site: "hq"})
	if err != nil {
		t.Fatal(err)
	}

	lab, rec, server := recoveryLab(t, ctx)
	rc := lab.Driver.Client()
	// The recovery site has its own app-net, on VLAN 7.
	addPortGroup(t, ctx, rc, simlab.Target, "app-net", 7)
	before := snapshot(t, ctx, rc)
	opt := RecoveryOptions{Cluster: simlab.Target, Server: server}
	_, err = rec.Plan(ctx, []*Package{pkg}, Mapping{Site: "hq"}, opt)
	if err == nil || !strings.Contains(err.Error(), "network app-net (VLAN 42") || !strings.Contains(err.Error(), "with VLAN 7") ||
		!strings.Contains(err.Error(), "--map network:app-net=NAME") {
		t.Fatalf("a plan onto app-net of another VLAN: %v; want a refusal naming both VLANs and --map", err)
	}
	if d := simlab.SnapshotDiff(snapshot(t, ctx, rc), before); d != "" {
		t.Fatalf("a refused plan changed the recovery vCenter:\n%s", d)
	}
	if list, err := lab.Catalog.Sessions(ctx); err != nil || len(list) != 0 {
		t.Fatalf("a refused plan left sessions: %v %v", list, err)
	}

	// --map gives app-net a name of its own.
	m := Mapping{Site: "hq"}
	if err := m.ParseMap("network:app-net=app-net-dr"); err != nil {
		t.Fatal(err)
	}
	plan, err := rec.Plan(ctx, []*Package{pkg}, m, opt)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(plan.Switches, func(s PlannedSwitch) bool { return s.Name == "prod-dvs" }); i < 0 {
		t.Fatalf("planned switches %+v: want prod-dvs created", plan.Switches)
	}
	id, err := rec.Create(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, ctx, rc)
	hosts, err := find.NewFinder(rc).HostSystemList(ctx, simlab.Target+"/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if !slices.Contains(after["portgroup"], h.Name()+":app-net-dr/42") || !slices.Contains(after["portgroup"], h.Name()+":app-net/7") {
			t.Errorf("host %s: want app-net-dr on VLAN 42 beside the site's own app-net on 7: %v", h.Name(), after["portgroup"])
		}
	}
	if got := simlab.Added(before, after, "DistributedVirtualSwitch"); !slices.Equal(got, []string{"prod-dvs"}) {
		t.Errorf("new distributed switches %v: want prod-dvs", got)
	}
	if got := simlab.Added(before, after, "DistributedVirtualPortgroup"); !slices.Contains(got, "web-pg") || !slices.Contains(got, "db-pg") {
		t.Errorf("new distributed port groups %v: want web-pg and db-pg", got)
	}
	var pgs []mo.DistributedVirtualPortgroup
	v, err := view.NewManager(rc).CreateContainerView(ctx, rc.ServiceContent.RootFolder, []string{"DistributedVirtualPortgroup"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Destroy(ctx)
	if err := v.Retrieve(ctx, []string{"DistributedVirtualPortgroup"}, []string{"name", "config"}, &pgs); err != nil {
		t.Fatal(err)
	}
	vlans := map[string]int{}
	for _, pg := range pgs {
		sw := ""
		if pg.Config.DistributedVirtualSwitch != nil {
			var s mo.DistributedVirtualSwitch
			if err := property.DefaultCollector(rc).RetrieveOne(ctx, *pg.Config.DistributedVirtualSwitch, []string{"name"}, &s); err == nil {
				sw = s.Name
			}
		}
		vlans[sw+"/"+pg.Name] = dvpgVLAN(pg)
	}
	if vlans["prod-dvs/web-pg"] != 100 || vlans["prod-dvs/db-pg"] != 200 {
		t.Errorf("distributed port groups %v: want prod-dvs/web-pg on VLAN 100, prod-dvs/db-pg on 200", vlans)
	}

	if err := rec.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if d := simlab.SnapshotDiff(snapshot(t, ctx, rc), before); d != "" {
		t.Errorf("after stop, the recovery vCenter differs from before:\n%s", d)
	}
}

// TestSiteRecoverTestMode: a test recovery puts every name it makes under
// the -test suffix, its networks on an isolated vSwitch without uplinks
// (no NIC on the recovery site's own networks of the same names, which a
// DR test must not join), and stop leaves the recovery vCenter's inventory
// as it found it.
func TestSiteRecoverTestMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, pc := primarySite(t, ctx)
	lab, rec, server := recoveryLab(t, ctx)
	rc := lab.Driver.Client()
	// The recovery site runs networks of the primary's names already
	// (DC0_DVPG0 comes with the simulator): a copy that is not isolated
	// joins them, and only the checks below can tell.
	addPortGroup(t, ctx, rc, simlab.Target, "app-net", 42)
	inv, err := Extract(ctx, pc, ExtractOptions{Site: "hq", Datacenters: []string{"DC0"}})
	if err != nil {
		t.Fatal(err)
	}
	nics := map[string][]NIC{}
	for _, vm := range inv.Datacenters[0].VMs {
		nics[vm.Name] = vm.NICs
	}
	app := []string{"DC0_C0_APP0_VM0", "DC0_C0_APP0_VM1"}
	if _, err := Protect(ctx, pc, lab.Repo, labImporter{lab: lab, dir: t.TempDir(), nics: nics},
		ProtectOptions{ExtractOptions: ExtractOptions{Site: "hq", Datacenters: []string{"DC0"}}, VMs: app}); err != nil {
		t.Fatal(err)
	}
	pkg, err := Load(lab.Repo, "latest")
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, ctx, rc)
	plan, err := rec.Plan(ctx, []*Package{pkg}, Mapping{Site: "hq"}, RecoveryOptions{Cluster: simlab.Target, Server: server, Test: true})
	if err != nil {
		t.Fatal(err)
	}
	id, err := rec.Create(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, ctx, rc)
	// VMs, vApps and networks carry the suffix; pools and folders are the
	// suffixed datacenter placeholder or below it.
	for _, kind := range []string{"VirtualMachine", "VirtualApp", "Network"} {
		for _, n := range simlab.Added(before, after, kind) {
			if !strings.HasSuffix(n, TestSuffix) {
				t.Errorf("test recovery made %s %s: not under the %s suffix", kind, n, TestSuffix)
			}
		}
	}
	pre := simlab.Target + "/Resources/hq-DC0" + TestSuffix
	for _, pl := range plan.Pools {
		if pl.Path != pre && !strings.HasPrefix(pl.Path, pre+"/") {
			t.Errorf("test recovery pool %s: not under %s", pl.Path, pre)
		}
	}
	for _, f := range plan.Folders {
		if f.Path != "hq-DC0"+TestSuffix && !strings.HasPrefix(f.Path, "hq-DC0"+TestSuffix+"/") {
			t.Errorf("test recovery folder %s: not under hq-DC0%s", f.Path, TestSuffix)
		}
	}
	for _, vm := range app {
		if !slices.Contains(after["VirtualMachine"], vm+TestSuffix) {
			t.Errorf("no test copy %s%s: %v", vm, TestSuffix, after["VirtualMachine"])
		}
	}
	// Every NIC of the copies is on an isolated port group; the isolated
	// vSwitch has no uplinks. No distributed switch or port group (they
	// have uplinks) is made.
	for _, kind := range []string{"DistributedVirtualSwitch", "DistributedVirtualPortgroup"} {
		if added := simlab.Added(before, after, kind); len(added) > 0 {
			t.Errorf("test recovery made %s %v: not isolated", kind, added)
		}
	}
	fi := find.NewFinder(rc)
	for _, vm := range app {
		o, err := fi.VirtualMachine(ctx, simlab.Target+"/Resources/hq-DC0"+TestSuffix+"/DC0_C0_APP0"+TestSuffix+"/"+vm+TestSuffix)
		if err != nil {
			t.Fatal(err)
		}
		var v mo.VirtualMachine
		if err := o.Properties(ctx, o.Reference(), []string{"network"}, &v); err != nil {
			t.Fatal(err)
		}
		for _, n := range v.Network {
			var nw mo.Network
			if err := property.DefaultCollector(rc).RetrieveOne(ctx, n, []string{"name"}, &nw); err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(nw.Name, TestSuffix) {
				t.Errorf("%s%s is on network %s: not an isolated test network", vm, TestSuffix, nw.Name)
			}
		}
	}
	hosts, err := fi.HostSystemList(ctx, simlab.Target+"/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		ns, err := h.ConfigManager().NetworkSystem(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var hns mo.HostNetworkSystem
		if err := ns.Properties(ctx, ns.Reference(), []string{"networkInfo"}, &hns); err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(hns.NetworkInfo.Vswitch, func(v types.HostVirtualSwitch) bool { return v.Name == IsolatedSwitch })
		if i < 0 {
			t.Fatalf("host %s: no %s vSwitch", h.Name(), IsolatedSwitch)
		}
		if sw := hns.NetworkInfo.Vswitch[i]; len(sw.Pnic) > 0 || sw.Spec.Bridge != nil {
			t.Errorf("host %s: %s has uplinks %v %v", h.Name(), IsolatedSwitch, sw.Pnic, sw.Spec.Bridge)
		}
		for _, pg := range hns.NetworkInfo.Portgroup {
			if strings.HasSuffix(pg.Spec.Name, TestSuffix) && pg.Spec.VswitchName != IsolatedSwitch {
				t.Errorf("host %s: test port group %s on %s, not %s", h.Name(), pg.Spec.Name, pg.Spec.VswitchName, IsolatedSwitch)
			}
		}
	}
	if err := rec.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if d := simlab.SnapshotDiff(snapshot(t, ctx, rc), before); d != "" {
		t.Errorf("after stopping the test recovery, the recovery vCenter differs from before:\n%s", d)
	}
}
