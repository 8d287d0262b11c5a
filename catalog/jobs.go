package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Job run states.
const (
	RunRunning = "running"
	RunDone    = "done"    // every VM backed up
	RunPartial = "partial" // some VMs failed
	RunFailed  = "failed"  // nothing backed up, or the run could not start
)

// Job is a stored backup job: its name and its definition as the user wrote
// it (YAML); the orchestrator parses it.
type Job struct {
	Name       string    `json:"name"`
	Definition []byte    `json:"-"` // YAML as saved; MarshalJSON writes it as a string
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
}

// MarshalJSON writes the definition as text, not base64.
func (j Job) MarshalJSON() ([]byte, error) {
	type plain Job
	return json.Marshal(struct {
		plain
		Definition string `json:"definition"`
	}{plain(j), string(j.Definition)})
}

// JobRun is one run of a job.
type JobRun struct {
	ID          string    `json:"id"`
	Job         string    `json:"job"`
	Trigger     string    `json:"trigger"` // "schedule" or "manual"
	State       string    `json:"state"`
	Started     time.Time `json:"started"`
	Ended       time.Time `json:"ended,omitzero"` // zero while running
	Error       string    `json:"error,omitempty"`
	VMsOK       int       `json:"vms_ok"`
	VMsFailed   int       `json:"vms_failed"`
	BytesRead   int64     `json:"bytes_read"`
	BytesStored int64     `json:"bytes_stored"`
	// Package is the site package a protect cycle stored (protect cycles
	// are the runs of job ProtectJob(site)).
	Package string     `json:"package,omitempty"`
	VMs     []JobRunVM `json:"vms"` // by VM name; filled by JobRun, not JobRuns
}

// ProtectJob is the job name under which the protect cycles of site are
// recorded. Backup job names cannot hold a colon, so none collides.
func ProtectJob(site string) string { return "protect:" + site }

// MarshalJSON writes missing VMs as [] rather than null.
func (r JobRun) MarshalJSON() ([]byte, error) {
	type plain JobRun
	p := plain(r)
	p.VMs = nonNil(p.VMs)
	return json.Marshal(p)
}

// JobRunVM is one VM of a job run.
type JobRunVM struct {
	VM          string        `json:"vm"`
	PointID     string        `json:"point_id,omitempty"`
	Mode        string        `json:"mode,omitempty"`
	BytesRead   int64         `json:"bytes_read"`
	BytesStored int64         `json:"bytes_stored"`
	Duration    time.Duration `json:"-"` // MarshalJSON writes duration_s
	Error       string        `json:"error,omitempty"`
	Notes       string        `json:"notes,omitempty"`
}

// MarshalJSON writes the duration in seconds (docs/json.md).
func (v JobRunVM) MarshalJSON() ([]byte, error) {
	type plain JobRunVM
	return json.Marshal(struct {
		plain
		DurationSeconds float64 `json:"duration_s"`
	}{plain(v), v.Duration.Seconds()})
}

// SaveJob records (or replaces) a job definition.
func (c *Catalog) SaveJob(ctx context.Context, name string, definition []byte) error {
	now := c.now()
	_, err := c.run().exec(ctx, `INSERT INTO jobs (name, definition, created, updated) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, updated = excluded.updated`,
		name, string(definition), nanos(now), nanos(now))
	if err != nil {
		return fmt.Errorf("catalog: save job %s: %w", name, err)
	}
	return nil
}

// DeleteJob removes a job and its history.
func (c *Catalog) DeleteJob(ctx context.Context, name string) error {
	return c.inTx(ctx, func(r runner) error {
		if err := mustAffect(r.exec(ctx, `DELETE FROM jobs WHERE name = ?`, name)); err != nil {
			return fmt.Errorf("catalog: job %s: %w", name, err)
		}
		if _, err := r.exec(ctx, `DELETE FROM job_run_vms WHERE run_id IN (SELECT id FROM job_runs WHERE job = ?)`, name); err != nil {
			return err
		}
		_, err := r.exec(ctx, `DELETE FROM job_runs WHERE job = ?`, name)
		return err
	})
}

// Job loads one job.
func (c *Catalog) Job(ctx context.Context, name string) (*Job, error) {
	var j Job
	var def string
	var created, updated sql.NullInt64
	err := c.run().queryRow(ctx, `SELECT name, definition, created, updated FROM jobs WHERE name = ?`, name).
		Scan(&j.Name, &def, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: job %s: %w", name, err)
	}
	j.Definition, j.Created, j.Updated = []byte(def), fromNanos(created), fromNanos(updated)
	return &j, nil
}

// Jobs lists every job by name.
func (c *Catalog) Jobs(ctx context.Context) ([]Job, error) {
	rows, err := c.run().query(ctx, `SELECT name, definition, created, updated FROM jobs ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("catalog: jobs: %w", err)
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		var j Job
		var def string
		var created, updated sql.NullInt64
		if err := rows.Scan(&j.Name, &def, &created, &updated); err != nil {
			return nil, fmt.Errorf("catalog: jobs: %w", err)
		}
		j.Definition, j.Created, j.Updated = []byte(def), fromNanos(created), fromNanos(updated)
		out = append(out, j)
	}
	return out, rows.Err()
}

// StartJobRun records a run as running; Started zero means now.
func (c *Catalog) StartJobRun(ctx context.Context, run *JobRun) error {
	if run.Started.IsZero() {
		run.Started = c.now()
	}
	run.State = RunRunning
	_, err := c.run().exec(ctx, `INSERT INTO job_runs (id, job, trigger_kind, state, started) VALUES (?, ?, ?, ?, ?)`,
		run.ID, run.Job, run.Trigger, run.State, nanos(run.Started))
	if err != nil {
		return fmt.Errorf("catalog: start run %s of job %s: %w", run.ID, run.Job, err)
	}
	return nil
}

// EndJobRun records a run's outcome and its VMs' results.
func (c *Catalog) EndJobRun(ctx context.Context, run *JobRun) error {
	if run.Ended.IsZero() {
		run.Ended = c.now()
	}
	err := c.inTx(ctx, func(r runner) error {
		if err := mustAffect(r.exec(ctx, `UPDATE job_runs SET state = ?, ended = ?, error = ?, vms_ok = ?, vms_failed = ?,
			bytes_read = ?, bytes_stored = ?, package_id = ? WHERE id = ?`, run.State, nanos(run.Ended), run.Error, run.VMsOK, run.VMsFailed,
			run.BytesRead, run.BytesStored, run.Package, run.ID)); err != nil {
			return err
		}
		for _, v := range run.VMs {
			if _, err := r.exec(ctx, `INSERT INTO job_run_vms (run_id, vm, point_id, mode, bytes_read, bytes_stored, duration_ns, error, notes)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, vm) DO UPDATE SET point_id = excluded.point_id, mode = excluded.mode,
				bytes_read = excluded.bytes_read, bytes_stored = excluded.bytes_stored, duration_ns = excluded.duration_ns,
				error = excluded.error, notes = excluded.notes`,
				run.ID, v.VM, v.PointID, v.Mode, v.BytesRead, v.BytesStored, int64(v.Duration), v.Error, v.Notes); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("catalog: end run %s of job %s: %w", run.ID, run.Job, err)
	}
	return nil
}

const runCols = `id, job, trigger_kind, state, started, ended, error, vms_ok, vms_failed, bytes_read, bytes_stored, package_id`

func scanRun(sc interface{ Scan(...any) error }) (JobRun, error) {
	var j JobRun
	var started, ended sql.NullInt64
	err := sc.Scan(&j.ID, &j.Job, &j.Trigger, &j.State, &started, &ended, &j.Error, &j.VMsOK, &j.VMsFailed, &j.BytesRead, &j.BytesStored, &j.Package)
	j.Started, j.Ended = fromNanos(started), fromNanos(ended)
	return j, err
}

// JobRuns lists a job's runs, newest first, at most limit (0: all).
func (c *Catalog) JobRuns(ctx context.Context, job string, limit int) ([]JobRun, error) {
	return c.jobRuns(ctx, "job = ?", job, limit, "runs of job "+job)
}

// ProtectRuns lists the protect cycles of every site (the runs of every
// ProtectJob), newest first, at most limit (0: all).
func (c *Catalog) ProtectRuns(ctx context.Context, limit int) ([]JobRun, error) {
	// No backup job name holds the colon, so the prefix matches protect jobs only.
	return c.jobRuns(ctx, "job LIKE ?", ProtectJob("")+"%", limit, "protect cycles")
}

// jobRuns lists the runs where cond (with its one argument) holds, newest
// first, at most limit (0: all); what names them in errors.
func (c *Catalog) jobRuns(ctx context.Context, cond string, arg any, limit int, what string) ([]JobRun, error) {
	q := `SELECT ` + runCols + ` FROM job_runs WHERE ` + cond + ` ORDER BY started DESC, id DESC`
	args := []any{arg}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := c.run().query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("catalog: %s: %w", what, err)
	}
	defer rows.Close()
	var out []JobRun
	for rows.Next() {
		j, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("catalog: %s: %w", what, err)
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// JobRun loads one run with its VMs.
func (c *Catalog) JobRun(ctx context.Context, id string) (*JobRun, error) {
	j, err := scanRun(c.run().queryRow(ctx, `SELECT `+runCols+` FROM job_runs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job run %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: job run %s: %w", id, err)
	}
	rows, err := c.run().query(ctx, `SELECT vm, point_id, mode, bytes_read, bytes_stored, duration_ns, error, notes
		FROM job_run_vms WHERE run_id = ? ORDER BY vm`, id)
	if err != nil {
		return nil, fmt.Errorf("catalog: job run %s: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var v JobRunVM
		var d int64
		if err := rows.Scan(&v.VM, &v.PointID, &v.Mode, &v.BytesRead, &v.BytesStored, &d, &v.Error, &v.Notes); err != nil {
			return nil, fmt.Errorf("catalog: job run %s: %w", id, err)
		}
		v.Duration = time.Duration(d)
		j.VMs = append(j.VMs, v)
	}
	return &j, rows.Err()
}

// JobStat sums up the ended runs of one backup job that the catalog holds.
type JobStat struct {
	Job         string
	Runs        map[string]int64 // by state: done, partial, failed
	VMFailures  int64
	BytesRead   int64
	BytesStored int64
	// LastSuccess is when the last run in state done ended (zero: none).
	LastSuccess time.Time
	// LastDuration is how long the run that ended last took.
	LastDuration time.Duration
}

// JobStats sums the ended runs of every backup job, by job name (protect
// cycles, recorded under ProtectJob names, are left out). Runs recorded by
// any process on the catalog count: `rekindle job run` beside `serve`.
func (c *Catalog) JobStats(ctx context.Context) ([]JobStat, error) {
	rows, err := c.run().query(ctx, `SELECT job, state, COUNT(*), CAST(COALESCE(SUM(vms_failed), 0) AS BIGINT),
		CAST(COALESCE(SUM(bytes_read), 0) AS BIGINT), CAST(COALESCE(SUM(bytes_stored), 0) AS BIGINT), MAX(ended)
		FROM job_runs WHERE state <> 'running' AND job NOT LIKE 'protect:%' GROUP BY job, state ORDER BY job, state`)
	if err != nil {
		return nil, fmt.Errorf("catalog: job statistics: %w", err)
	}
	defer rows.Close()
	var out []JobStat
	at := map[string]int{}
	for rows.Next() {
		var job, state string
		var n, failed, read, stored int64
		var ended sql.NullInt64
		if err := rows.Scan(&job, &state, &n, &failed, &read, &stored, &ended); err != nil {
			return nil, fmt.Errorf("catalog: job statistics: %w", err)
		}
		i, ok := at[job]
		if !ok {
			i = len(out)
			at[job] = i
			out = append(out, JobStat{Job: job, Runs: map[string]int64{}})
		}
		s := &out[i]
		s.Runs[state] += n
		s.VMFailures += failed
		s.BytesRead += read
		s.BytesStored += stored
		if state == RunDone {
			s.LastSuccess = fromNanos(ended)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: job statistics: %w", err)
	}
	rows.Close()
	last, err := c.run().query(ctx, `SELECT r.job, r.started, r.ended FROM job_runs r
		WHERE r.state <> 'running' AND r.job NOT LIKE 'protect:%'
		AND r.ended = (SELECT MAX(x.ended) FROM job_runs x WHERE x.job = r.job AND x.state <> 'running')`)
	if err != nil {
		return nil, fmt.Errorf("catalog: job statistics: %w", err)
	}
	defer last.Close()
	for last.Next() {
		var job string
		var started, ended sql.NullInt64
		if err := last.Scan(&job, &started, &ended); err != nil {
			return nil, fmt.Errorf("catalog: job statistics: %w", err)
		}
		if i, ok := at[job]; ok {
			out[i].LastDuration = fromNanos(ended).Sub(fromNanos(started))
		}
	}
	if err := last.Err(); err != nil {
		return nil, fmt.Errorf("catalog: job statistics: %w", err)
	}
	return out, nil
}
