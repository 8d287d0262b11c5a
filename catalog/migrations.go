package catalog

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// migration is one numbered step of the schema. Statements run one by one
// (some drivers refuse several per call) inside the Open transaction.
//
// Rules: never edit a migration that has shipped, add a new one. Keep the DDL
// portable: TEXT, BIGINT, BOOLEAN, PRIMARY KEY, UNIQUE, REFERENCES,
// CREATE INDEX. A PostgreSQL backend should declare its text keys
// COLLATE "C" so ORDER BY name sorts as SQLite's BINARY collation does.
type migration struct {
	version int
	name    string
	stmts   []string
}

// migrations are in version order, starting at 1, without gaps.
var migrations = []migration{
	{
		version: 1,
		name:    "index tables and sessions",
		stmts: []string{
			// Index tables: a cache of the repository, cleared by Rebuild.
			`CREATE TABLE vms (
				name          TEXT PRIMARY KEY,
				uuid          TEXT NOT NULL DEFAULT '',
				instance_uuid TEXT NOT NULL DEFAULT '',
				guest_os      TEXT NOT NULL DEFAULT '',
				app           TEXT NOT NULL DEFAULT '',
				latest_point  TEXT NOT NULL DEFAULT ''
			)`,
			`CREATE TABLE restore_points (
				id            TEXT PRIMARY KEY,
				vm            TEXT NOT NULL REFERENCES vms (name),
				app           TEXT NOT NULL DEFAULT '',
				created       BIGINT NOT NULL,
				parent        TEXT NOT NULL DEFAULT '',
				logical_bytes BIGINT NOT NULL,
				new_bytes     BIGINT NOT NULL,
				stored_bytes  BIGINT NOT NULL,
				manifest      TEXT NOT NULL
			)`,
			`CREATE INDEX restore_points_vm_created ON restore_points (vm, created)`,
			`CREATE TABLE disks (
				point_id      TEXT NOT NULL REFERENCES restore_points (id) ON DELETE CASCADE,
				name          TEXT NOT NULL,
				controller    TEXT NOT NULL,
				adapter       TEXT NOT NULL DEFAULT '',
				size          BIGINT NOT NULL,
				index_digest  TEXT NOT NULL,
				source_format TEXT NOT NULL DEFAULT '',
				thin          BOOLEAN NOT NULL DEFAULT FALSE,
				PRIMARY KEY (point_id, name)
			)`,
			// Which points use a disk index: garbage collection asks this.
			`CREATE INDEX disks_index_digest ON disks (index_digest)`,
			`CREATE TABLE nics (
				point_id     TEXT NOT NULL REFERENCES restore_points (id) ON DELETE CASCADE,
				device       TEXT NOT NULL,
				network      TEXT NOT NULL DEFAULT '',
				type         TEXT NOT NULL DEFAULT '',
				mac          TEXT NOT NULL DEFAULT '',
				address_type TEXT NOT NULL DEFAULT '',
				ip_address   TEXT NOT NULL DEFAULT '',
				PRIMARY KEY (point_id, device)
			)`,
			`CREATE TABLE apps (
				name     TEXT PRIMARY KEY,
				manifest TEXT NOT NULL,
				updated  BIGINT
			)`,
			// Members name VMs that may not have been backed up yet: no
			// foreign key to vms.
			`CREATE TABLE app_members (
				app            TEXT NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
				vm             TEXT NOT NULL,
				start_group    BIGINT NOT NULL,
				start_delay_s  BIGINT NOT NULL DEFAULT 0,
				wait_for_guest BOOLEAN NOT NULL DEFAULT FALSE,
				start_action   TEXT NOT NULL DEFAULT '',
				stop_action    TEXT NOT NULL DEFAULT '',
				stop_delay_s   BIGINT NOT NULL DEFAULT 0,
				PRIMARY KEY (app, vm)
			)`,
			`CREATE INDEX app_members_vm ON app_members (vm)`,

			// Operational tables: not in the repository, never rebuilt. Kind
			// and state are checked in Go, not by CHECK constraints, so a new
			// kind needs no table rebuild in SQLite.
			`CREATE TABLE sessions (
				id         TEXT PRIMARY KEY,
				kind       TEXT NOT NULL,
				state      TEXT NOT NULL,
				target     TEXT NOT NULL DEFAULT '',
				hypervisor TEXT NOT NULL DEFAULT '',
				nfs_path   TEXT NOT NULL DEFAULT '',
				allow      TEXT NOT NULL DEFAULT '[]',
				request    TEXT,
				error      TEXT NOT NULL DEFAULT '',
				created    BIGINT NOT NULL,
				updated    BIGINT NOT NULL
			)`,
			`CREATE INDEX sessions_created ON sessions (created)`,
			// point_id has no foreign key: a session outlives Rebuild and the
			// pruning of its point.
			`CREATE TABLE session_vms (
				session_id     TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
				position       BIGINT NOT NULL,
				vm             TEXT NOT NULL,
				point_id       TEXT NOT NULL DEFAULT '',
				host           TEXT NOT NULL DEFAULT '',
				published_name TEXT NOT NULL DEFAULT '',
				PRIMARY KEY (session_id, position)
			)`,
			`CREATE TABLE session_steps (
				session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
				seq        BIGINT NOT NULL,
				name       TEXT NOT NULL,
				state      TEXT NOT NULL,
				started    BIGINT,
				ended      BIGINT,
				detail     TEXT,
				error      TEXT NOT NULL DEFAULT '',
				PRIMARY KEY (session_id, seq),
				UNIQUE (session_id, name)
			)`,
		},
	},
	{
		version: 2,
		name:    "backup jobs and their runs",
		stmts: []string{
			`CREATE TABLE jobs (
				name       TEXT PRIMARY KEY,
				definition TEXT NOT NULL,
				created    BIGINT NOT NULL,
				updated    BIGINT NOT NULL
			)`,
			`CREATE TABLE job_runs (
				id           TEXT PRIMARY KEY,
				job          TEXT NOT NULL,
				trigger_kind TEXT NOT NULL,
				state        TEXT NOT NULL,
				started      BIGINT NOT NULL,
				ended        BIGINT,
				error        TEXT NOT NULL DEFAULT '',
				vms_ok       BIGINT NOT NULL DEFAULT 0,
				vms_failed   BIGINT NOT NULL DEFAULT 0,
				bytes_read   BIGINT NOT NULL DEFAULT 0,
				bytes_stored BIGINT NOT NULL DEFAULT 0
			)`,
			`CREATE INDEX job_runs_by_job ON job_runs (job, started)`,
			`CREATE TABLE job_run_vms (
				run_id       TEXT NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
				vm           TEXT NOT NULL,
				point_id     TEXT NOT NULL DEFAULT '',
				mode         TEXT NOT NULL DEFAULT '',
				bytes_read   BIGINT NOT NULL DEFAULT 0,
				bytes_stored BIGINT NOT NULL DEFAULT 0,
				duration_ns  BIGINT NOT NULL DEFAULT 0,
				error        TEXT NOT NULL DEFAULT '',
				notes        TEXT NOT NULL DEFAULT '',
				PRIMARY KEY (run_id, vm)
			)`,
		},
	},
	{
		version: 3,
		name:    "protect cycles as job runs: the site package a cycle stored",
		stmts: []string{
			`ALTER TABLE job_runs ADD COLUMN package_id TEXT NOT NULL DEFAULT ''`,
		},
	},
	{
		version: 4,
		name:    "the catalog's identity, which a repository records as its owner",
		stmts: []string{
			`CREATE TABLE catalog_identity (
				id      TEXT PRIMARY KEY,
				created BIGINT NOT NULL
			)`,
		},
	},
}

// SchemaVersion is the newest schema this code knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// migrate brings the schema up to SchemaVersion in one transaction, and
// refuses a schema newer than that.
func (c *Catalog) migrate(ctx context.Context) error {
	return c.inTx(ctx, func(r runner) error {
		if _, err := r.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version BIGINT PRIMARY KEY,
			name    TEXT NOT NULL,
			applied BIGINT NOT NULL
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		applied := map[int]bool{}
		newest := 0
		rows, err := r.query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return fmt.Errorf("read schema_migrations: %w", err)
			}
			applied[v] = true
			newest = max(newest, v)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if newest > SchemaVersion() {
			return fmt.Errorf("%w: version %d, this rekindle knows up to %d: upgrade rekindle",
				ErrSchemaTooNew, newest, SchemaVersion())
		}
		for _, m := range migrations {
			if applied[m.version] {
				continue
			}
			for _, s := range m.stmts {
				if _, err := r.exec(ctx, s); err != nil {
					return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
				}
			}
			if _, err := r.exec(ctx, `INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)`,
				m.version, m.name, time.Now().UnixNano()); err != nil {
				return fmt.Errorf("migration %d (%s): record: %w", m.version, m.name, err)
			}
		}
		c.created = newest == 0
		return c.identity(ctx, r)
	})
}

// identity reads the catalog's id, choosing it (random) the first time.
func (c *Catalog) identity(ctx context.Context, r runner) error {
	err := r.queryRow(ctx, `SELECT id FROM catalog_identity`).Scan(&c.id)
	if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	c.id = hex.EncodeToString(b)
	if _, err := r.exec(ctx, `INSERT INTO catalog_identity (id, created) VALUES (?, ?)`, c.id, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("record the catalog's id: %w", err)
	}
	return nil
}
