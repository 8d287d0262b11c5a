package vcbackup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"golang.org/x/sync/errgroup"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
)

// SnapshotPrefix starts the name of every snapshot a backup takes, so a
// later run knows which leftovers are its own to remove.
const SnapshotPrefix = "rekindle-backup-"

// Transports (see the package comment).
const (
	TransportAuto      = "auto"
	TransportNFC       = "nfc"
	TransportDatastore = "datastore"
)

// Modes of a backup.
const (
	ModeFull        = "full"
	ModeIncremental = "incremental"
)

// Config says where to back up from and to, and how.
type Config struct {
	// Client is a logged-in vCenter client.
	Client *vim25.Client
	// Datacenter is a name or path; empty means the only one.
	Datacenter string
	Repo       *repo.Repo
	// Catalog, when set, records every new point and app.
	Catalog *catalog.Catalog
	// Quiesce asks for quiesced snapshots of VMs whose VMware Tools run.
	Quiesce bool
	// NoCBT leaves changed block tracking off where it is off (every backup
	// of such a VM is then full).
	NoCBT bool
	// Transport is auto (default), nfc or datastore.
	Transport string
	// Parallel is how many VMs are backed up at once (default 2);
	// DiskParallel how many disks of one VM (default 2); Readers how many
	// range reads run at once per disk (default 4).
	Parallel, DiskParallel, Readers int
	// ClaimWait is how long a VM's backup waits for another backup of the
	// same VM (its claim in the repository, repo.ClaimVM) to end; zero
	// refuses it after the lock protocol's quick retries, naming the
	// holder. ClaimWaiting, when set, is told once per holder waited for.
	ClaimWait    time.Duration
	ClaimWaiting func(vm string, holder repo.LockInfo, wait time.Duration)
	// Skip are VMs not to back up, whatever names them: those this run
	// backed up already (a job's vApp members, when a folder, tag or path
	// lists them too).
	Skip []types.ManagedObjectReference
	// Progress, when set, is called as disks are read; calls for one VM
	// come in order, calls for different VMs may interleave.
	Progress func(Progress)
	Logger   *slog.Logger
	Now      func() time.Time // for tests
}

// Progress is a snapshot of one VM's running backup.
type Progress struct {
	VM        string `json:"vm"`
	Phase     string `json:"phase"` // snapshot, read, save, done
	Done      int64  `json:"done"`  // bytes to read that are read (changed areas only)
	Total     int64  `json:"total"`
	BytesRead int64  `json:"bytes_read"`
}

// Result is what one VM's backup did.
type Result struct {
	VM        string             `json:"vm"`
	Point     *repo.RestorePoint `json:"-"`
	PointID   string             `json:"point,omitempty"`
	Mode      string             `json:"mode,omitempty"`
	Notes     []string           `json:"notes,omitempty"`
	BytesRead int64              `json:"bytes_read"` // disk bytes fetched from vCenter
	Stats     repo.IngestStats   `json:"stats"`
	Duration  time.Duration      `json:"-"` // MarshalJSON writes duration_s
	Err       error              `json:"-"`
	Error     string             `json:"error,omitempty"`
	Disks     []DiskResult       `json:"disks,omitempty"`
	// Ref is the VM in vCenter (zero when the name did not resolve).
	Ref types.ManagedObjectReference `json:"-"`
	app *types.VAppEntityConfigInfo
}

// DiskResult is one disk's part of a Result.
type DiskResult struct {
	Name      string `json:"name"`
	Mode      string `json:"mode"`
	Transport string `json:"transport"` // nfc or datastore
	Size      int64  `json:"size"`
	BytesRead int64  `json:"bytes_read"`
	Areas     int    `json:"areas"` // ranges read
}

func (c *Config) defaults() {
	if c.Parallel <= 0 {
		c.Parallel = 2
	}
	if c.DiskParallel <= 0 {
		c.DiskParallel = 2
	}
	if c.Readers <= 0 {
		c.Readers = 4
	}
	if c.Transport == "" {
		c.Transport = TransportAuto
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) check() error {
	switch {
	case c.Client == nil:
		return errors.New("vcbackup: no vCenter client")
	case c.Repo == nil:
		return errors.New("vcbackup: no repository")
	}
	switch c.Transport {
	case TransportAuto, TransportNFC, TransportDatastore:
	default:
		return fmt.Errorf("transport %q: want auto, nfc or datastore", c.Transport)
	}
	return nil
}

// BackupVMs backs up the named VMs (names or inventory paths), Parallel at
// a time, and returns one Result per VM in the order first named: a VM
// named twice (by its name and its path) is backed up once, its Result's
// notes saying so. A VM whose backup another run holds is refused (or waits
// up to ClaimWait), its Result's Err naming that run. A VM that fails has
// its Result's Err set; the error return is for what stops every VM (no
// repository lock, no datacenter).
func BackupVMs(ctx context.Context, cfg Config, names []string) ([]Result, error) {
	ts := make([]Target, len(names))
	for i, n := range names {
		ts[i].Name = n
	}
	return BackupTargets(ctx, cfg, ts)
}

// Target is a VM to back up: its name or inventory path, and when the
// caller found it in vCenter already (a folder's or a tag's VMs), its
// reference, so that a name another VM also has does not make it ambiguous.
type Target struct {
	Name string
	Ref  types.ManagedObjectReference
}

// BackupTargets is BackupVMs for targets: those with a reference are not
// looked up by name.
func BackupTargets(ctx context.Context, cfg Config, targets []Target) ([]Result, error) {
	cfg.defaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	lock, err := cfg.Repo.Lock(ctx, repo.LockShared, "backup from vCenter")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	b, err := newBackuper(ctx, cfg)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(targets))
	refs := make([]types.ManagedObjectReference, len(targets))
	for i, t := range targets {
		names[i], refs[i] = t.Name, t.Ref
	}
	return b.many(ctx, names, refs, ""), nil
}

type backuper struct {
	cfg    Config
	c      *vim25.Client
	dc     *object.Datacenter
	server string
}

func newBackuper(ctx context.Context, cfg Config) (*backuper, error) {
	f := find.NewFinder(cfg.Client, false)
	dc, err := f.DatacenterOrDefault(ctx, cfg.Datacenter)
	if err != nil {
		return nil, fmt.Errorf("vCenter: find datacenter %q: %w", cfg.Datacenter, err)
	}
	f.SetDatacenter(dc)
	return &backuper{cfg: cfg, c: cfg.Client, dc: dc, server: cfg.Client.URL().Hostname()}, nil
}

// finder is a new finder in the backup's datacenter: a govmomi Finder
// caches the datacenter's folders unguarded, so VMs backed up in parallel
// each take their own (sharing one was a data race).
func (b *backuper) finder() *find.Finder {
	f := find.NewFinder(b.c, false)
	f.SetDatacenter(b.dc)
	return f
}

// many backs up the VMs names name; refs, when given, are the VMs (a
// vApp's members, whose names may be another VM's elsewhere).
func (b *backuper) many(ctx context.Context, names []string, refs []types.ManagedObjectReference, app string) []Result {
	vms := b.resolve(ctx, names, refs)
	out := make([]Result, len(vms))
	var g errgroup.Group
	g.SetLimit(b.cfg.Parallel)
	for i, t := range vms {
		g.Go(func() error {
			start := time.Now()
			var r Result
			if t.err != nil {
				r.Err = t.err
			} else {
				r = b.one(ctx, t, app)
			}
			if len(t.aliases) > 0 {
				r.Notes = append(r.Notes, fmt.Sprintf("also listed as %s: the same VM, backed up once", strings.Join(t.aliases, ", ")))
			}
			r.VM, r.Ref, r.Duration = t.given, t.ref, time.Since(start)
			if r.Err != nil {
				r.Error = r.Err.Error()
				b.cfg.Logger.Error("backup failed", "vm", t.given, "err", r.Err)
			}
			if r.Point != nil {
				r.PointID = r.Point.ID
			}
			out[i] = r
			return nil
		})
	}
	g.Wait()
	return out
}

// target is one VM to back up, as resolved before any backup starts.
type target struct {
	given   string   // the name or path it was first listed as
	aliases []string // what else named the same VM (a path, the name again)
	ref     types.ManagedObjectReference
	name    string // vCenter's
	key     string // its backup claim's key (claimKey)
	err     error
}

// resolve finds the VMs names name, once each: a VM named twice (its name
// and its inventory path, or a job's folder and tag) is one target, backed
// up once, with the other names as aliases. A name that does not resolve is
// a target with err set. refs[i], when given, is the VM names[i] names.
func (b *backuper) resolve(ctx context.Context, names []string, refs []types.ManagedObjectReference) []*target {
	found := make([]*target, len(names))
	var g errgroup.Group
	g.SetLimit(b.cfg.Parallel)
	for i, name := range names {
		g.Go(func() error {
			t := &target{given: name}
			if i < len(refs) && refs[i].Value != "" {
				t.ref = refs[i]
			} else {
				t.ref, t.err = b.findRef(ctx, name)
			}
			if t.err == nil {
				var vm mo.VirtualMachine
				if err := property.DefaultCollector(b.c).RetrieveOne(ctx, t.ref, []string{"name", "config.instanceUuid"}, &vm); err != nil {
					t.err = fmt.Errorf("vm %s: %w", name, err)
				} else {
					t.name, t.key = vm.Name, b.claimKey(t.ref, &vm)
				}
			}
			found[i] = t
			return nil
		})
	}
	g.Wait()
	var out []*target
	byRef := map[types.ManagedObjectReference]*target{}
	for _, t := range found {
		if t.err == nil && slices.Contains(b.cfg.Skip, t.ref) {
			continue
		}
		if t.err == nil {
			if first := byRef[t.ref]; first != nil {
				first.aliases = append(first.aliases, t.given)
				continue
			}
			byRef[t.ref] = t
		}
		out = append(out, t)
	}
	return out
}

// claimKey is the key of a VM's backup claim in the repository: vCenter's
// instance UUID of the VM (the same whatever name or path a backup was
// given, and from whichever address of vCenter), else its managed object
// id on this vCenter.
func (b *backuper) claimKey(ref types.ManagedObjectReference, vm *mo.VirtualMachine) string {
	if vm.Config != nil && vm.Config.InstanceUuid != "" {
		return "instance-uuid:" + strings.ToLower(vm.Config.InstanceUuid)
	}
	return "moref:" + b.server + "/" + ref.Value
}

// vmInfo is what a backup reads about a VM before it snapshots it.
type vmInfo struct {
	ref  types.ManagedObjectReference
	mo   mo.VirtualMachine
	name string
}

func (b *backuper) findRef(ctx context.Context, name string) (types.ManagedObjectReference, error) {
	if strings.Contains(name, "/") {
		vm, err := b.finder().VirtualMachine(ctx, name)
		if err != nil {
			return types.ManagedObjectReference{}, fmt.Errorf("find VM %q: %w", name, err)
		}
		return vm.Reference(), nil
	}
	refs, err := b.byName(ctx, "VirtualMachine", name)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	switch len(refs) {
	case 0:
		return types.ManagedObjectReference{}, fmt.Errorf("vCenter has no VM named %q in datacenter %s", name, b.dc.Name())
	case 1:
		return refs[0], nil
	default:
		return types.ManagedObjectReference{}, fmt.Errorf("vCenter has %d VMs named %q: give an inventory path (/DC/vm/folder/%s)", len(refs), name, name)
	}
}

// readVM reads what a backup needs of a VM, once it holds the VM's claim
// (so the snapshots it lists are not another backup's).
func (b *backuper) readVM(ctx context.Context, ref types.ManagedObjectReference, name string) (*vmInfo, error) {
	var vm mo.VirtualMachine
	if err := property.DefaultCollector(b.c).RetrieveOne(ctx, ref, []string{"name", "config", "runtime", "guest", "snapshot", "layoutEx"}, &vm); err != nil {
		return nil, fmt.Errorf("vm %s: read its configuration: %w", name, err)
	}
	if vm.Config == nil {
		return nil, fmt.Errorf("vm %s: vCenter reports no configuration (is it inaccessible?)", name)
	}
	return &vmInfo{ref: ref, mo: vm, name: vm.Name}, nil
}

// byName lists the datacenter's objects of a kind with a name, once each
// (the simulator lists vApp members twice).
func (b *backuper) byName(ctx context.Context, kind, name string) ([]types.ManagedObjectReference, error) {
	m := view.NewManager(b.c)
	v, err := m.CreateContainerView(ctx, b.dc.Reference(), []string{kind}, true)
	if err != nil {
		return nil, fmt.Errorf("list %ss: %w", kind, err)
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	var objs []mo.ManagedEntity
	if err := v.Retrieve(ctx, []string{kind}, []string{"name"}, &objs); err != nil {
		return nil, fmt.Errorf("list %ss: %w", kind, err)
	}
	var out []types.ManagedObjectReference
	for _, o := range objs {
		if o.Name == name && !slices.Contains(out, o.Self) {
			out = append(out, o.Self)
		}
	}
	return out, nil
}

// one backs up one VM. It never leaves its snapshot behind when it can
// reach vCenter; a leftover from a killed run is removed by the next.
//
// It first takes the VM's backup claim in the repository (repo.ClaimVM):
// while another backup of the VM runs (another process, another host, a
// job of this one), its rekindle snapshot is live, not a leftover, and
// this backup is refused (or waits up to ClaimWait) naming that holder.
// Only under the claim are backup snapshots leftovers to remove: their run
// is gone (its claim released, or stale and taken over here).
func (b *backuper) one(ctx context.Context, t *target, app string) (res Result) {
	cfg := b.cfg
	name := t.given
	progress := func(p Progress) {
		if cfg.Progress != nil {
			p.VM = name
			cfg.Progress(p)
		}
	}
	if err := repo.ValidName(t.name); err != nil {
		res.Err = fmt.Errorf("vm %q: its vCenter name cannot name a restore point: %w", t.name, err)
		return res
	}
	var waiting func(repo.LockInfo, time.Duration)
	if cfg.ClaimWaiting != nil {
		waiting = func(h repo.LockInfo, wait time.Duration) { cfg.ClaimWaiting(name, h, wait) }
	}
	claim, stale, err := cfg.Repo.ClaimVM(ctx, t.key, fmt.Sprintf("backup of VM %s from vCenter %s", t.name, b.server), cfg.ClaimWait, waiting)
	if err != nil {
		res.Err = fmt.Errorf("vm %s: %w", t.name, err)
		return res
	}
	defer claim.Unlock()
	for _, s := range stale {
		if s.Kind == repo.LockVM && s.VM == t.key {
			res.Notes = append(res.Notes, fmt.Sprintf("took over the stale backup claim of pid %d on %s (since %s, last refreshed %s): that backup is gone",
				s.PID, s.Host, s.Created.UTC().Format(time.RFC3339), s.Refreshed.UTC().Format(time.RFC3339)))
		}
	}
	vi, err := b.readVM(ctx, t.ref, t.name)
	if err != nil {
		res.Err = err
		return res
	}
	vm := object.NewVirtualMachine(b.c, vi.ref)
	log := cfg.Logger.With("vm", vi.name)

	if err := b.removeLeftovers(ctx, vm, vi, &res); err != nil {
		res.Err = err
		return res
	}

	cbtOn := vi.mo.Config.ChangeTrackingEnabled != nil && *vi.mo.Config.ChangeTrackingEnabled
	if !cbtOn && !cfg.NoCBT {
		if err := enableCBT(ctx, vm); err != nil {
			res.Err = fmt.Errorf("vm %s: enable changed block tracking: %w", vi.name, err)
			return res
		}
		cbtOn = true
		res.Notes = append(res.Notes, "changed block tracking was off: enabled now, so this backup is full")
	}

	quiesce := false
	if cfg.Quiesce {
		if vi.mo.Guest != nil && vi.mo.Guest.ToolsRunningStatus == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) {
			quiesce = true
		} else {
			res.Notes = append(res.Notes, "not quiesced: VMware Tools are not running in the guest")
		}
	}

	start := cfg.Now()
	pointID := repo.NewPointID(start)
	snapName := SnapshotPrefix + pointID
	progress(Progress{Phase: "snapshot"})
	task, err := vm.CreateSnapshot(ctx, snapName, "taken by rekindle for a backup; removed when the backup ends", false, quiesce)
	if err != nil {
		res.Err = fmt.Errorf("vm %s: create snapshot: %w", vi.name, err)
		return res
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		res.Err = fmt.Errorf("vm %s: create snapshot: %w", vi.name, err)
		// The task may still have made it: the next run removes it by name.
		b.removeByName(ctx, vm, snapName)
		return res
	}
	snapRef, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		res.Err = fmt.Errorf("vm %s: create snapshot: vCenter returned no snapshot", vi.name)
		b.removeByName(ctx, vm, snapName)
		return res
	}
	snapRemoved := false
	removeSnap := func() error {
		if snapRemoved {
			return nil
		}
		snapRemoved = true
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
		defer cancel()
		return removeSnapshot(rctx, b.c, snapRef)
	}
	defer func() {
		err := removeSnap()
		switch {
		case err == nil:
		case res.Err == nil:
			res.Err = fmt.Errorf("vm %s: remove snapshot %s: %w (the next backup removes it)", vi.name, snapName, err)
		default:
			// vCenter went away in the middle (a restart): say what is
			// left behind, and who removes it.
			res.Err = fmt.Errorf("%w; snapshot %s was not removed (%v): the next backup of %s removes it", res.Err, snapName, err, vi.name)
		}
	}()

	var snap mo.VirtualMachineSnapshot
	if err := property.DefaultCollector(b.c).RetrieveOne(ctx, snapRef, []string{"config"}, &snap); err != nil {
		res.Err = fmt.Errorf("vm %s: read snapshot %s: %w", vi.name, snapName, err)
		return res
	}

	p := &repo.RestorePoint{
		Format: repo.ManifestFormat, ID: pointID, VM: identity(vi.name, &snap.Config), App: app,
		Created: start.UTC().Truncate(time.Second),
		Source:  &repo.PointSource{Kind: "vcenter", Server: b.server, MoRef: vi.ref.Value, Snapshot: snapName, Quiesced: quiesce},
	}
	// The .vmx and .nvram of the disks' moment: downloaded while the
	// snapshot exists (its removal, or a reconfiguration meanwhile, changes
	// them); a failure here still removes the snapshot (deferred above).
	files, err := b.configFiles(ctx, vi)
	if err != nil {
		res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
		return res
	}
	p.Files = files
	parent, err := cfg.Repo.LatestPoint(vi.name)
	switch {
	case err == nil:
		p.Parent = parent.ID
	case errors.Is(err, repo.ErrNotFound):
		parent = nil
	default:
		res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
		return res
	}
	nics, err := b.nics(ctx, &snap.Config, vi.mo.Guest)
	if err != nil {
		res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
		return res
	}
	p.NICs = nics

	disks, err := diskDevices(&snap.Config)
	if err != nil {
		res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
		return res
	}

	transport := cfg.Transport
	if transport == TransportAuto {
		transport = TransportDatastore
		if vi.mo.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
			transport = TransportNFC
		}
	}
	w := &pointWriter{r: cfg.Repo, readers: cfg.Readers}
	plans := make([]readPlan, len(disks))
	{
		var mu sync.Mutex
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(cfg.DiskParallel)
		for i, d := range disks {
			g.Go(func() error {
				plan, note, err := b.plan(gctx, vi.ref, snapRef, d, parent, cbtOn)
				if err != nil {
					return fmt.Errorf("disk %s: %w", d.name, err)
				}
				plans[i] = plan
				if note != "" {
					mu.Lock()
					res.Notes = append(res.Notes, fmt.Sprintf("disk %s: %s", d.name, note))
					mu.Unlock()
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
			return res
		}
	}
	// A running VM's incremental reads its changed areas from the disk the
	// snapshot names (stable while the VM writes into the snapshot's delta)
	// through ranged datastore reads when the host allows it, else the
	// nfc stream. Datastore URLs are looked up only when a disk may use them.
	ranged := func(i int) bool {
		return cfg.Transport == TransportAuto && transport == TransportNFC && plans[i].base != nil
	}
	need := transport == TransportDatastore
	for i := range disks {
		need = need || ranged(i)
	}
	dsURLs := make([]*url.URL, len(disks))
	if need {
		if dsURLs, _, err = b.diskURLs(ctx, snapRef, disks, TransportDatastore); err != nil {
			res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
			return res
		}
	}
	transports := make([]string, len(disks))
	var nfcDisks []disk
	for i, d := range disks {
		transports[i] = transport
		if !ranged(i) {
			if transport == TransportNFC {
				nfcDisks = append(nfcDisks, d)
			}
			continue
		}
		why := ""
		if d.delta {
			why = "it is a delta of an older snapshot, not a flat extent"
		} else if err := b.probe(ctx, dsURLs[i], plans[i], &w.read); err != nil {
			why = err.Error()
		}
		if why == "" {
			transports[i] = TransportDatastore
			res.Notes = append(res.Notes, fmt.Sprintf("disk %s: changed areas read with ranged datastore reads of the snapshot's disk %s", d.name, d.file))
			continue
		}
		res.Notes = append(res.Notes, fmt.Sprintf("disk %s: ranged datastore reads of the snapshot's disk %s refused (%s): read the nfc export stream instead", d.name, d.file, why))
		nfcDisks = append(nfcDisks, d)
	}
	closeLease := func(error) {}
	urls := dsURLs
	if len(nfcDisks) > 0 {
		var leaseURLs []*url.URL
		leaseURLs, closeLease, err = b.diskURLs(ctx, snapRef, nfcDisks, TransportNFC)
		if err != nil {
			res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
			return res
		}
		urls = slices.Clone(dsURLs)
		k := 0
		for i := range disks {
			if transports[i] == TransportNFC {
				urls[i] = leaseURLs[k]
				k++
			}
		}
	}

	var total, done atomic.Int64
	var mu sync.Mutex // orders progress calls
	report := func() {
		mu.Lock()
		defer mu.Unlock()
		progress(Progress{Phase: "read", Done: done.Load(), Total: total.Load(), BytesRead: w.read.Load()})
	}
	indexes := make([]*repo.Index, len(disks))
	results := make([]DiskResult, len(disks))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.DiskParallel)
	for i, d := range disks {
		g.Go(func() error {
			job := diskJob{disk: d, plan: plans[i], src: &rangeSource{c: b.c, u: urls[i], read: &w.read}}
			if transports[i] == TransportNFC {
				job.src = &streamSource{c: b.c, u: urls[i], size: d.size, read: &w.read}
			}
			total.Add(job.plan.bytes())
			idx, n, err := w.disk(gctx, &job, func(k int64) { done.Add(k); report() })
			if err != nil {
				return fmt.Errorf("disk %s: %w", d.name, err)
			}
			indexes[i] = idx
			results[i] = DiskResult{Name: d.name, Mode: job.plan.mode, Transport: transports[i], Size: d.size, BytesRead: n, Areas: len(job.plan.areas)}
			return nil
		})
	}
	err = g.Wait()
	if err == nil {
		// Stopped (serve shutting down, a job cancelled) as the last read
		// ended: no point.
		err = ctx.Err()
	}
	if err == nil {
		// The claim was lost while the disks were read (another run judged
		// it stale): that run may have removed the snapshot read from as a
		// leftover, so what was read is not trusted.
		if cerr := claim.Check(); cerr != nil {
			err = fmt.Errorf("backup claim lost while the disks were read (another backup may have removed snapshot %s): %w", snapName, cerr)
		}
	}
	closeLease(err)
	res.BytesRead = w.read.Load()
	if err != nil {
		res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
		return res
	}
	res.Disks = results
	res.Mode = ModeFull
	if parent != nil && !slices.ContainsFunc(results, func(d DiskResult) bool { return d.Mode == ModeFull }) && len(results) > 0 {
		res.Mode = ModeIncremental
	}
	p.Source.Mode = res.Mode
	if len(res.Notes) > 0 {
		p.Source.Note = strings.Join(res.Notes, "; ")
	}

	// The disks are read: let the VM off its snapshot before writing.
	if err := removeSnap(); err != nil {
		log.Warn("snapshot not removed: the next backup removes it", "snapshot", snapName, "err", err)
		res.Notes = append(res.Notes, fmt.Sprintf("snapshot %s could not be removed (%v): the next backup removes it", snapName, err))
	}

	progress(Progress{Phase: "save", Done: done.Load(), Total: total.Load(), BytesRead: w.read.Load()})
	if err := cfg.Repo.Sync(); err != nil {
		res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
		return res
	}
	for i, d := range disks {
		digest, err := cfg.Repo.PutIndex(indexes[i])
		if err != nil {
			res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
			return res
		}
		p.Disks = append(p.Disks, repo.Disk{Name: d.name, Controller: d.slot, Adapter: d.adapter, Size: d.size,
			Index: digest, SourceFormat: "vcenter", Thin: d.thin, ChangeID: d.changeID})
	}
	var logical int64
	for _, d := range disks {
		logical += d.size
	}
	p.Stats = repo.IngestStats{BytesLogical: logical, BytesRead: w.read.Load(), BytesNew: w.new.Load(),
		BytesStored: w.stored.Load(), ChunksTotal: countChunks(indexes), ChunksNew: w.newChunks.Load()}
	if err := cfg.Repo.SavePoint(p); err != nil {
		res.Err = fmt.Errorf("vm %s: %w", vi.name, err)
		return res
	}
	res.Point, res.Stats = p, p.Stats
	if cfg.Catalog != nil {
		if err := cfg.Catalog.IndexPoint(ctx, p); err != nil {
			res.Err = fmt.Errorf("vm %s: restore point %s is stored, but the catalog could not record it: %w (run `rekindle catalog rebuild`)", vi.name, p.ID, err)
		}
	}
	progress(Progress{Phase: "done", Done: done.Load(), Total: total.Load(), BytesRead: w.read.Load()})
	log.Info("backup done", "point", p.ID, "mode", res.Mode, "bytes_read", res.BytesRead)
	return res
}

func countChunks(xs []*repo.Index) int64 {
	var n int64
	for _, x := range xs {
		for _, d := range x.Chunks {
			if !d.IsZero() {
				n++
			}
		}
	}
	return n
}

func enableCBT(ctx context.Context, vm *object.VirtualMachine) error {
	on := true
	task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: &on})
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

func removeSnapshot(ctx context.Context, c *vim25.Client, ref types.ManagedObjectReference) error {
	consolidate := true
	res, err := methods.RemoveSnapshot_Task(ctx, c, &types.RemoveSnapshot_Task{This: ref, RemoveChildren: false, Consolidate: &consolidate})
	if err != nil {
		return err
	}
	return object.NewTask(c, res.Returnval).Wait(ctx)
}

// removeLeftovers removes backup snapshots an earlier run left behind.
func (b *backuper) removeLeftovers(ctx context.Context, vm *object.VirtualMachine, vi *vmInfo, res *Result) error {
	if vi.mo.Snapshot == nil {
		return nil
	}
	var left []types.VirtualMachineSnapshotTree
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(ts []types.VirtualMachineSnapshotTree) {
		for _, t := range ts {
			if strings.HasPrefix(t.Name, SnapshotPrefix) {
				left = append(left, t)
			}
			walk(t.ChildSnapshotList)
		}
	}
	walk(vi.mo.Snapshot.RootSnapshotList)
	for _, t := range left {
		if err := removeSnapshot(ctx, b.c, t.Snapshot); err != nil {
			return fmt.Errorf("vm %s: remove snapshot %s left by an earlier backup: %w", vi.name, t.Name, err)
		}
		res.Notes = append(res.Notes, fmt.Sprintf("removed snapshot %s left by an earlier backup", t.Name))
	}
	return nil
}

// removeByName removes a snapshot of ours by name, best effort.
func (b *backuper) removeByName(ctx context.Context, vm *object.VirtualMachine, name string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	ref, err := vm.FindSnapshot(rctx, name)
	if err != nil {
		return
	}
	_ = removeSnapshot(rctx, b.c, *ref)
}

var hwVersionRE = regexp.MustCompile(`^vmx-(\d+)$`)

func identity(name string, c *types.VirtualMachineConfigInfo) repo.VMIdentity {
	id := repo.VMIdentity{Name: name, UUID: c.Uuid, InstanceUUID: c.InstanceUuid, GuestOS: c.GuestId,
		NumCPU: int(c.Hardware.NumCPU), MemoryMB: int(c.Hardware.MemoryMB), Firmware: c.Firmware}
	if m := hwVersionRE.FindStringSubmatch(c.Version); m != nil {
		id.HWVersion, _ = strconv.Atoi(m[1])
	}
	return id
}

// disk is one virtual disk as the snapshot saw it.
type disk struct {
	key      int32
	name     string // base name, the restore point's disk name
	file     string // datastore path of the descriptor, "[ds] folder/name.vmdk"
	size     int64
	slot     string // scsi0:1
	adapter  string
	thin     bool
	changeID string
	delta    bool // the snapshot's disk has a parent: not one flat extent
}

var deltaRE = regexp.MustCompile(`-\d{6}$`)

func diskDevices(c *types.VirtualMachineConfigInfo) ([]disk, error) {
	devs := object.VirtualDeviceList(c.Hardware.Device)
	var out []disk
	names := map[string]bool{}
	for _, d := range devs {
		vd, ok := d.(*types.VirtualDisk)
		if !ok {
			continue
		}
		fb, ok := vd.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			return nil, fmt.Errorf("disk %d has a backing rekindle cannot read (%T): RDMs are not backed up", vd.Key, vd.Backing)
		}
		file := fb.GetVirtualDeviceFileBackingInfo().FileName
		var dp object.DatastorePath
		if !dp.FromString(file) {
			return nil, fmt.Errorf("disk %d: datastore path %q malformed", vd.Key, file)
		}
		name := deltaRE.ReplaceAllString(strings.TrimSuffix(path.Base(dp.Path), ".vmdk"), "")
		if err := repo.ValidName(name); err != nil {
			return nil, fmt.Errorf("disk %s: %w", file, err)
		}
		if names[name] {
			return nil, fmt.Errorf("two disks are named %q (in different folders): rename one", name)
		}
		names[name] = true
		dk := disk{key: vd.Key, name: name, file: file, size: vd.CapacityInBytes}
		if dk.size == 0 {
			dk.size = vd.CapacityInKB * 1024
		}
		if dk.size <= 0 || dk.size > repo.MaxDiskSize {
			return nil, fmt.Errorf("disk %s: size %d out of range", name, dk.size)
		}
		if b, ok := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
			dk.changeID = b.ChangeId
			dk.thin = b.ThinProvisioned != nil && *b.ThinProvisioned
			dk.delta = b.Parent != nil
		} else {
			dk.delta = true
		}
		if ctrl, ok := devs.FindByKey(vd.ControllerKey).(types.BaseVirtualController); ok && vd.UnitNumber != nil {
			kind, adapter := controllerKind(ctrl)
			dk.slot = fmt.Sprintf("%s%d:%d", kind, ctrl.GetVirtualController().BusNumber, *vd.UnitNumber)
			dk.adapter = adapter
		} else {
			return nil, fmt.Errorf("disk %s: no controller slot", name)
		}
		out = append(out, dk)
	}
	return out, nil
}

func controllerKind(c types.BaseVirtualController) (kind, adapter string) {
	switch c.(type) {
	case *types.ParaVirtualSCSIController:
		return "scsi", "pvscsi"
	case *types.VirtualLsiLogicController:
		return "scsi", "lsilogic"
	case *types.VirtualLsiLogicSASController:
		return "scsi", "lsisas1068"
	case *types.VirtualBusLogicController:
		return "scsi", "buslogic"
	case types.BaseVirtualSCSIController:
		return "scsi", "lsilogic"
	case types.BaseVirtualSATAController:
		return "sata", "sata"
	case *types.VirtualNVMEController:
		return "nvme", "nvme"
	case *types.VirtualIDEController:
		return "ide", "ide"
	}
	return "scsi", ""
}

// nics records the VM's network adapters with their networks and, when
// the guest reports them, addresses.
func (b *backuper) nics(ctx context.Context, c *types.VirtualMachineConfigInfo, guest *types.GuestInfo) ([]repo.NIC, error) {
	var out []repo.NIC
	n := 0
	for _, d := range c.Hardware.Device {
		card, ok := d.(types.BaseVirtualEthernetCard)
		if !ok {
			continue
		}
		e := card.GetVirtualEthernetCard()
		nic := repo.NIC{Key: fmt.Sprintf("ethernet%d", n), Type: nicType(d), MAC: e.MacAddress}
		n++
		switch e.AddressType {
		case string(types.VirtualEthernetCardMacTypeManual):
			nic.AddressType = "static"
		case string(types.VirtualEthernetCardMacTypeAssigned):
			nic.AddressType = "vpx"
		default:
			nic.AddressType = "generated"
		}
		switch bk := e.Backing.(type) {
		case *types.VirtualEthernetCardNetworkBackingInfo:
			nic.Network = bk.DeviceName
		case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
			var pg mo.DistributedVirtualPortgroup
			ref := types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: bk.Port.PortgroupKey}
			if err := property.DefaultCollector(b.c).RetrieveOne(ctx, ref, []string{"name"}, &pg); err != nil {
				return nil, fmt.Errorf("nic %s: port group %s: %w", nic.Key, bk.Port.PortgroupKey, err)
			}
			nic.Network = pg.Name
		case *types.VirtualEthernetCardOpaqueNetworkBackingInfo:
			nic.Network = bk.OpaqueNetworkId
		}
		if guest != nil {
			for _, gn := range guest.Net {
				if gn.DeviceConfigId != e.Key && !strings.EqualFold(gn.MacAddress, e.MacAddress) {
					continue
				}
				for _, ip := range gn.IpAddress {
					if !strings.Contains(ip, ":") {
						nic.IPAddress = ip
						break
					}
				}
			}
			if nic.IPAddress == "" && n == 1 && guest.IpAddress != "" && !strings.Contains(guest.IpAddress, ":") {
				nic.IPAddress = guest.IpAddress
			}
		}
		out = append(out, nic)
	}
	return out, nil
}

func nicType(d types.BaseVirtualDevice) string {
	switch d.(type) {
	case *types.VirtualVmxnet3:
		return "vmxnet3"
	case *types.VirtualE1000e:
		return "e1000e"
	case *types.VirtualE1000:
		return "e1000"
	case *types.VirtualVmxnet2:
		return "vmxnet2"
	case *types.VirtualVmxnet:
		return "vmxnet"
	case *types.VirtualPCNet32:
		return "pcnet32"
	}
	return "vmxnet3"
}

// diskURLs opens the transport and returns each disk's URL and a function
// that ends the transport (completing the lease, or aborting it on error).
func (b *backuper) diskURLs(ctx context.Context, snap types.ManagedObjectReference, disks []disk, transport string) ([]*url.URL, func(error), error) {
	urls := make([]*url.URL, len(disks))
	switch transport {
	case TransportDatastore:
		for i, d := range disks {
			var dp object.DatastorePath
			dp.FromString(d.file)
			ds, err := b.finder().Datastore(ctx, dp.Datastore)
			if err != nil {
				return nil, nil, fmt.Errorf("disk %s: datastore %s: %w", d.name, dp.Datastore, err)
			}
			urls[i] = ds.NewURL(strings.TrimSuffix(dp.Path, ".vmdk") + "-flat.vmdk")
		}
		return urls, func(error) {}, nil
	}
	res, err := methods.ExportSnapshot(ctx, b.c, &types.ExportSnapshot{This: snap})
	if err != nil {
		return nil, nil, fmt.Errorf("export snapshot: %w", err)
	}
	lease := nfc.NewLease(b.c, res.Returnval)
	end := func(err error) {
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err != nil {
			_ = lease.Abort(ectx, &types.LocalizedMethodFault{LocalizedMessage: err.Error()})
			return
		}
		_ = lease.Complete(ectx)
	}
	info, err := lease.Wait(ctx, nil)
	if err != nil {
		end(err)
		return nil, nil, fmt.Errorf("export snapshot: lease: %w", err)
	}
	updater := lease.StartUpdater(ctx, info)
	for i, d := range disks {
		base := path.Base(strings.TrimPrefix(d.file[strings.Index(d.file, "]")+1:], " "))
		for _, it := range info.Items {
			if it.Path == base {
				urls[i] = it.URL
			}
		}
		if urls[i] == nil {
			updater.Done()
			end(errors.New("disk missing from lease"))
			return nil, nil, fmt.Errorf("export snapshot: the lease has no URL for disk %s", d.name)
		}
	}
	return urls, func(err error) { updater.Done(); end(err) }, nil
}

// configFiles downloads the .vmx and .nvram.
func (b *backuper) configFiles(ctx context.Context, vi *vmInfo) ([]repo.ConfigFile, error) {
	vmx := vi.mo.Config.Files.VmPathName
	var dp object.DatastorePath
	if !dp.FromString(vmx) {
		return nil, fmt.Errorf("vmx path %q malformed", vmx)
	}
	want := []string{vmx}
	nvram := ""
	if vi.mo.LayoutEx != nil {
		for _, f := range vi.mo.LayoutEx.File {
			if f.Type == string(types.VirtualMachineFileLayoutExFileTypeNvram) {
				nvram = f.Name
			}
		}
	}
	if nvram == "" {
		np := object.DatastorePath{Datastore: dp.Datastore, Path: strings.TrimSuffix(dp.Path, ".vmx") + ".nvram"}
		nvram = np.String()
	}
	want = append(want, nvram)
	var out []repo.ConfigFile
	for i, f := range want {
		var fp object.DatastorePath
		fp.FromString(f)
		ds, err := b.finder().Datastore(ctx, fp.Datastore)
		if err != nil {
			return nil, fmt.Errorf("datastore %s: %w", fp.Datastore, err)
		}
		rc, _, err := ds.Download(ctx, fp.Path, &soap.DefaultDownload)
		if err != nil {
			// A VM that never ran may have no .nvram; any other failure
			// (vCenter restarting) fails the backup rather than leave a
			// point without the file.
			var missing object.DatastoreNoSuchFileError
			if _, serr := ds.Stat(ctx, fp.Path); i > 0 && errors.As(serr, &missing) {
				continue
			}
			return nil, fmt.Errorf("download %s: %w", f, err)
		}
		data, err := io.ReadAll(io.LimitReader(rc, maxConfigFile+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("download %s: %w", f, err)
		}
		if len(data) > maxConfigFile {
			return nil, fmt.Errorf("download %s: larger than %d bytes", f, maxConfigFile)
		}
		out = append(out, repo.ConfigFile{Name: path.Base(fp.Path), Size: int64(len(data)), Inline: data})
	}
	return out, nil
}

const maxConfigFile = 1 << 20

// MarshalJSON writes the duration in seconds (docs/json.md).
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		DurationSeconds float64 `json:"duration_s"`
	}{plain(r), r.Duration.Seconds()})
}
