package drivertest

import (
	"context"
	"testing"

	"github.com/rekindle/rekindle/orchestrator"
)

func TestMemory(t *testing.T) {
	m := NewMemory(true, "h0", "h1")
	Run(t, &Fixture{
		Driver: m, Target: "", Host: "h1", Pool: "/dc/host/c0/Resources",
		Mount:  orchestrator.NFSMount{Server: "10.0.0.5", Path: "/rekindle/rk-1", Name: "rk-1"},
		VMName: "web01", VMXPath: "web01/web01.vmx",
		Spec:      orchestrator.VMSpec{NumCPU: 1, MemoryMB: 256},
		PlayGuest: func(ctx context.Context, vm orchestrator.VMRef) error { return m.SetReady(vm) },
	})
}
