// Package simlab runs rekindle's vSphere path in one process, with no
// vCenter: a repository, the datastore service (NFS and sessions),
// govmomi's vCenter simulator extended by vcsimext, and the vsphere driver.
// `rekindle demo` runs in it, and so do the orchestrator's integration tests.
//
// The simulator has no ESXi hosts behind it. The hosts' NFS clients are
// stood in for inside the simulator (vcsimext.Options.NFS: the first host's
// mount of an export copies its VM folders through a real NFS client into
// the folder every host mounting it shares). The guest is stood in
// for by SimHosts, which wraps the driver: after power-on, VMware Tools'
// reports (running, heartbeat green, an IP address) are set through
// ExtraConfig, as the simulator allows; or, with NoGuest, by PlayGuests,
// guests that take a while to boot.
package simlab

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/nfsd/datastore"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/vsphere"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// Target is the simulator's cluster, where restores land.
const Target = "/DC0/host/DC0_C0"

// Lab is a repository, a datastore service and a simulated vCenter.
type Lab struct {
	Dir          string
	Repo         *repo.Repo
	Catalog      *catalog.Catalog
	Service      *datastore.Service
	Model        *simulator.Model
	Server       *simulator.Server
	NASRoot      string
	Driver       *vsphere.Driver
	Hosts        *SimHosts
	Orchestrator *orchestrator.Orchestrator

	cancel context.CancelFunc
	served chan error
}

// Options configure a Lab.
type Options struct {
	Dir    string // working folder (created); everything the lab makes is in it
	Logger *slog.Logger
	Events func(orchestrator.Event)
}

// New starts a lab: an empty repository in Dir, the NFS service on a free
// loopback port (portmapper off) and the simulated vCenter.
func New(ctx context.Context, opts Options) (l *Lab, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l = &Lab{Dir: opts.Dir, NASRoot: filepath.Join(opts.Dir, "nas")}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if l.Repo, err = repo.Init(filepath.Join(opts.Dir, "repo"), repo.InitOptions{}); err != nil {
		return nil, err
	}
	if l.Catalog, err = catalog.Open(ctx, filepath.Join(l.Repo.Dir, "catalog.db")); err != nil {
		return nil, err
	}
	// The lab's catalog owns its repository, as rekindle's commands make
	// it: another catalog opened on it is refused (catalog.Claim).
	if err = l.Catalog.Claim(ctx, l.Repo, false); err != nil {
		return nil, err
	}
	if l.Service, err = datastore.New(ctx, datastore.Config{Repo: l.Repo, Catalog: l.Catalog,
		StateDir: filepath.Join(l.Repo.Dir, "state"), NFSListen: "127.0.0.1:0", Logger: opts.Logger}); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.served = cancel, make(chan error, 1)
	go func() { l.served <- l.Service.Serve(sctx) }()

	vc, err := StartVCenter(opts.Dir, l.Service.NFSAddr().String())
	if err != nil {
		return nil, err
	}
	l.Model, l.Server = vc.Model, vc.Server
	u, caFile := vc.URL, vc.CAFile
	if l.Driver, err = vsphere.Connect(ctx, vsphere.Config{URL: u.String(), Username: "rekindle", Password: "demo-only",
		CAFile: caFile}, opts.Logger); err != nil {
		return nil, err
	}
	l.Hosts = &SimHosts{Driver: l.Driver, NASRoot: l.NASRoot}
	l.Orchestrator = &orchestrator.Orchestrator{Catalog: l.Catalog, Driver: l.Hosts, Exporter: l.Service,
		Logger: opts.Logger, Events: opts.Events}
	return l, nil
}

// Close stops everything the lab started.
func (l *Lab) Close() {
	if l.Driver != nil {
		l.Driver.Close(context.Background())
	}
	if l.Server != nil {
		l.Server.Close()
	}
	if l.Model != nil {
		l.Model.Remove()
	}
	if l.cancel != nil {
		l.cancel()
		<-l.served
	}
	if l.Service != nil {
		l.Service.Close()
	}
	if l.Catalog != nil {
		l.Catalog.Close()
	}
}

// ShopApp is the demo's vApp: web, app and database tiers in three startup
// groups; the database must report its guest up before the app tier starts.
const ShopApp = `name: shop
members:
  - {vm: db01, group: 1, wait_for_guest: true, start_delay_s: 1, stop_action: guestShutdown}
  - {vm: app01, group: 2, wait_for_guest: true, stop_action: guestShutdown}
  - {vm: web01, group: 3, stop_action: powerOff}
networks: [VM Network]
resources: {cpu_shares: normal, mem_reservation_mb: 1024, mem_limit_mb: -1}
`

// ImportShop backs up the shop vApp's three VMs (disks of diskSize bytes,
// sparse unless mixed) and defines the app.
func (l *Lab) ImportShop(ctx context.Context, diskSize int64, fill string) ([]*repo.RestorePoint, error) {
	src := filepath.Join(l.Dir, "vmfs")
	var pts []*repo.RestorePoint
	for i, vm := range []string{"db01", "app01", "web01"} {
		folder, err := vmgen.Generate(src, vmgen.Spec{Name: vm, Seed: int64(i + 1), MemoryMB: 1024, NumCPUs: 1,
			Disks: []vmgen.DiskSpec{{Size: diskSize, Fill: fill, Format: vmgen.FormatFlat}},
			NICs:  []vmgen.NICSpec{{Network: "VM Network", MAC: fmt.Sprintf("00:50:56:01:00:%02x", i+1)}}})
		if err != nil {
			return nil, err
		}
		p, err := ingest.Import(ctx, l.Repo, folder, ingest.Options{App: "shop"})
		if err != nil {
			return nil, err
		}
		if err := l.Catalog.IndexPoint(ctx, p); err != nil {
			return nil, err
		}
		pts = append(pts, p)
	}
	a, err := repo.ParseAppDefinition([]byte(ShopApp), time.Now())
	if err != nil {
		return nil, err
	}
	if err := l.Repo.SaveApp(a); err != nil {
		return nil, err
	}
	return pts, l.Catalog.IndexApp(ctx, a)
}

// Request is a restore request aimed at the lab's cluster and NFS server.
func (l *Lab) Request(kind string) orchestrator.Request {
	host, _, _ := net.SplitHostPort(l.Service.NFSAddr().String())
	return orchestrator.Request{Kind: kind, App: "shop", Target: Target, Server: host, ReadyTimeout: 30 * time.Second}
}

// SimHosts is the vsphere driver plus stand-ins for what the simulator
// cannot do: hosts' NFS clients and guests (see the package comment).
type SimHosts struct {
	*vsphere.Driver
	NASRoot string
	// NoGuest leaves the guests to someone else (PlayGuests with a boot
	// time): PowerOn then only powers on.
	NoGuest bool

	mu      sync.Mutex
	poweron []string // VM names in power-on order
}

// PowerOn powers on through the driver, then plays the guest's tools.
func (h *SimHosts) PowerOn(ctx context.Context, vm orchestrator.VMRef) error {
	if err := h.Driver.PowerOn(ctx, vm); err != nil {
		return err
	}
	h.mu.Lock()
	h.poweron = append(h.poweron, string(vm))
	n := len(h.poweron)
	h.mu.Unlock()
	if h.NoGuest {
		return nil
	}
	return PlayGuest(ctx, h.Driver, vm, "10.0.0."+strconv.Itoa(10+n))
}

// PlayGuests stands in for the guests of every VM of the vCenter at c: a
// guest whose OS takes boot to come up after its VM powers on, then reports
// VMware Tools running with a green heartbeat (ExtraConfig SET.guest.*, a
// reconfiguration vCenter records as a VmReconfiguredEvent). It polls until
// ctx ends and returns nil then; any other error ends it.
//
// It learns of power-ons from vCenter's events (QueryEvents), not by
// reading the VMs: govmomi v0.56.0's simulator writes a VM it registers
// (createVM: its guest, runtime, summary) after the VM is in the inventory,
// without the VM's lock, so reading every VM while VMs are registered is a
// data race inside the simulator (seen in TestSiteRecoverCLI's kills).
func PlayGuests(ctx context.Context, c *vim25.Client, boot time.Duration) error {
	em := event.NewManager(c)
	var last int32                                     // the power events up to this key are taken in
	on := map[types.ManagedObjectReference]time.Time{} // powered on, guest not yet up: since when
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		evs, err := em.QueryEvents(ctx, types.EventFilterSpec{EventTypeId: []string{"VmPoweredOnEvent", "VmPoweredOffEvent"}, MaxCount: 1000})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("guests: power events: %w", err)
		}
		slices.SortFunc(evs, func(a, b types.BaseEvent) int { return cmp.Compare(a.GetEvent().Key, b.GetEvent().Key) })
		for _, be := range evs {
			e := be.GetEvent()
			if e.Key <= last || e.Vm == nil {
				continue
			}
			last = e.Key
			switch be.(type) {
			case *types.VmPoweredOnEvent:
				on[e.Vm.Vm] = e.CreatedTime
			case *types.VmPoweredOffEvent:
				delete(on, e.Vm.Vm)
			}
		}
		now := time.Now()
		for ref, since := range on {
			if now.Sub(since) < boot {
				continue
			}
			spec := types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
				&types.OptionValue{Key: "SET.guest.toolsRunningStatus", Value: "guestToolsRunning"},
				&types.OptionValue{Key: "SET.guestHeartbeatStatus", Value: "green"},
			}}
			task, err := object.NewVirtualMachine(c, ref).Reconfigure(ctx, spec)
			if err == nil {
				err = task.Wait(ctx)
			}
			if err != nil && ctx.Err() == nil && !fault.Is(err, &types.ManagedObjectNotFound{}) {
				return fmt.Errorf("guests: report %s up: %w", ref.Value, err)
			}
			delete(on, ref)
		}
	}
}

// PlayGuest reports a running guest with tools and an IP address.
func PlayGuest(ctx context.Context, d *vsphere.Driver, vm orchestrator.VMRef, ip string) error {
	spec := types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
		&types.OptionValue{Key: "SET.guest.toolsRunningStatus", Value: "guestToolsRunning"},
		&types.OptionValue{Key: "SET.guestHeartbeatStatus", Value: "green"},
		&types.OptionValue{Key: "SET.guest.ipAddress", Value: ip},
	}}
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: string(vm)}
	task, err := object.NewVirtualMachine(d.Client(), ref).Reconfigure(ctx, spec)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("play the guest of %s: %w", vm, err)
	}
	return nil
}

// What a VMEvent records.
const (
	EventPoweredOn = "powered on" // VmPoweredOnEvent
	EventGuestUp   = "guest up"   // VmReconfiguredEvent setting the guest heartbeat (PlayGuests, PlayGuest)
)

// VMEvent is one entry of vCenter's own record about a VM.
type VMEvent struct {
	Key  int32 // place in vCenter's event chain
	VM   string
	What string
	Time time.Time
}

// VMEvents reads from vCenter's event history, in chain order, every VM
// power-on and every guest reporting up (of the last 1000 such events; the
// simulator keeps its last 1000 events of any kind). It is vCenter's
// record, not the orchestrator's: a test checks startup order and waits
// against it.
//
// It reads through EventManager.QueryEvents, not an event collector: a
// collector's DestroyCollector removes it from the simulator's collectors
// while EventManager.PostEvent walks them (govmomi v0.56.0), a data race
// with any client that makes the simulator post an event meanwhile
// (TestVMEventsWhileEventsArePosted). QueryEvents runs under the
// EventManager's lock, as every PostEvent does, and registers no collector.
func VMEvents(ctx context.Context, c *vim25.Client) ([]VMEvent, error) {
	evs, err := event.NewManager(c).QueryEvents(ctx, types.EventFilterSpec{
		EventTypeId: []string{"VmPoweredOnEvent", "VmReconfiguredEvent"}, MaxCount: 1000})
	if err != nil {
		return nil, fmt.Errorf("vCenter events: %w", err)
	}
	var out []VMEvent
	for _, be := range evs {
		e := be.GetEvent()
		if e.Vm == nil {
			continue
		}
		ev := VMEvent{Key: e.Key, VM: e.Vm.Name, Time: e.CreatedTime}
		switch x := be.(type) {
		case *types.VmPoweredOnEvent:
			ev.What = EventPoweredOn
		case *types.VmReconfiguredEvent:
			if !slices.ContainsFunc(x.ConfigSpec.ExtraConfig, func(o types.BaseOptionValue) bool {
				return o.GetOptionValue().Key == "SET.guestHeartbeatStatus"
			}) {
				continue
			}
			ev.What = EventGuestUp
		default:
			continue
		}
		out = append(out, ev)
	}
	slices.SortFunc(out, func(a, b VMEvent) int { return cmp.Compare(a.Key, b.Key) })
	return out, nil
}

// PowerOnOrder is the order in which vCenter recorded the first power-on
// of each VM in names.
func PowerOnOrder(evs []VMEvent, names []string) []string {
	var out []string
	for _, e := range evs {
		if e.What == EventPoweredOn && slices.Contains(names, e.VM) && !slices.Contains(out, e.VM) {
			out = append(out, e.VM)
		}
	}
	return out
}

// EventKey is the chain key of vm's first event of kind what, -1 if none.
func EventKey(evs []VMEvent, vm, what string) int32 {
	for _, e := range evs {
		if e.VM == vm && e.What == what {
			return e.Key
		}
	}
	return -1
}
