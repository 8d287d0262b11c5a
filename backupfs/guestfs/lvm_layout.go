package guestfs

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/rekindle/rekindle/backupfs/guestfs/lvm"
	"github.com/rekindle/rekindle/backupfs/repo"
)

// addLVM turns the LVM physical volumes of a point's disks into their
// logical volumes: PVs are matched by uuid across all the point's disks, so
// a volume group spread over several disks is read whole. Each visible LV
// becomes a volume lvm-<vg>-<lv> of the disk its first extent lies on; one
// that needs a PV the point does not hold, or a segment type rekindle does
// not read, is listed with a status saying so.
func addLVM(pt *repo.RestorePoint, l *layout, readers map[string]io.ReaderAt, log *slog.Logger) {
	devices := map[string]io.ReaderAt{} // PV uuid -> its bytes
	where := map[string]*Volume{}       // PV uuid -> the volume holding it
	vgs := map[string]*lvm.VG{}         // VG id -> its newest metadata
	var order []string                  // VG ids, as first seen
	for _, d := range pt.Disks {
		for _, v := range l.disks[d.Name] {
			if v.Status != StatusLVM {
				continue
			}
			pv, vg, err := readPV(v)
			if err != nil {
				v.Status, v.Reason = StatusDamaged, fmt.Sprintf("LVM2 physical volume cannot be read: %v", err)
				log.Warn("guest files: LVM physical volume not read", "point", pt.ID, "disk", v.Disk, "volume", v.Name, "err", err)
				continue
			}
			devices[pv.UUID], where[pv.UUID] = v.ra, v
			v.Reason = fmt.Sprintf("LVM2 physical volume %s: it holds no metadata, and no other disk of this restore point names its volume group", pv.UUID)
			if len(pv.Errors) > 0 {
				v.Notes = append(v.Notes, pv.Errors...)
			}
			if vg == nil {
				continue
			}
			if old, ok := vgs[vg.ID]; !ok {
				order = append(order, vg.ID)
				vgs[vg.ID] = vg
			} else if vg.Seqno > old.Seqno {
				vgs[vg.ID] = vg
			}
		}
	}
	taken := map[string]bool{}
	for _, id := range order {
		vg := vgs[id]
		var missing []string
		home := ""
		for _, ref := range vg.PVs {
			v := where[ref.ID]
			if v == nil {
				missing = append(missing, ref.Name)
				continue
			}
			if home == "" {
				home = v.Disk
			}
			v.Reason = fmt.Sprintf("LVM2 physical volume %s (%s) of volume group %s: its logical volumes are listed as lvm-%s-<name>", ref.Name, ref.ID, vg.Name, vg.Name)
		}
		if home == "" {
			continue
		}
		for _, lv := range vg.LVs {
			if !lv.Visible {
				continue // a part of another LV (thin pool data, raid image)
			}
			if v := lvVolume(vg, lv, devices, where, home); !taken[v.Disk+"/"+v.Name] {
				taken[v.Disk+"/"+v.Name] = true
				l.disks[v.Disk] = append(l.disks[v.Disk], v)
			}
		}
		if len(missing) > 0 {
			log.Warn("guest files: LVM volume group incomplete", "point", pt.ID, "vg", vg.Name, "missing", strings.Join(missing, ","))
		}
	}
}

// readPV reads a PV's label and, if it holds metadata, its volume group.
// A panic of the reader is an error of this volume.
func readPV(v *Volume) (pv *lvm.PV, vg *lvm.VG, err error) {
	defer func() {
		if p := recover(); p != nil {
			pv, vg, err = nil, nil, fmt.Errorf("LVM reader panic: %v", p)
		}
	}()
	pv, err = lvm.Read(v.ra, v.Size)
	if err != nil || pv.Text == nil {
		return pv, nil, err
	}
	vg, err = lvm.ParseVG(pv.Text)
	return pv, vg, err
}

func lvVolume(vg *lvm.VG, lv *lvm.LV, devices map[string]io.ReaderAt, where map[string]*Volume, home string) *Volume {
	v := &Volume{Name: "lvm-" + vg.Name + "-" + lv.Name, Disk: home, Kind: KindLV, Size: lv.Size(vg)}
	if ok, why := lv.Supported(); !ok {
		v.Status, v.Reason = StatusUnsupported, fmt.Sprintf("logical volume %s of volume group %s is not read: %s", lv.Name, vg.Name, why)
		return v
	}
	first := lv.Segments[0].Stripes[0]
	var missing []string
	for _, name := range lv.PVsNeeded() {
		ref := pvRef(vg, name)
		if where[ref.ID] == nil {
			missing = append(missing, fmt.Sprintf("%s (uuid %s, last seen as %s)", ref.Name, ref.ID, ref.Device))
		}
	}
	if len(missing) > 0 {
		v.Status = StatusIncomplete
		v.Reason = fmt.Sprintf("logical volume %s of volume group %s needs physical volumes this restore point's disks do not hold: %s; back up every disk of the volume group", lv.Name, vg.Name, strings.Join(missing, ", "))
		return v
	}
	ref := pvRef(vg, first.PV)
	pvVol := where[ref.ID]
	v.Disk, v.Offset = pvVol.Disk, pvVol.Offset+ref.PEStart+first.StartExtent*vg.ExtentSize
	ra, err := vg.Open(lv, devices)
	if err != nil {
		v.Status, v.Reason = StatusDamaged, err.Error()
		return v
	}
	v.ra = ra
	probe(v)
	if v.Status == StatusEmpty {
		v.Reason = "the logical volume holds no filesystem rekindle knows (unformatted, or a format it cannot name); nothing is guessed"
	}
	return v
}

func pvRef(vg *lvm.VG, name string) *lvm.PVRef {
	for _, p := range vg.PVs {
		if p.Name == name {
			return p
		}
	}
	return nil
}
