package catalog

import (
	"context"
	"database/sql"
	"net/url"
	"strconv"
	"strings"
)

// dialect is what differs between database backends. Queries are written once
// with '?' placeholders and portable SQL; rebind adapts them.
type dialect struct {
	name   string
	rebind func(query string) string
}

var (
	sqliteDialect   = dialect{name: "sqlite", rebind: func(q string) string { return q }}
	postgresDialect = dialect{name: "postgres", rebind: dollarPlaceholders}
)

// dollarPlaceholders rewrites each '?' placeholder to $1, $2, ... as
// PostgreSQL wants. A '?' inside a string literal, a quoted identifier or a
// comment is left alone.
func dollarPlaceholders(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'' || c == '"':
			// Copy through the closing quote; a doubled quote is an escaped
			// quote and keeps the literal open, which the loop handles by
			// closing and immediately reopening it.
			j := strings.IndexByte(q[i+1:], c)
			if j < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+j+2])
			i += j + 1
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+j+1])
			i += j
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			j := strings.Index(q[i+2:], "*/")
			if j < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+j+4])
			i += j + 3
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// busyTimeoutMS is how long a SQLite connection waits for another writer
// (another goroutine, or another rekindle process on the same file) before
// giving up with SQLITE_BUSY. Writers hold the lock for milliseconds:
// Rebuild reads the repository before it opens its transaction.
const busyTimeoutMS = 10000

// sqliteDSN is the data source name for the catalog file at path (absolute).
// Every connection of the pool gets the same pragmas:
//
//   - journal_mode=WAL: readers do not block the writer nor it them.
//   - busy_timeout: wait for the write lock instead of failing at once.
//   - foreign_keys=on: SQLite leaves them off per connection by default.
//   - synchronous=FULL: each commit is fsynced. The index tables could be
//     rebuilt after a power loss, but the session tables cannot: they record
//     what a restore already did on the hypervisors (mounted, registered,
//     booted), and forgetting a committed step could leave a VM or a mount
//     behind that stop would not undo. Commits are few (a step, a backup), so
//     the fsync costs little.
//   - _txlock=immediate: write transactions take the write lock at BEGIN. A
//     deferred transaction that reads and then writes cannot wait for the
//     lock in WAL mode (its snapshot would be stale) and fails with
//     SQLITE_BUSY whatever the busy timeout; taking it up front lets
//     busy_timeout do its job. Read-only transactions still begin deferred.
func sqliteDSN(path string) string {
	u := url.URL{Path: path}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.Itoa(busyTimeoutMS)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_txlock", "immediate")
	return "file:" + u.EscapedPath() + "?" + q.Encode()
}

// queryer is what *sql.DB and *sql.Tx have in common.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// runner runs portable queries against a database or a transaction,
// rewriting them for the dialect first.
type runner struct {
	q queryer
	d dialect
}

func (r runner) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return r.q.ExecContext(ctx, r.d.rebind(query), args...)
}

func (r runner) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return r.q.QueryContext(ctx, r.d.rebind(query), args...)
}

func (r runner) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return r.q.QueryRowContext(ctx, r.d.rebind(query), args...)
}
