package qemu

import (
	"context"
	"testing"

	"github.com/rekindle/rekindle/nfsd/datastore"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/drivertest"
	"github.com/rekindle/rekindle/testdata/testvm"
)

// TestConformance runs the driver suite against QEMU, booting the real
// test VM once (the suite's lifecycle test) from a published session.
func TestConformance(t *testing.T) {
	e := newEnv(t, testVM{name: "vm", mode: testvm.ModeIdle})
	info, err := e.svc.Publish(context.Background(), datastore.PublishRequest{VMs: []datastore.PublishVM{{VM: "vm"}}})
	if err != nil {
		t.Fatal(err)
	}
	pt := e.points["vm"]
	spec := orchestrator.VMSpec{NumCPU: 1, MemoryMB: 256}
	for _, d := range pt.Disks {
		spec.Disks = append(spec.Disks, orchestrator.DiskSpec{Controller: d.Controller, Adapter: d.Adapter,
			File: "[" + info.ID + "] vm/" + d.Name + ".vmdk", SizeBytes: d.Size})
	}
	drivertest.Run(t, &drivertest.Fixture{
		Driver: e.drv, Host: hostName, Pool: "",
		Mount:  orchestrator.NFSMount{Server: "127.0.0.1", Path: info.Export, Name: info.ID},
		VMName: "vm", VMXPath: "vm/vm.vmx", Spec: spec,
		ReadyWithin: bootWithin,
	})
}
