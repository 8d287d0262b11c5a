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

// ForgetOptions are what every forget of repository r with catalog cat
// needs: ForgetPins, and the claim (catalog.ForgetPoint) that takes a point
// out of the catalog before its manifest goes, unless a session started
// using it after the pins were read.
func ForgetOptions(ctx context.Context, r *repo.Repo, cat *catalog.Catalog) (retention.ForgetOptions, error) {
	pins, err := ForgetPins(ctx, r, cat)
	if err != nil {
		return retention.ForgetOptions{}, err
	}
	claim := func(id string) (string, error) {
		err := cat.ForgetPoint(ctx, id)
		switch {
		case errors.Is(err, catalog.ErrPinned):
			return fmt.Sprintf("pinned while forget ran: %v", err), nil
		case errors.Is(err, catalog.ErrNotFound):
			return "", nil // the catalog never listed it: no session can use it
		}
		return "", err
	}
	return retention.ForgetOptions{Pins: pins, Claim: claim}, nil
}

// Forget applies retention policy p to the points of vms with
// ForgetOptions (a backup job's and a protect cycle's retention; `rekindle
// prune` frees the chunks).
func Forget(ctx context.Context, r *repo.Repo, cat *catalog.Catalog, p retention.Policy, vms []string) error {
	o, err := ForgetOptions(ctx, r, cat)
	if err != nil {
		return err
	}
	o.VMs = vms
	_, err = retention.Forget(ctx, r, p, o)
	return err
}
