package vsphere

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/session/keepalive"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
)

// Config says how to reach vCenter.
type Config struct {
	// URL is the vCenter address: "vc.example.com", "https://vc/sdk".
	// Credentials in it are used when Username is empty, and never printed.
	URL      string
	Username string
	Password string
	// Insecure skips certificate verification.
	Insecure bool
	// Thumbprint pins the server certificate by its SHA-256 or SHA-1
	// thumbprint ("AB:CD:..."), as ESXi, vCenter and govc display it.
	Thumbprint string
	// CAFile is a PEM file of the CAs to trust instead of the system's.
	CAFile string
	// Datacenter is the datacenter's name or path; empty means the only one.
	Datacenter string
}

// keepAliveIdle is how often an idle session is touched so that vCenter
// (30 minutes idle timeout by default) keeps it during long waits.
const keepAliveIdle = 5 * time.Minute

// Driver is the orchestrator's vSphere driver. It is safe for concurrent use.
type Driver struct {
	c      *vim25.Client
	sm     *session.Manager // nil when the caller owns the session (New)
	log    *slog.Logger
	dc     *object.Datacenter
	dcPath string
	pc     *property.Collector
}

var _ orchestrator.Driver = (*Driver)(nil)

// Connect logs in to vCenter and selects the datacenter. Close logs out.
func Connect(ctx context.Context, cfg Config, logger *slog.Logger) (*Driver, error) {
	u, err := soap.ParseURL(cfg.URL)
	if err != nil || u == nil {
		// url.Parse errors quote the URL, credentials included.
		return nil, errors.New("vCenter URL is not valid")
	}
	user := u.User
	u.User = nil
	if cfg.Username != "" {
		user = url.UserPassword(cfg.Username, cfg.Password)
	}
	where := u.String() // without credentials, for errors and logs

	sc := soap.NewClient(u, cfg.Insecure)
	if cfg.Thumbprint != "" {
		sc.SetThumbprint(u.Host, cfg.Thumbprint)
	}
	if cfg.CAFile != "" {
		if err := sc.SetRootCAs(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("connect to vCenter %s: CA file %s: %w", where, cfg.CAFile, err)
		}
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("connect to vCenter %s: %w", where, certificateError(ctx, u.Host, cfg.Thumbprint, err))
	}
	c.RoundTripper = keepalive.NewHandlerSOAP(sc, keepAliveIdle, nil)
	sm := session.NewManager(c)
	if err := sm.Login(ctx, user); err != nil {
		return nil, vcErr(err, "log in to vCenter %s as %q", where, user.Username())
	}
	d, err := New(ctx, c, cfg.Datacenter, logger)
	if err != nil {
		_ = sm.Logout(context.WithoutCancel(ctx))
		return nil, err
	}
	d.sm = sm
	d.log.Info("connected to vCenter", "url", where, "datacenter", d.dcPath)
	return d, nil
}

// New makes a Driver over an existing, logged-in client (tests, or a caller
// that manages its own session). datacenter is a name or path; empty means
// the only one.
func New(ctx context.Context, c *vim25.Client, datacenter string, logger *slog.Logger) (*Driver, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := find.NewFinder(c, false)
	dc, err := f.DatacenterOrDefault(ctx, datacenter)
	if err != nil {
		return nil, vcErr(err, "find datacenter %q", datacenter)
	}
	return &Driver{
		c:      c,
		log:    logger.With("driver", "vsphere"),
		dc:     dc,
		dcPath: dc.InventoryPath,
		pc:     property.DefaultCollector(c),
	}, nil
}

// Close logs out of a session that Connect opened.
func (d *Driver) Close(ctx context.Context) error {
	if d.sm == nil {
		return nil
	}
	if err := d.sm.Logout(ctx); err != nil {
		return vcErr(err, "log out of vCenter")
	}
	return nil
}

// Name is "vsphere".
func (d *Driver) Name() string { return "vsphere" }

// Client is the underlying vSphere API client, for callers that need more
// than the Driver interface.
func (d *Driver) Client() *vim25.Client { return d.c }

// Datacenter is the inventory path of the driver's datacenter ("/DC0").
func (d *Driver) Datacenter() string { return d.dcPath }

// hostPath makes p absolute, relative to the datacenter's host folder.
func (d *Driver) hostPath(p string) string {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p)
	}
	return path.Join(d.dcPath, "host", p)
}

// vmFolderPath makes p absolute, relative to the datacenter's vm folder.
func (d *Driver) vmFolderPath(p string) string {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p)
	}
	return path.Join(d.dcPath, "vm", p)
}

// lookupKey is what the driver keeps in a run's memo
// (orchestrator.WithMemo): the reference (or backing) of an object of kind
// by name or inventory path, on this driver's vCenter.
type lookupKey struct {
	d          *Driver
	kind, name string
}

// lookupPath finds the object at an absolute inventory path, once per run
// (orchestrator.Memoize).
func (d *Driver) lookupPath(ctx context.Context, p string) (types.ManagedObjectReference, error) {
	return orchestrator.Memoize(ctx, lookupKey{d, "path", p}, func() (types.ManagedObjectReference, error) {
		return d.searchPath(ctx, p)
	})
}

// forgetPath drops what the run's memo holds for inventory path p (an
// object removed).
func (d *Driver) forgetPath(ctx context.Context, p string) {
	orchestrator.Forget(ctx, lookupKey{d, "path", p})
	orchestrator.Forget(ctx, lookupKey{d, "pool", p})
}

func (d *Driver) searchPath(ctx context.Context, p string) (types.ManagedObjectReference, error) {
	si := object.NewSearchIndex(d.c)
	obj, err := si.FindByInventoryPath(ctx, p)
	if err != nil {
		return types.ManagedObjectReference{}, vcErr(err, "look up %s", p)
	}
	if obj == nil {
		return types.ManagedObjectReference{}, fmt.Errorf("%s: %w", p, orchestrator.ErrNotFound)
	}
	return obj.Reference(), nil
}

// byName returns the objects of kind in the datacenter named name, in one
// retrieval over a container view.
func (d *Driver) byName(ctx context.Context, kinds []string, name string) ([]types.ManagedObjectReference, error) {
	m := view.NewManager(d.c)
	v, err := m.CreateContainerView(ctx, d.dc.Reference(), kinds, true)
	if err != nil {
		return nil, vcErr(err, "create container view")
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()

	var content []types.ObjectContent
	if err := v.Retrieve(ctx, kinds, []string{"name"}, &content); err != nil {
		return nil, vcErr(err, "list %s", strings.Join(kinds, ", "))
	}
	var refs []types.ManagedObjectReference
	for _, oc := range content {
		for _, p := range oc.PropSet {
			if p.Name == "name" && p.Val == name {
				refs = append(refs, oc.Obj)
			}
		}
	}
	return refs, nil
}

// oneByName is byName for a name that must be unique.
func (d *Driver) oneByName(ctx context.Context, what string, kinds []string, name string) (types.ManagedObjectReference, error) {
	refs, err := d.byName(ctx, kinds, name)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	switch len(refs) {
	case 0:
		return types.ManagedObjectReference{}, fmt.Errorf("%s %q in datacenter %s: %w", what, name, d.dcPath, orchestrator.ErrNotFound)
	case 1:
		return refs[0], nil
	default:
		return types.ManagedObjectReference{}, fmt.Errorf("%s %q is ambiguous in datacenter %s: %d objects have that name", what, name, d.dcPath, len(refs))
	}
}

// host finds a host by name, or by inventory path if name contains a "/",
// once per run (orchestrator.Memoize).
func (d *Driver) host(ctx context.Context, name string) (types.ManagedObjectReference, error) {
	return orchestrator.Memoize(ctx, lookupKey{d, "host", name}, func() (types.ManagedObjectReference, error) {
		return d.findHost(ctx, name)
	})
}

func (d *Driver) findHost(ctx context.Context, name string) (types.ManagedObjectReference, error) {
	if strings.Contains(name, "/") {
		ref, err := d.lookupPath(ctx, d.hostPath(name))
		if err == nil && ref.Type != "HostSystem" {
			return ref, fmt.Errorf("%s is a %s, not a host", name, ref.Type)
		}
		return ref, err
	}
	return d.oneByName(ctx, "host", []string{"HostSystem"}, name)
}

func (d *Driver) datastore(ctx context.Context, name string) (types.ManagedObjectReference, error) {
	return d.oneByName(ctx, "datastore", []string{"Datastore"}, name)
}

func vmRef(vm orchestrator.VMRef) types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "VirtualMachine", Value: string(vm)}
}

// retrieveMissingOK retrieves properties of objs, leaving out objects that
// vanished meanwhile instead of failing the whole retrieval.
func (d *Driver) retrieveMissingOK(ctx context.Context, objs []types.ManagedObjectReference, props []string) ([]types.ObjectContent, error) {
	if len(objs) == 0 {
		return nil, nil
	}
	spec := types.PropertyFilterSpec{ReportMissingObjectsInResults: types.NewBool(true)}
	kinds := map[string]bool{}
	for _, o := range objs {
		if !kinds[o.Type] {
			kinds[o.Type] = true
			spec.PropSet = append(spec.PropSet, types.PropertySpec{Type: o.Type, PathSet: props})
		}
		spec.ObjectSet = append(spec.ObjectSet, types.ObjectSpec{Obj: o})
	}
	res, err := d.pc.RetrieveProperties(ctx, types.RetrieveProperties{SpecSet: []types.PropertyFilterSpec{spec}})
	if err != nil {
		return nil, err
	}
	var out []types.ObjectContent
	for _, oc := range res.Returnval {
		if len(oc.MissingSet) > 0 && len(oc.PropSet) == 0 {
			continue
		}
		out = append(out, oc)
	}
	return out, nil
}

// props turns an ObjectContent's property set into a map.
func props(oc types.ObjectContent) map[string]types.AnyType {
	m := make(map[string]types.AnyType, len(oc.PropSet))
	for _, p := range oc.PropSet {
		m[p.Name] = p.Val
	}
	return m
}

func refList(v types.AnyType) []types.ManagedObjectReference {
	switch x := v.(type) {
	case types.ArrayOfManagedObjectReference:
		return x.ManagedObjectReference
	case []types.ManagedObjectReference:
		return x
	}
	return nil
}
