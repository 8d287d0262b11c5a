package backupjob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/site"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vsphere"
)

// Runner runs jobs against one repository and catalog.
type Runner struct {
	Repo    *repo.Repo
	Catalog *catalog.Catalog
	Logger  *slog.Logger
	// Progress, when set, receives every VM's backup progress.
	Progress func(vcbackup.Progress)
	Now      func() time.Time // for tests
	// ServeLock is the repository lock of the `rekindle serve` the runner
	// runs in. A job's prune then runs beside it (repo.PruneOptions.Beside)
	// instead of being refused by it, while the server serves restores:
	// the points its sessions read are pinned in the catalog, so forget
	// keeps them and prune keeps their chunks.
	ServeLock *repo.RepoLock

	// prune orders, within this process, prunes (exclusive) against the
	// runs' backups (shared): a backup that starts while a prune runs
	// waits for it instead of failing on the prune's repository lock.
	prune sync.RWMutex
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Run runs job d now and records the run and each VM's result in the
// catalog. trigger is "manual" or "schedule". The returned run says what
// happened; the error is for a run that could not be recorded at all.
func (r *Runner) Run(ctx context.Context, d *Definition, trigger string) (*catalog.JobRun, error) {
	start := r.now()
	run := &catalog.JobRun{ID: newRunID(d.Name, start), Job: d.Name, Trigger: trigger, Started: start.UTC()}
	if err := r.Catalog.StartJobRun(ctx, run); err != nil {
		return nil, err
	}
	log := r.logger().With("job", d.Name, "run", run.ID)
	log.Info("job run started", "trigger", trigger)
	err := r.run(ctx, d, run, log)
	if err != nil {
		run.Error = err.Error()
	}
	switch {
	case run.VMsFailed == 0 && err == nil:
		run.State = catalog.RunDone
	case run.VMsOK > 0:
		run.State = catalog.RunPartial
	default:
		run.State = catalog.RunFailed
	}
	run.Ended = r.now().UTC()
	if eerr := r.Catalog.EndJobRun(context.WithoutCancel(ctx), run); eerr != nil {
		return run, eerr
	}
	log.Info("job run ended", "state", run.State, "vms_ok", run.VMsOK, "vms_failed", run.VMsFailed,
		"bytes_read", run.BytesRead, "duration", run.Ended.Sub(run.Started))
	return run, nil
}

func (r *Runner) run(ctx context.Context, d *Definition, run *catalog.JobRun, log *slog.Logger) error {
	pw, err := d.password()
	if err != nil {
		return err
	}
	drv, err := vsphere.Connect(ctx, vsphere.Config{URL: d.VCenter.URL, Username: d.VCenter.User, Password: pw,
		Insecure: d.VCenter.Insecure, Thumbprint: d.VCenter.Thumbprint, CAFile: d.VCenter.CA, Datacenter: d.VCenter.Datacenter}, log)
	if err != nil {
		return err
	}
	defer drv.Close(context.WithoutCancel(ctx))
	cfg := d.backupConfig(vcbackup.Config{Client: drv.Client(), Repo: r.Repo, Catalog: r.Catalog, Logger: log, Progress: r.Progress,
		ClaimWaiting: func(vm string, h repo.LockInfo, wait time.Duration) {
			log.Warn("waiting for another backup of the VM (vm_wait)", "vm", vm, "holder", h.String(), "wait", wait)
		}})
	r.prune.RLock()
	backedUp := false
	defer func() {
		if !backedUp {
			r.prune.RUnlock()
		}
	}()

	var results []vcbackup.Result
	var errs []error
	inApps := map[string]bool{}
	for _, app := range d.VApps {
		ar, err := vcbackup.BackupVApp(ctx, cfg, app)
		if ar == nil {
			errs = append(errs, err)
			// The vApp's members are unknown: count the vApp as a failure.
			results = append(results, vcbackup.Result{VM: "vApp " + app, Err: err})
			continue
		}
		// Members' failures are recorded per VM; the run's error says
		// what became of the app definition.
		switch {
		case ar.AppNote != "":
			errs = append(errs, errors.New(ar.AppNote))
		case err != nil && ar.Failed() == 0: // the definition did not save
			errs = append(errs, err)
		}
		for _, m := range ar.Members {
			inApps[m.VM] = true
			if m.Ref.Value != "" {
				// A member is backed up once, also when a folder, tag or
				// inventory path lists it again.
				cfg.Skip = append(cfg.Skip, m.Ref)
			}
		}
		results = append(results, ar.Members...)
	}
	targets, err := selectVMs(ctx, drv.Client(), d)
	if err != nil {
		errs = append(errs, err)
	}
	tagged, tagErrs := taggedVMs(ctx, drv.Client(), d.restUser(pw), d.Tags)
	for _, sel := range d.Tags {
		// An unknown tag is a failed entry of the run, not a run that
		// passes with nothing to do.
		if err := tagErrs[sel]; err != nil {
			errs = append(errs, err)
			results = append(results, vcbackup.Result{VM: "tag " + sel, Err: err})
		}
	}
	// A VM listed twice (a name and a folder, a folder and a tag) is
	// backed up once, and a vApp member not again (cfg.Skip): vcbackup
	// matches them by reference.
	// A VM named like a vApp member is left out too: restore points are
	// named by VM, and the member's point has that name.
	targets = append(targets, tagged...)
	targets = slices.DeleteFunc(targets, func(t vcbackup.Target) bool { return inApps[t.Name] })
	if len(targets) > 0 {
		rs, err := vcbackup.BackupTargets(ctx, cfg, targets)
		if err != nil {
			errs = append(errs, err)
		}
		results = append(results, rs...)
	}

	r.prune.RUnlock()
	backedUp = true

	var done []string
	for _, res := range results {
		v := catalog.JobRunVM{VM: res.VM, Mode: res.Mode, BytesRead: res.BytesRead, Duration: res.Duration,
			Notes: strings.Join(res.Notes, "; ")}
		if res.Point != nil {
			v.PointID = res.Point.ID
			v.BytesStored = res.Stats.BytesStored
			done = append(done, res.Point.VM.Name)
		}
		if res.Err != nil {
			v.Error = res.Err.Error()
			run.VMsFailed++
		} else {
			run.VMsOK++
		}
		run.BytesRead += v.BytesRead
		run.BytesStored += v.BytesStored
		run.VMs = append(run.VMs, v)
	}
	if d.Retention != nil && len(done) > 0 {
		if err := r.applyRetention(ctx, d, done); err != nil {
			errs = append(errs, fmt.Errorf("retention: %w", err))
		} else if d.Retention.Prune {
			if err := r.Prune(ctx, log); err != nil {
				errs = append(errs, fmt.Errorf("prune: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

func (r *Runner) applyRetention(ctx context.Context, d *Definition, vms []string) error {
	p, err := d.Retention.Policy()
	if err != nil {
		return err
	}
	return site.Forget(ctx, r.Repo, r.Catalog, p, vms)
}

// HoldPrunes keeps the runner's prunes from starting until release is
// called: for backups that run in the same process, outside the runner's
// jobs (serve's protect cycles), as the jobs' own backups do.
func (r *Runner) HoldPrunes() (release func()) {
	r.prune.RLock()
	return r.prune.RUnlock
}

// Prune prunes the repository after a forget (a job's, or a protect
// cycle's), beside the server's lock when the runner runs in `serve`,
// once no backup of this process holds prunes off. A prune another
// process's lock holds off (a backup or import run from the command line)
// is put off to the next run: the forgotten points are gone already, their
// chunks wait.
func (r *Runner) Prune(ctx context.Context, log *slog.Logger) error {
	r.prune.Lock()
	defer r.prune.Unlock()
	rep, err := r.Repo.Prune(ctx, repo.PruneOptions{Beside: r.ServeLock})
	if errors.Is(err, repo.ErrLocked) {
		log.Warn("prune put off to the next run: the repository is locked", "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	log.Info("prune done", "chunks_removed", rep.ChunksRemoved, "indexes_removed", rep.IndexesRemoved,
		"bytes_removed", rep.BytesRemoved, "duration", rep.Duration)
	return nil
}

// selectVMs lists the job's VMs: the names it gives, then every VM under
// its folders, by reference (tagged VMs are added by taggedVMs).
func selectVMs(ctx context.Context, c *vim25.Client, d *Definition) ([]vcbackup.Target, error) {
	var out []vcbackup.Target
	for _, n := range d.VMs {
		out = append(out, vcbackup.Target{Name: n})
	}
	if len(d.Folders) == 0 {
		return out, nil
	}
	f := find.NewFinder(c, false)
	dc, err := f.DatacenterOrDefault(ctx, d.VCenter.Datacenter)
	if err != nil {
		return out, fmt.Errorf("datacenter %q: %w", d.VCenter.Datacenter, err)
	}
	f.SetDatacenter(dc)
	var errs []error
	for _, path := range d.Folders {
		folder, err := f.Folder(ctx, path)
		if err != nil {
			errs = append(errs, fmt.Errorf("folder %s: %w", path, err))
			continue
		}
		v, err := view.NewManager(c).CreateContainerView(ctx, folder.Reference(), []string{"VirtualMachine"}, true)
		if err != nil {
			errs = append(errs, fmt.Errorf("folder %s: %w", path, err))
			continue
		}
		var vms []mo.VirtualMachine
		err = v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "config.template"}, &vms)
		v.Destroy(context.WithoutCancel(ctx))
		if err != nil {
			errs = append(errs, fmt.Errorf("folder %s: %w", path, err))
			continue
		}
		for _, vm := range vms {
			if vm.Config != nil && vm.Config.Template {
				continue
			}
			out = append(out, vcbackup.Target{Name: vm.Name, Ref: vm.Self})
		}
	}
	return out, errors.Join(errs...)
}

// Metrics are the jobs' Prometheus metrics, read from the catalog's run
// history at every scrape: runs by `rekindle job run` (another process)
// count beside the scheduler's, and a restarted server still reports each
// job's last success.
type Metrics struct {
	cat *catalog.Catalog
	log *slog.Logger

	lastSuccess, duration, bytesRead, bytesStored, failures, runs *prometheus.Desc

	mu   sync.Mutex
	last []catalog.JobStat // the last statistics read, served when a read fails
}

// NewMetrics registers the job metrics of cat's runs on reg; log says when
// the catalog cannot be read (the scrape then has the last values read).
func NewMetrics(reg prometheus.Registerer, cat *catalog.Catalog, log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	job := []string{"job"}
	m := &Metrics{cat: cat, log: log,
		lastSuccess: prometheus.NewDesc("rekindle_job_last_success_timestamp_seconds",
			"When the job's last run that backed up every VM ended (Unix time).", job, nil),
		duration: prometheus.NewDesc("rekindle_job_last_duration_seconds",
			"How long the job's last run took.", job, nil),
		bytesRead: prometheus.NewDesc("rekindle_job_read_bytes_total",
			"Disk bytes the job's runs read from vCenter.", job, nil),
		bytesStored: prometheus.NewDesc("rekindle_job_stored_bytes_total",
			"Compressed bytes the job's runs added to the repository.", job, nil),
		failures: prometheus.NewDesc("rekindle_job_vm_failures_total",
			"VM backups of the job that failed.", job, nil),
		runs: prometheus.NewDesc("rekindle_job_runs_total",
			"Runs of the job by outcome (done, partial, failed).", []string{"job", "state"}, nil),
	}
	reg.MustRegister(m)
	return m
}

// Describe is prometheus.Collector's.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.lastSuccess, m.duration, m.bytesRead, m.bytesStored, m.failures, m.runs} {
		ch <- d
	}
}

// Collect is prometheus.Collector's: the job statistics of the catalog.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stats, err := m.cat.JobStats(ctx)
	m.mu.Lock()
	if err != nil {
		m.log.Warn("job metrics: the catalog's run history could not be read: serving the last values read", "err", err)
		stats = m.last
	} else {
		m.last = stats
	}
	m.mu.Unlock()
	for _, s := range stats {
		if !s.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(m.lastSuccess, prometheus.GaugeValue, float64(s.LastSuccess.UnixNano())/1e9, s.Job)
		}
		ch <- prometheus.MustNewConstMetric(m.duration, prometheus.GaugeValue, s.LastDuration.Seconds(), s.Job)
		ch <- prometheus.MustNewConstMetric(m.bytesRead, prometheus.CounterValue, float64(s.BytesRead), s.Job)
		ch <- prometheus.MustNewConstMetric(m.bytesStored, prometheus.CounterValue, float64(s.BytesStored), s.Job)
		ch <- prometheus.MustNewConstMetric(m.failures, prometheus.CounterValue, float64(s.VMFailures), s.Job)
		for _, state := range []string{catalog.RunDone, catalog.RunPartial, catalog.RunFailed} {
			ch <- prometheus.MustNewConstMetric(m.runs, prometheus.CounterValue, float64(s.Runs[state]), s.Job, state)
		}
	}
}
