package site

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// primary is a simulated primary vCenter with two datacenters, each with a
// cluster, a resource pool, a vApp, VM folders and port groups.
func primary(t *testing.T) (*simulator.Model, *govmomi.Client) {
	t.Helper()
	model := simulator.VPX()
	model.Datacenter, model.Pool, model.App, model.Folder, model.Portgroup = 2, 1, 1, 1, 1
	if err := model.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(model.Remove)
	srv := model.Service.NewServer()
	t.Cleanup(srv.Close)
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, srv.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	return model, c
}

// setGuest plays the guest of the VM named name: its first NIC reports
// addr (static, or from DHCP).
func setGuest(t *testing.T, model *simulator.Model, name, addr string, dhcp bool) string {
	t.Helper()
	for _, obj := range model.Map().All("VirtualMachine") {
		vm := obj.(*simulator.VirtualMachine)
		if vm.Name != name {
			continue
		}
		for _, dev := range vm.Config.Hardware.Device {
			if card, ok := dev.(types.BaseVirtualEthernetCard); ok {
				mac := card.GetVirtualEthernetCard().MacAddress
				ip := types.NetIpConfigInfoIpAddress{IpAddress: addr, PrefixLength: 24}
				cfg := &types.NetIpConfigInfo{IpAddress: []types.NetIpConfigInfoIpAddress{ip}}
				if dhcp {
					cfg.Dhcp = &types.NetDhcpConfigInfo{Ipv4: &types.NetDhcpConfigInfoDhcpOptions{Enable: true}}
				}
				vm.Guest.Net = []types.GuestNicInfo{{MacAddress: mac, IpAddress: []string{addr}, IpConfig: cfg}}
				return mac
			}
		}
	}
	t.Fatalf("no VM %s with a NIC", name)
	return ""
}

func TestExtract(t *testing.T) {
	model, c := primary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mac := setGuest(t, model, "DC0_C0_RP1_VM0", "10.1.0.5", false)
	setGuest(t, model, "DC1_C0_APP0_VM0", "10.2.0.9", true)

	// A VM folder hierarchy, with a VM in it.
	fi := find.NewFinder(c.Client)
	dc0, err := fi.Datacenter(ctx, "DC0")
	if err != nil {
		t.Fatal(err)
	}
	dcf, _ := dc0.Folders(ctx)
	prod, err := dcf.VmFolder.CreateFolder(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	web, err := prod.CreateFolder(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	vmObj, err := fi.VirtualMachine(ctx, "/DC0/vm/DC0_C0_RP1_VM0")
	if err != nil {
		t.Fatal(err)
	}
	if task, err := web.MoveInto(ctx, []types.ManagedObjectReference{vmObj.Reference()}); err != nil || task.Wait(ctx) != nil {
		t.Fatalf("move into prod/web: %v", err)
	}

	p, err := Extract(ctx, c.Client, ExtractOptions{Site: "hq", Points: map[string]string{"DC0_C0_RP1_VM0": "20261121T100000Z-00000a"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.Encode()
	t.Logf("package: %d bytes", len(b))
	if strings.Contains(string(b), "pass") || p.Source != "127.0.0.1" {
		t.Errorf("source %q; the package must not carry credentials", p.Source)
	}
	if len(p.Datacenters) != 2 || p.Datacenters[0].Name != "DC0" || p.Datacenters[1].Name != "DC1" {
		t.Fatalf("datacenters %+v", p.Datacenters)
	}
	dc := p.Datacenters[0]
	if len(dc.Clusters) != 1 || len(dc.Clusters[0].Hosts) != 3 || dc.Clusters[0].CPUMHz <= 0 || dc.Clusters[0].MemoryMB <= 0 {
		t.Errorf("clusters %+v", dc.Clusters)
	}
	if !slices.ContainsFunc(dc.Pools, func(pl Pool) bool { return pl.Path == "DC0_C0/DC0_C0_RP1" }) {
		t.Errorf("pools %+v: want DC0_C0/DC0_C0_RP1", dc.Pools)
	}
	if len(dc.VApps) != 1 || dc.VApps[0].Parent != "DC0_C0" || len(dc.VApps[0].Members) == 0 {
		t.Errorf("vApps %+v", dc.VApps)
	}
	if !slices.Contains(dc.Folders, "prod") || !slices.Contains(dc.Folders, "prod/web") {
		t.Errorf("folders %v: want prod, prod/web", dc.Folders)
	}
	var kinds []string
	for _, n := range dc.Networks {
		kinds = append(kinds, n.Kind+":"+n.Name)
		if n.Kind == NetStandard && len(n.Hosts) == 0 {
			t.Errorf("standard network %s on no host", n.Name)
		}
	}
	if !slices.Contains(kinds, "distributed:DC0_DVPG0") || !slices.Contains(kinds, "standard:VM Network") {
		t.Errorf("networks %v: want DC0_DVPG0 (distributed) and VM Network (standard)", kinds)
	}
	vm := findVM(dc.VMs, "DC0_C0_RP1_VM0")
	if vm == nil || vm.Point != "20261121T100000Z-00000a" || len(vm.NICs) == 0 || vm.NICs[0].MAC != strings.ToLower(mac) ||
		vm.NICs[0].Addressing != AddrStatic || !slices.Equal(vm.NICs[0].Addresses, []string{"10.1.0.5/24"}) || vm.NICs[0].Network == "" || vm.Folder != "prod/web" || vm.Pool != "DC0_C0/DC0_C0_RP1" {
		t.Fatalf("VM %+v", vm)
	}
	if vm := findVM(p.Datacenters[1].VMs, "DC1_C0_APP0_VM0"); vm == nil || vm.NICs[0].Addressing != AddrDHCP {
		t.Fatalf("DC1 VM %+v: want DHCP", vm)
	}

	// Stored, it needs its points first.
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(r, p); err == nil || !strings.Contains(err.Error(), "20261121T100000Z-00000a") {
		t.Fatalf("save with a missing point: %v", err)
	}
	for i := range p.Datacenters[0].VMs {
		p.Datacenters[0].VMs[i].Point = ""
	}
	if err := Save(r, p); err != nil {
		t.Fatal(err)
	}
	got, err := Load(r, "latest")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.Encode()
	want, _ := p.Encode()
	if string(again) != string(want) {
		t.Fatal("package changed through the repository")
	}
	if _, err := Load(r, "hq-20990101T000000Z-000000"); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("missing package: %v", err)
	}
}

func findVM(vms []VM, name string) *VM {
	for i := range vms {
		if vms[i].Name == name {
			return &vms[i]
		}
	}
	return nil
}
