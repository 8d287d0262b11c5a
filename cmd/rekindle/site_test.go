package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/simlab"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestSiteRecoverCLI runs site recovery through the binary, as the README
// says: protect run on a primary vCenter, replicate --to the recovery
// site's repository, site recover --dry-run (the plan), site recover (killed
// with SIGKILL mid-run, then finished by `sessions resume`), sessions
// list/show, and `sessions stop`, which leaves the recovery vCenter as it
// was. A --map override is kept and reused by a later run.
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
	vc, err := simlab.StartVCenter(filepath.Join(dir, "dr-vc"), nfs)
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	u := vc.URL
	rc, err := govmomi.NewClient(ctx, vc.Server.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	// The recovered guests take two seconds to come up.
	gctx, stopGuests := context.WithCancel(ctx)
	guests := make(chan error, 1)
	go func() { guests <- simlab.PlayGuests(gctx, rc.Client, 2*time.Second) }()
	defer func() {
		stopGuests()
		if err := <-guests; err != nil {
			t.Error(err)
		}
	}()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("demo-only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The README's flags, on this machine.
	vcFlags := []string{"--vc", u.String(), "--vc-user", "rekindle", "--vc-password-file", pw, "--vc-ca", vc.CAFile,
		"--repo", drRepo, "--server", api}
	recoverArgs := append([]string{"site", "recover", "--package", "latest", "--cluster", simlab.Target}, vcFlags...)
	before, err := simlab.Snapshot(ctx, rc.Client)
	if err != nil {
		t.Fatal(err)
	}

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
	vappStep := "vapp:" + simlab.Target + "/Resources/hq-DC0/shop"
	cmd := exec.Command(binary, append(recoverArgs, "--map", "network:VM Network=dr-net")...)
	var childOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &childOut, &childOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cl := testClient(api)
	var id string
	for deadline := time.Now().Add(3 * time.Minute); id == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		list, _ := cl.Sessions(ctx)
		for _, s := range list {
			if s.Kind != catalog.KindSite {
				continue
			}
			full, err := cl.Session(ctx, s.ID)
			if err != nil {
				continue
			}
			state := map[string]string{}
			for _, st := range full.Steps {
				state[st.Name] = st.State
			}
			if state[vappStep] != catalog.StepRunning {
				continue
			}
			evs, err := simlab.VMEvents(ctx, rc.Client)
			if err == nil && simlab.EventKey(evs, "db01", simlab.EventPoweredOn) >= 0 && simlab.EventKey(evs, "web01", simlab.EventPoweredOn) < 0 {
				id = s.ID
			}
		}
	}
	if id == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("site recover never reached web01's step:\n%s", childOut.String())
	}
	cmd.Process.Signal(syscall.SIGKILL)
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("site recover was not killed mid-run: %v\n%s", err, childOut.String())
	}
	if s, err := cl.Session(ctx, id); err != nil || s.State != catalog.SessionRunning {
		t.Fatalf("killed recovery %s: %+v %v", id, s, err)
	}

	// `sessions resume` finishes it, with nothing made twice.
	out, _ = run(t, false, append([]string{"sessions", "resume", id}, vcFlags...)...)
	if !strings.Contains(out, "resume done") {
		t.Fatalf("sessions resume: %s", out)
	}
	after, err := simlab.Snapshot(ctx, rc.Client)
	if err != nil {
		t.Fatal(err)
	}
	for kind, want := range map[string][]string{"VirtualMachine": {"db01", "web01"}, "VirtualApp": {"shop"},
		"ResourcePool": {"hq-DC0", "shop"}, "Network": {"dr-net"}, "Folder": {"hq-DC0"}} {
		if got := simlab.Added(before, after, kind); !slices.Equal(got, want) {
			t.Errorf("after resume, new %s %v: want %v", kind, got, want)
		}
	}
	if got := simlab.Added(before, after, "Datastore"); len(got) != 1 {
		t.Errorf("after resume, new datastores %v: want one, the vApp's restore session's", got)
	}
	evs, err := simlab.VMEvents(ctx, rc.Client)
	if err != nil {
		t.Fatal(err)
	}
	if got := simlab.PowerOnOrder(evs, []string{"db01", "web01"}); !slices.Equal(got, []string{"db01", "web01"}) {
		t.Errorf("power-on order in the recovery vCenter's events: %v", got)
	}
	if up, on := simlab.EventKey(evs, "db01", simlab.EventGuestUp), simlab.EventKey(evs, "web01", simlab.EventPoweredOn); up < 0 || on < up {
		t.Errorf("web01 powered on at event %d, db01's guest up at %d: web01 did not wait", on, up)
	}

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
	if got, _ := simlab.Snapshot(ctx, rc.Client); simlab.SnapshotDiff(got, before) != "" {
		t.Errorf("after stop, the recovery vCenter differs from before:\n%s", simlab.SnapshotDiff(got, before))
	}
	// The README's `site recover stop ID` says the same of it (stop is
	// idempotent); `site recover resume ID` refuses a stopped recovery.
	out, _ = run(t, false, append([]string{"site", "recover", "stop", id}, vcFlags...)...)
	if !strings.Contains(out, "stop done") {
		t.Fatalf("site recover stop after sessions stop: %s", out)
	}
	if got, _ := simlab.Snapshot(ctx, rc.Client); simlab.SnapshotDiff(got, before) != "" {
		t.Errorf("after a second stop, the recovery vCenter differs from before:\n%s", simlab.SnapshotDiff(got, before))
	}
	if _, stderr := run(t, true, append([]string{"site", "recover", "resume", id}, vcFlags...)...); !strings.Contains(stderr, "was stopped: start a new one") {
		t.Errorf("site recover resume of a stopped recovery: %s", stderr)
	}
	// A later run reuses the stored mapping without --map.
	out, _ = run(t, false, append(recoverArgs, "--dry-run")...)
	if !strings.Contains(out, "create network dr-net") {
		t.Errorf("a later dry run did not reuse the stored mapping (network dr-net):\n%s", out)
	}
}
