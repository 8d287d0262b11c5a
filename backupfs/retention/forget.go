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
	// Claim, when set, is called for each point about to go, before its
	// manifest is removed: it takes the point out of the caller's catalog
	// unless a session started using it since Pins were read
	// (catalog.ForgetPoint), atomically against session creation. A
	// non-empty pinned keeps the point, with that reason.
	Claim func(id string) (pinned string, err error)
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
	for i := range ds {
		d := &ds[i]
		if d.Keep {
			continue
		}
		if err := ctx.Err(); err != nil {
			return ds, err
		}
		if o.Claim != nil {
			pinned, err := o.Claim(d.ID)
			if err != nil {
				return ds, err
			}
			if pinned != "" {
				d.Keep, d.Reasons = true, []string{pinned}
				continue
			}
		}
		if err := r.DeletePoint(d.ID); err != nil {
			return ds, fmt.Errorf("%w (the catalog no longer lists it: run forget again)", err)
		}
	}
	return ds, nil
}
