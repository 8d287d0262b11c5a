package vcbackup_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/rekindle/rekindle/orchestrator/vcbackup"
	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// TestProgressPerVM: two VMs backed up at once each report their own
// progress, in order: snapshot, reads whose bytes advance to the total
// their disks need (what the result says was read), save, done.
func TestProgressPerVM(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sizes := map[string]int{"web01": 1 << 20, "db01": 640 << 10}
	for name, n := range sizes {
		_, err := e.lab.CreateVM(ctx, backuplab.VMSpec{Name: name, Disks: []int64{diskSize, 2 << 20}, PowerOn: name == "web01"})
		must(t, err)
		must(t, e.lab.WriteDisk(name, 0, 0, random(1, n)))
		must(t, e.lab.WriteDisk(name, 1, 1<<20, random(2, 200<<10)))
	}
	var mu sync.Mutex
	events := map[string][]vcbackup.Progress{}
	cfg := e.cfg
	cfg.Parallel = 2
	cfg.Progress = func(p vcbackup.Progress) {
		mu.Lock()
		events[p.VM] = append(events[p.VM], p)
		mu.Unlock()
	}
	rs, err := vcbackup.BackupVMs(ctx, cfg, []string{"web01", "db01"})
	must(t, err)
	for _, res := range rs {
		must(t, res.Err)
		evs := events[res.VM]
		var phases []string
		var last vcbackup.Progress
		between := 0
		for i, p := range evs {
			if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
				phases = append(phases, p.Phase)
			}
			if p.Done < last.Done || p.BytesRead < last.BytesRead {
				t.Fatalf("%s: progress went back at event %d: %+v after %+v", res.VM, i, p, last)
			}
			if p.Phase == "read" && p.Done > 0 && p.Done < p.Total {
				between++
			}
			last = p
		}
		if !slices.Equal(phases, []string{"snapshot", "read", "save", "done"}) {
			t.Fatalf("%s: phases %q, want snapshot, read, save, done", res.VM, phases)
		}
		// The allocated areas of the two disks, in 64 KiB blocks.
		want := int64(sizes[res.VM] + 256<<10)
		if diskBytesRead(res) != want || last.Total != want || last.Done != want || last.BytesRead != res.BytesRead {
			t.Fatalf("%s: last progress %+v, result read %d (transferred %d), want %d of %d done", res.VM, last, diskBytesRead(res), res.BytesRead, want, want)
		}
		if between < 2 {
			t.Fatalf("%s: %d read events between none and all of %d bytes: the progress does not advance (%+v)", res.VM, between, want, evs)
		}
	}
}
