package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/simlab"
	"github.com/rekindle/rekindle/orchestrator/site"
	"github.com/rekindle/rekindle/orchestrator/storeapi"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestSiteRecoverCLI runs site recovery through the binary, as the README
// says: protect run on a primary vCenter, replicate --to the recovery
// site's repository, site recover --dry-run (the plan), site recover (killed
// with SIGKILL while web01 waits for db01's guest, then finished by
// `sessions resume`), sessions list/show, and `sessions stop`, which leaves
// the recovery vCenter as it was. A --map override is kept and reused by a
// later run. Then, on the same repositories and server, a kill in every
// step (killPoints: networks, pools, folders, vApps, the vApp's restore
// session's mount, register, reconcile, customization, power-ons and
// startup order wait, the startup order), each as a call of the step runs
// in the recovery vCenter (simlab.VCenter.OnCall): `sessions stop`
// right after the kill leaves the vCenter as it was; `sessions resume`
// after the same kill makes nothing twice and powers each VM on once
// (vCenter's VmPoweredOnEvents).
func TestSiteRecoverCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()

	// The primary: a vApp of two startup groups, the second waiting for
	// the first's guest.
	lab := newBackupLab(t)
	vapp, err := lab.CreateVApp(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	var order []backuplab.StartOrder
	for i, name := range []string{"db01", "web01"} {
		vm, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: name, Disks: []int64{2 << 20}, PowerOn: true, VApp: vapp})
		if err != nil {
			t.Fatal(err)
		}
		if err := lab.WriteDisk(name, 0, 1<<20, []byte("data of "+name)); err != nil {
			t.Fatal(err)
		}
		order = append(order, backuplab.StartOrder{VM: vm, Order: int32(i + 1), WaitForGuest: true})
	}
	if err := lab.SetStartOrder(ctx, vapp, order); err != nil {
		t.Fatal(err)
	}
	// db01 keeps a static address: its recovery customizes its guest.
	setGuestAddress(t, lab.Model, "db01", "10.9.0.11")
	primaryRepo, drRepo := filepath.Join(dir, "primary"), filepath.Join(dir, "dr")
	run(t, false, "init", "--repo", primaryRepo)
	out, _ := run(t, false, "protect", "run", "--site", "hq", "--vc", lab.URL(), "--vc-insecure", "--repo", primaryRepo)
	if !strings.Contains(out, "2 protected") {
		t.Fatalf("protect run: %s", out)
	}
	run(t, false, "replicate", "--repo", primaryRepo, "--to", drRepo)

	// The recovery site: its rekindle server and its vCenter, whose hosts
	// mount that server's exports.
	nfs, api := freePort(t), freePort(t)
	srv := &server{t: t, api: api, args: []string{"serve", "--repo", drRepo, "--portmap", "off", "--api", api, "--nfs", nfs}}
	srv.start()
	defer srv.kill()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("demo-only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The recovered guests take half a second to come up.
	dr := startRecoverySite(t, ctx, filepath.Join(dir, "dr-vc"), nfs, 500*time.Millisecond)
	rc, before := dr.rc, dr.before
	// The README's flags, on this machine.
	vcFlags := dr.flags(pw, drRepo, api)
	recoverArgs := append([]string{"site", "recover", "--package", "latest", "--cluster", simlab.Target}, vcFlags...)

	out, _ = run(t, false, append(recoverArgs, "--dry-run")...)
	for _, want := range []string{"recover site hq", "reuse  network VM Network", "create pool " + simlab.Target + "/Resources/hq-DC0",
		"create vApp " + simlab.Target + "/Resources/hq-DC0/shop priority 0, startup db01@1 web01@2", "1. recover VM db01", "2. recover VM web01"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run: no %q in\n%s", want, out)
		}
	}
	if got, _ := simlab.Snapshot(ctx, rc.Client); simlab.SnapshotDiff(got, before) != "" {
		t.Fatalf("the dry run changed the recovery vCenter:\n%s", simlab.SnapshotDiff(got, before))
	}

	// The recovery, killed while web01 waits for db01's guest: the vApp's
	// restore session has powered db01 on, not web01.
	id := dr.recoverKilled(t, ctx, append(recoverArgs, "--map", "network:VM Network=dr-net"), waitForDB01)
	cl := testClient(api)
	dr.checkKilled(t, ctx, cl, id, waitForDB01, 0)

	// `sessions resume` finishes it, with nothing made twice.
	out, _ = run(t, false, append([]string{"sessions", "resume", id}, vcFlags...)...)
	if !strings.Contains(out, "resume done") {
		t.Fatalf("sessions resume: %s", out)
	}
	dr.checkRecovered(t, ctx, 0)

	// sessions list and show know the recovery and its VMs' sessions.
	out, _ = run(t, false, "sessions", "list", "--server", api, "--json")
	var list []struct{ ID, Kind, State string }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("sessions list --json: %v\n%s", err, out)
	}
	if i := slices.IndexFunc(list, func(s struct{ ID, Kind, State string }) bool { return s.ID == id }); i < 0 ||
		list[i].Kind != catalog.KindSite || list[i].State != catalog.SessionDone {
		t.Errorf("sessions list: no done site session %s in %+v", id, list)
	}
	out, _ = run(t, false, "sessions", "show", id, "--server", api)
	for _, want := range []string{"(site): done", vappStep, "startorder", "restore session rk-"} {
		if !strings.Contains(out, want) {
			t.Errorf("sessions show: no %q in\n%s", want, out)
		}
	}

	// `sessions stop` removes everything the recovery made.
	out, _ = run(t, false, append([]string{"sessions", "stop", id}, vcFlags...)...)
	if !strings.Contains(out, "stop done") {
		t.Fatalf("sessions stop: %s", out)
	}
	dr.checkStopped(t, ctx, "stop")
	// The README's `site recover stop ID` says the same of it (stop is
	// idempotent); `site recover resume ID` refuses a stopped recovery.
	out, _ = run(t, false, append([]string{"site", "recover", "stop", id}, vcFlags...)...)
	if !strings.Contains(out, "stop done") {
		t.Fatalf("site recover stop after sessions stop: %s", out)
	}
	dr.checkStopped(t, ctx, "a second stop")
	if _, stderr := run(t, true, append([]string{"site", "recover", "resume", id}, vcFlags...)...); !strings.Contains(stderr, "was stopped: start a new one") {
		t.Errorf("site recover resume of a stopped recovery: %s", stderr)
	}
	// A later run reuses the stored mapping without --map.
	out, _ = run(t, false, append(recoverArgs, "--dry-run")...)
	if !strings.Contains(out, "create network dr-net") {
		t.Errorf("a later dry run did not reuse the stored mapping (network dr-net):\n%s", out)
	}

	// A kill in every step of the recovery: a stop right after it leaves
	// the vCenter as it was; after the same kill, `sessions resume`
	// finishes the recovery with nothing made twice and each VM powered on
	// once, and stop leaves the vCenter as it was. One recovery site serves
	// every case: each starts from the inventory the case before left,
	// which its stop checked.
	for _, kp := range killPoints {
		if !t.Run("kill/"+kp.name, func(t *testing.T) {
			s, flags := dr, vcFlags
			from := s.lastEvent(t, ctx) // the events of this case come after it
			id := s.recoverKilled(t, ctx, recoverArgs, kp)
			s.checkKilled(t, ctx, cl, id, kp, from)
			if out, _ := run(t, false, append([]string{"sessions", "stop", id}, flags...)...); !strings.Contains(out, "stop done") {
				t.Fatalf("sessions stop: %s", out)
			}
			s.checkStopped(t, ctx, "a stop right after the kill")

			from = s.lastEvent(t, ctx) // the stopped recovery's are before it
			id = s.recoverKilled(t, ctx, recoverArgs, kp)
			s.checkKilled(t, ctx, cl, id, kp, from)
			if out, _ := run(t, false, append([]string{"sessions", "resume", id}, flags...)...); !strings.Contains(out, "resume done") {
				t.Fatalf("sessions resume: %s", out)
			}
			s.checkRecovered(t, ctx, from)
			if out, _ := run(t, false, append([]string{"sessions", "stop", id}, flags...)...); !strings.Contains(out, "stop done") {
				t.Fatalf("sessions stop: %s", out)
			}
			s.checkStopped(t, ctx, "resume and stop")
		}) {
			break // the cases after it would start from what this one left
		}
	}
}

// setGuestAddress plays the guest of the primary's VM name: its NIC
// reports addr, static (the primary's simulator, under its lock for the VM).
func setGuestAddress(t *testing.T, model *simulator.Model, name, addr string) {
	t.Helper()
	for _, obj := range model.Map().All("VirtualMachine") {
		vm := obj.(*simulator.VirtualMachine)
		found := false
		model.Map().WithLock(&simulator.Context{Context: context.Background(), Map: model.Map()}, vm, func() {
			if vm.Name != name {
				return
			}
			for _, dev := range vm.Config.Hardware.Device {
				if card, ok := dev.(types.BaseVirtualEthernetCard); ok {
					ip := types.NetIpConfigInfoIpAddress{IpAddress: addr, PrefixLength: 24}
					vm.Guest.Net = []types.GuestNicInfo{{MacAddress: card.GetVirtualEthernetCard().MacAddress, IpAddress: []string{addr},
						IpConfig: &types.NetIpConfigInfo{IpAddress: []types.NetIpConfigInfoIpAddress{ip}}}}
					found = true
					return
				}
			}
		})
		if found {
			return
		}
	}
	t.Fatalf("no VM %s with a NIC", name)
}

// A recoverySite is a recovery vCenter (a simulator in this process) with
// guests that come up boot after their VM powers on.
type recoverySite struct {
	vc     *simlab.VCenter
	rc     *govmomi.Client
	own    string              // rc's vCenter session: the test's; every other is rekindle's
	before map[string][]string // its inventory before any recovery
}

func startRecoverySite(t *testing.T, ctx context.Context, dir, nfs string, boot time.Duration) *recoverySite {
	t.Helper()
	vc, err := simlab.StartVCenter(dir, nfs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vc.Close)
	rc, err := govmomi.NewClient(ctx, vc.Server.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	us, err := session.NewManager(rc.Client).UserSession(ctx)
	if err != nil || us == nil {
		t.Fatalf("the test's vCenter session: %v %v", us, err)
	}
	gctx, stopGuests := context.WithCancel(ctx)
	guests := make(chan error, 1)
	go func() { guests <- simlab.PlayGuests(gctx, rc.Client, boot) }()
	t.Cleanup(func() {
		stopGuests()
		if err := <-guests; err != nil {
			t.Error(err)
		}
	})
	before, err := simlab.Snapshot(ctx, rc.Client)
	if err != nil {
		t.Fatal(err)
	}
	return &recoverySite{vc: vc, rc: rc, own: us.Key, before: before}
}

// flags are the vCenter, repository and server flags of every recovery
// command (the README's).
func (s *recoverySite) flags(pw, repo, api string) []string {
	return []string{"--vc", s.vc.URL.String(), "--vc-user", "rekindle", "--vc-password-file", pw, "--vc-ca", s.vc.CAFile,
		"--repo", repo, "--server", api}
}

// A killPoint is where a test kills `rekindle site recover` with SIGKILL:
// as the binary's nth call of method (of those match accepts, when set)
// reaches the recovery vCenter. The call then goes on: vCenter does what
// it asks, and rekindle never learns that it did.
type killPoint struct {
	name    string
	step    string // the recovery's step the kill leaves running (vappStep: the vApp's restore session's)
	session string // for vappStep: the restore session's own step left running
	method  string
	nth     int
	match   func(*simulator.Method) bool
	on      []string // the VMs powered on at the kill; nil: not checked (the call powers one on)
}

const vappStep = "vapp:" + simlab.Target + "/Resources/hq-DC0/shop"

// waitForDB01: web01's startup group waits for db01's guest (the vApp's
// startup order kept by the recovery): db01 is on, web01 not.
var waitForDB01 = killPoint{name: "wait-for-db01", step: vappStep, session: orchestrator.StepBoot, method: "CreateFilter", nth: 1,
	match: func(m *simulator.Method) bool {
		req, ok := m.Body.(*types.CreateFilter)
		return ok && slices.ContainsFunc(req.Spec.PropSet, func(p types.PropertySpec) bool {
			return slices.Contains(p.PathSet, "guestHeartbeatStatus")
		})
	}, on: []string{"db01"}}

// killPoints: a kill in every step of the recovery, each while a call of
// it runs in vCenter, after the step did part of its work where it has
// more than one call.
var killPoints = []killPoint{
	{name: "networks", step: site.StepNetworks, method: "AddPortGroup", nth: 2},
	{name: "pools", step: site.StepPools, method: "CreateResourcePool", nth: 1},
	{name: "folders", step: site.StepFolders, method: "CreateFolder", nth: 1},
	{name: "vapps", step: site.StepVApps, method: "CreateVApp", nth: 1},
	{name: "mount", step: vappStep, session: orchestrator.StepExpose, method: "CreateNasDatastore", nth: 2},
	{name: "register", step: vappStep, session: orchestrator.StepRegister, method: "RegisterVM_Task", nth: 2},
	{name: "reconcile", step: vappStep, session: orchestrator.StepReconcile, method: "ReconfigVM_Task", nth: 2},
	{name: "customize", step: vappStep, session: orchestrator.StepBoot, method: "CustomizeVM_Task", nth: 1, on: []string{}},
	{name: "power-on-db01", step: vappStep, session: orchestrator.StepBoot, method: "PowerOnVM_Task", nth: 1},
	waitForDB01,
	{name: "power-on-web01", step: vappStep, session: orchestrator.StepBoot, method: "PowerOnVM_Task", nth: 2},
	{name: "startorder", step: site.StepStartOrder, method: "UpdateVAppConfig", nth: 1, on: []string{"db01", "web01"}},
}

var recoveryID = regexp.MustCompile(`site recovery (rk-[0-9a-z]+): `)

// recoverKilled runs `rekindle args...` (a site recover) and kills it at
// kp; it returns the recovery's id.
func (s *recoverySite) recoverKilled(t *testing.T, ctx context.Context, args []string, kp killPoint) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	var mu sync.Mutex
	calls, killed := 0, false
	s.vc.OnCall(func(sctx *simulator.Context, m *simulator.Method) {
		if sctx.Session == nil || sctx.Session.Key == s.own || m.Name != kp.method || (kp.match != nil && !kp.match(m)) {
			return
		}
		mu.Lock()
		calls++
		now := calls == kp.nth
		killed = killed || now
		mu.Unlock()
		if now {
			cmd.Process.Signal(syscall.SIGKILL)
			<-exited // the call goes on once rekindle is gone
		}
	})
	defer s.vc.OnCall(nil)
	select {
	case <-exited:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-exited
	}
	mu.Lock()
	defer mu.Unlock()
	var ee *exec.ExitError
	if !killed || !errors.As(waitErr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("site recover was not killed at its %s call %d (%d made): %v\n%s", kp.method, kp.nth, calls, waitErr, out.String())
	}
	m := recoveryID.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("site recover printed no recovery id:\n%s", out.String())
	}
	return m[1]
}

// checkKilled checks that the kill at kp left recovery id running, in the
// step kp names, with the VMs kp names powered on.
func (s *recoverySite) checkKilled(t *testing.T, ctx context.Context, cl *storeapi.Client, id string, kp killPoint, from int32) {
	t.Helper()
	running := func(steps []catalog.Step) []string {
		var out []string
		for _, st := range steps {
			if st.State == catalog.StepRunning {
				out = append(out, st.Name)
			}
		}
		return out
	}
	rs, err := cl.Session(ctx, id)
	if err != nil || rs.State != catalog.SessionRunning || !slices.Equal(running(rs.Steps), []string{kp.step}) {
		t.Fatalf("killed recovery %s: want it running, in step %s: %+v %v", id, kp.step, rs, err)
	}
	if kp.session != "" {
		list, err := cl.Sessions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range list {
			if l.Kind != catalog.KindSite && l.State == catalog.SessionRunning {
				full, err := cl.Session(ctx, l.ID)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, running(full.Steps)...)
			}
		}
		if !slices.Equal(got, []string{kp.session}) {
			t.Fatalf("killed recovery %s: its restore session's steps running %v, want %s", id, got, kp.session)
		}
	}
	if kp.on != nil {
		if got := simlab.PowerOnOrder(s.events(t, ctx, from), []string{"db01", "web01"}); !slices.Equal(got, kp.on) {
			t.Fatalf("killed recovery %s: powered on %v, want %v", id, got, kp.on)
		}
	}
}

// events returns the recovery vCenter's VM events after key from.
func (s *recoverySite) events(t *testing.T, ctx context.Context, from int32) []simlab.VMEvent {
	t.Helper()
	evs, err := simlab.VMEvents(ctx, s.rc.Client)
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(evs, func(e simlab.VMEvent) bool { return e.Key <= from })
}

// lastEvent is the key of the recovery vCenter's last VM event: a
// recovery's events come after it.
func (s *recoverySite) lastEvent(t *testing.T, ctx context.Context) int32 {
	t.Helper()
	var last int32
	for _, e := range s.events(t, ctx, 0) {
		last = max(last, e.Key)
	}
	return last
}

// checkRecovered checks the recovery site after a recovery finished: what
// it made, each once, and each VM powered on once (in the VM events after
// key from), in startup order.
func (s *recoverySite) checkRecovered(t *testing.T, ctx context.Context, from int32) {
	t.Helper()
	after, err := simlab.Snapshot(ctx, s.rc.Client)
	if err != nil {
		t.Fatal(err)
	}
	for kind := range after {
		if got := simlab.Added(s.before, after, kind); len(got) != len(slices.Compact(slices.Clone(got))) {
			t.Errorf("%s made twice: new %v", kind, got)
		}
	}
	for kind, want := range map[string][]string{"VirtualMachine": {"db01", "web01"}, "VirtualApp": {"shop"},
		"ResourcePool": {"hq-DC0", "shop"}, "Network": {"dr-net"}, "Folder": {"hq-DC0"}, "vswitch": nil} {
		if got := simlab.Added(s.before, after, kind); !slices.Equal(got, want) {
			t.Errorf("after the recovery, new %s %v: want %v", kind, got, want)
		}
	}
	if got := simlab.Added(s.before, after, "Datastore"); len(got) != 1 {
		t.Errorf("after the recovery, new datastores %v: want one, the vApp's restore session's", got)
	}
	evs := s.events(t, ctx, from)
	ons := map[string]int{}
	for _, e := range evs {
		if e.What == simlab.EventPoweredOn {
			ons[e.VM]++
		}
	}
	for _, vm := range []string{"db01", "web01"} {
		if ons[vm] != 1 {
			t.Errorf("%s powered on %d times (vCenter's VmPoweredOnEvents): want once", vm, ons[vm])
		}
	}
	if got := simlab.PowerOnOrder(evs, []string{"db01", "web01"}); !slices.Equal(got, []string{"db01", "web01"}) {
		t.Errorf("power-on order in the recovery vCenter's events: %v", got)
	}
	if up, on := simlab.EventKey(evs, "db01", simlab.EventGuestUp), simlab.EventKey(evs, "web01", simlab.EventPoweredOn); up < 0 || on < up {
		t.Errorf("web01 powered on at event %d, db01's guest up at %d: web01 did not wait", on, up)
	}
}

// checkStopped checks that the recovery site is as it was before.
func (s *recoverySite) checkStopped(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	got, err := simlab.Snapshot(ctx, s.rc.Client)
	if err != nil {
		t.Fatal(err)
	}
	if d := simlab.SnapshotDiff(got, s.before); d != "" {
		t.Errorf("after %s, the recovery vCenter differs from before:\n%s", what, d)
	}
}
