package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rekindle/rekindle/orchestrator"
)

// RegisterVM records the VM. QEMU reads no .vmx: the hardware comes from
// Reconcile. A VM of that name already registered is returned as is.
func (d *Driver) RegisterVM(ctx context.Context, p orchestrator.Placement) (orchestrator.VMRef, error) {
	if err := checkHost(p.Host); err != nil {
		return "", err
	}
	if err := checkName("vm", p.Name); err != nil {
		return "", err
	}
	if len(d.vmFile(p.Name, "qmp.sock")) > 107 {
		return "", fmt.Errorf("vm %s: QMP socket path %s is longer than a unix socket allows: use a shorter work folder",
			p.Name, d.vmFile(p.Name, "qmp.sock"))
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	if _, err := d.loadVM(p.Name); err == nil {
		return orchestrator.VMRef(p.Name), nil
	} else if !errors.Is(err, orchestrator.ErrNotFound) {
		return "", err
	}
	v := &vmState{Name: p.Name, Host: hostName, Datastore: p.Datastore, VMXPath: p.VMXPath, Pool: p.Pool,
		Folder: p.Folder, Registered: time.Now().UTC()}
	if err := d.saveVM(v); err != nil {
		return "", err
	}
	d.log.Info("vm registered", "vm", p.Name, "host", hostName, "datastore", p.Datastore, "vmx", p.VMXPath)
	return orchestrator.VMRef(p.Name), nil
}

// RegisteredVM returns the VM RegisterVM(p) registered: p.Name when its
// recorded datastore and .vmx are p's, "" otherwise.
func (d *Driver) RegisteredVM(ctx context.Context, p orchestrator.Placement) (orchestrator.VMRef, error) {
	if err := checkName("vm", p.Name); err != nil {
		return "", err
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	v, err := d.loadVM(p.Name)
	if errors.Is(err, orchestrator.ErrNotFound) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	if v.Datastore != p.Datastore || v.VMXPath != p.VMXPath {
		return "", nil
	}
	return orchestrator.VMRef(p.Name), nil
}

// FindVM returns the registered VM named name (its VMRef is its name).
func (d *Driver) FindVM(ctx context.Context, name string) (orchestrator.VMRef, error) {
	if _, err := d.loadVM(name); err != nil {
		return "", err
	}
	return orchestrator.VMRef(name), nil
}

// parseDiskFile splits "[ds] folder/disk.vmdk" into its datastore and path.
func parseDiskFile(file string) (ds, rel string, err error) {
	rest, ok := strings.CutPrefix(file, "[")
	if ok {
		ds, rel, ok = strings.Cut(rest, "] ")
	}
	rel = strings.TrimLeft(rel, "/")
	if !ok || ds == "" || rel == "" || path.Clean(rel) != rel || strings.HasPrefix(rel, "../") {
		return "", "", fmt.Errorf("disk file %q is not \"[datastore] folder/disk.vmdk\"", file)
	}
	return ds, rel, nil
}

// flatExtent is the extent QEMU opens for a descriptor: "<disk>-flat.vmdk"
// beside "<disk>.vmdk" (a monolithicFlat descriptor does not open over
// nfs://). Other files (raw images) are opened as they are.
func flatExtent(rel string) (extent, disk string) {
	base := path.Base(rel)
	if b, ok := strings.CutSuffix(base, ".vmdk"); ok {
		return path.Join(path.Dir(rel), b+"-flat.vmdk"), b
	}
	return rel, strings.TrimSuffix(base, path.Ext(base))
}

// nfsURL is the libnfs URL of a file in a datastore.
func nfsURL(m *mountState, rel string) string {
	host := m.Server
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	u := url.URL{Scheme: "nfs", Host: host, Path: path.Join(m.Path, rel)}
	return u.String()
}

// Reconcile records the VM's hardware; QEMU gets it at the next power-on.
// A disk already relocated off the datastore keeps its new place; a
// running VM's disks cannot change.
func (d *Driver) Reconcile(ctx context.Context, vm orchestrator.VMRef, spec orchestrator.VMSpec) error {
	name := string(vm)
	var disks []diskState
	for i, ds := range spec.Disks {
		store, rel, err := parseDiskFile(ds.File)
		if err != nil {
			return fmt.Errorf("vm %s: %w", name, err)
		}
		extent, disk := flatExtent(rel)
		dk := diskState{ID: "disk" + strconv.Itoa(i), Name: disk, File: ds.File, Datastore: store, Extent: extent,
			Controller: ds.Controller, Adapter: ds.Adapter, SizeBytes: ds.SizeBytes}
		if m, err := d.loadMount(store); err == nil {
			dk.URL = nfsURL(m, extent)
		}
		disks = append(disks, dk)
	}
	running := d.running(name)
	_, err := d.updateVM(name, func(v *vmState) error {
		if running && !slices.EqualFunc(v.Disks, disks, func(a, b diskState) bool { return a.File == b.File }) {
			return fmt.Errorf("vm %s runs: its disks cannot change until it is powered off", name)
		}
		for i := range disks {
			for _, old := range v.Disks {
				if old.File == disks[i].File && old.Local != "" {
					disks[i].Local = old.Local
				}
			}
			if disks[i].Local == "" && disks[i].URL == "" {
				return fmt.Errorf("vm %s: disk %s: datastore %s is not mounted on %s", name, disks[i].File, disks[i].Datastore, hostName)
			}
		}
		v.NumCPU, v.MemoryMB, v.Disks, v.NICs = spec.NumCPU, spec.MemoryMB, disks, spec.NICs
		return nil
	})
	return err
}

// pid returns the QEMU pid of the VM when it runs, else 0. The pid file is
// QEMU's own (written at start, removed at exit); the process must still
// carry that pid file on its command line, so a recycled pid is not
// mistaken for the VM.
func (d *Driver) pid(name string) int {
	b, err := os.ReadFile(d.vmFile(name, "qemu.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if !alive(pid) {
		return 0
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !bytes.Contains(cmdline, []byte("\x00-pidfile\x00"+d.vmFile(name, "qemu.pid")+"\x00")) {
		return 0
	}
	return pid
}

// alive reports whether pid exists and is not a zombie (an init that does
// not reap would otherwise keep a dead QEMU "running").
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}

func (d *Driver) running(name string) bool { return d.pid(name) != 0 }

// qemuArgs is the command line that runs v.
func (d *Driver) qemuArgs(v *vmState) ([]string, error) {
	mem := v.MemoryMB
	if mem <= 0 {
		mem = 256
	}
	if d.cfg.MemoryMB > 0 {
		mem = min(mem, d.cfg.MemoryMB)
	}
	cpus := min(max(v.NumCPU, 1), runtime.NumCPU())
	args := []string{
		"-name", optEscape(v.Name),
		"-machine", "pc", "-accel", "tcg",
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-display", "none", "-nodefaults", "-no-reboot",
		"-serial", "file:" + d.vmFile(v.Name, "serial.log"),
		"-qmp", "unix:" + optEscape(d.vmFile(v.Name, "qmp.sock")) + ",server=on,wait=off",
		"-pidfile", d.vmFile(v.Name, "qemu.pid"),
		"-D", d.vmFile(v.Name, "qemu.log"),
		"-daemonize",
	}
	// The agent's channel is there whatever this driver's readiness: a
	// session made with --qemu-ready agent may be resumed by a process
	// started without it.
	args = append(args, d.agentArgs(v.Name)...)
	if len(v.Disks) == 0 {
		return nil, fmt.Errorf("vm %s has no disks: reconcile it first", v.Name)
	}
	for _, dk := range v.Disks {
		drive := "if=virtio,id=" + dk.ID + ",format=raw"
		if dk.Local != "" {
			drive += ",file.driver=file,file.filename=" + optEscape(dk.Local)
		} else {
			m, err := d.loadMount(dk.Datastore)
			if err != nil {
				return nil, fmt.Errorf("vm %s: disk %s: datastore %s is not mounted on %s: %w", v.Name, dk.File, dk.Datastore, hostName, err)
			}
			// The same as file=nfs://server/path, without URL escaping:
			// QEMU mounts the path's folder and opens its last element.
			drive += ",file.driver=nfs,file.server.type=inet,file.server.host=" + optEscape(m.Server) +
				",file.path=" + optEscape(path.Join(m.Path, dk.Extent))
		}
		// An I/O error pauses the VM rather than reach the guest, as an
		// export that went away does on ESXi; PowerOn resumes it.
		args = append(args, "-drive", drive+",werror=stop,rerror=stop")
	}
	for _, n := range v.NICs {
		backend, ok := d.cfg.Networks[n.Network]
		if !ok {
			d.log.Warn("nic left out: its network has no QEMU backend (Config.Networks)", "vm", v.Name, "nic", n.Key, "network", n.Network)
			continue
		}
		nic := backend + ",model=" + nicModel(n.Type)
		if n.MAC != "" {
			nic += ",mac=" + n.MAC
		}
		args = append(args, "-nic", nic)
	}
	return args, nil
}

// nicModel maps a vSphere adapter type to a QEMU NIC model.
func nicModel(t string) string {
	switch t {
	case "vmxnet3", "e1000", "e1000e":
		return t
	}
	return "virtio-net-pci"
}

// optEscape doubles commas, QEMU's option separator.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// PowerOn starts the VM's QEMU, detached, and returns once QEMU has opened
// its disks. A VM that runs already is left running (resumed if paused).
func (d *Driver) PowerOn(ctx context.Context, vm orchestrator.VMRef) error {
	name := string(vm)
	unlock, err := d.lockVM(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	v, err := d.loadVM(name)
	if err != nil {
		return err
	}
	if pid := d.pid(name); pid != 0 {
		return d.ensureRunning(ctx, name, pid)
	}
	args, err := d.qemuArgs(v)
	if err != nil {
		return err
	}
	// A console log of an earlier boot must not make this one look ready.
	for _, f := range []string{"qemu.pid", "qmp.sock", "qga.sock", "serial.log"} {
		if err := os.Remove(d.vmFile(name, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("vm %s: %w", name, err)
		}
	}
	if _, err := d.updateVM(name, func(v *vmState) error {
		v.Boots++
		v.PoweredOn, v.Ready, v.PoweredOff, v.PID = time.Now().UTC(), time.Time{}, time.Time{}, 0
		return nil
	}); err != nil {
		return err
	}
	// QEMU detaches once its devices are open; its own messages go to
	// qemu.log (-D), which it truncates at start.
	cmd := exec.CommandContext(ctx, d.cfg.QEMU, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	d.log.Info("powering on", "vm", name, "host", hostName, "args", strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("vm %s: start QEMU: %w: %s", name, err, d.logTail(name))
	}
	pid := d.pid(name)
	if pid == 0 {
		return fmt.Errorf("vm %s: QEMU exited right after starting: %s", name, d.logTail(name))
	}
	_, err = d.updateVM(name, func(v *vmState) error {
		v.PID = pid
		return nil
	})
	return err
}

// ensureRunning resumes a VM whose QEMU is alive but paused (an I/O error
// on a disk pauses it).
func (d *Driver) ensureRunning(ctx context.Context, name string, pid int) error {
	mon, err := dialQMP(ctx, d.vmFile(name, "qmp.sock"))
	if err != nil {
		// Alive but its monitor is busy elsewhere: it runs; start nothing.
		d.log.Warn("vm runs; its monitor did not answer", "vm", name, "pid", pid, "err", err)
		return nil
	}
	defer mon.close()
	var st status
	if err := mon.run(ctx, "query-status", nil, &st); err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	switch st.Status {
	case "running":
		return nil
	case "paused", "io-error", "prelaunch":
		if err := mon.run(ctx, "cont", nil, nil); err != nil {
			return fmt.Errorf("vm %s was %s: %w", name, st.Status, err)
		}
		d.log.Info("vm resumed", "vm", name, "was", st.Status)
		return nil
	}
	return fmt.Errorf("vm %s: QEMU (pid %d) is alive in state %q: power it off first", name, pid, st.Status)
}

// logTail is the end of QEMU's own log, for error messages.
func (d *Driver) logTail(name string) string {
	b, _ := os.ReadFile(d.vmFile(name, "qemu.log"))
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(b) == 0 {
		return "(QEMU logged nothing)"
	}
	return string(b)
}

// PowerOff stops the VM's QEMU, escalating (see stop): the guest's own
// shutdown, QMP quit, SIGTERM, SIGKILL. A VM that is off already is not an
// error.
func (d *Driver) PowerOff(ctx context.Context, vm orchestrator.VMRef) error {
	name := string(vm)
	unlock, err := d.lockVM(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := d.loadVM(name); err != nil {
		return err
	}
	if err := d.stop(ctx, name); err != nil {
		return err
	}
	_, err = d.updateVM(name, func(v *vmState) error {
		if v.PoweredOff.IsZero() {
			v.PoweredOff = time.Now().UTC()
		}
		return nil
	})
	return err
}

func (d *Driver) stop(ctx context.Context, name string) error {
	pid := d.pid(name)
	if pid == 0 {
		return nil
	}
	t := d.cfg.Stop
	// d.pid, not alive: a pid the kernel gave to another process since is
	// not the VM's, and must not be signalled.
	gone := func(within time.Duration) bool {
		return waitFor(ctx, within, func() bool { return d.pid(name) != pid })
	}
	start := time.Now()
	off := func(how string) error {
		after := time.Since(start).Round(time.Millisecond)
		d.log.Info("vm powered off", "vm", name, "pid", pid, "by", how, "after", after)
		orchestrator.Note(ctx, "vm %s: QEMU pid %d ended by %s after %s", name, pid, how, after)
		return nil
	}
	sigName := map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGKILL: "SIGKILL"}
	// Each step gets its timeout; the monitor does not answer when QEMU's
	// main loop is stuck (libnfs reconnecting to an export that is away), and
	// that loop handles SIGTERM too, so SIGKILL ends the escalation.
	qmp := func(cmd string) error {
		qctx, cancel := context.WithTimeout(ctx, t.QMP)
		defer cancel()
		mon, err := dialQMP(qctx, d.vmFile(name, "qmp.sock"))
		if err != nil {
			return err
		}
		defer mon.close()
		return mon.run(qctx, cmd, nil, nil)
	}
	var tried []string
	if t.Powerdown > 0 {
		err := qmp("system_powerdown")
		if err == nil && gone(t.Powerdown) {
			return off("the guest's own shutdown (QMP system_powerdown)")
		}
		tried = append(tried, fmt.Sprintf("system_powerdown (%s)", stepResult(err, t.Powerdown)))
		d.log.Warn("vm stop: the guest did not shut down: QMP quit next", "vm", name, "pid", pid, "step", "system_powerdown", "result", stepResult(err, t.Powerdown))
		orchestrator.Note(ctx, "vm %s: system_powerdown: %s; QMP quit next", name, stepResult(err, t.Powerdown))
	}
	err := qmp("quit")
	if err == nil && gone(t.Quit) || gone(0) {
		return off("QMP quit")
	}
	tried = append(tried, fmt.Sprintf("quit (%s)", stepResult(err, t.Quit)))
	d.log.Warn("vm stop: QMP quit did not end QEMU: signalling it", "vm", name, "pid", pid, "step", "quit", "result", stepResult(err, t.Quit))
	orchestrator.Note(ctx, "vm %s: quit: %s; SIGTERM next", name, stepResult(err, t.Quit))
	for _, s := range []struct {
		sig    syscall.Signal
		within time.Duration
	}{{syscall.SIGTERM, t.Term}, {syscall.SIGKILL, t.Kill}} {
		if gone(0) {
			return off("an earlier step")
		}
		if err := syscall.Kill(pid, s.sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("vm %s: signal QEMU pid %d: %w", name, pid, err)
		}
		if gone(s.within) {
			orchestrator.Note(ctx, "vm %s: %s sent", name, sigName[s.sig])
			return off(s.sig.String())
		}
		tried = append(tried, fmt.Sprintf("%s (no exit within %s)", s.sig, s.within))
		d.log.Warn("vm stop: QEMU did not exit", "vm", name, "pid", pid, "step", s.sig.String(), "waited", s.within)
		orchestrator.Note(ctx, "vm %s: %s: no exit within %s", name, sigName[s.sig], s.within)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("vm %s: power off: %w (tried %s)", name, ctx.Err(), strings.Join(tried, ", "))
	}
	return fmt.Errorf("vm %s: QEMU pid %d does not exit (tried %s)", name, pid, strings.Join(tried, ", "))
}

// stepResult says how a QMP step of the stop ended.
func stepResult(err error, waited time.Duration) string {
	if err != nil {
		return "no answer: " + err.Error()
	}
	return "no exit within " + waited.String()
}

// waitFor polls cond every 50ms until it holds (true) or within passes or
// ctx ends (false).
func waitFor(ctx context.Context, within time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return cond()
		case <-ctx.Done():
			return cond()
		}
	}
}

// Unregister forgets a powered-off VM: its state, console log and socket.
// Relocated disks stay where they are. A VM not registered is not an error.
func (d *Driver) Unregister(ctx context.Context, vm orchestrator.VMRef) error {
	name := string(vm)
	if err := checkName("vm", name); err != nil {
		return err
	}
	unlock, err := d.lockVM(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	if pid := d.pid(name); pid != 0 {
		return fmt.Errorf("vm %s is running (QEMU pid %d): power it off first", name, pid)
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	if err := os.RemoveAll(d.vmDir(name)); err != nil {
		return err
	}
	d.log.Info("vm unregistered", "vm", name)
	return nil
}

// readyPoll is how often WaitReady reads the console log.
const readyPoll = 100 * time.Millisecond

// WaitReady waits for the guest to print the ready marker on its serial
// console and records when it was seen. QEMU has no guest tools here: the
// marker stands for both a heartbeat and an IP address.
func (d *Driver) WaitReady(ctx context.Context, vm orchestrator.VMRef, check orchestrator.ReadyCheck) error {
	name := string(vm)
	v, err := d.loadVM(name)
	if err != nil {
		return err
	}
	if !v.Ready.IsZero() {
		return nil // seen for this boot already
	}
	if v.PoweredOn.IsZero() {
		return fmt.Errorf("vm %s was never powered on", name)
	}
	via, text := d.readiness(check)
	switch {
	case d.ReadyWhat(check) == "":
		return nil // not checked: the VM is powered on, and only that is known
	case via == ReadyAgent:
		return d.waitAgent(ctx, name, v)
	}
	logPath := d.vmFile(name, "serial.log")
	marker := []byte(text)
	var off int64
	found := func() (bool, error) {
		f, err := os.Open(logPath)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		defer f.Close()
		// Read on from a little before where the last look ended, so a
		// marker written in two pieces is found.
		from := max(off-int64(len(marker)), 0)
		b, err := io.ReadAll(io.NewSectionReader(f, from, 1<<62))
		if err != nil {
			return false, err
		}
		off = from + int64(len(b))
		return bytes.Contains(b, marker), nil
	}
	record := func() error { return d.recordReady(name, v, "serial marker") }
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		ok, err := found()
		if err != nil {
			return fmt.Errorf("vm %s: read serial console %s: %w", name, logPath, err)
		}
		if ok {
			return record()
		}
		if !d.running(name) {
			// One last look: the guest may print the marker and power off.
			if ok, _ := found(); ok {
				return record()
			}
			return fmt.Errorf("vm %s: QEMU exited before the guest printed %q on its serial console %s: %s",
				name, text, logPath, d.logTail(name))
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("vm %s: waited %s for the guest to print %q on its serial console %s: %w",
				name, time.Since(v.PoweredOn).Round(time.Second), text, logPath, ctx.Err())
		}
	}
}

// recordReady records that the guest of v is up, seen by how.
func (d *Driver) recordReady(name string, v *vmState, how string) error {
	ready := time.Now().UTC()
	_, err := d.updateVM(name, func(v *vmState) error {
		if v.Ready.IsZero() {
			v.Ready = ready
		}
		return nil
	})
	if err == nil {
		d.log.Info("vm ready", "vm", name, "by", how, "after", ready.Sub(v.PoweredOn).Round(time.Millisecond))
	}
	return err
}

// waitAgent waits for the QEMU guest agent to answer guest-ping on the VM's
// virtio-serial channel.
func (d *Driver) waitAgent(ctx context.Context, name string, v *vmState) error {
	sock := d.vmFile(name, "qga.sock")
	var last error
	for {
		if last = pingAgent(ctx, sock); last == nil {
			return d.recordReady(name, v, "guest agent")
		}
		if !d.running(name) {
			return fmt.Errorf("vm %s: QEMU exited before the guest agent answered guest-ping on %s: %s", name, sock, d.logTail(name))
		}
		select {
		case <-time.After(readyPoll):
		case <-ctx.Done():
			return fmt.Errorf("vm %s: waited %s for the QEMU guest agent to answer guest-ping (virtio-serial port %s, host socket %s; "+
				"is qemu-guest-agent installed and running in the guest?), last try: %v: %w",
				name, time.Since(v.PoweredOn).Round(time.Second), agentPort, sock, last, ctx.Err())
		}
	}
}
