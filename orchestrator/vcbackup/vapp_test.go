package vcbackup_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/simlab"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// A vApp backed up from one vCenter restores on another with `restore
// vapp` semantics and no app definition written by hand.
func TestVAppBackupThenRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	primary, err := backuplab.New(ctx, t.TempDir())
	must(t, err)
	defer primary.Close()
	vapp, err := primary.CreateVApp(ctx, "shop")
	must(t, err)
	db, err := primary.CreateVM(ctx, backuplab.VMSpec{Name: "db01", Disks: []int64{1 << 20}, PowerOn: true, VApp: vapp})
	must(t, err)
	web, err := primary.CreateVM(ctx, backuplab.VMSpec{Name: "web01", Disks: []int64{1 << 20}, PowerOn: true, VApp: vapp})
	must(t, err)
	must(t, primary.WriteDisk("db01", 0, 0, random(30, 100<<10)))
	must(t, primary.SetStartOrder(ctx, vapp, []backuplab.StartOrder{
		{VM: web, Order: 20}, {VM: db, Order: 10, Delay: 1, WaitForGuest: true}}))

	dr, err := simlab.New(ctx, simlab.Options{Dir: t.TempDir()})
	must(t, err)
	defer dr.Close()
	res, err := vcbackup.BackupVApp(ctx, vcbackup.Config{Client: primary.Client, Repo: dr.Repo, Catalog: dr.Catalog}, "shop")
	must(t, err)
	want := []repo.AppMember{
		{VM: "db01", Group: 1, StartDelay: 1, WaitForGuest: true, StartAction: "powerOn", StopAction: "guestShutdown"},
		{VM: "web01", Group: 2, StartAction: "powerOn", StopAction: "guestShutdown"},
	}
	if !slices.Equal(res.App.Members, want) || !slices.Equal(res.App.Networks, []string{"VM Network"}) {
		t.Fatalf("app definition: %+v networks %v", res.App.Members, res.App.Networks)
	}
	for _, m := range res.Members {
		if m.Point == nil || m.Point.App != "shop" {
			t.Fatalf("member %s: %+v", m.VM, m)
		}
	}

	host, _, _ := net.SplitHostPort(dr.Service.NFSAddr().String())
	id, err := dr.Orchestrator.Start(ctx, orchestrator.Request{Kind: orchestrator.KindVApp, App: "shop", Target: simlab.Target,
		Server: host, ReadyTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("restore vapp from the backed-up definition: %v", err)
	}
	evs, err := event.NewManager(dr.Driver.Client()).QueryEvents(ctx, types.EventFilterSpec{Type: []string{"VmPoweredOnEvent"}})
	must(t, err)
	slices.SortFunc(evs, func(a, b types.BaseEvent) int { return int(a.GetEvent().Key - b.GetEvent().Key) })
	var order []string
	for _, e := range evs {
		if on, ok := e.(*types.VmPoweredOnEvent); ok && on.Vm != nil && (on.Vm.Name == "db01" || on.Vm.Name == "web01") {
			order = append(order, on.Vm.Name)
		}
	}
	if !slices.Equal(order, []string{"db01", "web01"}) {
		t.Fatalf("session %s: power-on order %v, want the vApp's start order", id, order)
	}
}
