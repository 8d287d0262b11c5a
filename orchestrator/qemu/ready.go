package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"github.com/rekindle/rekindle/orchestrator"
)

// Readiness kinds (Config.Ready).
const (
	ReadyMarker = "marker" // the guest prints Config.ReadyMarker on its serial console
	ReadyAgent  = "agent"  // the QEMU guest agent answers guest-ping
	ReadyNone   = "none"   // not checked: the VM is powered on, not known to be up
)

// agentPort is the virtio-serial port name qemu-guest-agent opens.
const agentPort = "org.qemu.guest_agent.0"

// agentTry bounds one guest-sync + guest-ping exchange: an agent that is not
// running yet leaves the channel silent.
const agentTry = 2 * time.Second

// ReadyMethod is this driver's readiness (Config.Ready, Config.ReadyMarker),
// recorded in each VM of a plan.
func (d *Driver) ReadyMethod() orchestrator.ReadyCheck {
	m := orchestrator.ReadyCheck{Via: d.cfg.Ready}
	if d.cfg.Ready == ReadyMarker {
		m.Marker = d.cfg.ReadyMarker
	}
	return m
}

// readiness is how check is told: the way the session recorded, else this
// driver's own.
func (d *Driver) readiness(check orchestrator.ReadyCheck) (via, marker string) {
	if check.Via == "" {
		return d.cfg.Ready, d.cfg.ReadyMarker
	}
	if check.Via == ReadyMarker && check.Marker == "" {
		return ReadyMarker, d.cfg.ReadyMarker
	}
	return check.Via, check.Marker
}

// ReadyWhat says what WaitReady waits for, for the session's messages; ""
// when readiness is not checked.
func (d *Driver) ReadyWhat(check orchestrator.ReadyCheck) string {
	if !check.Heartbeat && !check.IP {
		return ""
	}
	switch via, marker := d.readiness(check); via {
	case ReadyAgent:
		return "the QEMU guest agent (guest-ping on virtio-serial " + agentPort + ")"
	case ReadyMarker:
		return fmt.Sprintf("%q on the serial console", marker)
	}
	return ""
}

// agentArgs add the guest agent's channel: a virtio-serial port whose host
// end is a unix socket QEMU listens on.
func (d *Driver) agentArgs(name string) []string {
	return []string{
		"-chardev", "socket,id=qga0,path=" + optEscape(d.vmFile(name, "qga.sock")) + ",server=on,wait=off",
		"-device", "virtio-serial-pci,id=vser0",
		"-device", "virtserialport,bus=vser0.0,chardev=qga0,name=" + agentPort,
	}
}

// pingAgent asks the guest agent behind sock for guest-sync (so a stale
// reply left in the channel is skipped) and then guest-ping.
func pingAgent(ctx context.Context, sock string) error {
	ctx, cancel := context.WithTimeout(ctx, agentTry)
	defer cancel()
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	if t, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(t)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	dec := json.NewDecoder(bufio.NewReader(conn))
	id := time.Now().UnixNano() & (1<<53 - 1)
	send := func(cmd string, args any) error {
		b, err := json.Marshal(map[string]any{"execute": cmd, "arguments": args})
		if err == nil {
			_, err = conn.Write(append(b, '\n'))
		}
		return err
	}
	if err := send("guest-sync", map[string]int64{"id": id}); err != nil {
		return err
	}
	for {
		var r struct {
			Return json.RawMessage `json:"return"`
		}
		if err := dec.Decode(&r); err != nil {
			return fmt.Errorf("no answer to guest-sync: %w", err)
		}
		if string(r.Return) == fmt.Sprint(id) {
			break
		}
	}
	if err := send("guest-ping", struct{}{}); err != nil {
		return err
	}
	var r struct {
		Return json.RawMessage `json:"return"`
		Error  *struct {
			Desc string `json:"desc"`
		} `json:"error"`
	}
	if err := dec.Decode(&r); err != nil {
		return fmt.Errorf("no answer to guest-ping: %w", err)
	}
	if r.Error != nil {
		return fmt.Errorf("guest-ping: %s", r.Error.Desc)
	}
	return nil
}

// StopTimeouts bound the steps of PowerOff: the guest's own shutdown (QMP
// system_powerdown, ACPI), QMP quit, SIGTERM, SIGKILL. A negative
// Powerdown skips that step; zero values get the defaults.
type StopTimeouts struct {
	Powerdown time.Duration // default 30s
	Quit      time.Duration // default 15s
	Term      time.Duration // default 5s
	Kill      time.Duration // default 5s
	// QMP bounds the connection and each QMP command (default 5s): a QEMU
	// stuck on an export that went away does not answer.
	QMP time.Duration
}

func (s StopTimeouts) withDefaults() StopTimeouts {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&s.Powerdown, 30*time.Second)
	def(&s.Quit, 15*time.Second)
	def(&s.Term, 5*time.Second)
	def(&s.Kill, 5*time.Second)
	def(&s.QMP, 5*time.Second)
	return s
}
