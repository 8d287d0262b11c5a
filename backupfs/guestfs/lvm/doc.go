// Package lvm reads LVM2 volume groups from the disks of a restore point,
// written from LVM2's on-disk format (no code of LVM or another reader is
// used):
//
//   - a physical volume (PV) is a device whose sectors 0-3 hold a label
//     (LABELONE) and a PV header: its uuid, size, data area and metadata
//     areas (ReadLabel, Read);
//   - a metadata area starts with an mda_header pointing into a circular
//     buffer at the current metadata text, checked with LVM's CRC-32
//     variant;
//   - the metadata text, in LVM's configuration language (Parse), describes
//     the volume group (VG): its PVs by uuid, its extent size and its
//     logical volumes (LVs), each a list of segments (ParseVG);
//   - a linear or striped LV's data maps onto extents of one or more PVs,
//     possibly on several disks (VG.Open gives an io.ReaderAt).
//
// Other segment types (thin, raid, mirror, snapshot, cache, ...) are
// described but not read: LV.Supported says so. Every size read from a disk
// is bounded (MaxText, MaxDepth and the limits in vg.go) so a hostile disk
// cannot make a reader allocate without limit.
package lvm
