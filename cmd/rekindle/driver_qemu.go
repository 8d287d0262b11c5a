package main

import (
	"log/slog"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/qemu"
)

func init() {
	newQEMUDriver = func(workDir string) (orchestrator.Driver, error) {
		return qemu.New(qemu.Config{WorkDir: workDir, Logger: slog.Default()})
	}
}
