// Package catalog is rekindle's embedded database: what the repository holds,
// indexed for quick answers, and the state of restore sessions.
//
// Vocabulary:
//
//   - restore point: one backup of one VM, described by its manifest
//     (repo.RestorePoint). The catalog keeps the manifest whole, plus its
//     disks and NICs as rows, so Point returns exactly what was indexed.
//   - vm: a VM that has at least one restore point. Its row (identity, app,
//     latest point) is derived from its newest point and disappears with its
//     last point.
//   - app: a distributed application (a vSphere vApp) and its members, with
//     their startup groups and delays (repo.App).
//   - index tables: vms, restore_points, disks, nics, apps, app_members. They
//     are a cache of the repository: Rebuild clears and refills them from it,
//     and losing them loses no backup.
//   - session: one restore (kind vm, vapp, partial, test or file) with its
//     state, the VMs it restores and where, and its steps. Sessions are not
//     in the repository, so Rebuild leaves them alone.
//   - step: one idempotent action of a session (mount, register, boot...),
//     numbered by seq in the order it first started; a resumed step keeps
//     its seq.
//
// Storage: SQLite through database/sql (modernc.org/sqlite, pure Go). The SQL
// is kept portable so a PostgreSQL backend needs a dialect, not new queries:
// placeholders are written '?' and rewritten per dialect, upserts use
// INSERT ... ON CONFLICT (...) DO UPDATE, and no SQLite-only function is used.
// Timestamps are stored as BIGINT nanoseconds since the Unix epoch, UTC (NULL
// when unset): they sort and compare as numbers on every backend, unlike
// RFC 3339 text whose trimmed fractions do not sort as text. Booleans are
// BOOLEAN; JSON documents (manifests, requests, details) are TEXT.
//
// The schema is versioned by numbered migrations recorded in
// schema_migrations and applied in one transaction by Open. A catalog written
// by a newer rekindle is refused rather than misread.
package catalog
