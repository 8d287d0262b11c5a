package site

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/vmware/govmomi/vim25"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/retention"
	"github.com/rekindle/rekindle/catalog"
)

// VMBackuper backs VMs up into the repository and returns the restore
// point of each VM it backed up; a VM missing from the map failed (the
// error says why). orchestrator/vcbackup is the vCenter one.
type VMBackuper interface {
	BackupVMs(ctx context.Context, names []string) (map[string]string, error)
}

// VMError is one VM's backup failure. A VMBackuper that returns its
// failures as VMErrors (joined) gets each recorded against its VM in the
// cycle's history.
type VMError struct {
	VM  string
	Err error
}

func (e *VMError) Error() string { return e.VM + ": " + e.Err.Error() }
func (e *VMError) Unwrap() error { return e.Err }

// ProtectOptions configures one protection cycle.
type ProtectOptions struct {
	ExtractOptions
	// VMs to protect; empty protects every VM of the extracted datacenters.
	VMs []string
	// History, when set, records the cycle as a run of job
	// catalog.ProtectJob(Site): when it started and ended, the package it
	// stored, each VM's point or failure.
	History *catalog.Catalog
	Trigger string // how the cycle started: "schedule" or "manual" (the default)
	// Retention, when set, is applied after the package is stored to the
	// points of the VMs this cycle backed up (needs History, the catalog
	// that lists them); the new package's points always stay.
	Retention *retention.Policy
}

// Protect runs one cycle: it backs up the protected VMs, then extracts the
// site's infrastructure naming the points just made, and stores the package
// (after the points, which the repository checks). VMs whose backup failed
// are recorded unprotected, and the error names them.
func Protect(ctx context.Context, c *vim25.Client, r *repo.Repo, b VMBackuper, opt ProtectOptions) (*Package, error) {
	if opt.History == nil {
		return protect(ctx, c, r, b, opt, nil)
	}
	run := &catalog.JobRun{ID: cycleID(opt.Site, time.Now()), Job: catalog.ProtectJob(opt.Site), Trigger: cmp.Or(opt.Trigger, "manual")}
	if err := opt.History.StartJobRun(ctx, run); err != nil {
		return nil, fmt.Errorf("protect %s: record the cycle: %w", opt.Site, err)
	}
	p, err := protect(ctx, c, r, b, opt, run)
	switch {
	case err == nil:
		run.State = catalog.RunDone
	case p != nil:
		run.State = catalog.RunPartial
	default:
		run.State = catalog.RunFailed
	}
	if p != nil {
		run.Package = p.ID
	}
	if err != nil {
		run.Error = err.Error()
	}
	if herr := opt.History.EndJobRun(context.WithoutCancel(ctx), run); herr != nil {
		err = errors.Join(err, fmt.Errorf("protect %s: record the cycle's end: %w", opt.Site, herr))
	}
	return p, err
}

func cycleID(site string, t time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "protect-" + site + "-" + t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// vmErrors maps each VM a VMError of err names to its failure.
func vmErrors(err error) map[string]string {
	out := map[string]string{}
	var walk func(error)
	walk = func(err error) {
		var ve *VMError
		switch x := err.(type) {
		case nil:
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				walk(e)
			}
		default:
			if errors.As(err, &ve) {
				out[ve.VM] = ve.Err.Error()
			}
		}
	}
	walk(err)
	return out
}

// protect runs the cycle; run, when not nil, gets each VM's outcome.
func protect(ctx context.Context, c *vim25.Client, r *repo.Repo, b VMBackuper, opt ProtectOptions, run *catalog.JobRun) (*Package, error) {
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
	if run != nil {
		failed := vmErrors(berr)
		for _, n := range names {
			v := catalog.JobRunVM{VM: n, PointID: points[n]}
			if v.PointID == "" {
				v.Error = cmp.Or(failed[n], "not backed up (see the cycle's error)")
				run.VMsFailed++
			} else {
				run.VMsOK++
			}
			run.VMs = append(run.VMs, v)
		}
	}
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
	if opt.Retention != nil && opt.History != nil && len(points) > 0 {
		if err := Forget(ctx, r, opt.History, *opt.Retention, slices.Sorted(maps.Keys(points))); err != nil {
			return p, fmt.Errorf("package %s stored; retention: %w", p.ID, err)
		}
	}
	if len(missing) > 0 {
		return p, errors.Join(fmt.Errorf("package %s stored; not protected this cycle: %v", p.ID, missing), berr)
	}
	return p, nil
}
