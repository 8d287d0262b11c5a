package vsphere

import (
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/rekindle/rekindle/orchestrator"
)

// ConfigSpec computes the reconfiguration that gives a VM with devices
// current the hardware of spec. It edits what is there rather than adding
// duplicates, so applying its result and computing again yields no device
// change:
//
//   - CPU count and memory are set when spec gives them.
//   - A disk whose descriptor is already attached is left alone. Otherwise a
//     disk is added on its slot ("scsi0:1": controller scsi bus 0, unit 1),
//     backed by the existing descriptor (no file operation: nothing is
//     created), or the disk already on that slot is pointed at the
//     descriptor. Missing controllers are added: scsi with the adapter type
//     of the disk (pvscsi, lsilogic, lsisas1068, buslogic), sata, nvme. A
//     controller already there with another adapter type is an error.
//   - A NIC is matched to an existing one by MAC address, else by position
//     (the n-th NIC of spec, ordered by "ethernetN", with the n-th unmatched
//     NIC of the VM, ordered by device key). A matched NIC of another type is
//     replaced; one on another network or with another MAC is edited; an
//     unmatched NIC is added. A spec MAC is set as a manual address.
//   - Devices spec does not mention are left alone.
//
// networks maps each NIC's network name to the backing that attaches a NIC
// to it: a standard port group's NetworkBackingInfo or a distributed port
// group's port backing (which needs the switch UUID, hence backings rather
// than network references). The driver gets them from vCenter with
// object.NetworkReference.EthernetCardBackingInfo.
func ConfigSpec(current []types.BaseVirtualDevice, spec orchestrator.VMSpec, networks map[string]types.BaseVirtualDeviceBackingInfo) (*types.VirtualMachineConfigSpec, error) {
	if spec.NumCPU < 0 || spec.MemoryMB < 0 {
		return nil, fmt.Errorf("negative CPU count or memory size")
	}
	cs := &types.VirtualMachineConfigSpec{
		NumCPUs:  int32(spec.NumCPU),
		MemoryMB: int64(spec.MemoryMB),
	}
	b := &specBuilder{devices: object.VirtualDeviceList(current), cs: cs, nextKey: -1}
	for _, d := range current {
		b.nextKey = min(b.nextKey, d.GetVirtualDevice().Key-1)
	}
	if err := b.disks(spec.Disks); err != nil {
		return nil, err
	}
	if err := b.nics(spec.NICs, networks); err != nil {
		return nil, err
	}
	return cs, nil
}

type specBuilder struct {
	devices object.VirtualDeviceList
	cs      *types.VirtualMachineConfigSpec
	nextKey int32 // temporary keys of new devices are negative
}

func (b *specBuilder) newKey() int32 {
	k := b.nextKey
	b.nextKey--
	return k
}

func (b *specBuilder) change(op types.VirtualDeviceConfigSpecOperation, dev types.BaseVirtualDevice) {
	b.cs.DeviceChange = append(b.cs.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: op, Device: dev})
}

// slot is a disk's place: controller kind and bus, unit on that bus.
type slot struct {
	kind string // scsi, sata, nvme, ide
	bus  int32
	unit int32
}

func (s slot) controller() string { return fmt.Sprintf("%s%d", s.kind, s.bus) }

var slotRE = regexp.MustCompile(`^(scsi|sata|nvme|ide)([0-9]+):([0-9]+)$`)

func parseSlot(s string) (slot, error) {
	m := slotRE.FindStringSubmatch(strings.ToLower(strings.TrimSpace(s)))
	if m == nil {
		return slot{}, fmt.Errorf("controller slot %q is not like scsi0:1, sata0:0, nvme0:0 or ide0:0", s)
	}
	bus, _ := strconv.Atoi(m[2])
	unit, _ := strconv.Atoi(m[3])
	sl := slot{kind: m[1], bus: int32(bus), unit: int32(unit)}
	maxBus, maxUnit := int32(3), int32(15)
	switch sl.kind {
	case "scsi":
		if sl.unit == 7 {
			return slot{}, fmt.Errorf("controller slot %q: unit 7 is the SCSI controller's own", s)
		}
		maxUnit = 63
	case "sata":
		maxUnit = 29
	case "nvme":
		maxUnit = 63
	case "ide":
		maxBus, maxUnit = 1, 1
	}
	if sl.bus > maxBus || sl.unit > maxUnit {
		return slot{}, fmt.Errorf("controller slot %q is out of range", s)
	}
	return sl, nil
}

func (b *specBuilder) disks(disks []orchestrator.DiskSpec) error {
	controllers := map[string]int32{} // "scsi0" -> device key
	taken := map[slot]string{}
	for _, disk := range disks {
		sl, err := parseSlot(disk.Controller)
		if err != nil {
			return fmt.Errorf("disk %s: %w", disk.File, err)
		}
		if other, ok := taken[sl]; ok {
			return fmt.Errorf("disks %s and %s are both on %s", other, disk.File, disk.Controller)
		}
		taken[sl] = disk.File
		if _, ok := parseDatastorePath(disk.File); !ok {
			return fmt.Errorf("disk file %q is not a datastore path like \"[ds] dir/disk.vmdk\"", disk.File)
		}

		if existing := b.diskByFile(disk.File); existing != nil {
			continue // attached already, wherever it is
		}

		ctrlKey, ok := controllers[sl.controller()]
		if !ok {
			ctrlKey, err = b.controller(sl, disk.Adapter)
			if err != nil {
				return fmt.Errorf("disk %s: %w", disk.File, err)
			}
			controllers[sl.controller()] = ctrlKey
		}

		backing := &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: disk.File},
			DiskMode:                     string(types.VirtualDiskModePersistent),
		}
		if old := b.diskAt(ctrlKey, sl.unit); old != nil {
			edited := *old
			edited.Backing = backing
			b.change(types.VirtualDeviceConfigSpecOperationEdit, &edited)
			continue
		}
		unit := sl.unit
		// No capacity: vCenter reads it from the existing descriptor.
		b.change(types.VirtualDeviceConfigSpecOperationAdd, &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           b.newKey(),
				ControllerKey: ctrlKey,
				UnitNumber:    &unit,
				Backing:       backing,
			},
		})
	}
	return nil
}

// controller returns the key of the controller for sl, adding it when the VM
// has none.
func (b *specBuilder) controller(sl slot, adapter string) (int32, error) {
	want, err := newController(sl.kind, adapter)
	if err != nil {
		return 0, err
	}
	for _, d := range b.devices {
		c, ok := d.(types.BaseVirtualController)
		if !ok || c.GetVirtualController().BusNumber != sl.bus || controllerKind(d) != sl.kind {
			continue
		}
		if sl.kind == "scsi" && scsiAdapter(d) != scsiAdapter(want) {
			return 0, fmt.Errorf("%s is a %s controller, the backup's is %s; changing it would need the VM's disks detached", sl.controller(), scsiAdapter(d), scsiAdapter(want))
		}
		return d.GetVirtualDevice().Key, nil
	}
	if sl.kind == "ide" {
		return 0, fmt.Errorf("the VM has no %s controller, and IDE controllers cannot be added", sl.controller())
	}
	c := want.(types.BaseVirtualController).GetVirtualController()
	c.Key = b.newKey()
	c.BusNumber = sl.bus
	b.change(types.VirtualDeviceConfigSpecOperationAdd, want)
	return c.Key, nil
}

func newController(kind, adapter string) (types.BaseVirtualDevice, error) {
	switch kind {
	case "scsi":
		scsi := types.VirtualSCSIController{
			SharedBus:          types.VirtualSCSISharingNoSharing,
			ScsiCtlrUnitNumber: 7,
			HotAddRemove:       types.NewBool(true),
		}
		switch strings.ToLower(adapter) {
		case "pvscsi", "paravirtual":
			return &types.ParaVirtualSCSIController{VirtualSCSIController: scsi}, nil
		case "lsilogic", "":
			return &types.VirtualLsiLogicController{VirtualSCSIController: scsi}, nil
		case "lsisas1068", "lsilogicsas", "lsilogic-sas":
			return &types.VirtualLsiLogicSASController{VirtualSCSIController: scsi}, nil
		case "buslogic":
			return &types.VirtualBusLogicController{VirtualSCSIController: scsi}, nil
		}
		return nil, fmt.Errorf("SCSI adapter %q is not one of pvscsi, lsilogic, lsisas1068, buslogic", adapter)
	case "sata":
		return &types.VirtualAHCIController{}, nil
	case "nvme":
		return &types.VirtualNVMEController{}, nil
	case "ide":
		return &types.VirtualIDEController{}, nil
	}
	return nil, fmt.Errorf("controller kind %q is not known", kind)
}

func controllerKind(d types.BaseVirtualDevice) string {
	switch d.(type) {
	case types.BaseVirtualSCSIController:
		return "scsi"
	case types.BaseVirtualSATAController:
		return "sata"
	case *types.VirtualNVMEController:
		return "nvme"
	case *types.VirtualIDEController:
		return "ide"
	}
	return ""
}

func scsiAdapter(d types.BaseVirtualDevice) string {
	switch d.(type) {
	case *types.ParaVirtualSCSIController:
		return "pvscsi"
	case *types.VirtualLsiLogicController:
		return "lsilogic"
	case *types.VirtualLsiLogicSASController:
		return "lsisas1068"
	case *types.VirtualBusLogicController:
		return "buslogic"
	}
	return "scsi"
}

func (b *specBuilder) diskByFile(file string) *types.VirtualDisk {
	want, _ := parseDatastorePath(file)
	for _, d := range b.devices {
		disk, ok := d.(*types.VirtualDisk)
		if !ok {
			continue
		}
		fb, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			continue
		}
		if have, ok := parseDatastorePath(fb.GetVirtualDeviceFileBackingInfo().FileName); ok && have == want {
			return disk
		}
	}
	return nil
}

func (b *specBuilder) diskAt(ctrlKey, unit int32) *types.VirtualDisk {
	for _, d := range b.devices {
		disk, ok := d.(*types.VirtualDisk)
		if ok && disk.ControllerKey == ctrlKey && disk.UnitNumber != nil && *disk.UnitNumber == unit {
			return disk
		}
	}
	return nil
}

// parseDatastorePath normalizes "[ds] dir/file" for comparison.
func parseDatastorePath(s string) (object.DatastorePath, bool) {
	var p object.DatastorePath
	if !p.FromString(s) || p.Datastore == "" || p.Path == "" {
		return p, false
	}
	p.Path = path.Clean(p.Path)
	return p, true
}

var ethernetRE = regexp.MustCompile(`^ethernet([0-9]+)$`)

func (b *specBuilder) nics(nics []orchestrator.NICSpec, networks map[string]types.BaseVirtualDeviceBackingInfo) error {
	// Order the backup's NICs by their ethernetN index, as the guest saw them.
	ordered := slices.Clone(nics)
	index := func(n orchestrator.NICSpec) int {
		if m := ethernetRE.FindStringSubmatch(strings.ToLower(n.Key)); m != nil {
			i, _ := strconv.Atoi(m[1])
			return i
		}
		return 1 << 20
	}
	slices.SortStableFunc(ordered, func(a, b orchestrator.NICSpec) int { return index(a) - index(b) })

	var existing []types.BaseVirtualEthernetCard
	for _, d := range b.devices {
		if c, ok := d.(types.BaseVirtualEthernetCard); ok {
			existing = append(existing, c)
		}
	}
	slices.SortFunc(existing, func(x, y types.BaseVirtualEthernetCard) int {
		return int(x.GetVirtualEthernetCard().Key - y.GetVirtualEthernetCard().Key)
	})

	macs := make([]string, len(ordered))
	for i, n := range ordered {
		if n.MAC == "" {
			continue
		}
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 {
			return fmt.Errorf("NIC %s: MAC address %q is not valid", n.Key, n.MAC)
		}
		macs[i] = hw.String()
	}

	// Match by MAC first, then by position among the rest.
	match := make([]types.BaseVirtualEthernetCard, len(ordered))
	used := map[int32]bool{}
	for i := range ordered {
		if macs[i] == "" {
			continue
		}
		for _, c := range existing {
			card := c.GetVirtualEthernetCard()
			if !used[card.Key] && strings.EqualFold(card.MacAddress, macs[i]) {
				match[i] = c
				used[card.Key] = true
				break
			}
		}
	}
	for i := range ordered {
		if match[i] != nil {
			continue
		}
		for _, c := range existing {
			if key := c.GetVirtualEthernetCard().Key; !used[key] {
				match[i] = c
				used[key] = true
				break
			}
		}
	}

	for i, n := range ordered {
		backing, ok := networks[n.Network]
		if !ok || backing == nil {
			return fmt.Errorf("NIC %s: network %q has no backing (not mapped?)", n.Key, n.Network)
		}
		want, err := newNIC(n.Type)
		if err != nil {
			return fmt.Errorf("NIC %s: %w", n.Key, err)
		}
		old := match[i]
		if old != nil && nicType(old) == nicType(want) {
			card := old.GetVirtualEthernetCard()
			macChange := macs[i] != "" && !strings.EqualFold(card.MacAddress, macs[i])
			if sameBacking(card.Backing, backing) && !macChange {
				continue
			}
			edited := copyNIC(old)
			ec := edited.GetVirtualEthernetCard()
			ec.Backing = backing
			if macChange {
				ec.AddressType = string(types.VirtualEthernetCardMacTypeManual)
				ec.MacAddress = macs[i]
			}
			b.change(types.VirtualDeviceConfigSpecOperationEdit, edited.(types.BaseVirtualDevice))
			continue
		}
		if old != nil {
			// Another adapter type: a NIC's type cannot be edited, replace it.
			b.change(types.VirtualDeviceConfigSpecOperationRemove, old.(types.BaseVirtualDevice))
		}
		card := want.GetVirtualEthernetCard()
		card.Key = b.newKey()
		card.Backing = backing
		card.Connectable = &types.VirtualDeviceConnectInfo{StartConnected: true, AllowGuestControl: true}
		card.AddressType = string(types.VirtualEthernetCardMacTypeGenerated)
		if macs[i] != "" {
			card.AddressType = string(types.VirtualEthernetCardMacTypeManual)
			card.MacAddress = macs[i]
		}
		b.change(types.VirtualDeviceConfigSpecOperationAdd, want.(types.BaseVirtualDevice))
	}
	return nil
}

func newNIC(kind string) (types.BaseVirtualEthernetCard, error) {
	switch strings.ToLower(kind) {
	case "vmxnet3", "":
		return &types.VirtualVmxnet3{}, nil
	case "e1000":
		return &types.VirtualE1000{}, nil
	case "e1000e":
		return &types.VirtualE1000e{}, nil
	case "vmxnet2":
		return &types.VirtualVmxnet2{}, nil
	case "vmxnet":
		return &types.VirtualVmxnet{}, nil
	case "pcnet32", "vlance":
		return &types.VirtualPCNet32{}, nil
	}
	return nil, fmt.Errorf("NIC type %q is not one of vmxnet3, e1000e, e1000, vmxnet2, vmxnet, pcnet32", kind)
}

func nicType(c types.BaseVirtualEthernetCard) string {
	return object.VirtualDeviceList{}.TypeName(c.(types.BaseVirtualDevice))
}

// copyNIC copies a NIC's concrete value, so that an edit does not change the
// caller's device list.
func copyNIC(c types.BaseVirtualEthernetCard) types.BaseVirtualEthernetCard {
	switch x := c.(type) {
	case *types.VirtualVmxnet3:
		y := *x
		return &y
	case *types.VirtualE1000:
		y := *x
		return &y
	case *types.VirtualE1000e:
		y := *x
		return &y
	case *types.VirtualVmxnet2:
		y := *x
		return &y
	case *types.VirtualVmxnet:
		y := *x
		return &y
	case *types.VirtualPCNet32:
		y := *x
		return &y
	case *types.VirtualVmxnet3Vrdma:
		y := *x
		return &y
	case *types.VirtualSriovEthernetCard:
		y := *x
		return &y
	}
	return c
}

func sameBacking(a, b types.BaseVirtualDeviceBackingInfo) bool {
	switch x := a.(type) {
	case *types.VirtualEthernetCardNetworkBackingInfo:
		y, ok := b.(*types.VirtualEthernetCardNetworkBackingInfo)
		if !ok {
			return false
		}
		if x.Network != nil && y.Network != nil {
			return *x.Network == *y.Network
		}
		return x.DeviceName == y.DeviceName
	case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
		y, ok := b.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo)
		return ok && x.Port.SwitchUuid == y.Port.SwitchUuid && x.Port.PortgroupKey == y.Port.PortgroupKey
	case *types.VirtualEthernetCardOpaqueNetworkBackingInfo:
		y, ok := b.(*types.VirtualEthernetCardOpaqueNetworkBackingInfo)
		return ok && x.OpaqueNetworkId == y.OpaqueNetworkId && x.OpaqueNetworkType == y.OpaqueNetworkType
	}
	return false
}
