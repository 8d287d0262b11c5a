package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rekindle/rekindle/orchestrator"
)

// hostName is the one host this driver offers.
const hostName = "localhost"

// DefaultMemoryCapMB is the memory cap when Config.MemoryMB is 0: plenty for
// small guests, and TCG gains nothing from more.
const DefaultMemoryCapMB = 512

// Config configures a Driver.
type Config struct {
	// WorkDir holds the driver's state, and each VM's console log, QMP
	// socket and pid file. Keep it short: a unix socket path has at most 107
	// bytes.
	WorkDir string
	// QEMU is the emulator binary (default qemu-system-x86_64); QEMUImg
	// copies the disks of powered-off VMs (default qemu-img).
	QEMU    string
	QEMUImg string
	// MemoryMB caps the memory a VM gets (it gets its backed-up memory when
	// that is smaller); 0 means DefaultMemoryCapMB, a negative value no cap.
	MemoryMB int
	// Ready says what "up" means for a VM whose plan waits for its guest:
	// ReadyMarker (the default) waits for ReadyText on the serial console,
	// ReadyAgent for the QEMU guest agent to answer guest-ping on its
	// virtio-serial channel, ReadyNone checks nothing (the VM is then only
	// "powered on", never "up").
	Ready string
	// ReadyMarker is the serial console text that means the guest is up
	// (default "REKINDLE-BOOT-OK").
	ReadyMarker string
	// Stop bounds each step of PowerOff's escalation.
	Stop StopTimeouts
	// Networks maps a network name to a QEMU -nic backend, e.g.
	// "user,restrict=on" or "bridge,br=br0". NICs on other networks are
	// left out (and logged): QEMU has no port groups to look them up in.
	Networks map[string]string
	// MirrorBytesPerSec caps the copy rate of each disk mirror (0: as fast
	// as it goes), so that a migration does not starve the VMs still running
	// from the export.
	MirrorBytesPerSec int64
	Logger            *slog.Logger
}

// Driver runs VMs as QEMU processes on this machine. It is safe for
// concurrent use; its state is in Config.WorkDir, so Drivers in later
// processes carry on with the VMs earlier ones started.
type Driver struct {
	cfg Config
	log *slog.Logger

	stateMu sync.Mutex // read-modify-write of state files

	opsMu sync.Mutex
	ops   map[string]chan struct{} // per VM: one operation (and QMP client) at a time
}

var _ orchestrator.Driver = (*Driver)(nil)

// New checks the configuration and prepares the work folder.
func New(cfg Config) (*Driver, error) {
	if cfg.WorkDir == "" {
		return nil, errors.New("qemu driver: no work folder")
	}
	// QEMU runs in "/" once detached, so every path it gets is absolute.
	wd, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("qemu driver: work folder: %w", err)
	}
	cfg.WorkDir = wd
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.QEMUImg == "" {
		cfg.QEMUImg = "qemu-img"
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = DefaultMemoryCapMB
	}
	if cfg.ReadyMarker == "" {
		cfg.ReadyMarker = "REKINDLE-BOOT-OK"
	}
	switch cfg.Ready {
	case "":
		cfg.Ready = ReadyMarker
	case ReadyMarker, ReadyAgent, ReadyNone:
	default:
		return nil, fmt.Errorf("qemu driver: readiness %q: want %s, %s or %s", cfg.Ready, ReadyMarker, ReadyAgent, ReadyNone)
	}
	cfg.Stop = cfg.Stop.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := exec.LookPath(cfg.QEMU); err != nil {
		return nil, fmt.Errorf("qemu driver: %w (install qemu-system-x86 and qemu-block-extra)", err)
	}
	for _, sub := range []string{"mounts", "apps", "vms"} {
		if err := os.MkdirAll(filepath.Join(wd, sub), 0o755); err != nil {
			return nil, fmt.Errorf("qemu driver: %w", err)
		}
	}
	return &Driver{cfg: cfg, log: cfg.Logger, ops: map[string]chan struct{}{}}, nil
}

// Name is "qemu".
func (d *Driver) Name() string { return "qemu" }

// lockVM serialises operations on one VM: QEMU's QMP socket serves one
// client at a time, and a relocation holds it for minutes.
func (d *Driver) lockVM(ctx context.Context, name string) (func(), error) {
	d.opsMu.Lock()
	ch, ok := d.ops[name]
	if !ok {
		ch = make(chan struct{}, 1)
		d.ops[name] = ch
	}
	d.opsMu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("vm %s: waiting for another operation on it: %w", name, ctx.Err())
	}
}

func checkHost(host string) error {
	if host != hostName && host != "" {
		return fmt.Errorf("host %q: the qemu driver has only %q: %w", host, hostName, orchestrator.ErrNotFound)
	}
	return nil
}

// Hosts returns this machine. target is ignored: QEMU has no clusters.
func (d *Driver) Hosts(ctx context.Context, target string) ([]orchestrator.Host, error) {
	memMB, err := memAvailableMB()
	if err != nil {
		return nil, err
	}
	h := orchestrator.Host{Name: hostName, Connected: true, MemFreeMB: memMB,
		CPUFreeMHz: int64(runtime.NumCPU()) * cpuMHz()}
	ms, err := d.mounts()
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		h.Datastores = append(h.Datastores, m.Name)
	}
	return []orchestrator.Host{h}, nil
}

// memAvailableMB reads MemAvailable from /proc/meminfo.
func memAvailableMB() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("free memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("free memory: /proc/meminfo: %q: %w", rest, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, errors.New("free memory: /proc/meminfo has no MemAvailable")
}

// cpuMHz is the first CPU's clock from /proc/cpuinfo, 1000 when unknown.
func cpuMHz() int64 {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 1000
	}
	for l := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f > 0 {
				return int64(f)
			}
		}
	}
	return 1000
}

// MountNFS records that VMs reach datastore m.Name at m.Server:m.Path, after
// checking that the server's portmapper answers for MOUNT and NFS v3, as
// QEMU's nfs:// driver needs. Recording the same export again succeeds; the
// same name for another export is an error.
func (d *Driver) MountNFS(ctx context.Context, host string, m orchestrator.NFSMount) error {
	if err := checkHost(host); err != nil {
		return err
	}
	if err := checkName("datastore", m.Name); err != nil {
		return err
	}
	if m.Server == "" || !strings.HasPrefix(m.Path, "/") {
		return fmt.Errorf("datastore %s: export %s:%s is not server:/path", m.Name, m.Server, m.Path)
	}
	m.Path = "/" + strings.Trim(m.Path, "/")
	d.stateMu.Lock()
	old, err := d.loadMount(m.Name)
	d.stateMu.Unlock()
	switch {
	case err == nil && old.Server == m.Server && old.Path == m.Path:
		return nil
	case err == nil:
		return fmt.Errorf("datastore %s is already %s:%s on %s, not %s:%s", m.Name, old.Server, old.Path, hostName, m.Server, m.Path)
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	if err := checkPortmapper(ctx, m.Server); err != nil {
		return fmt.Errorf("datastore %s (%s:%s): %w", m.Name, m.Server, m.Path, err)
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	if err := writeJSON(d.mountPath(m.Name), mountState{Name: m.Name, Server: m.Server, Path: m.Path, Mounted: time.Now().UTC()}); err != nil {
		return err
	}
	d.log.Info("datastore mounted", "host", hostName, "datastore", m.Name, "export", m.Server+":"+m.Path)
	return nil
}

// UnmountNFS forgets the datastore, unless a running VM has a disk on it.
func (d *Driver) UnmountNFS(ctx context.Context, host, datastore string) error {
	if err := checkHost(host); err != nil {
		return err
	}
	if err := checkName("datastore", datastore); err != nil {
		return err
	}
	names, err := d.vmNames()
	if err != nil {
		return err
	}
	var users []string
	for _, n := range names {
		v, err := d.loadVM(n)
		if err != nil {
			continue // unregistered meanwhile
		}
		uses := slices.ContainsFunc(v.Disks, func(dk diskState) bool { return dk.Local == "" && dk.Datastore == datastore })
		if uses && d.running(n) {
			users = append(users, n)
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("datastore %s is in use by running VMs %s: power them off or relocate them first", datastore, strings.Join(users, ", "))
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	err = os.Remove(d.mountPath(datastore))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		d.log.Info("datastore unmounted", "host", hostName, "datastore", datastore)
	}
	return err
}

// appPrefix starts the path EnsureApp returns.
const appPrefix = "qemu:/apps/"

// EnsureApp records the vApp (QEMU has none: the orchestrator itself boots
// the members in startup order) and returns "qemu:/apps/<name>".
func (d *Driver) EnsureApp(ctx context.Context, app orchestrator.AppSpec) (string, error) {
	if err := checkName("app", app.Name); err != nil {
		return "", err
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	st := appState{Spec: app, Created: time.Now().UTC()}
	var old appState
	if err := readJSON(d.appPath(app.Name), &old); err == nil {
		st.Created = old.Created
	}
	if err := writeJSON(d.appPath(app.Name), st); err != nil {
		return "", err
	}
	return appPrefix + app.Name, nil
}

// DestroyApp forgets the vApp; a missing one is not an error.
func (d *Driver) DestroyApp(ctx context.Context, path string) error {
	name, ok := strings.CutPrefix(path, appPrefix)
	if !ok || checkName("app", name) != nil {
		return fmt.Errorf("app path %q: not a qemu app (%s<name>)", path, appPrefix)
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	if err := os.Remove(d.appPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
