package vcsimext

import (
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// buildGate works around a data race inside govmomi v0.56.0's simulator
// (test support, not vCenter behaviour): its createVM task (CreateVM_Task,
// RegisterVM_Task) puts the new VM into the inventory and then goes on
// setting the VM's fields (name, guest, runtime, summary) without the VM's
// lock, while a property retrieval of another client reads that VM under
// its lock. A real vCenter has no such window; under -race the simulator's
// write and a concurrent lookup (parallel vApps of one site recovery
// registering and finding VMs) fail a test now and then.
//
// The gate learns of a VM the simulator puts into its registry (a
// Registry handler's PutObject) and of the end of the task that made it
// (the task's info.result names the VM), and holds property retrievals at
// the door, before dispatch and so before any simulator lock, while a VM
// is being built. A VM whose task never reports (a failed task) stops
// holding anyone after buildHold.
type buildGate struct {
	self types.ManagedObjectReference

	mu       sync.Mutex
	changed  *sync.Cond
	building map[types.ManagedObjectReference]time.Time
}

// buildHold bounds how long a VM under construction holds retrievals back.
const buildHold = time.Second

func newBuildGate() *buildGate {
	g := &buildGate{
		self:     types.ManagedObjectReference{Type: "VcsimextBuildGate", Value: "build-gate"},
		building: map[types.ManagedObjectReference]time.Time{},
	}
	g.changed = sync.NewCond(&g.mu)
	return g
}

// gated are the calls that read objects' properties.
var gated = map[string]bool{
	"RetrieveProperties":           true,
	"RetrievePropertiesEx":         true,
	"ContinueRetrievePropertiesEx": true,
	"CreateFilter":                 true,
	"CreateContainerView":          true,
}

func (g *buildGate) Reference() types.ManagedObjectReference { return g.self }

func (g *buildGate) PutObject(_ *simulator.Context, obj mo.Reference) {
	vm, ok := obj.(*simulator.VirtualMachine)
	if !ok {
		return
	}
	g.mu.Lock()
	g.building[vm.Self] = time.Now()
	g.mu.Unlock()
}

func (g *buildGate) UpdateObject(_ *simulator.Context, obj mo.Reference, changes []types.PropertyChange) {
	if _, ok := obj.(*mo.Task); !ok {
		return
	}
	for _, c := range changes {
		if c.Name != "info.result" {
			continue
		}
		var ref types.ManagedObjectReference
		switch v := c.Val.(type) {
		case types.ManagedObjectReference:
			ref = v
		case *types.ManagedObjectReference:
			if v == nil {
				continue
			}
			ref = *v
		default:
			continue
		}
		g.done(ref)
	}
}

func (g *buildGate) RemoveObject(_ *simulator.Context, ref types.ManagedObjectReference) {
	g.done(ref)
}

func (g *buildGate) done(ref types.ManagedObjectReference) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.building[ref]; ok {
		delete(g.building, ref)
		g.changed.Broadcast()
	}
}

// wait returns once no VM is being built (or the ones left have held for
// buildHold already).
func (g *buildGate) wait() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		var oldest time.Time
		for ref, t := range g.building {
			if time.Since(t) >= buildHold {
				delete(g.building, ref)
				continue
			}
			if oldest.IsZero() || t.Before(oldest) {
				oldest = t
			}
		}
		if oldest.IsZero() {
			return
		}
		// Wake at the latest when the oldest stops holding.
		timer := time.AfterFunc(buildHold-time.Since(oldest), g.changed.Broadcast)
		g.changed.Wait()
		timer.Stop()
	}
}
