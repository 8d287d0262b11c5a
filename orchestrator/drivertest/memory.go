package drivertest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/rekindle/rekindle/orchestrator"
)

// Memory is an in-memory Driver, a stand-in for a hypervisor with the
// hosts it is given. Guests come up when PowerOn returns unless Manual is
// set (then SetReady plays the guest). Every call is recorded in Calls;
// Fail makes the next call of a method fail.
type Memory struct {
	mu      sync.Mutex
	hosts   []orchestrator.Host
	mounts  map[string]map[string]orchestrator.NFSMount // host -> datastore -> export
	apps    map[string]orchestrator.AppSpec             // path -> spec
	vms     map[orchestrator.VMRef]*MemVM
	next    int
	faults  map[string]error
	calls   []string
	changed chan struct{} // closed and replaced on every change
	manual  bool
}

// MemVM is a VM of a Memory driver.
type MemVM struct {
	Placement orchestrator.Placement
	Spec      orchestrator.VMSpec
	On        bool
	Ready     bool
}

var _ orchestrator.Driver = (*Memory)(nil)

// NewMemory returns a Memory driver with the named hosts, each connected
// with 64 GiB and 32 GHz free. With manual set, guests come up only through
// SetReady.
func NewMemory(manual bool, hosts ...string) *Memory {
	m := &Memory{mounts: map[string]map[string]orchestrator.NFSMount{}, apps: map[string]orchestrator.AppSpec{},
		vms: map[orchestrator.VMRef]*MemVM{}, faults: map[string]error{}, changed: make(chan struct{}), manual: manual}
	for _, h := range hosts {
		m.hosts = append(m.hosts, orchestrator.Host{Name: h, Connected: true, MemFreeMB: 64 << 10, CPUFreeMHz: 32000})
	}
	return m
}

// Fail makes the next call of method (e.g. "PowerOn") return err.
func (m *Memory) Fail(method string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults[method] = err
}

// Calls returns the calls made so far, as "Method arg", in order.
func (m *Memory) Calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

// VMs returns a copy of every registered VM by name.
func (m *Memory) VMs() map[string]MemVM {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]MemVM{}
	for _, v := range m.vms {
		out[v.Placement.Name] = *v
	}
	return out
}

// Apps returns the vApps by path.
func (m *Memory) Apps() map[string]orchestrator.AppSpec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.apps)
}

// Mounts returns the datastores mounted on host.
func (m *Memory) Mounts(host string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.mounts[host]))
}

// SetReady plays the guest of vm: it reports itself up.
func (m *Memory) SetReady(vm orchestrator.VMRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vms[vm]
	if !ok || !v.On {
		return fmt.Errorf("vm %s is not running", vm)
	}
	v.Ready = true
	m.notifyLocked()
	return nil
}

// call records a call and returns an injected fault; m.mu is held.
func (m *Memory) call(method, arg string) error {
	m.calls = append(m.calls, method+" "+arg)
	if err, ok := m.faults[method]; ok {
		delete(m.faults, method)
		return fmt.Errorf("%s %s: %w", method, arg, err)
	}
	return nil
}

func (m *Memory) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *Memory) host(name string) error {
	for _, h := range m.hosts {
		if h.Name == name {
			return nil
		}
	}
	return fmt.Errorf("host %s: %w", name, orchestrator.ErrNotFound)
}

// Name is "memory".
func (m *Memory) Name() string { return "memory" }

// Hosts returns every host; target is ignored.
func (m *Memory) Hosts(ctx context.Context, target string) ([]orchestrator.Host, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("Hosts", target); err != nil {
		return nil, err
	}
	out := slices.Clone(m.hosts)
	for i := range out {
		out[i].Datastores = slices.Sorted(maps.Keys(m.mounts[out[i].Name]))
	}
	return out, nil
}

// MountNFS mounts mt on host.
func (m *Memory) MountNFS(ctx context.Context, host string, mt orchestrator.NFSMount) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("MountNFS", host+" "+mt.Name); err != nil {
		return err
	}
	if err := m.host(host); err != nil {
		return err
	}
	if old, ok := m.mounts[host][mt.Name]; ok {
		if old != mt {
			return fmt.Errorf("datastore %s is already %s:%s", mt.Name, old.Server, old.Path)
		}
		return nil
	}
	if m.mounts[host] == nil {
		m.mounts[host] = map[string]orchestrator.NFSMount{}
	}
	m.mounts[host][mt.Name] = mt
	return nil
}

// UnmountNFS unmounts a datastore no running VM uses.
func (m *Memory) UnmountNFS(ctx context.Context, host, datastore string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("UnmountNFS", host+" "+datastore); err != nil {
		return err
	}
	for _, v := range m.vms {
		if v.On && v.Placement.Host == host && v.Placement.Datastore == datastore {
			return fmt.Errorf("datastore %s is in use by the running VM %s", datastore, v.Placement.Name)
		}
	}
	delete(m.mounts[host], datastore)
	return nil
}

// EnsureApp records the vApp at Parent/Name.
func (m *Memory) EnsureApp(ctx context.Context, app orchestrator.AppSpec) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("EnsureApp", app.Name); err != nil {
		return "", err
	}
	path := strings.TrimRight(app.Parent, "/") + "/" + app.Name
	m.apps[path] = app
	return path, nil
}

// DestroyApp removes an empty vApp.
func (m *Memory) DestroyApp(ctx context.Context, path string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("DestroyApp", path); err != nil {
		return err
	}
	for _, v := range m.vms {
		if v.Placement.Pool == path {
			return fmt.Errorf("vApp %s still holds %s", path, v.Placement.Name)
		}
	}
	delete(m.apps, path)
	return nil
}

// RegisterVM registers a VM from a mounted datastore.
func (m *Memory) RegisterVM(ctx context.Context, p orchestrator.Placement) (orchestrator.VMRef, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("RegisterVM", p.Name); err != nil {
		return "", err
	}
	if err := m.host(p.Host); err != nil {
		return "", err
	}
	if _, ok := m.mounts[p.Host][p.Datastore]; !ok {
		return "", fmt.Errorf("register %s: datastore %s is not mounted on %s", p.Name, p.Datastore, p.Host)
	}
	for ref, v := range m.vms {
		if v.Placement.Name == p.Name {
			return ref, nil
		}
	}
	m.next++
	ref := orchestrator.VMRef(fmt.Sprintf("vm-%d", m.next))
	m.vms[ref] = &MemVM{Placement: p}
	return ref, nil
}

// FindVM looks a VM up by name.
func (m *Memory) FindVM(ctx context.Context, name string) (orchestrator.VMRef, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("FindVM", name); err != nil {
		return "", err
	}
	for ref, v := range m.vms {
		if v.Placement.Name == name {
			return ref, nil
		}
	}
	return "", fmt.Errorf("vm %s: %w", name, orchestrator.ErrNotFound)
}

func (m *Memory) vm(method string, ref orchestrator.VMRef) (*MemVM, error) {
	if err := m.call(method, string(ref)); err != nil {
		return nil, err
	}
	v, ok := m.vms[ref]
	if !ok {
		return nil, fmt.Errorf("vm %s: %w", ref, orchestrator.ErrNotFound)
	}
	return v, nil
}

// Reconcile records the VM's hardware.
func (m *Memory) Reconcile(ctx context.Context, ref orchestrator.VMRef, spec orchestrator.VMSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.vm("Reconcile", ref)
	if err != nil {
		return err
	}
	v.Spec = spec
	return nil
}

// PowerOn starts the VM; its guest is up at once unless the driver is manual.
func (m *Memory) PowerOn(ctx context.Context, ref orchestrator.VMRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.vm("PowerOn", ref)
	if err != nil {
		return err
	}
	if !v.On {
		v.On, v.Ready = true, !m.manual
		m.notifyLocked()
	}
	return nil
}

// PowerOff stops the VM.
func (m *Memory) PowerOff(ctx context.Context, ref orchestrator.VMRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.vm("PowerOff", ref)
	if err != nil {
		return err
	}
	v.On, v.Ready = false, false
	m.notifyLocked()
	return nil
}

// WaitReady waits until the guest is up or ctx ends.
func (m *Memory) WaitReady(ctx context.Context, ref orchestrator.VMRef, check orchestrator.ReadyCheck) error {
	for {
		m.mu.Lock()
		v, err := m.vm("WaitReady", ref)
		if err != nil {
			m.mu.Unlock()
			return err
		}
		ready, changed := v.Ready, m.changed
		m.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("vm %s: guest not up: %w", ref, ctx.Err())
		}
	}
}

// Relocate records the move; progress goes straight to 100.
func (m *Memory) Relocate(ctx context.Context, ref orchestrator.VMRef, datastore string, progress func(pct int)) error {
	m.mu.Lock()
	v, err := m.vm("Relocate", ref)
	if err == nil {
		v.Placement.Datastore = datastore
	}
	m.mu.Unlock()
	if err == nil && progress != nil {
		progress(100)
	}
	return err
}

// Unregister removes the VM; a missing one is success.
func (m *Memory) Unregister(ctx context.Context, ref orchestrator.VMRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("Unregister", string(ref)); err != nil {
		return err
	}
	if v, ok := m.vms[ref]; ok && v.On {
		return fmt.Errorf("vm %s is running: power it off first", v.Placement.Name)
	}
	delete(m.vms, ref)
	return nil
}
