package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers driver "sqlite"
)

var (
	// ErrNotFound is returned, wrapped with what was looked for, when a
	// point, app, VM, session or step does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned, wrapped, when creating something whose id is
	// taken.
	ErrExists = errors.New("already exists")
	// ErrSchemaTooNew is returned by Open for a catalog written by a newer
	// rekindle.
	ErrSchemaTooNew = errors.New("schema too new")
)

// Catalog is an open catalog database. It is safe for concurrent use, also
// alongside other processes that open the same file.
type Catalog struct {
	db   *sql.DB
	d    dialect
	path string
	now  func() time.Time // UTC; replaced in tests
	id   string           // see ID
	// created: this Open made the schema (the catalog was empty or new).
	created bool
}

// ID is the catalog's identity: 32 random hex digits chosen when it was
// created, which a repository records as its owner (see Claim).
func (c *Catalog) ID() string { return c.id }

// Created reports whether this Open created the catalog (its schema was
// empty).
func (c *Catalog) Created() bool { return c.created }

// Open opens the catalog at path, creating the file and its parent folder if
// missing, and migrates its schema to the newest this code knows.
func Open(ctx context.Context, path string) (*Catalog, error) {
	if path == "" {
		return nil, errors.New("catalog: open: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", sqliteDSN(abs))
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	c := &Catalog{db: db, d: sqliteDialect, path: path, now: func() time.Time { return time.Now().UTC() }}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	if err := c.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	return c, nil
}

// Close closes the database.
func (c *Catalog) Close() error {
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("catalog %s: close: %w", c.path, err)
	}
	return nil
}

// Path is the file the catalog was opened from.
func (c *Catalog) Path() string { return c.path }

func (c *Catalog) run() runner { return runner{q: c.db, d: c.d} }

// inTx runs fn in a write transaction, committing if fn returns nil.
func (c *Catalog) inTx(ctx context.Context, fn func(r runner) error) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(runner{q: tx, d: c.d}); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// readTx runs fn in a read-only transaction, so several queries see one
// snapshot.
func (c *Catalog) readTx(ctx context.Context, fn func(r runner) error) error {
	tx, err := c.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	return fn(runner{q: tx, d: c.d})
}

// Timestamps are BIGINT nanoseconds since the Unix epoch; NULL is the zero
// time. The range is what int64 nanoseconds hold, years 1678 to 2262.
var (
	minTime = time.Unix(0, math.MinInt64).UTC()
	maxTime = time.Unix(0, math.MaxInt64).UTC()
)

func timeInRange(t time.Time) bool { return !t.Before(minTime) && !t.After(maxTime) }

func checkTime(what string, t time.Time) error {
	if !t.IsZero() && !timeInRange(t) {
		return fmt.Errorf("%s %s out of range (years 1678-2262)", what, t.Format(time.RFC3339))
	}
	return nil
}

// nanos converts t for storage; the zero time becomes NULL.
func nanos(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

// fromNanos converts a stored timestamp back, in UTC.
func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}
