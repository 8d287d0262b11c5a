package vcbackup_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestParallelLimits: a backup of several VMs of several disks reads, at
// its fullest, exactly Parallel VMs × DiskParallel disks (× Readers range
// reads of each disk over datastore access) at once: the reads in flight
// are counted by vCenter's stand-in, which holds them until the test has
// seen how many start.
func TestParallelLimits(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var vms []string
	for i := range 3 {
		name := fmt.Sprintf("vm%02d", i)
		_, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: name, Disks: []int64{1 << 20, 1 << 20, 1 << 20}, PowerOn: true})
		must(t, err)
		vms = append(vms, name)
	}
	for _, c := range []struct {
		transport                string
		parallel, disks, readers int
		want                     int64
	}{
		{vcbackup.TransportNFC, 2, 2, 0, 4},
		{vcbackup.TransportNFC, 3, 1, 0, 3},
		{vcbackup.TransportDatastore, 2, 2, 2, 8},
	} {
		t.Run(fmt.Sprintf("%s parallel %d disks %d readers %d", c.transport, c.parallel, c.disks, c.readers), func(t *testing.T) {
			cfg := e.cfg
			// Without CBT every backup reads each disk whole.
			cfg.NoCBT, cfg.Transport = true, c.transport
			cfg.Parallel, cfg.DiskParallel, cfg.Readers = c.parallel, c.disks, c.readers
			e.lab.Backup.ResetMaxReadsInFlight()
			release := e.lab.Backup.HoldReads()
			defer release()
			type out struct {
				rs  []vcbackup.Result
				err error
			}
			ch := make(chan out, 1)
			go func() {
				rs, err := vcbackup.BackupVMs(ctx, cfg, vms)
				ch <- out{rs, err}
			}()
			deadline := time.Now().Add(time.Minute)
			for e.lab.Backup.ReadsInFlight() < c.want {
				if time.Now().After(deadline) {
					release()
					t.Fatalf("reads in flight reached %d, never the limit %d", e.lab.Backup.MaxReadsInFlight(), c.want)
				}
				time.Sleep(10 * time.Millisecond)
			}
			// Give an unbounded backup the time to start more reads.
			time.Sleep(500 * time.Millisecond)
			release()
			o := <-ch
			must(t, o.err)
			for _, r := range o.rs {
				must(t, r.Err)
				if len(r.Disks) != 3 || r.Disks[0].Transport != c.transport {
					t.Fatalf("%s: disks %+v, want 3 read over %s", r.VM, r.Disks, c.transport)
				}
			}
			if got := e.lab.Backup.MaxReadsInFlight(); got != c.want {
				t.Fatalf("at most %d disk reads in flight, want exactly the limit %d", got, c.want)
			}
		})
	}
}
