package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/qemu"
)

func init() {
	newQEMUDriver = func(workDir string, o qemuOptions) (orchestrator.Driver, error) {
		return qemu.New(qemu.Config{WorkDir: workDir, Ready: o.ready, ReadyMarker: o.marker, Logger: slog.Default()})
	}
}

// readyText says how a session tells a VM up, as its plan recorded it.
func readyText(r orchestrator.ReadyCheck) string {
	var w []string
	switch {
	case !r.Heartbeat && !r.IP:
		return "not waited for"
	case r.Via == qemu.ReadyMarker:
		return fmt.Sprintf("marker %q on the serial console", r.Marker)
	case r.Via == qemu.ReadyAgent:
		return "QEMU guest agent (guest-ping)"
	case r.Via == qemu.ReadyNone:
		return "none (powered on only)"
	case r.Heartbeat:
		w = append(w, "guest heartbeat")
	}
	if r.IP {
		w = append(w, "guest IP address")
	}
	return strings.Join(w, " and ")
}
