package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// Source is where Rebuild reads the truth from: a repository. Both lists are
// complete and their manifests already validated.
type Source interface {
	Points() ([]*repo.RestorePoint, error)
	Apps() ([]*repo.App, error)
}

// RebuildStats says what Rebuild indexed.
type RebuildStats struct {
	VMs    int           `json:"vms"`
	Points int           `json:"points"`
	Disks  int           `json:"disks"`
	Apps   int           `json:"apps"`
	Took   time.Duration `json:"-"` // MarshalJSON writes took_s
}

// MarshalJSON writes the duration in seconds (docs/json.md).
func (st RebuildStats) MarshalJSON() ([]byte, error) {
	type plain RebuildStats
	return json.Marshal(struct {
		plain
		TookSeconds float64 `json:"took_s"`
	}{plain(st), st.Took.Seconds()})
}

// IndexPoint adds a restore point, its disks and NICs to the catalog, and
// updates its VM's row. Indexing the same point again replaces what was
// indexed before.
func (c *Catalog) IndexPoint(ctx context.Context, p *repo.RestorePoint) error {
	if p == nil {
		return errors.New("catalog: index restore point: nil manifest")
	}
	err := c.inTx(ctx, func(r runner) error {
		vms, err := indexPoint(ctx, r, p)
		if err != nil {
			return err
		}
		for _, vm := range vms {
			if err := refreshVM(ctx, r, vm); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("catalog: index restore point %s: %w", p.ID, err)
	}
	return nil
}

// indexPoint writes p's rows and returns the VMs whose rows need a refresh:
// p's, and the one it belonged to before if that was another.
func indexPoint(ctx context.Context, r runner, p *repo.RestorePoint) ([]string, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Created.IsZero() || !timeInRange(p.Created) {
		return nil, fmt.Errorf("created time %s missing or out of range", p.Created.Format(time.RFC3339))
	}
	manifest, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	var logical int64
	for _, d := range p.Disks {
		logical += d.Size
	}

	touched := []string{p.VM.Name}
	var oldVM string
	switch err := r.queryRow(ctx, `SELECT vm FROM restore_points WHERE id = ?`, p.ID).Scan(&oldVM); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("look up: %w", err)
	case oldVM != p.VM.Name:
		touched = append(touched, oldVM)
	}

	// The VM row must exist before the point refers to it; refreshVM fills
	// it in from the VM's newest point afterwards.
	if _, err := r.exec(ctx, `INSERT INTO vms (name) VALUES (?) ON CONFLICT (name) DO NOTHING`, p.VM.Name); err != nil {
		return nil, fmt.Errorf("vm %s: %w", p.VM.Name, err)
	}
	if _, err := r.exec(ctx, `INSERT INTO restore_points
		(id, vm, app, created, parent, logical_bytes, new_bytes, stored_bytes, manifest)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET
			vm = excluded.vm, app = excluded.app, created = excluded.created,
			parent = excluded.parent, logical_bytes = excluded.logical_bytes,
			new_bytes = excluded.new_bytes, stored_bytes = excluded.stored_bytes,
			manifest = excluded.manifest`,
		p.ID, p.VM.Name, p.App, p.Created.UnixNano(), p.Parent, logical,
		p.Stats.BytesNew, p.Stats.BytesStored, string(manifest)); err != nil {
		return nil, fmt.Errorf("upsert: %w", err)
	}

	if _, err := r.exec(ctx, `DELETE FROM disks WHERE point_id = ?`, p.ID); err != nil {
		return nil, fmt.Errorf("clear disks: %w", err)
	}
	for _, d := range p.Disks {
		if _, err := r.exec(ctx, `INSERT INTO disks
			(point_id, name, controller, adapter, size, index_digest, source_format, thin)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			p.ID, d.Name, d.Controller, d.Adapter, d.Size, d.Index.String(), d.SourceFormat, d.Thin); err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Name, err)
		}
	}
	if _, err := r.exec(ctx, `DELETE FROM nics WHERE point_id = ?`, p.ID); err != nil {
		return nil, fmt.Errorf("clear nics: %w", err)
	}
	for _, n := range p.NICs {
		if _, err := r.exec(ctx, `INSERT INTO nics
			(point_id, device, network, type, mac, address_type, ip_address)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
			p.ID, n.Key, n.Network, n.Type, n.MAC, n.AddressType, n.IPAddress); err != nil {
			return nil, fmt.Errorf("nic %s: %w", n.Key, err)
		}
	}
	return touched, nil
}

// refreshVM derives vm's row from its newest restore point, or deletes the
// row when no point is left.
func refreshVM(ctx context.Context, r runner, vm string) error {
	var id, manifest string
	err := r.queryRow(ctx, `SELECT id, manifest FROM restore_points WHERE vm = ?
		ORDER BY created DESC, id DESC LIMIT 1`, vm).Scan(&id, &manifest)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := r.exec(ctx, `DELETE FROM vms WHERE name = ?`, vm); err != nil {
			return fmt.Errorf("vm %s: delete: %w", vm, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("vm %s: latest point: %w", vm, err)
	}
	p, err := decodePoint(id, manifest)
	if err != nil {
		return fmt.Errorf("vm %s: %w", vm, err)
	}
	if _, err := r.exec(ctx, `UPDATE vms SET uuid = ?, instance_uuid = ?, guest_os = ?, app = ?, latest_point = ?
		WHERE name = ?`, p.VM.UUID, p.VM.InstanceUUID, p.VM.GuestOS, p.App, id, vm); err != nil {
		return fmt.Errorf("vm %s: update: %w", vm, err)
	}
	return nil
}

// RemovePoint removes a restore point (after the repository pruned it). Its
// VM's row follows its newest remaining point, or goes with the last one.
func (c *Catalog) RemovePoint(ctx context.Context, id string) error {
	if err := c.inTx(ctx, func(r runner) error { return removePoint(ctx, r, id, nil) }); err != nil {
		return fmt.Errorf("catalog: remove restore point %s: %w", id, err)
	}
	return nil
}

// removePoint deletes point id's rows and refreshes its VM's row. check,
// when set, runs first, in the same transaction, and may refuse.
func removePoint(ctx context.Context, r runner, id string, check func() error) error {
	var vm string
	switch err := r.queryRow(ctx, `SELECT vm FROM restore_points WHERE id = ?`, id).Scan(&vm); {
	case errors.Is(err, sql.ErrNoRows):
		return ErrNotFound
	case err != nil:
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	if _, err := r.exec(ctx, `DELETE FROM restore_points WHERE id = ?`, id); err != nil {
		return err
	}
	return refreshVM(ctx, r, vm)
}

// IndexApp adds or replaces an app and its members.
func (c *Catalog) IndexApp(ctx context.Context, a *repo.App) error {
	if a == nil {
		return errors.New("catalog: index app: nil manifest")
	}
	if err := c.inTx(ctx, func(r runner) error { return indexApp(ctx, r, a) }); err != nil {
		return fmt.Errorf("catalog: index app %s: %w", a.Name, err)
	}
	return nil
}

func indexApp(ctx context.Context, r runner, a *repo.App) error {
	if err := a.Validate(); err != nil {
		return err
	}
	if err := checkTime("updated", a.Updated); err != nil {
		return err
	}
	manifest, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	if _, err := r.exec(ctx, `INSERT INTO apps (name, manifest, updated) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET manifest = excluded.manifest, updated = excluded.updated`,
		a.Name, string(manifest), nanos(a.Updated)); err != nil {
		return fmt.Errorf("upsert: %w", err)
	}
	if _, err := r.exec(ctx, `DELETE FROM app_members WHERE app = ?`, a.Name); err != nil {
		return fmt.Errorf("clear members: %w", err)
	}
	for _, m := range a.Members {
		if _, err := r.exec(ctx, `INSERT INTO app_members
			(app, vm, start_group, start_delay_s, wait_for_guest, start_action, stop_action, stop_delay_s)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			a.Name, m.VM, m.Group, m.StartDelay, m.WaitForGuest, m.StartAction, m.StopAction, m.StopDelay); err != nil {
			return fmt.Errorf("member %s: %w", m.VM, err)
		}
	}
	return nil
}

// RemoveApp removes an app and its members.
func (c *Catalog) RemoveApp(ctx context.Context, name string) error {
	err := c.inTx(ctx, func(r runner) error {
		res, err := r.exec(ctx, `DELETE FROM apps WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("catalog: remove app %s: %w", name, err)
	}
	return nil
}

// indexTables are cleared by Rebuild, children first.
var indexTables = []string{"app_members", "apps", "nics", "disks", "restore_points", "vms"}

// Rebuild replaces the index tables with what src holds, in one transaction:
// readers see the old index until the new one is complete, and a failure
// leaves the old one in place. Sessions are not touched.
func (c *Catalog) Rebuild(ctx context.Context, src Source) (RebuildStats, error) {
	start := time.Now()
	// Read the repository before taking the write lock.
	points, err := src.Points()
	if err != nil {
		return RebuildStats{}, fmt.Errorf("catalog: rebuild: read restore points: %w", err)
	}
	apps, err := src.Apps()
	if err != nil {
		return RebuildStats{}, fmt.Errorf("catalog: rebuild: read apps: %w", err)
	}
	var st RebuildStats
	err = c.inTx(ctx, func(r runner) error {
		st = RebuildStats{}
		for _, t := range indexTables {
			if _, err := r.exec(ctx, `DELETE FROM `+t); err != nil {
				return fmt.Errorf("clear %s: %w", t, err)
			}
		}
		vms := map[string]bool{}
		for _, p := range points {
			if err := ctx.Err(); err != nil {
				return err
			}
			if p == nil {
				return errors.New("source returned a nil restore point")
			}
			touched, err := indexPoint(ctx, r, p)
			if err != nil {
				return fmt.Errorf("restore point %s: %w", p.ID, err)
			}
			for _, vm := range touched {
				vms[vm] = true
			}
		}
		names := make([]string, 0, len(vms))
		for vm := range vms {
			names = append(names, vm)
		}
		slices.Sort(names)
		for _, vm := range names {
			if err := refreshVM(ctx, r, vm); err != nil {
				return err
			}
		}
		for _, a := range apps {
			if a == nil {
				return errors.New("source returned a nil app")
			}
			if err := indexApp(ctx, r, a); err != nil {
				return fmt.Errorf("app %s: %w", a.Name, err)
			}
		}
		for _, q := range []struct {
			n   *int
			sql string
		}{
			{&st.VMs, `SELECT COUNT(*) FROM vms`},
			{&st.Points, `SELECT COUNT(*) FROM restore_points`},
			{&st.Disks, `SELECT COUNT(*) FROM disks`},
			{&st.Apps, `SELECT COUNT(*) FROM apps`},
		} {
			if err := r.queryRow(ctx, q.sql).Scan(q.n); err != nil {
				return fmt.Errorf("count: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return RebuildStats{}, fmt.Errorf("catalog: rebuild: %w", err)
	}
	st.Took = time.Since(start)
	return st, nil
}
