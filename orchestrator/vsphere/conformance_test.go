package vsphere

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/drivertest"
)

// TestConformance runs the driver suite against the simulator.
func TestConformance(t *testing.T) {
	s := newSim(t)
	d := s.connect(t)
	writeVMFolder(t, filepath.Join(s.nasRoot, "rk-suite", "web01"), "web01")
	drivertest.Run(t, &drivertest.Fixture{
		Driver: d, Target: cluster, Host: "DC0_C0_H1", Pool: cluster,
		Mount:  orchestrator.NFSMount{Server: "10.0.0.5", Path: "/rekindle/rk-suite", Name: "rk-suite"},
		VMName: "web01", VMXPath: "web01/web01.vmx",
		Spec: orchestrator.VMSpec{NumCPU: 2, MemoryMB: 1024,
			Disks: []orchestrator.DiskSpec{{Controller: "scsi0:0", Adapter: "pvscsi", File: "[rk-suite] web01/web01.vmdk", SizeBytes: 1 << 20}},
			NICs:  []orchestrator.NICSpec{{Key: "ethernet0", Network: "VM Network", Type: "vmxnet3", MAC: "00:50:56:3F:00:01"}}},
		PlayGuest: func(ctx context.Context, vm orchestrator.VMRef) error {
			playGuest(t, ctx, d, vm, map[string]string{"guest.toolsRunningStatus": "guestToolsRunning", "guestHeartbeatStatus": "green"})
			return nil
		},
	})
}
