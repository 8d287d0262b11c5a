// Package backupjob runs backups from vCenter on a schedule.
//
// Vocabulary:
//
//   - job: a named definition (YAML, stored in the catalog by `rekindle job
//     define`): which VMs (names, inventory folders, vApps, vSphere tags as
//     category:tag), which vCenter,
//     when (an interval or a cron expression), how many VMs at once, and the
//     retention policy applied to those VMs after each run.
//   - run: one execution of a job, manual (`job run`) or by the schedule
//     (`rekindle serve` runs the Scheduler). Each run and each VM's result
//     are recorded in the catalog. A VM that fails does not fail the others:
//     the run is then "partial".
//   - due: a job is due when the next time its schedule gives after its last
//     run's start (or after its definition, if it never ran) has come.
package backupjob

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/retention"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
)

// Definition is a job as written in YAML.
type Definition struct {
	Name     string   `yaml:"name"`
	VCenter  VCenter  `yaml:"vcenter"`
	VMs      []string `yaml:"vms,omitempty"`     // VM names or inventory paths
	Folders  []string `yaml:"folders,omitempty"` // every VM under these inventory folders
	VApps    []string `yaml:"vapps,omitempty"`   // these vApps, members and app definition
	Tags     []string `yaml:"tags,omitempty"`    // every VM carrying one of these tags, "category:tag"
	Interval string   `yaml:"interval,omitempty"`
	Cron     string   `yaml:"cron,omitempty"` // 5 fields or @daily, @hourly...
	Parallel int      `yaml:"parallel,omitempty"`
	Quiesce  bool     `yaml:"quiesce,omitempty"`
	// VMWait is how long a VM's backup waits for another backup of it (a
	// manual `backup vm`, another job) to end: 30m, 2h. Unset, such a VM
	// is a failed VM of the run, naming that backup.
	VMWait string `yaml:"vm_wait,omitempty"`
	// Retention is applied to the job's VMs after every run: forget, then
	// prune when retention.prune is set.
	Retention *Retention `yaml:"retention,omitempty"`

	interval time.Duration
	cron     cron.Schedule
	vmWait   time.Duration
}

// VCenter says how the job reaches vCenter. The password is read from a
// file (or $REKINDLE_VC_PASSWORD) when the job runs: it is never stored.
type VCenter struct {
	URL          string `yaml:"url"`
	User         string `yaml:"user,omitempty"`
	PasswordFile string `yaml:"password_file,omitempty"`
	Thumbprint   string `yaml:"thumbprint,omitempty"`
	CA           string `yaml:"ca,omitempty"`
	Insecure     bool   `yaml:"insecure,omitempty"`
	Datacenter   string `yaml:"datacenter,omitempty"`
}

// Retention is a job's retention policy in YAML.
type Retention struct {
	KeepLast    int    `yaml:"keep_last,omitempty"`
	KeepHourly  int    `yaml:"keep_hourly,omitempty"`
	KeepDaily   int    `yaml:"keep_daily,omitempty"`
	KeepWeekly  int    `yaml:"keep_weekly,omitempty"`
	KeepMonthly int    `yaml:"keep_monthly,omitempty"`
	KeepWithin  string `yaml:"keep_within,omitempty"` // 36h, 7d, 2w
	// Prune frees, after the forget, the chunks no point names any more
	// (see Runner.ServeLock for a job that `serve` runs).
	Prune bool `yaml:"prune,omitempty"`
}

// Policy converts r.
func (r *Retention) Policy() (retention.Policy, error) {
	within, err := ParseDays(r.KeepWithin)
	if err != nil {
		return retention.Policy{}, fmt.Errorf("keep_within: %w", err)
	}
	p := retention.Policy{Last: r.KeepLast, Hourly: r.KeepHourly, Daily: r.KeepDaily, Weekly: r.KeepWeekly,
		Monthly: r.KeepMonthly, Within: within}
	if err := p.Validate(); err != nil {
		return p, err
	}
	if p.Empty() {
		return p, fmt.Errorf("retention has no rule: give keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly or keep_within")
	}
	return p, nil
}

// ParseDays reads a duration that may also be in days (7d) or weeks (2w).
func ParseDays(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			var v int
			if _, err := fmt.Sscanf(n, "%d", &v); err != nil || v < 0 || fmt.Sprint(v) != n {
				return 0, fmt.Errorf("%q: want e.g. 36h, 7d or 2w", s)
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want e.g. 36h, 7d or 2w", s)
	}
	return d, nil
}

// Parse reads and checks a job definition; errors name the field.
func Parse(b []byte) (*Definition, error) {
	var d Definition
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("job definition: %w", err)
	}
	if err := repo.ValidName(d.Name); err != nil {
		return nil, fmt.Errorf("job name: %w", err)
	}
	if d.VCenter.URL == "" {
		return nil, fmt.Errorf("job %s: vcenter.url is required", d.Name)
	}
	if len(d.VMs)+len(d.Folders)+len(d.VApps)+len(d.Tags) == 0 {
		return nil, fmt.Errorf("job %s: name what to back up: vms, folders, vapps or tags", d.Name)
	}
	for _, t := range d.Tags {
		if _, _, err := parseTag(t); err != nil {
			return nil, fmt.Errorf("job %s: %w", d.Name, err)
		}
	}
	switch {
	case d.Interval != "" && d.Cron != "":
		return nil, fmt.Errorf("job %s: give interval or cron, not both", d.Name)
	case d.Interval != "":
		iv, err := ParseDays(d.Interval)
		if err != nil || iv < time.Second {
			return nil, fmt.Errorf("job %s: interval %q: want a duration of at least 1s, e.g. 30m, 24h, 7d", d.Name, d.Interval)
		}
		d.interval = iv
	case d.Cron != "":
		s, err := cron.ParseStandard(d.Cron)
		if err != nil {
			return nil, fmt.Errorf("job %s: cron %q: %w (want 5 fields, e.g. \"0 2 * * *\", or @daily)", d.Name, d.Cron, err)
		}
		// A schedule of dates that do not exist (30 February) has no next
		// time: cron's Next is then the zero time, always due, and the
		// scheduler would run the job back to back.
		if s.Next(time.Now()).IsZero() {
			return nil, fmt.Errorf("job %s: cron %q never fires (its day and month never meet, e.g. 30 February): give a date that exists", d.Name, d.Cron)
		}
		d.cron = s
	default:
		return nil, fmt.Errorf("job %s: give interval (e.g. 24h) or cron (e.g. \"0 2 * * *\")", d.Name)
	}
	if d.VMWait != "" {
		w, err := ParseDays(d.VMWait)
		if err != nil || w < 0 {
			return nil, fmt.Errorf("job %s: vm_wait %q: want a duration, e.g. 30m, 2h", d.Name, d.VMWait)
		}
		d.vmWait = w
	}
	if d.Parallel < 0 {
		return nil, fmt.Errorf("job %s: parallel %d: must be 1 or more", d.Name, d.Parallel)
	}
	if d.Retention != nil {
		if _, err := d.Retention.Policy(); err != nil {
			return nil, fmt.Errorf("job %s: retention: %w", d.Name, err)
		}
	}
	return &d, nil
}

// Schedule describes when the job runs, for people.
func (d *Definition) Schedule() string {
	if d.Cron != "" {
		return "cron " + d.Cron
	}
	return "every " + d.Interval
}

// Next is the first time the job is due after t.
func (d *Definition) Next(t time.Time) time.Time {
	if d.cron != nil {
		return d.cron.Next(t)
	}
	return t.Add(d.interval)
}

func (d *Definition) password() (string, error) {
	if d.VCenter.PasswordFile == "" {
		return os.Getenv("REKINDLE_VC_PASSWORD"), nil
	}
	b, err := os.ReadFile(d.VCenter.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("job %s: vCenter password file: %w", d.Name, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func newRunID(job string, t time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return job + "-" + t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// backupConfig is the vcbackup configuration a run uses.
func (d *Definition) backupConfig(base vcbackup.Config) vcbackup.Config {
	base.Quiesce = d.Quiesce
	if d.Parallel > 0 {
		base.Parallel = d.Parallel
	}
	base.Datacenter = d.VCenter.Datacenter
	base.ClaimWait = d.vmWait
	return base
}
