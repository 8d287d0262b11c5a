package orchestrator

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

func testInputs() Inputs {
	pt := func(vm string, mem int, net string) *repo.RestorePoint {
		return &repo.RestorePoint{ID: "20261121T000000Z-" + map[string]string{"db01": "000001", "app01": "000002", "web01": "000003"}[vm],
			VM:    repo.VMIdentity{Name: vm, NumCPU: 2, MemoryMB: mem},
			Disks: []repo.Disk{{Name: vm, Controller: "scsi0:0", Adapter: "pvscsi", Size: 1 << 30}},
			NICs:  []repo.NIC{{Key: "ethernet0", Network: net, Type: "vmxnet3", MAC: "00:50:56:00:00:01"}}}
	}
	return Inputs{
		Points: map[string]*repo.RestorePoint{"db01": pt("db01", 8192, "prod-db"), "app01": pt("app01", 4096, "prod-web"), "web01": pt("web01", 2048, "prod-web")},
		App: &repo.App{Name: "shop", Members: []repo.AppMember{
			{VM: "web01", Group: 3}, {VM: "app01", Group: 2}, {VM: "db01", Group: 1, WaitForGuest: true, StartDelay: 10}}},
		Hosts: []Host{
			{Name: "esx1", Connected: true, MemFreeMB: 16384},
			{Name: "esx2", Connected: true, MemFreeMB: 12000},
			{Name: "esx3", Connected: true, Maintenance: true, MemFreeMB: 65536},
			{Name: "esx4", Connected: false, MemFreeMB: 65536},
		},
	}
}

func TestPlanVApp(t *testing.T) {
	in := testInputs()
	p, err := MakePlan(Request{Kind: KindVApp, App: "shop", Target: "/DC0/host/C0", Server: "nfs1",
		NetworkMap: map[string]string{"prod-db": "dr-db"}}, in)
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]string{{"db01"}, {"app01"}, {"web01"}}; !reflect.DeepEqual(p.Groups, want) {
		t.Fatalf("groups %v, want %v", p.Groups, want)
	}
	hosts := map[string]string{}
	for _, vm := range p.VMs {
		hosts[vm.Name] = vm.Host
		if vm.Host == "esx3" || vm.Host == "esx4" {
			t.Fatalf("%s placed on unusable host %s", vm.Name, vm.Host)
		}
	}
	// db01 (8 GB) takes the roomiest host; app01 then fits best on esx2.
	if hosts["db01"] != "esx1" || hosts["app01"] != "esx2" {
		t.Fatalf("placement %v", hosts)
	}
	if !reflect.DeepEqual(p.Hosts, []string{"esx1", "esx2"}) {
		t.Fatalf("mount hosts %v", p.Hosts)
	}
	db := p.VM("db01")
	if !db.Ready.Heartbeat || db.StartDelay != 10 || db.Spec.NICs[0].Network != "dr-db" || db.Spec.NICs[0].MAC != "00:50:56:00:00:01" {
		t.Fatalf("db01 plan %+v", db)
	}
	if db.Spec.Disks[0].File != "db01/db01.vmdk" || p.App == nil || p.App.Name != "shop" || len(p.App.Members) != 3 {
		t.Fatalf("disk %q app %+v", db.Spec.Disks[0].File, p.App)
	}
}

func TestPlanTestClone(t *testing.T) {
	p, err := MakePlan(Request{Kind: KindTest, App: "shop", Target: "/DC0/host/C0", Server: "nfs1", Test: true, IsolatedNetwork: "bubble"}, testInputs())
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range p.VMs {
		if !strings.HasSuffix(vm.Name, "-test") || vm.Folder != vm.Name {
			t.Fatalf("clone name %q folder %q", vm.Name, vm.Folder)
		}
		for _, n := range vm.Spec.NICs {
			if n.Network != "bubble" || n.MAC != "" {
				t.Fatalf("clone NIC %+v: must be isolated with a fresh MAC", n)
			}
		}
	}
	if p.App.Name != "shop-test" {
		t.Fatalf("clone app %q", p.App.Name)
	}
}

func TestPlanPartial(t *testing.T) {
	p, err := MakePlan(Request{Kind: KindPartial, App: "shop", VMs: []string{"app01"}, Target: "/DC0/host/C0", Server: "nfs1"}, testInputs())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.VMs) != 1 || p.VMs[0].Name != "app01" || p.VMs[0].Group != 2 || p.App.Name != "shop" {
		t.Fatalf("partial plan %+v", p)
	}
}

func TestPlanErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		mod  func(*Inputs)
		want string
	}{
		{"no server", Request{Kind: KindVM, VMs: []string{"db01"}}, nil, "NFS server"},
		{"unknown kind", Request{Kind: "all", Server: "s"}, nil, "unknown restore kind"},
		{"no app", Request{Kind: KindVApp, App: "x", Server: "s"}, func(in *Inputs) { in.App = nil }, "not in the catalog"},
		{"no point", Request{Kind: KindVM, VMs: []string{"zz01"}, Server: "s"}, nil, "zz01 has no restore point"},
		{"not a member", Request{Kind: KindPartial, App: "shop", VMs: []string{"zz01"}, Server: "s"}, nil, "not a member"},
		{"test needs network", Request{Kind: KindTest, App: "shop", Server: "s", Test: true}, nil, "isolated network"},
		{"no usable host", Request{Kind: KindVM, VMs: []string{"db01"}, Server: "s"}, func(in *Inputs) { in.Hosts = in.Hosts[2:] }, "esx3 (in maintenance), esx4 (not connected)"},
		{"too big", Request{Kind: KindVM, VMs: []string{"db01"}, Server: "s"}, func(in *Inputs) { in.Points["db01"].VM.MemoryMB = 1 << 20 }, "no host has room for db01"},
		{"apart needs 3 hosts", Request{Kind: KindVApp, App: "shop", Server: "s", Apart: [][]string{{"db01", "app01", "web01"}}}, nil, "apart from"},
		{"unmapped nic", Request{Kind: KindVM, VMs: []string{"db01"}, Server: "s"}, func(in *Inputs) { in.Points["db01"].NICs[0].Network = "" }, "--network-map"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := testInputs()
			if tc.mod != nil {
				tc.mod(&in)
			}
			_, err := MakePlan(tc.req, in)
			if !errors.Is(err, ErrPlan) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrPlan containing %q", err, tc.want)
			}
		})
	}
}

func TestPlanApart(t *testing.T) {
	in := testInputs()
	in.Hosts = append(in.Hosts, Host{Name: "esx5", Connected: true, MemFreeMB: 4096})
	p, err := MakePlan(Request{Kind: KindVApp, App: "shop", Server: "s", ReadyTimeout: time.Minute,
		Apart: [][]string{{"app01", "web01"}}}, in)
	if err != nil {
		t.Fatal(err)
	}
	if p.VM("app01").Host == p.VM("web01").Host {
		t.Fatalf("app01 and web01 must run apart, both on %s", p.VM("app01").Host)
	}
}
