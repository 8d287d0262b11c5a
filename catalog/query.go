package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// VMSummary is one backed-up VM.
type VMSummary struct {
	Name         string    `json:"name"`
	App          string    `json:"app,omitempty"`  // as of the latest point
	UUID         string    `json:"uuid,omitempty"` // as of the latest point
	Points       int       `json:"points"`
	LatestPoint  string    `json:"latest_point"`
	LatestTime   time.Time `json:"latest_time"`
	LogicalBytes int64     `json:"logical_bytes"` // disk sizes of the latest point
}

// PointSummary is one restore point without its file and disk details.
type PointSummary struct {
	ID           string    `json:"id"`
	VM           string    `json:"vm"`
	App          string    `json:"app,omitempty"`
	Parent       string    `json:"parent,omitempty"`
	Created      time.Time `json:"created"`
	Disks        int       `json:"disks"`
	LogicalBytes int64     `json:"logical_bytes"` // sum of the disk sizes
	NewBytes     int64     `json:"new_bytes"`     // uncompressed bytes of chunks this backup added
	StoredBytes  int64     `json:"stored_bytes"`  // compressed bytes those chunks take
}

// AppSummary is one app.
type AppSummary struct {
	Name    string    `json:"name"`
	Members int       `json:"members"`
	Groups  int       `json:"groups"` // distinct startup groups
	Updated time.Time `json:"updated"`
}

// VMs lists the VMs that have restore points, sorted by name.
func (c *Catalog) VMs(ctx context.Context) ([]VMSummary, error) {
	rows, err := c.run().query(ctx, `SELECT v.name, v.app, v.uuid,
			(SELECT COUNT(*) FROM restore_points p WHERE p.vm = v.name),
			v.latest_point, lp.created, lp.logical_bytes
		FROM vms v JOIN restore_points lp ON lp.id = v.latest_point
		ORDER BY v.name`)
	if err != nil {
		return nil, fmt.Errorf("catalog: list vms: %w", err)
	}
	defer rows.Close()
	var out []VMSummary
	for rows.Next() {
		var v VMSummary
		var created int64
		if err := rows.Scan(&v.Name, &v.App, &v.UUID, &v.Points, &v.LatestPoint, &created, &v.LogicalBytes); err != nil {
			return nil, fmt.Errorf("catalog: list vms: %w", err)
		}
		v.LatestTime = time.Unix(0, created).UTC()
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: list vms: %w", err)
	}
	return out, nil
}

// Points lists the restore points of vm, or of every VM when vm is "",
// ordered by VM name, then newest first (ties broken by id, newest first).
func (c *Catalog) Points(ctx context.Context, vm string) ([]PointSummary, error) {
	q := `SELECT p.id, p.vm, p.app, p.parent, p.created,
			(SELECT COUNT(*) FROM disks d WHERE d.point_id = p.id),
			p.logical_bytes, p.new_bytes, p.stored_bytes
		FROM restore_points p`
	var args []any
	if vm != "" {
		q += ` WHERE p.vm = ?`
		args = append(args, vm)
	}
	q += ` ORDER BY p.vm, p.created DESC, p.id DESC`
	what := "catalog: list restore points"
	if vm != "" {
		what += " of vm " + vm
	}
	rows, err := c.run().query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []PointSummary
	for rows.Next() {
		var p PointSummary
		var created int64
		if err := rows.Scan(&p.ID, &p.VM, &p.App, &p.Parent, &created, &p.Disks,
			&p.LogicalBytes, &p.NewBytes, &p.StoredBytes); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		p.Created = time.Unix(0, created).UTC()
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// Point returns the full manifest of restore point id.
func (c *Catalog) Point(ctx context.Context, id string) (*repo.RestorePoint, error) {
	var manifest string
	err := c.run().queryRow(ctx, `SELECT manifest FROM restore_points WHERE id = ?`, id).Scan(&manifest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("catalog: restore point %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: restore point %s: %w", id, err)
	}
	p, err := decodePoint(id, manifest)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return p, nil
}

// LatestPoint returns the newest restore point of vm created at or before
// before; the zero time means the newest of all.
func (c *Catalog) LatestPoint(ctx context.Context, vm string, before time.Time) (*repo.RestorePoint, error) {
	what := fmt.Sprintf("catalog: latest restore point of vm %s", vm)
	q := `SELECT id, manifest FROM restore_points WHERE vm = ?`
	args := []any{vm}
	if !before.IsZero() {
		what += " at or before " + before.UTC().Format(time.RFC3339)
		switch {
		case before.After(maxTime):
		case before.Before(minTime):
			return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
		default:
			q += ` AND created <= ?`
			args = append(args, before.UnixNano())
		}
	}
	q += ` ORDER BY created DESC, id DESC LIMIT 1`
	var id, manifest string
	err := c.run().queryRow(ctx, q, args...).Scan(&id, &manifest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	p, err := decodePoint(id, manifest)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return p, nil
}

func decodePoint(id, manifest string) (*repo.RestorePoint, error) {
	var p repo.RestorePoint
	if err := json.Unmarshal([]byte(manifest), &p); err != nil {
		return nil, fmt.Errorf("restore point %s: decode stored manifest: %w", id, err)
	}
	return &p, nil
}

// Apps lists the apps, sorted by name.
func (c *Catalog) Apps(ctx context.Context) ([]AppSummary, error) {
	rows, err := c.run().query(ctx, `SELECT a.name, a.updated,
			(SELECT COUNT(*) FROM app_members m WHERE m.app = a.name),
			(SELECT COUNT(DISTINCT m.start_group) FROM app_members m WHERE m.app = a.name)
		FROM apps a ORDER BY a.name`)
	if err != nil {
		return nil, fmt.Errorf("catalog: list apps: %w", err)
	}
	defer rows.Close()
	var out []AppSummary
	for rows.Next() {
		var a AppSummary
		var updated sql.NullInt64
		if err := rows.Scan(&a.Name, &updated, &a.Members, &a.Groups); err != nil {
			return nil, fmt.Errorf("catalog: list apps: %w", err)
		}
		a.Updated = fromNanos(updated)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: list apps: %w", err)
	}
	return out, nil
}

// App returns the full manifest of app name.
func (c *Catalog) App(ctx context.Context, name string) (*repo.App, error) {
	var manifest string
	err := c.run().queryRow(ctx, `SELECT manifest FROM apps WHERE name = ?`, name).Scan(&manifest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("catalog: app %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: app %s: %w", name, err)
	}
	var a repo.App
	if err := json.Unmarshal([]byte(manifest), &a); err != nil {
		return nil, fmt.Errorf("catalog: app %s: decode stored manifest: %w", name, err)
	}
	return &a, nil
}
