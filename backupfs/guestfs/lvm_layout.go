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
//
// Volume groups are told apart by uuid, never by name: two groups of one
// name (two disks each made with a "vg0") are both listed, as
// lvm-<vg>@<first 6 characters of its uuid>-<lv>. Disks cloned from one
// template carry the same PV and VG uuids: each disk holding the group's
// metadata is then read as its own copy of the group, from its own PVs, and
// its LVs are listed under that disk.
func addLVM(pt *repo.RestorePoint, l *layout, readers map[string]io.ReaderAt, log *slog.Logger) {
	byUUID := map[string][]*pvCopy{} // PV uuid -> its copies, in disk order
	metas := map[string][]*pvCopy{}  // VG id -> the copies holding its metadata
	var order []string               // VG ids, as first seen
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
			c := &pvCopy{uuid: pv.UUID, vol: v, vg: vg}
			byUUID[pv.UUID] = append(byUUID[pv.UUID], c)
			v.Reason = fmt.Sprintf("LVM2 physical volume %s: it holds no metadata, and no other disk of this restore point names its volume group", pv.UUID)
			if len(pv.Errors) > 0 {
				v.Notes = append(v.Notes, pv.Errors...)
			}
			if vg == nil {
				continue
			}
			if _, ok := metas[vg.ID]; !ok {
				order = append(order, vg.ID)
			}
			metas[vg.ID] = append(metas[vg.ID], c)
		}
	}
	var groups []*vgCopy
	for _, id := range order {
		groups = append(groups, vgCopies(metas[id], byUUID)...)
	}
	ids := map[string]map[string]bool{} // VG name -> the uuids of groups of that name
	for _, g := range groups {
		if ids[g.vg.Name] == nil {
			ids[g.vg.Name] = map[string]bool{}
		}
		ids[g.vg.Name][g.vg.ID] = true
	}
	taken := map[string]bool{}
	for _, g := range groups {
		vg := g.vg
		prefix := "lvm-" + vg.Name + "-"
		if len(ids[vg.Name]) > 1 {
			prefix = "lvm-" + vg.Name + "@" + vg.ID[:min(6, len(vg.ID))] + "-"
		}
		home := ""
		for _, ref := range vg.PVs {
			c := g.pvs[ref.ID]
			if c == nil {
				continue
			}
			if home == "" {
				home = c.vol.Disk
			}
			c.vol.Reason = fmt.Sprintf("LVM2 physical volume %s (%s) of volume group %s (uuid %s): its logical volumes are listed as %s<name>", ref.Name, ref.ID, vg.Name, vg.ID, prefix)
		}
		if home == "" {
			continue
		}
		for _, lv := range vg.LVs {
			if !lv.Visible {
				continue // a part of another LV (thin pool data, raid image)
			}
			v := lvVolume(g, lv, prefix, home)
			// Never drop a volume: a name taken on its disk (two clones
			// of a group on one disk) gets a number.
			name := v.Name
			for k := 2; taken[v.Disk+"/"+v.Name]; k++ {
				v.Name = fmt.Sprintf("%s~%d", name, k)
			}
			taken[v.Disk+"/"+v.Name] = true
			l.disks[v.Disk] = append(l.disks[v.Disk], v)
		}
		if len(g.missing) > 0 {
			log.Warn("guest files: LVM volume group incomplete", "point", pt.ID, "vg", vg.Name, "uuid", vg.ID, "missing", strings.Join(g.missing, ","))
		}
	}
}

// pvCopy is one PV found on a disk of the point, and the VG metadata it
// holds (nil if none).
type pvCopy struct {
	uuid string
	vol  *Volume
	vg   *lvm.VG
}

// vgCopy is a volume group as it is read: its metadata and, for each of
// its PV uuids, the copy of the PV its LVs are read from.
type vgCopy struct {
	vg        *lvm.VG
	pvs       map[string]*pvCopy
	missing   []string // PVs not at hand
	ambiguous []string // PVs with copies on several disks, none on the group's own
}

// vgCopies returns the copies of one volume group (by uuid) the point
// holds: one, unless disks cloned from one template hold the same PVs,
// then one per disk holding its metadata.
func vgCopies(metas []*pvCopy, byUUID map[string][]*pvCopy) []*vgCopy {
	newest := func(cs []*pvCopy) *lvm.VG {
		var vg *lvm.VG
		for _, c := range cs {
			if vg == nil || c.vg.Seqno > vg.Seqno {
				vg = c.vg
			}
		}
		return vg
	}
	cloned := false
	for _, c := range metas {
		for _, ref := range c.vg.PVs {
			cloned = cloned || len(byUUID[ref.ID]) > 1
		}
	}
	if !cloned {
		g := &vgCopy{vg: newest(metas), pvs: map[string]*pvCopy{}}
		for _, ref := range g.vg.PVs {
			if cs := byUUID[ref.ID]; len(cs) > 0 {
				g.pvs[ref.ID] = cs[0]
			} else {
				g.missing = append(g.missing, ref.Name)
			}
		}
		return []*vgCopy{g}
	}
	var out []*vgCopy
	done := map[string]bool{}
	for _, c := range metas {
		disk := c.vol.Disk
		if done[disk] {
			continue
		}
		done[disk] = true
		var own []*pvCopy
		for _, m := range metas {
			if m.vol.Disk == disk {
				own = append(own, m)
			}
		}
		g := &vgCopy{vg: newest(own), pvs: map[string]*pvCopy{}}
		for _, ref := range g.vg.PVs {
			cs := byUUID[ref.ID]
			var pick *pvCopy
			for _, x := range cs {
				if x.vol.Disk == disk {
					pick = x
					break
				}
			}
			if pick == nil && len(cs) == 1 {
				pick = cs[0]
			}
			switch {
			case pick != nil:
				g.pvs[ref.ID] = pick
			case len(cs) > 1:
				var on []string
				for _, x := range cs {
					on = append(on, x.vol.Disk+"/"+x.vol.Name)
				}
				g.ambiguous = append(g.ambiguous, fmt.Sprintf("%s (uuid %s) is on %s", ref.Name, ref.ID, strings.Join(on, " and ")))
			default:
				g.missing = append(g.missing, ref.Name)
			}
		}
		out = append(out, g)
	}
	return out
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

func lvVolume(g *vgCopy, lv *lvm.LV, prefix, home string) *Volume {
	vg := g.vg
	v := &Volume{Name: prefix + lv.Name, Disk: home, Kind: KindLV, Size: lv.Size(vg), VG: vg.Name, VGUUID: vg.ID}
	if ok, why := lv.Supported(); !ok {
		v.Status, v.Reason = StatusUnsupported, fmt.Sprintf("logical volume %s of volume group %s is not read: %s", lv.Name, vg.Name, why)
		return v
	}
	first := lv.Segments[0].Stripes[0]
	var missing []string
	for _, name := range lv.PVsNeeded() {
		ref := pvRef(vg, name)
		if g.pvs[ref.ID] == nil {
			missing = append(missing, fmt.Sprintf("%s (uuid %s, last seen as %s)", ref.Name, ref.ID, ref.Device))
		}
	}
	if len(missing) > 0 {
		v.Status = StatusIncomplete
		v.Reason = fmt.Sprintf("logical volume %s of volume group %s needs physical volumes this restore point's disks do not hold: %s; back up every disk of the volume group", lv.Name, vg.Name, strings.Join(missing, ", "))
		if len(g.ambiguous) > 0 {
			v.Reason = fmt.Sprintf("logical volume %s of volume group %s needs physical volumes found on several disks (cloned from one template?), none on this group's own disk: %s; nothing is guessed", lv.Name, vg.Name, strings.Join(g.ambiguous, "; "))
		}
		return v
	}
	devices := map[string]io.ReaderAt{}
	for id, c := range g.pvs {
		devices[id] = c.vol.ra
	}
	ref := pvRef(vg, first.PV)
	pvVol := g.pvs[ref.ID].vol
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
