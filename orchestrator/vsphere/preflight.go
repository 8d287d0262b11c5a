package vsphere

import (
	"context"
	"errors"
	"fmt"
)

// CheckTarget reports whether target names where restored VMs can be
// registered: a cluster, resource pool or vApp. Restores check it before
// anything changes, so a missing or wrong --target fails at once with what
// to pass, not at the register step of a half-made session.
func (d *Driver) CheckTarget(ctx context.Context, target string) error {
	if target == "" {
		return errors.New("vSphere needs a target: pass --target, a cluster, resource pool or vApp inventory path (e.g. /DC1/host/Cluster1)")
	}
	if _, _, err := d.pool(ctx, target); err != nil {
		return fmt.Errorf("target %q: %w", target, err)
	}
	return nil
}
