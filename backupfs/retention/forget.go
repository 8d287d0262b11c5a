package retention

import (
	"context"
	"fmt"
	"slices"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// ForgetOptions tune Forget.
type ForgetOptions struct {
	VMs    []string // only these VMs' points (default all)
	DryRun bool
	// Pins are points that must stay, with why (catalog.PointPins).
	Pins map[string]string
	// Removed, when set, is called after each manifest is removed, so the
	// caller can drop the point from its catalog.
	Removed func(id string) error
}

// Forget applies p to the repository's points and removes the manifests of
// those no rule keeps (their chunks stay until prune). It holds a shared
// lock: it only removes manifests, which a prune never needs. It returns
// every decision, removed or not.
func Forget(ctx context.Context, r *repo.Repo, p Policy, o ForgetOptions) ([]Decision, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Empty() {
		return nil, fmt.Errorf("forget: no policy given: pass at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-within")
	}
	lock, err := r.Lock(ctx, repo.LockShared, "forget")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	pts, err := r.Points()
	if err != nil {
		return nil, err
	}
	var in []Point
	for _, pt := range pts {
		if len(o.VMs) == 0 || slices.Contains(o.VMs, pt.VM.Name) {
			in = append(in, Point{ID: pt.ID, VM: pt.VM.Name, Created: pt.Created})
		}
	}
	ds := Apply(in, p, o.Pins)
	if o.DryRun {
		return ds, nil
	}
	for _, d := range ds {
		if d.Keep {
			continue
		}
		if err := ctx.Err(); err != nil {
			return ds, err
		}
		if err := r.DeletePoint(d.ID); err != nil {
			return ds, err
		}
		if o.Removed != nil {
			if err := o.Removed(d.ID); err != nil {
				return ds, err
			}
		}
	}
	return ds, nil
}
