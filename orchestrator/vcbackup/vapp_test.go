package vcbackup_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/simulator"
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

// A vApp whose member has no restore point gets no definition naming it:
// the first backup with a failing member saves none (restore vapp cannot
// run, said so); a member that failed but has an earlier point is named
// (its notes say which point); a new member that fails leaves the previous
// definition in place.
func TestVAppMemberWithoutPoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lab, err := backuplab.New(ctx, t.TempDir())
	must(t, err)
	defer lab.Close()
	vapp, err := lab.CreateVApp(ctx, "shop")
	must(t, err)
	for _, n := range []string{"db01", "web01"} {
		_, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: n, Disks: []int64{1 << 20}, PowerOn: true, VApp: vapp})
		must(t, err)
	}
	r, err := repo.Init(t.TempDir(), repo.InitOptions{ChunkSize: 64 << 10})
	must(t, err)
	cfg := vcbackup.Config{Client: lab.Client, Repo: r}
	failSnapshots := func(vm string) {
		lab.Model.Service.AddFaultRule(&simulator.FaultInjectionRule{MethodName: "CreateSnapshot_Task", ObjectType: "VirtualMachine",
			ObjectName: vm, Probability: 1, Enabled: true, Message: "injected fault on " + vm})
	}
	notes := func(res *vcbackup.AppResult, vm string) string {
		for _, m := range res.Members {
			if m.VM == vm {
				return strings.Join(m.Notes, "; ")
			}
		}
		t.Fatalf("no result for member %s", vm)
		return ""
	}

	// 1. web01 fails and has no point: no definition.
	failSnapshots("web01")
	res, err := vcbackup.BackupVApp(ctx, cfg, "shop")
	lab.Model.Service.ClearFaultRules()
	if err == nil || res == nil || res.AppSaved || !strings.Contains(err.Error(), "not saved: web01 has no restore point") ||
		!strings.Contains(res.AppNote, "no definition of it yet") {
		t.Fatalf("first backup with web01 failing: err %v, result %+v: want no definition, said so", err, res)
	}
	if !strings.Contains(notes(res, "web01"), "definition is not saved") {
		t.Errorf("web01's notes %q do not say the definition is not saved", notes(res, "web01"))
	}
	if _, err := r.App("shop"); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("a definition was saved naming web01, which has no point: %v", err)
	}

	// 2. Both back up: the definition is saved.
	res, err = vcbackup.BackupVApp(ctx, cfg, "shop")
	must(t, err)
	if !res.AppSaved || len(res.App.Members) != 2 {
		t.Fatalf("clean backup: %+v", res)
	}
	saved, err := r.App("shop")
	must(t, err)

	// 3. web01 fails again, with an earlier point: named, and said which.
	webPoint, err := r.LatestPoint("web01")
	must(t, err)
	failSnapshots("web01")
	res, err = vcbackup.BackupVApp(ctx, cfg, "shop")
	lab.Model.Service.ClearFaultRules()
	if err == nil || !res.AppSaved || !strings.Contains(notes(res, "web01"), webPoint.ID) {
		t.Fatalf("web01 failing with an earlier point: err %v, saved %v, notes %q: want the definition saved, naming point %s",
			err, res.AppSaved, notes(res, "web01"), webPoint.ID)
	}
	if saved, err = r.App("shop"); err != nil {
		t.Fatal(err)
	}

	// 4. A new member fails: the previous definition stays.
	_, err = lab.CreateVM(ctx, backuplab.VMSpec{Name: "cache01", Disks: []int64{1 << 20}, PowerOn: true, VApp: vapp})
	must(t, err)
	failSnapshots("cache01")
	res, err = vcbackup.BackupVApp(ctx, cfg, "shop")
	lab.Model.Service.ClearFaultRules()
	if err == nil || res.AppSaved || !strings.Contains(res.AppNote, "cache01 has no restore point") || !strings.Contains(res.AppNote, "previous definition") {
		t.Fatalf("new member cache01 failing: err %v, result %+v", err, res)
	}
	now, err := r.App("shop")
	must(t, err)
	if !now.Updated.Equal(saved.Updated) || slices.ContainsFunc(now.Members, func(m repo.AppMember) bool { return m.VM == "cache01" }) {
		t.Fatalf("definition after cache01 failed: %+v, want the previous one %+v", now, saved)
	}
}

// TestVAppMemberNamedElsewhere: another VM of the datacenter has a vApp
// member's name (a copy of the vApp, a VM of the same name in a folder):
// the vApp's backup backs up its own member, not "the VM named db01".
func TestVAppMemberNamedElsewhere(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vapp, err := e.lab.CreateVApp(ctx, "shop")
	must(t, err)
	_, err = e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "db01", Disks: []int64{1 << 20}, PowerOn: true, VApp: vapp})
	must(t, err)
	must(t, e.lab.WriteDisk("db01", 0, 0, random(50, 100<<10)))
	other, err := e.lab.CreateVApp(ctx, "shop-test")
	must(t, err)
	_, err = e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "db01", VApp: other})
	must(t, err)
	res, err := vcbackup.BackupVApp(ctx, e.cfg, "shop")
	must(t, err)
	if len(res.Members) != 1 || res.Members[0].Err != nil || !res.AppSaved {
		t.Fatalf("backup of vApp shop beside another db01: %+v (%v)", res.Members, res.AppNote)
	}
	e.checkDisk(t, res.Members[0].Point, "db01", 0)
}
