package simlab

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

// TestVMEventsWhileEventsArePosted: VMEvents reads vCenter's events while
// other clients make the simulator post events (VM power-ons, guests
// reconfigured, logins, posted events). Its read must not race with the
// posting inside govmomi's simulator: an event collector created and
// destroyed for each read does (EventManager.PostEvent walks the
// collectors while HistoryCollector.DestroyCollector removes one; the race
// detector reports it, and CI runs under -race). Every power-on is read
// back once, in order.
func TestVMEventsWhileEventsArePosted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vc, err := StartVCenter(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	c, err := govmomi.NewClient(ctx, vc.Server.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	vms, err := find.NewFinder(c.Client, true).VirtualMachineList(ctx, "/DC0/vm/*")
	if err != nil || len(vms) == 0 {
		t.Fatalf("simulator VMs: %v %v", vms, err)
	}
	evs, err := VMEvents(ctx, c.Client)
	if err != nil {
		t.Fatal(err)
	}
	var from int32 // the events of this test come after it
	for _, e := range evs {
		from = max(from, e.Key)
	}
	// Posting: every VM powered off and on, over and over, and events
	// posted by hand, while the reads run.
	const rounds = 5
	var wg sync.WaitGroup
	errs := make(chan error, len(vms))
	for _, vm := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				for _, op := range []func(context.Context) (*object.Task, error){
					func(ctx context.Context) (*object.Task, error) { return vm.PowerOff(ctx) },
					func(ctx context.Context) (*object.Task, error) { return vm.PowerOn(ctx) },
				} {
					task, err := op(ctx)
					if err == nil {
						err = task.Wait(ctx)
					}
					if err != nil {
						errs <- fmt.Errorf("%s: %w", vm.Name(), err)
						return
					}
				}
			}
		}()
	}
	// Events posted by hand, at most 400 (the simulator keeps the last
	// 1000 events), until the power-ons are done.
	stop := make(chan struct{})
	posted := make(chan error, 1)
	go func() {
		em := event.NewManager(c.Client)
		ref := vms[0].Reference()
		for i := range 400 {
			select {
			case <-stop:
				posted <- nil
				return
			case <-time.After(2 * time.Millisecond):
			}
			if err := em.PostEvent(ctx, &types.GeneralUserEvent{GeneralEvent: types.GeneralEvent{Event: types.Event{
				Vm: &types.VmEventArgument{Vm: ref}}, Message: fmt.Sprint("posted ", i)}}); err != nil {
				posted <- err
				return
			}
		}
		posted <- nil
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// Reads with pauses between them: an event posted after a read has
	// destroyed its collector, before the next read, is where the race was.
	reads := 0
	for finished := false; !finished || reads < 50; reads++ {
		select {
		case <-done:
			finished = true
		case <-time.After(5 * time.Millisecond):
		}
		if _, err := VMEvents(ctx, c.Client); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-posted; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if evs, err = VMEvents(ctx, c.Client); err != nil {
		t.Fatal(err)
	}
	ons := map[string]int{}
	last := int32(-1)
	for _, e := range evs {
		if e.Key <= last {
			t.Fatalf("events out of chain order: %+v", evs)
		}
		last = e.Key
		if e.Key > from && e.What == EventPoweredOn {
			ons[e.VM]++
		}
	}
	for _, vm := range vms {
		if ons[vm.Name()] != rounds {
			t.Errorf("%s: %d power-ons read, want %d", vm.Name(), ons[vm.Name()], rounds)
		}
	}
	t.Logf("%d reads while %d VMs powered on %d times each", reads, len(vms), rounds)
}
