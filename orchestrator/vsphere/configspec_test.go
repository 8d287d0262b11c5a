package vsphere

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
)

var (
	dvpgBacking = &types.VirtualEthernetCardDistributedVirtualPortBackingInfo{
		Port: types.DistributedVirtualSwitchPortConnection{SwitchUuid: "50 2a dvs", PortgroupKey: "dvportgroup-11"},
	}
	stdBacking = &types.VirtualEthernetCardNetworkBackingInfo{
		VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "VM Network"},
	}
	otherBacking = &types.VirtualEthernetCardNetworkBackingInfo{
		VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "Isolated"},
	}
	testNetworks = map[string]types.BaseVirtualDeviceBackingInfo{
		"prod-dvpg": dvpgBacking, "VM Network": stdBacking, "Isolated": otherBacking,
	}
)

// bareVM is what the simulator's RegisterVM gives: controllers that every
// VM has, no disk, no NIC.
func bareVM() []types.BaseVirtualDevice {
	return []types.BaseVirtualDevice{
		&types.VirtualIDEController{VirtualController: types.VirtualController{BusNumber: 0, VirtualDevice: types.VirtualDevice{Key: 200}}},
		&types.VirtualIDEController{VirtualController: types.VirtualController{BusNumber: 1, VirtualDevice: types.VirtualDevice{Key: 201}}},
		&types.VirtualPCIController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 100}}},
	}
}

func webSpec() orchestrator.VMSpec {
	return orchestrator.VMSpec{
		NumCPU: 2, MemoryMB: 2048,
		Disks: []orchestrator.DiskSpec{
			{Controller: "scsi0:0", Adapter: "pvscsi", File: "[rekindle] s-1/web01/web01.vmdk"},
			{Controller: "scsi0:1", Adapter: "pvscsi", File: "[rekindle] s-1/web01/web01_1.vmdk"},
			{Controller: "scsi1:0", Adapter: "lsisas1068", File: "[rekindle] s-1/web01/web01_2.vmdk"},
		},
		NICs: []orchestrator.NICSpec{
			{Key: "ethernet1", Network: "VM Network", Type: "e1000e"},
			{Key: "ethernet0", Network: "prod-dvpg", Type: "vmxnet3", MAC: "00:50:56:AA:BB:CC"},
		},
	}
}

// apply does to devices what vCenter does with a config spec's device
// changes: new devices get keys, and references to their temporary keys
// follow.
func apply(t *testing.T, devices []types.BaseVirtualDevice, cs *types.VirtualMachineConfigSpec) []types.BaseVirtualDevice {
	t.Helper()
	out := slices.Clone(devices)
	next := int32(1000)
	for _, d := range out {
		next = max(next, d.GetVirtualDevice().Key+1)
	}
	keys := map[int32]int32{}
	for _, c := range cs.DeviceChange {
		spec := c.GetVirtualDeviceConfigSpec()
		dev := spec.Device.GetVirtualDevice()
		if spec.FileOperation != "" {
			t.Fatalf("device %d: file operation %q: nothing may be created", dev.Key, spec.FileOperation)
		}
		switch spec.Operation {
		case types.VirtualDeviceConfigSpecOperationAdd:
			if dev.Key >= 0 {
				t.Fatalf("new device with key %d", dev.Key)
			}
			keys[dev.Key] = next
			dev.Key = next
			next++
			if k, ok := keys[dev.ControllerKey]; ok {
				dev.ControllerKey = k
			}
			out = append(out, spec.Device)
		case types.VirtualDeviceConfigSpecOperationEdit:
			i := slices.IndexFunc(out, func(d types.BaseVirtualDevice) bool { return d.GetVirtualDevice().Key == dev.Key })
			if i < 0 {
				t.Fatalf("edit of missing device %d", dev.Key)
			}
			out[i] = spec.Device
		case types.VirtualDeviceConfigSpecOperationRemove:
			out = slices.DeleteFunc(out, func(d types.BaseVirtualDevice) bool { return d.GetVirtualDevice().Key == dev.Key })
		}
	}
	return out
}

func TestConfigSpecBareVM(t *testing.T) {
	cs, err := ConfigSpec(bareVM(), webSpec(), testNetworks)
	if err != nil {
		t.Fatal(err)
	}
	if cs.NumCPUs != 2 || cs.MemoryMB != 2048 {
		t.Errorf("CPU %d, memory %d", cs.NumCPUs, cs.MemoryMB)
	}
	devices := object.VirtualDeviceList(apply(t, bareVM(), cs))

	pv := devices.SelectByType((*types.ParaVirtualSCSIController)(nil))
	sas := devices.SelectByType((*types.VirtualLsiLogicSASController)(nil))
	if len(pv) != 1 || len(sas) != 1 {
		t.Fatalf("%d pvscsi, %d lsisas controllers; want 1 each", len(pv), len(sas))
	}
	if bus := pv[0].(types.BaseVirtualController).GetVirtualController().BusNumber; bus != 0 {
		t.Errorf("pvscsi on bus %d", bus)
	}
	if bus := sas[0].(types.BaseVirtualController).GetVirtualController().BusNumber; bus != 1 {
		t.Errorf("lsisas on bus %d", bus)
	}
	want := map[string]struct {
		ctrl int32
		unit int32
	}{
		"[rekindle] s-1/web01/web01.vmdk":   {pv[0].GetVirtualDevice().Key, 0},
		"[rekindle] s-1/web01/web01_1.vmdk": {pv[0].GetVirtualDevice().Key, 1},
		"[rekindle] s-1/web01/web01_2.vmdk": {sas[0].GetVirtualDevice().Key, 0},
	}
	disks := devices.SelectByType((*types.VirtualDisk)(nil))
	if len(disks) != 3 {
		t.Fatalf("%d disks", len(disks))
	}
	for _, d := range disks {
		disk := d.(*types.VirtualDisk)
		b := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		w, ok := want[b.FileName]
		if !ok || disk.ControllerKey != w.ctrl || *disk.UnitNumber != w.unit || b.DiskMode != "persistent" {
			t.Errorf("disk %s on %d:%d", b.FileName, disk.ControllerKey, *disk.UnitNumber)
		}
	}

	nics := devices.SelectByType((*types.VirtualEthernetCard)(nil))
	if len(nics) != 2 {
		t.Fatalf("%d NICs", len(nics))
	}
	// ethernet0 first, whatever the order of the spec.
	vmx, ok := nics[0].(*types.VirtualVmxnet3)
	if !ok || vmx.Backing != dvpgBacking || vmx.MacAddress != "00:50:56:aa:bb:cc" || vmx.AddressType != "manual" {
		t.Errorf("ethernet0: %#v", nics[0])
	}
	e1k, ok := nics[1].(*types.VirtualE1000e)
	if !ok || e1k.Backing != stdBacking || e1k.MacAddress != "" || e1k.AddressType != "generated" {
		t.Errorf("ethernet1: %#v", nics[1])
	}
	if c := vmx.Connectable; c == nil || !c.StartConnected {
		t.Errorf("ethernet0 does not start connected")
	}

	// Reconciling again changes no device.
	again, err := ConfigSpec(devices, webSpec(), testNetworks)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.DeviceChange) != 0 {
		t.Errorf("second pass: %d device changes", len(again.DeviceChange))
	}
}

func TestConfigSpecEdits(t *testing.T) {
	unit := func(u int32) *int32 { return &u }
	lsi := &types.VirtualLsiLogicController{VirtualSCSIController: types.VirtualSCSIController{
		VirtualController: types.VirtualController{BusNumber: 0, VirtualDevice: types.VirtualDevice{Key: 1000}}}}
	pv := &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
		VirtualController: types.VirtualController{BusNumber: 0, VirtualDevice: types.VirtualDevice{Key: 1000}}}}
	disk := func(file string, u int32) *types.VirtualDisk {
		return &types.VirtualDisk{VirtualDevice: types.VirtualDevice{Key: 2000 + u, ControllerKey: 1000, UnitNumber: unit(u),
			Backing: &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: file}}}}
	}
	nic := func(key int32, mac string, b types.BaseVirtualDeviceBackingInfo) *types.VirtualVmxnet3 {
		n := &types.VirtualVmxnet3{}
		n.Key, n.MacAddress, n.Backing, n.AddressType = key, mac, b, "generated"
		return n
	}
	oneDisk := func(ctrl, file string) orchestrator.VMSpec {
		return orchestrator.VMSpec{Disks: []orchestrator.DiskSpec{{Controller: ctrl, Adapter: "pvscsi", File: file}}}
	}
	oneNIC := func(n orchestrator.NICSpec) orchestrator.VMSpec {
		return orchestrator.VMSpec{NICs: []orchestrator.NICSpec{n}}
	}

	tests := []struct {
		name    string
		current []types.BaseVirtualDevice
		spec    orchestrator.VMSpec
		want    []string // "<op> <device type> <key>", in order
	}{
		{
			name:    "disk attached on another slot is left alone",
			current: []types.BaseVirtualDevice{pv, disk("[ds]   a/b.vmdk", 3)},
			spec:    oneDisk("scsi0:0", "[ds] a/b.vmdk"),
		},
		{
			name:    "disk on the slot is pointed at the backup's file",
			current: []types.BaseVirtualDevice{pv, disk("[ds] old.vmdk", 0)},
			spec:    oneDisk("scsi0:0", "[ds] a/b.vmdk"),
			want:    []string{"edit VirtualDisk 2000"},
		},
		{
			name:    "existing controller is used",
			current: []types.BaseVirtualDevice{pv},
			spec:    oneDisk("scsi0:2", "[ds] a/b.vmdk"),
			want:    []string{"add VirtualDisk -1"},
		},
		{
			name:    "NIC matched by MAC moves to the mapped network",
			current: []types.BaseVirtualDevice{nic(4000, "00:50:56:00:00:09", stdBacking), nic(4001, "00:50:56:00:00:01", stdBacking)},
			spec:    oneNIC(orchestrator.NICSpec{Key: "ethernet0", Network: "Isolated", Type: "vmxnet3", MAC: "00:50:56:00:00:01"}),
			want:    []string{"edit VirtualVmxnet3 4001"},
		},
		{
			name:    "NIC matched by position gets the backup's MAC",
			current: []types.BaseVirtualDevice{nic(4000, "00:0c:29:12:34:56", stdBacking)},
			spec:    oneNIC(orchestrator.NICSpec{Key: "ethernet0", Network: "VM Network", Type: "vmxnet3", MAC: "00:50:56:00:00:01"}),
			want:    []string{"edit VirtualVmxnet3 4000"},
		},
		{
			name:    "NIC that matches is left alone",
			current: []types.BaseVirtualDevice{nic(4000, "00:0c:29:12:34:56", stdBacking)},
			spec:    oneNIC(orchestrator.NICSpec{Key: "ethernet0", Network: "VM Network", Type: "vmxnet3"}),
		},
		{
			name:    "NIC of another type is replaced",
			current: []types.BaseVirtualDevice{nic(4000, "00:0c:29:12:34:56", stdBacking)},
			spec:    oneNIC(orchestrator.NICSpec{Key: "ethernet0", Network: "VM Network", Type: "e1000"}),
			want:    []string{"remove VirtualVmxnet3 4000", "add VirtualE1000 -1"},
		},
		{
			name:    "scsi1 added beside scsi0",
			current: []types.BaseVirtualDevice{lsi},
			spec:    orchestrator.VMSpec{Disks: []orchestrator.DiskSpec{{Controller: "scsi1:0", Adapter: "pvscsi", File: "[ds] x.vmdk"}}},
			want:    []string{"add ParaVirtualSCSIController -1", "add VirtualDisk -2"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := ConfigSpec(tc.current, tc.spec, testNetworks)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range cs.DeviceChange {
				s := c.GetVirtualDeviceConfigSpec()
				got = append(got, string(s.Operation)+" "+object.VirtualDeviceList{}.TypeName(s.Device)+" "+strconv.Itoa(int(s.Device.GetVirtualDevice().Key)))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("changes %q, want %q", got, tc.want)
			}
			// Whatever was changed, a second pass changes nothing.
			again, err := ConfigSpec(apply(t, tc.current, cs), tc.spec, testNetworks)
			if err != nil {
				t.Fatal(err)
			}
			if len(again.DeviceChange) != 0 {
				t.Errorf("second pass: %d device changes", len(again.DeviceChange))
			}
		})
	}
}

func TestConfigSpecErrors(t *testing.T) {
	lsi := &types.VirtualLsiLogicController{VirtualSCSIController: types.VirtualSCSIController{
		VirtualController: types.VirtualController{BusNumber: 0, VirtualDevice: types.VirtualDevice{Key: 1000}}}}
	disk := func(ctrl, adapter, file string) orchestrator.DiskSpec {
		return orchestrator.DiskSpec{Controller: ctrl, Adapter: adapter, File: file}
	}
	tests := []struct {
		name    string
		current []types.BaseVirtualDevice
		spec    orchestrator.VMSpec
		want    string
	}{
		{"SCSI unit 7", nil, orchestrator.VMSpec{Disks: []orchestrator.DiskSpec{disk("scsi0:7", "pvscsi", "[ds] a.vmdk")}}, "unit 7"},
		{"unknown slot", nil, orchestrator.VMSpec{Disks: []orchestrator.DiskSpec{disk("usb0:0", "pvscsi", "[ds] a.vmdk")}}, "usb0:0"},
		{"unknown adapter", nil, orchestrator.VMSpec{Disks: []orchestrator.DiskSpec{disk("scsi0:0", "megaraid", "[ds] a.vmdk")}}, "megaraid"},
		{"not a datastore path", nil, orchestrator.VMSpec{Disks: []orchestrator.DiskSpec{disk("scsi0:0", "pvscsi", "/vmfs/a.vmdk")}}, "datastore path"},
		{"two disks on one slot", nil, orchestrator.VMSpec{Disks: []orchestrator.DiskSpec{
			disk("scsi0:0", "pvscsi", "[ds] a.vmdk"), disk("scsi0:0", "pvscsi", "[ds] b.vmdk")}}, "both on scsi0:0"},
		{"controller of another type", []types.BaseVirtualDevice{lsi},
			orchestrator.VMSpec{Disks: []orchestrator.DiskSpec{disk("scsi0:0", "pvscsi", "[ds] a.vmdk")}}, "lsilogic"},
		{"unmapped network", nil, orchestrator.VMSpec{NICs: []orchestrator.NICSpec{{Key: "ethernet0", Network: "nowhere"}}}, "nowhere"},
		{"bad MAC", nil, orchestrator.VMSpec{NICs: []orchestrator.NICSpec{{Key: "ethernet0", Network: "VM Network", MAC: "00:50:56"}}}, "MAC"},
		{"unknown NIC type", nil, orchestrator.VMSpec{NICs: []orchestrator.NICSpec{{Key: "ethernet0", Network: "VM Network", Type: "rtl8139"}}}, "rtl8139"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ConfigSpec(tc.current, tc.spec, testNetworks)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
