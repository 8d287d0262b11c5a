package site

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/vmware/govmomi/vim25"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// VMBackuper backs VMs up into the repository and returns the restore
// point of each VM it backed up; a VM missing from the map failed (the
// error says why). orchestrator/vcbackup is the vCenter one.
type VMBackuper interface {
	BackupVMs(ctx context.Context, names []string) (map[string]string, error)
}

// ProtectOptions configures one protection cycle.
type ProtectOptions struct {
	ExtractOptions
	// VMs to protect; empty protects every VM of the extracted datacenters.
	VMs []string
}

// Protect runs one cycle: it backs up the protected VMs, then extracts the
// site's infrastructure naming the points just made, and stores the package
// (after the points, which the repository checks). VMs whose backup failed
// are recorded unprotected, and the error names them.
func Protect(ctx context.Context, c *vim25.Client, r *repo.Repo, b VMBackuper, opt ProtectOptions) (*Package, error) {
	names := opt.VMs
	if len(names) == 0 {
		inv, err := Extract(ctx, c, opt.ExtractOptions)
		if err != nil {
			return nil, err
		}
		for _, dc := range inv.Datacenters {
			for _, vm := range dc.VMs {
				names = append(names, vm.Name)
			}
		}
	}
	slices.Sort(names)
	points, berr := b.BackupVMs(ctx, names)
	if berr != nil && len(points) == 0 {
		return nil, fmt.Errorf("protect %s: no VM backed up: %w", opt.Site, berr)
	}
	opt.Points = points
	p, err := Extract(ctx, c, opt.ExtractOptions)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, n := range names {
		if _, ok := points[n]; !ok {
			missing = append(missing, n)
		}
	}
	if err := Save(r, p); err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return p, errors.Join(fmt.Errorf("package %s stored; not protected this cycle: %v", p.ID, missing), berr)
	}
	return p, nil
}
