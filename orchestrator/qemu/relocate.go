package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/rekindle/rekindle/internal/durable"
	"github.com/rekindle/rekindle/orchestrator"
)

// jobPoll is how often Relocate reads the mirror's progress.
const jobPoll = 250 * time.Millisecond

// Relocate moves the VM's disks to datastore, a local folder: each disk
// becomes <datastore>/<vm>/<disk>.raw. A running VM's disks are mirrored
// while the guest runs (QMP drive-mirror, sync full; block-job-complete once
// the copy is in step), after which the guest runs from the copy; a
// powered-off VM's disks are copied with qemu-img. Disks already there are
// skipped, and a mirror left running by an earlier call is picked up, so a
// resumed relocation carries on. Progress is reported in percent over all
// disks.
func (d *Driver) Relocate(ctx context.Context, vm orchestrator.VMRef, datastore string, progress func(pct int)) error {
	name := string(vm)
	if progress == nil {
		progress = func(int) {}
	}
	if datastore == "" {
		return fmt.Errorf("vm %s: relocate: no target folder", name)
	}
	dir, err := filepath.Abs(datastore)
	if err != nil {
		return fmt.Errorf("vm %s: relocate to %s: %w", name, datastore, err)
	}
	dir = filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("vm %s: relocate: %w", name, err)
	}
	unlock, err := d.lockVM(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	v, err := d.loadVM(name)
	if err != nil {
		return err
	}
	if len(v.Disks) == 0 {
		return fmt.Errorf("vm %s has no disks: reconcile it first", name)
	}
	var mon *monitor
	if d.running(name) {
		mon, err = dialQMP(ctx, d.vmFile(name, "qmp.sock"))
		if err != nil {
			return fmt.Errorf("vm %s: relocate: %w", name, err)
		}
		defer mon.close()
	}
	n := len(v.Disks)
	for i, dk := range v.Disks {
		target := filepath.Join(dir, dk.Name+".raw")
		report := func(pct int) { progress((100*i + min(max(pct, 0), 100)) / n) }
		if dk.Local == target {
			report(100)
			continue
		}
		start := time.Now()
		if mon != nil {
			err = d.mirror(ctx, mon, name, dk, target, report)
		} else {
			err = d.copyDisk(ctx, name, dk, target)
		}
		if err != nil {
			return err
		}
		if _, err := d.updateVM(name, func(v *vmState) error {
			v.Disks[i].Local = target
			return nil
		}); err != nil {
			return err
		}
		report(100)
		d.log.Info("disk relocated", "vm", name, "disk", dk.ID, "from", dk.where(), "to", target,
			"live", mon != nil, "duration", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// where says where the disk lives now, for logs.
func (dk diskState) where() string {
	if dk.Local != "" {
		return dk.Local
	}
	if dk.URL != "" {
		return dk.URL
	}
	return dk.File
}

// mirror copies one disk of a running VM to target and switches the guest
// to it.
func (d *Driver) mirror(ctx context.Context, mon *monitor, vm string, dk diskState, target string, report func(int)) error {
	job := "mirror-" + dk.ID
	fail := func(what string, err error) error {
		return fmt.Errorf("vm %s: mirror %s (%s) to %s: %s: %w", vm, dk.ID, dk.where(), target, what, err)
	}
	current := func() (string, error) {
		var blocks []blockInfo
		if err := mon.run(ctx, "query-block", nil, &blocks); err != nil {
			return "", err
		}
		for _, b := range blocks {
			if b.Device == dk.ID && b.Inserted != nil {
				return b.Inserted.File, nil
			}
		}
		return "", fmt.Errorf("QEMU has no drive %s", dk.ID)
	}
	findJob := func() (*blockJob, error) {
		var jobs []blockJob
		if err := mon.run(ctx, "query-block-jobs", nil, &jobs); err != nil {
			return nil, err
		}
		for i := range jobs {
			if jobs[i].Device == job {
				return &jobs[i], nil
			}
		}
		return nil, nil
	}
	// An earlier call may have finished the switch, or left the job running.
	if f, err := current(); err != nil {
		return fail("query-block", err)
	} else if f == target {
		return nil
	}
	j, err := findJob()
	if err != nil {
		return fail("query-block-jobs", err)
	}
	if j == nil {
		// QEMU creates target (mode absolute-paths) and copies every block.
		args := map[string]any{"job-id": job, "device": dk.ID, "target": target, "format": "raw",
			"sync": "full", "mode": "absolute-paths"}
		if d.cfg.MirrorBytesPerSec > 0 {
			args["speed"] = d.cfg.MirrorBytesPerSec
		}
		if err := mon.run(ctx, "drive-mirror", args, nil); err != nil {
			return fail("drive-mirror", err)
		}
		d.log.Info("mirror started", "vm", vm, "disk", dk.ID, "from", dk.where(), "to", target)
	}
	tick := time.NewTicker(jobPoll)
	defer tick.Stop()
	ready, completing := false, false
	for {
		if ready && !completing {
			// Source and target are in step; QEMU keeps them so until it
			// switches the guest to the target.
			if err := mon.run(ctx, "block-job-complete", map[string]any{"device": job}, nil); err != nil {
				return fail("block-job-complete", err)
			}
			completing = true
		}
		select {
		case e, ok := <-mon.events:
			if !ok {
				return fail("QMP", fmt.Errorf("monitor connection closed"))
			}
			if dev, _ := e.Data["device"].(string); dev != job {
				continue
			}
			switch e.Event {
			case "BLOCK_JOB_READY":
				ready = true
			case "BLOCK_JOB_ERROR":
				d.log.Warn("mirror I/O error", "vm", vm, "disk", dk.ID, "operation", e.Data["operation"], "action", e.Data["action"])
			case "BLOCK_JOB_CANCELLED":
				return fail("job", fmt.Errorf("cancelled"))
			case "BLOCK_JOB_COMPLETED":
				if msg, _ := e.Data["error"].(string); msg != "" {
					return fail("job", fmt.Errorf("%s", msg))
				}
				if !completing {
					return fail("job", fmt.Errorf("completed without switching to the target"))
				}
				f, err := current()
				if err != nil {
					return fail("query-block", err)
				}
				if f != target {
					return fail("switch", fmt.Errorf("the guest still runs from %s", f))
				}
				return nil
			}
		case <-tick.C:
			j, err := findJob()
			if err != nil {
				return fail("query-block-jobs", err)
			}
			if j == nil {
				// Events can be missed; the drive says how it ended.
				f, err := current()
				if err != nil {
					return fail("query-block", err)
				}
				if f == target {
					return nil
				}
				return fail("job", fmt.Errorf("ended without switching (the guest runs from %s): see %s", f, d.vmFile(vm, "qemu.log")))
			}
			if j.Error != "" {
				d.log.Warn("mirror error", "vm", vm, "disk", dk.ID, "error", j.Error)
			}
			if j.Len > 0 {
				report(int(j.Offset * 100 / j.Len))
			}
			if j.Ready {
				ready = true
			}
		case <-ctx.Done():
			// The job runs on in QEMU; a later Relocate picks it up.
			return fail("wait", ctx.Err())
		}
	}
}

// copyDisk copies one disk of a powered-off VM with qemu-img.
func (d *Driver) copyDisk(ctx context.Context, vm string, dk diskState, target string) error {
	src := "driver=raw,file.driver=file,file.filename=" + optEscape(dk.Local)
	if dk.Local == "" {
		m, err := d.loadMount(dk.Datastore)
		if err != nil {
			return fmt.Errorf("vm %s: disk %s: datastore %s is not mounted on %s: %w", vm, dk.File, dk.Datastore, hostName, err)
		}
		src = "driver=raw,file.driver=nfs,file.server.type=inet,file.server.host=" + optEscape(m.Server) +
			",file.path=" + optEscape(path.Join(m.Path, dk.Extent))
	}
	tmp := target + ".part"
	out, err := exec.CommandContext(ctx, d.cfg.QEMUImg, "convert", "--image-opts", src, "-O", "raw", tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("vm %s: copy %s (%s) to %s: %w: %s", vm, dk.ID, dk.where(), target, err, strings.TrimSpace(string(out)))
	}
	if err := durable.Install(durable.OS(), tmp, target); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("vm %s: copy %s: %w", vm, dk.ID, err)
	}
	return nil
}
