package backupjob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/backupjob"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"name: j\nvcenter: {url: x}\nvms: [a]\n", "give interval"},
		{"name: j\nvcenter: {url: x}\nvms: [a]\ninterval: 1h\ncron: '@daily'\n", "not both"},
		{"name: j\nvcenter: {url: x}\nvms: [a]\ncron: 'every day'\n", `cron "every day"`},
		{"name: j\nvcenter: {url: x}\ninterval: 1h\n", "vms, folders, vapps or tags"},
		{"name: j\nvcenter: {url: x}\ntags: [nightly]\ninterval: 1h\n", `tag "nightly": want category:tag`},
		{"name: j\nvms: [a]\ninterval: 1h\n", "vcenter.url is required"},
		{"name: j\nvcenter: {url: x}\nvms: [a]\ninterval: 1h\nretention: {}\n", "retention has no rule"},
		{"name: j\nvcenter: {url: x}\nvms: [a]\ninterval: 1h\nretain: {keep_last: 1}\n", "field retain not found"},
		{"name: j/x\nvcenter: {url: x}\nvms: [a]\ninterval: 1h\n", "job name"},
		{"name: j\nvcenter: {url: x}\nvms: [a]\ncron: '0 2 30 2 *'\n", "never fires"},
		{"name: j\nvcenter: {url: x}\nvms: [a]\ninterval: 1h\nvm_wait: soon\n", `vm_wait "soon": want a duration`},
	} {
		if _, err := backupjob.Parse([]byte(c.yaml)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err %v, want %q", c.yaml, err, c.want)
		}
	}
	d, err := backupjob.Parse([]byte("name: nightly\nvcenter: {url: x}\nvms: [a]\ncron: '0 2 * * *'\n"))
	must(t, err)
	from := time.Date(2026, 12, 2, 3, 0, 0, 0, time.Local)
	if next := d.Next(from); !next.Equal(time.Date(2026, 12, 3, 2, 0, 0, 0, time.Local)) {
		t.Fatalf("cron next after %v: %v", from, next)
	}
}

type env struct {
	lab    *backuplab.Lab
	r      *repo.Repo
	cat    *catalog.Catalog
	runner *backupjob.Runner
	reg    *prometheus.Registry
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	lab, err := backuplab.New(ctx, t.TempDir())
	must(t, err)
	t.Cleanup(lab.Close)
	r, err := repo.Init(t.TempDir(), repo.InitOptions{ChunkSize: 64 << 10})
	must(t, err)
	cat, err := catalog.Open(ctx, filepath.Join(r.Dir, "catalog.db"))
	must(t, err)
	t.Cleanup(func() { cat.Close() })
	reg := prometheus.NewRegistry()
	e := &env{lab: lab, r: r, cat: cat, reg: reg, runner: &backupjob.Runner{Repo: r, Catalog: cat}}
	backupjob.NewMetrics(reg, cat, nil)
	return e
}

func (e *env) job(t *testing.T, body string) *backupjob.Definition {
	t.Helper()
	y := fmt.Sprintf("vcenter: {url: %q, insecure: true}\n%s", e.lab.URL(), body)
	d, err := backupjob.Parse([]byte(y))
	must(t, err)
	must(t, e.cat.SaveJob(context.Background(), d.Name, []byte(y)))
	return d
}

// A run backs up the job's VMs (by name, folder and vApp), records each
// VM's result, does not let one failure fail the others, and applies the
// job's retention.
func TestRun(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vapp, err := e.lab.CreateVApp(ctx, "shop")
	must(t, err)
	for _, s := range []backuplab.VMSpec{{Name: "web01"}, {Name: "db01", VApp: vapp}} {
		s.Disks, s.PowerOn = []int64{1 << 20}, true
		_, err := e.lab.CreateVM(ctx, s)
		must(t, err)
		must(t, e.lab.WriteDisk(s.Name, 0, 0, []byte("hello "+s.Name)))
	}
	d := e.job(t, "name: nightly\nvms: [web01, gone01]\nvapps: [shop]\ninterval: 24h\nretention: {keep_last: 1}\n")

	run, err := e.runner.Run(ctx, d, "manual")
	must(t, err)
	if run.State != catalog.RunPartial || run.VMsOK != 2 || run.VMsFailed != 1 {
		t.Fatalf("run: state %s ok %d failed %d (%s)", run.State, run.VMsOK, run.VMsFailed, run.Error)
	}
	got, err := e.cat.JobRun(ctx, run.ID)
	must(t, err)
	byVM := map[string]catalog.JobRunVM{}
	for _, v := range got.VMs {
		byVM[v.VM] = v
	}
	if byVM["web01"].PointID == "" || byVM["db01"].PointID == "" || !strings.Contains(byVM["gone01"].Error, "no VM named") {
		t.Fatalf("recorded VMs: %+v", got.VMs)
	}
	if _, err := e.r.App("shop"); err != nil {
		t.Fatalf("vApp definition: %v", err)
	}

	// The second run is incremental; retention keeps one point per VM.
	must(t, e.lab.WriteDisk("web01", 0, 512<<10, []byte("changed")))
	run, err = e.runner.Run(ctx, d, "manual")
	must(t, err)
	pts, err := e.r.Points()
	must(t, err)
	if len(pts) != 2 {
		t.Fatalf("%d points after retention keep_last 1 over 2 VMs", len(pts))
	}
	got, _ = e.cat.JobRun(ctx, run.ID)
	for _, v := range got.VMs {
		// BytesRead is what the export lease's stream transferred up to
		// the changed block: more than nothing, less than the disk.
		if v.VM == "web01" && (v.Mode != "incremental" || v.BytesRead <= 0 || v.BytesRead >= 1<<20) {
			t.Fatalf("second run of web01: %+v", v)
		}
	}
	runs, err := e.cat.JobRuns(ctx, "nightly", 0)
	must(t, err)
	if len(runs) != 2 || runs[0].ID != run.ID {
		t.Fatalf("history: %+v", runs)
	}

	// The metrics are the catalog's runs: two partial runs, one failed VM
	// each, the bytes of both, the last run's duration, and no success yet.
	var read, stored float64
	for _, r := range runs {
		read, stored = read+float64(r.BytesRead), stored+float64(r.BytesStored)
	}
	if read <= 0 || stored <= 0 {
		t.Fatalf("runs recorded no bytes: %+v", runs)
	}
	checkMetrics(t, e.reg, map[string]float64{
		`rekindle_job_vm_failures_total{job="nightly"}`:              2,
		`rekindle_job_runs_total{job="nightly",state="partial"}`:     2,
		`rekindle_job_runs_total{job="nightly",state="done"}`:        0,
		`rekindle_job_read_bytes_total{job="nightly"}`:               read,
		`rekindle_job_stored_bytes_total{job="nightly"}`:             stored,
		`rekindle_job_last_duration_seconds{job="nightly"}`:          runs[0].Ended.Sub(runs[0].Started).Seconds(),
		`rekindle_job_last_success_timestamp_seconds{job="nightly"}`: -1,
	})

	// A run recorded through another handle on the catalog (`rekindle job
	// run` beside `serve`) counts too; a done run sets the last success.
	other, err := catalog.Open(ctx, e.cat.Path())
	must(t, err)
	defer other.Close()
	solo := e.job(t, "name: solo\nvms: [web01]\ninterval: 24h\n")
	must(t, e.lab.WriteDisk("web01", 0, 0, []byte("changed again")))
	run, err = (&backupjob.Runner{Repo: e.r, Catalog: other}).Run(ctx, solo, "manual")
	must(t, err)
	if run.State != catalog.RunDone || run.BytesRead <= 0 {
		t.Fatalf("solo run: %+v", run)
	}
	checkMetrics(t, e.reg, map[string]float64{
		`rekindle_job_last_success_timestamp_seconds{job="solo"}`: float64(run.Ended.UnixNano()) / 1e9,
		`rekindle_job_last_duration_seconds{job="solo"}`:          run.Ended.Sub(run.Started).Seconds(),
		`rekindle_job_read_bytes_total{job="solo"}`:               float64(run.BytesRead),
		`rekindle_job_runs_total{job="solo",state="done"}`:        1,
		`rekindle_job_vm_failures_total{job="solo"}`:              0,
		`rekindle_job_vm_failures_total{job="nightly"}`:           2,
	})
}

// A job selects VMs by vSphere tag (category:tag) through vCenter's REST
// API: only the tagged VMs are backed up, once each, beside named ones; a
// tag or category vCenter does not know, or a tag no VM carries, is a failed
// entry of the run and not an empty success.
func TestRunSelectsByTag(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, n := range []string{"web01", "web02", "db01", "other01"} {
		_, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: n, Disks: []int64{256 << 10}, PowerOn: true})
		must(t, err)
	}
	must(t, e.lab.TagVMs(ctx, "backup", "nightly", "web01", "web02"))
	must(t, e.lab.TagVMs(ctx, "backup", "weekly", "web02", "db01"))
	must(t, e.lab.TagVMs(ctx, "backup", "never")) // a tag on no VM
	must(t, e.lab.TagVMs(ctx, "owner", "nightly", "other01"))

	backedUp := func(run *catalog.JobRun) map[string]string {
		got, err := e.cat.JobRun(ctx, run.ID)
		must(t, err)
		out := map[string]string{}
		for _, v := range got.VMs {
			out[v.VM] = v.PointID + v.Error
		}
		return out
	}
	d := e.job(t, "name: tagged\ntags: [backup:nightly, 'backup:weekly']\nvms: [web01]\ninterval: 24h\n")
	run, err := e.runner.Run(ctx, d, "manual")
	must(t, err)
	got := backedUp(run)
	if run.State != catalog.RunDone || run.VMsOK != 3 || len(got) != 3 || got["web01"] == "" || got["web02"] == "" || got["db01"] == "" {
		t.Fatalf("tagged run: state %s ok %d, VMs %v (%s)", run.State, run.VMsOK, got, run.Error)
	}

	for _, c := range []struct{ sel, want string }{
		{"backup:monthly", `category "backup" has no tag "monthly"`},
		{"nosuch:nightly", `vCenter has no tag category "nosuch"`},
		{"backup:never", "no VM carries it"},
	} {
		d := e.job(t, "name: bad\ntags: ['"+c.sel+"']\ninterval: 24h\n")
		run, err := e.runner.Run(ctx, d, "manual")
		must(t, err)
		got := backedUp(run)
		if run.State != catalog.RunFailed || run.VMsOK != 0 || !strings.Contains(got["tag "+c.sel], c.want) {
			t.Errorf("job with tag %s: state %s, VMs %v, want failed with %q", c.sel, run.State, got, c.want)
		}
	}
	// A bad tag beside good ones: the good ones are backed up, the run is partial.
	d = e.job(t, "name: mixed\ntags: ['backup:nightly', 'backup:monthly']\ninterval: 24h\n")
	run, err = e.runner.Run(ctx, d, "manual")
	must(t, err)
	if got := backedUp(run); run.State != catalog.RunPartial || run.VMsOK != 2 || got["other01"] != "" {
		t.Fatalf("mixed run: state %s ok %d, VMs %v", run.State, run.VMsOK, got)
	}
}

// The scheduler runs a job when it is due, again after its interval.
func TestSchedulerRunsDueJobs(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "web01", Disks: []int64{1 << 20}, PowerOn: true})
	must(t, err)
	e.job(t, "name: often\nvms: [web01]\ninterval: 1s\n")
	ran := make(chan *catalog.JobRun, 10)
	s := &backupjob.Scheduler{Runner: e.runner, Poll: time.Second, Ran: func(r *catalog.JobRun) { ran <- r }}
	done := make(chan error)
	sctx, stop := context.WithCancel(ctx)
	go func() { done <- s.Run(sctx) }()
	for i := range 2 {
		select {
		case r := <-ran:
			if r.State != catalog.RunDone || r.Trigger != "schedule" {
				t.Fatalf("scheduled run %d: %+v", i, r)
			}
		case <-ctx.Done():
			t.Fatal("the scheduler did not run the due job")
		}
	}
	stop()
	must(t, <-done)
	runs, _ := e.cat.JobRuns(ctx, "often", 0)
	if len(runs) < 2 {
		t.Fatalf("%d runs recorded", len(runs))
	}
}

// The example job in testdata parses.
func TestExampleJob(t *testing.T) {
	b, err := os.ReadFile("../../testdata/jobs/nightly.yaml")
	must(t, err)
	d, err := backupjob.Parse(b)
	must(t, err)
	if d.Schedule() != "cron 0 2 * * *" || len(d.VApps) != 1 {
		t.Fatalf("%+v", d)
	}
}

func chunkFiles(t *testing.T, r *repo.Repo) int {
	t.Helper()
	n := 0
	must(t, filepath.WalkDir(filepath.Join(r.Dir, "chunks"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	}))
	return n
}

// A job that `serve` runs prunes beside the server's own lock (which
// refuses a prune from any other process), and a point that a running
// session reads is neither forgotten nor pruned: it reads back whole after
// the prune. Once the session ends, the next run forgets and prunes it.
func TestRetentionPrunesBesideServe(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	serveLock, err := e.r.Lock(ctx, repo.LockServe, "serve")
	must(t, err)
	defer serveLock.Unlock()
	e.runner.ServeLock = serveLock
	if _, err := e.r.Prune(ctx, repo.PruneOptions{}); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("a prune not beside the server's lock: %v, want refused", err)
	}
	const size = 1 << 20
	_, err = e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "web01", Disks: []int64{size}, PowerOn: true})
	must(t, err)
	d := e.job(t, "name: nightly\nvms: [web01]\ninterval: 24h\nretention: {keep_last: 1, prune: true}\n")
	fill := func(seed byte) []byte {
		b := bytes.Repeat([]byte{seed, seed + 1, seed + 2}, size/3+1)[:size]
		for i := 0; i < size; i += 997 {
			b[i] = byte(i / 997 * int(seed))
		}
		must(t, e.lab.WriteDisk("web01", 0, 0, b))
		return b
	}
	backup := func() *catalog.JobRun {
		t.Helper()
		run, err := e.runner.Run(ctx, d, "schedule")
		must(t, err)
		if run.State != catalog.RunDone {
			t.Fatalf("run: %s (%s)", run.State, run.Error)
		}
		return run
	}
	first := fill(1)
	p1 := backup().VMs[0].PointID
	must(t, e.cat.CreateSession(ctx, &catalog.Session{ID: "s1", Kind: catalog.KindTest, State: catalog.SessionRunning,
		VMs: []catalog.SessionVM{{VM: "web01", PointID: p1}}}))
	pt, err := e.r.Point(p1)
	must(t, err)
	dr, err := e.r.OpenDisk(pt.Disks[0].Index, repo.NewCache(repo.CacheOptions{}), "web01")
	must(t, err)

	fill(2)
	before := chunkFiles(t, e.r)
	backup() // keep_last 1 would forget p1: the session pins it
	if _, err := e.r.Point(p1); err != nil {
		t.Fatalf("the point the session reads was forgotten: %v", err)
	}
	got := make([]byte, size)
	if n, err := dr.ReadAt(got, 0); n != size || !bytes.Equal(got, first) {
		t.Fatalf("the session's point after the prune: %d bytes, %v, equal %v", n, err, bytes.Equal(got, first))
	}
	pts, err := e.r.Points()
	must(t, err)
	if rep, err := e.r.Verify(ctx, pts, nil); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}

	must(t, e.cat.SetSessionState(ctx, "s1", catalog.SessionDone, ""))
	fill(3)
	backup() // p1 and the second point go, and their chunks with them
	if _, err := e.r.Point(p1); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("the ended session's point after retention: %v", err)
	}
	if after := chunkFiles(t, e.r); after >= before+before/2 {
		t.Fatalf("chunks: %d before the second run, %d after the third: the prune freed nothing", before, after)
	}
	pts, err = e.r.Points()
	must(t, err)
	if rep, err := e.r.Verify(ctx, pts, nil); err != nil || len(pts) != 1 || !rep.OK() {
		t.Fatalf("after the prune: %d points, verify %v %+v", len(pts), err, rep)
	}
}

// A job's vApp whose member has no restore point: the run records, in its
// error and in the member's notes, that the app definition was not saved,
// and the repository has none naming the member.
func TestRunVAppMemberWithoutPoint(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vapp, err := e.lab.CreateVApp(ctx, "shop")
	must(t, err)
	for _, n := range []string{"db01", "web01"} {
		_, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: n, Disks: []int64{1 << 20}, PowerOn: true, VApp: vapp})
		must(t, err)
	}
	d := e.job(t, "name: shop\nvapps: [shop]\ninterval: 24h\n")
	e.lab.Model.Service.AddFaultRule(&simulator.FaultInjectionRule{MethodName: "CreateSnapshot_Task", ObjectType: "VirtualMachine",
		ObjectName: "web01", Probability: 1, Enabled: true, Message: "injected fault on web01"})
	run, err := e.runner.Run(ctx, d, "manual")
	e.lab.Model.Service.ClearFaultRules()
	must(t, err)
	got, err := e.cat.JobRun(ctx, run.ID)
	must(t, err)
	if got.State != catalog.RunPartial || !strings.Contains(got.Error, "app definition of vApp shop not saved: web01 has no restore point") {
		t.Fatalf("run: state %s error %q: want partial, saying the definition was not saved", got.State, got.Error)
	}
	for _, v := range got.VMs {
		if v.VM == "web01" && !strings.Contains(v.Notes, "definition is not saved") {
			t.Errorf("web01's recorded notes %q do not say the definition is not saved", v.Notes)
		}
	}
	if _, err := e.r.App("shop"); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("a definition naming web01 (no point) was saved: %v", err)
	}
}

// checkMetrics compares samples of reg with want (-1: absent).
func checkMetrics(t *testing.T, reg *prometheus.Registry, want map[string]float64) {
	t.Helper()
	mfs, err := reg.Gather()
	must(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.GetCounter().GetValue()
			}
			got[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = v
		}
	}
	for name, w := range want {
		v, ok := got[name]
		if !ok {
			v = -1
		}
		if math.Abs(v-w) > 1e-6 { // a microsecond of a timestamp
			t.Errorf("%s = %v, want %v", name, v, w)
		}
	}
}

// A job that lists a VM twice, or more (its name, its inventory path, a
// folder holding it, a tag it carries; a vApp member also by its path)
// backs each VM up once: one recorded result and one point per VM, and a
// run that is done, not partial (the second listing is not refused as a
// concurrent backup of the first).
func TestRunVMListedTwice(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vapp, err := e.lab.CreateVApp(ctx, "shop")
	must(t, err)
	for _, s := range []backuplab.VMSpec{{Name: "web01"}, {Name: "db01", VApp: vapp}} {
		s.Disks, s.PowerOn = []int64{1 << 20}, true
		_, err := e.lab.CreateVM(ctx, s)
		must(t, err)
		must(t, e.lab.WriteDisk(s.Name, 0, 0, []byte("hello "+s.Name)))
	}
	must(t, e.lab.TagVMs(ctx, "backup", "nightly", "web01"))
	db, err := e.lab.Finder.VirtualMachine(ctx, "db01")
	must(t, err)
	d := e.job(t, fmt.Sprintf("name: twice\nvms: [web01, /DC0/vm/web01, %q]\nfolders: [/DC0/vm]\ntags: [backup:nightly]\nvapps: [shop]\ninterval: 24h\n", db.InventoryPath))
	run, err := e.runner.Run(ctx, d, "manual")
	must(t, err)
	got, err := e.cat.JobRun(ctx, run.ID)
	must(t, err)
	if run.State != catalog.RunDone || run.VMsOK != 2 || run.VMsFailed != 0 || len(got.VMs) != 2 {
		t.Fatalf("run of a job listing its VMs twice: state %s ok %d failed %d, VMs %+v (%s)", run.State, run.VMsOK, run.VMsFailed, got.VMs, run.Error)
	}
	if pts, _ := e.r.Points(); len(pts) != 2 {
		t.Fatalf("%d points, want one per VM", len(pts))
	}
}

// A job's folder and tag select VMs by reference: another VM with the same
// name elsewhere in the datacenter (a test copy) does not make the job's
// VM ambiguous, and it is backed up once though both select it.
func TestRunFolderVMNamedElsewhere(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	root, err := e.lab.Finder.Folder(ctx, "/DC0/vm")
	must(t, err)
	prod, err := root.CreateFolder(ctx, "prod")
	must(t, err)
	vm, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "web01", Disks: []int64{1 << 20}, PowerOn: true})
	must(t, err)
	task, err := prod.MoveInto(ctx, []types.ManagedObjectReference{vm.Reference()})
	must(t, err)
	must(t, task.Wait(ctx))
	must(t, e.lab.WriteDisk("web01", 0, 0, []byte("hello prod web01")))
	vapp, err := e.lab.CreateVApp(ctx, "test-copy")
	must(t, err)
	_, err = e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "web01", VApp: vapp}) // the copy, outside prod
	must(t, err)
	must(t, e.lab.TagVMs(ctx, "backup", "nightly", "/DC0/vm/prod/web01"))

	d := e.job(t, "name: prod\nfolders: [/DC0/vm/prod]\ntags: [backup:nightly]\ninterval: 24h\n")
	run, err := e.runner.Run(ctx, d, "manual")
	must(t, err)
	got, err := e.cat.JobRun(ctx, run.ID)
	must(t, err)
	if run.State != catalog.RunDone || run.VMsOK != 1 || len(got.VMs) != 1 || got.VMs[0].PointID == "" {
		t.Fatalf("job selecting prod's web01 beside another web01: state %s ok %d failed %d VMs %+v (%s)", run.State, run.VMsOK, run.VMsFailed, got.VMs, run.Error)
	}
	p, err := e.r.Point(got.VMs[0].PointID)
	must(t, err)
	if p.Source.MoRef != vm.Reference().Value {
		t.Fatalf("point %s is of %s, want prod's web01 %s", p.ID, p.Source.MoRef, vm.Reference().Value)
	}
}

// msgHandler passes the messages logged to a channel.
type msgHandler struct{ ch chan string }

func (h msgHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h msgHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.ch <- r.Message:
	default:
	}
	return nil
}
func (h msgHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h msgHandler) WithGroup(string) slog.Handler      { return h }

// A job meets a VM whose backup another run holds (a manual backup held in
// the middle of its read): without vm_wait that VM fails naming the
// holder; with vm_wait the job says it waits, and once the other backup
// ends backs the VM up from that backup's point.
func TestRunWaitsForVMClaim(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: "web01", Disks: []int64{1 << 20}, PowerOn: true})
	must(t, err)
	must(t, e.lab.WriteDisk("web01", 0, 0, []byte("hello web01")))

	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	manual := make(chan vcbackup.Result, 1)
	go func() {
		rs, err := vcbackup.BackupVMs(ctx, vcbackup.Config{Client: e.lab.Client, Repo: e.r, Transport: vcbackup.TransportNFC,
			Progress: func(p vcbackup.Progress) {
				if p.Phase == "read" {
					once.Do(func() { close(held); <-release })
				}
			}}, []string{"web01"})
		if err != nil {
			manual <- vcbackup.Result{Err: err}
			return
		}
		manual <- rs[0]
	}()
	select {
	case <-held:
	case r := <-manual:
		t.Fatalf("the manual backup ended before its read: %v", r.Err)
	}
	var relOnce sync.Once
	t.Cleanup(func() { relOnce.Do(func() { close(release) }) })

	run, err := e.runner.Run(ctx, e.job(t, "name: nowait\nvms: [web01]\ninterval: 24h\n"), "manual")
	must(t, err)
	got, err := e.cat.JobRun(ctx, run.ID)
	must(t, err)
	if run.State != catalog.RunFailed || len(got.VMs) != 1 || !strings.Contains(got.VMs[0].Error, "another backup of this VM is running") ||
		!strings.Contains(got.VMs[0].Error, fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("job beside a running backup of its VM: state %s VMs %+v", run.State, got.VMs)
	}

	msgs := make(chan string, 16)
	waiter := &backupjob.Runner{Repo: e.r, Catalog: e.cat, Logger: slog.New(msgHandler{msgs})}
	done := make(chan *catalog.JobRun, 1)
	d := e.job(t, "name: waits\nvms: [web01]\ninterval: 24h\nvm_wait: 10m\n")
	go func() {
		run, err := waiter.Run(ctx, d, "manual")
		if err != nil {
			t.Error(err)
		}
		done <- run
	}()
	for waiting := false; !waiting; {
		select {
		case m := <-msgs:
			waiting = m == "waiting for another backup of the VM (vm_wait)"
		case run := <-done:
			t.Fatalf("a job with vm_wait ended while its VM's backup was held: %+v", run)
		}
	}
	relOnce.Do(func() { close(release) })
	first := <-manual
	must(t, first.Err)
	run = <-done
	got, err = e.cat.JobRun(ctx, run.ID)
	must(t, err)
	if run.State != catalog.RunDone || len(got.VMs) != 1 || got.VMs[0].PointID == "" {
		t.Fatalf("job that waited: state %s VMs %+v (%s)", run.State, got.VMs, run.Error)
	}
	p, err := e.r.Point(got.VMs[0].PointID)
	must(t, err)
	if p.Parent != first.Point.ID {
		t.Fatalf("the job's point %s has parent %q, want the manual backup's %s", p.ID, p.Parent, first.Point.ID)
	}
}
