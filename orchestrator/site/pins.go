package site

import (
	"context"
	"errors"
	"fmt"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/retention"
	"github.com/rekindle/rekindle/catalog"
)

// Pins returns the restore points that the newest package of each site
// names, each with why, for retention (retention.ForgetOptions.Pins): a
// later backup outside the protect cycle can make such a point no longer
// its VM's newest, and `site recover --package latest` must still find
// every point its package names.
func Pins(r *repo.Repo) (map[string]string, error) {
	ids, err := r.SitePackages()
	if err != nil {
		return nil, fmt.Errorf("site packages: %w", err)
	}
	newest := map[string]*Package{}
	for _, id := range ids {
		p, err := Load(r, id)
		if err != nil {
			return nil, fmt.Errorf("site package %s: %w", id, err)
		}
		if cur := newest[p.Site]; cur == nil || p.Created.After(cur.Created) {
			newest[p.Site] = p
		}
	}
	out := map[string]string{}
	for _, p := range newest {
		for _, pt := range p.Points() {
			out[pt] = "named by site package " + p.ID + ", the newest of site " + p.Site
		}
	}
	return out, nil
}

// ForgetPins are the points a forget must keep, with why: the catalog's
// (points restore sessions use) and those the newest package of each site
// names.
func ForgetPins(ctx context.Context, r *repo.Repo, cat *catalog.Catalog) (map[string]string, error) {
	pins, err := cat.PointPins(ctx)
	if err != nil {
		return nil, err
	}
	sitePins, err := Pins(r)
	if err != nil {
		return nil, err
	}
	for id, why := range sitePins {
		if _, ok := pins[id]; !ok {
			pins[id] = why
		}
	}
	return pins, nil
}

// Forget applies retention policy p to the points of vms, keeping
// ForgetPins, and drops what it removes from the catalog (a backup job's
// and a protect cycle's retention; `rekindle prune` frees the chunks).
func Forget(ctx context.Context, r *repo.Repo, cat *catalog.Catalog, p retention.Policy, vms []string) error {
	pins, err := ForgetPins(ctx, r, cat)
	if err != nil {
		return err
	}
	_, err = retention.Forget(ctx, r, p, retention.ForgetOptions{VMs: vms, Pins: pins, Removed: func(id string) error {
		if err := cat.RemovePoint(ctx, id); err != nil && !errors.Is(err, catalog.ErrNotFound) {
			return fmt.Errorf("restore point %s is removed, but the catalog still lists it: %w (run `rekindle catalog rebuild`)", id, err)
		}
		return nil
	}})
	return err
}
