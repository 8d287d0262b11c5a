package main

import (
	"log/slog"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/qemu"
)

func init() {
	newQEMUDriver = func(workDir string, o qemuOptions) (orchestrator.Driver, error) {
		return qemu.New(qemu.Config{WorkDir: workDir, Ready: o.ready, ReadyMarker: o.marker, Logger: slog.Default()})
	}
}
