package catalog

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// Latest is the point reference that names a VM's newest restore point.
const Latest = "latest"

// ErrAmbiguous is returned (wrapped) when a point id prefix matches more
// than one restore point.
var ErrAmbiguous = errors.New("ambiguous")

// pointRefRe is what a point reference may contain: the characters of
// point ids, so it never needs escaping in a LIKE pattern.
var pointRefRe = regexp.MustCompile(`^[0-9A-Za-z-]{1,40}$`)

// ResolvePoint finds the restore point a person means by ref:
//
//   - "" or "latest": the newest point of vm created at or before before
//     (the zero time: the newest of all);
//   - a full point id;
//   - a unique prefix of a point id ("20261121T23"), or of the random part
//     after its dash ("3f9a").
//
// vm, when not empty, must own the point: a point of another VM is "not
// found" for this one. Errors name the VM and the reference and wrap
// ErrNotFound or ErrAmbiguous.
func (c *Catalog) ResolvePoint(ctx context.Context, vm, ref string, before time.Time) (*repo.RestorePoint, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" || strings.EqualFold(ref, Latest) {
		if vm == "" {
			return nil, fmt.Errorf("restore point %q: name the VM whose latest point you mean: %w", Latest, ErrNotFound)
		}
		p, err := c.LatestPoint(ctx, vm, before)
		if errors.Is(err, ErrNotFound) {
			if before.IsZero() {
				return nil, fmt.Errorf("vm %s has no restore point (back it up with `rekindle backup import`): %w", vm, ErrNotFound)
			}
			return nil, fmt.Errorf("vm %s has no restore point at or before %s: %w", vm, before.Format(time.RFC3339), ErrNotFound)
		}
		return p, err
	}
	owner := "the repository"
	if vm != "" {
		owner = "vm " + vm
	}
	if !pointRefRe.MatchString(ref) {
		return nil, fmt.Errorf("%s has no restore point %q (ids look like 20261121T230748Z-3f9a2c): %w", owner, ref, ErrNotFound)
	}
	q := `SELECT id, vm FROM restore_points WHERE (id = ? OR id LIKE ? OR id LIKE ?)`
	args := []any{ref, ref + "%", "%-" + strings.ToLower(ref) + "%"}
	rows, err := c.run().query(ctx, q+` ORDER BY created DESC, id DESC LIMIT 50`, args...)
	if err != nil {
		return nil, fmt.Errorf("catalog: find restore point %s: %w", ref, err)
	}
	type match struct{ id, vm string }
	var all, mine []match
	for rows.Next() {
		var m match
		if err := rows.Scan(&m.id, &m.vm); err != nil {
			rows.Close()
			return nil, fmt.Errorf("catalog: find restore point %s: %w", ref, err)
		}
		if m.id == ref { // an exact id wins over prefixes
			all, mine = []match{m}, nil
			if vm == "" || m.vm == vm {
				mine = all
			}
			break
		}
		all = append(all, m)
		if vm == "" || m.vm == vm {
			mine = append(mine, m)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: find restore point %s: %w", ref, err)
	}
	switch len(mine) {
	case 1:
		return c.Point(ctx, mine[0].id)
	case 0:
		hint := ""
		if vm != "" {
			hint = fmt.Sprintf(" (`rekindle list points --vm %s` lists them)", vm)
			if len(all) == 1 {
				hint = fmt.Sprintf(" (%s is a point of vm %s)", all[0].id, all[0].vm)
			}
		}
		return nil, fmt.Errorf("%s has no restore point %s%s: %w", owner, ref, hint, ErrNotFound)
	}
	var ids []string
	for i, m := range mine {
		if i == 5 {
			ids = append(ids, "...")
			break
		}
		ids = append(ids, m.id+" ("+m.vm+")")
	}
	return nil, fmt.Errorf("restore point %s: %w: it matches %s; give more of the id", ref, ErrAmbiguous, strings.Join(ids, ", "))
}
