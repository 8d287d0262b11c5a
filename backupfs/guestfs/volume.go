package guestfs

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rekindle/rekindle/backupfs/guestfs/ext4"
	"github.com/rekindle/rekindle/backupfs/guestfs/fat"
	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
	"github.com/rekindle/rekindle/backupfs/guestfs/ntfs"
	"github.com/rekindle/rekindle/backupfs/guestfs/partition"
	"github.com/rekindle/rekindle/backupfs/guestfs/xfs"
	"github.com/rekindle/rekindle/backupfs/repo"
)

// Volume is one partition, logical volume or whole-disk filesystem of a
// restore point's disk, and what rekindle can do with it.
type Volume struct {
	Name       string   `json:"name"`                 // p1, whole, lvm-vg0-root
	Disk       string   `json:"disk"`                 // the disk it lies on (its first extent's)
	Kind       string   `json:"kind"`                 // partition, whole-disk, lvm-lv
	Offset     int64    `json:"offset"`               // byte offset on Disk (first extent for LVs)
	Size       int64    `json:"size"`                 // bytes
	Type       string   `json:"type,omitempty"`       // partition type code or GUID
	Filesystem string   `json:"filesystem,omitempty"` // ext, xfs, ntfs, fat, or what was recognised
	Status     string   `json:"status"`               // ok, unsupported, encrypted, damaged, empty, lvm-pv, incomplete, unavailable
	Reason     string   `json:"reason,omitempty"`     // why it is not served
	Notes      []string `json:"notes,omitempty"`      // served, with these caveats
	VG         string   `json:"vg,omitempty"`         // an LV's volume group
	VGUUID     string   `json:"vg_uuid,omitempty"`    // and its uuid (no dashes): groups are told apart by it

	ra io.ReaderAt
}

// Servable reports whether the volume's files are served.
func (v *Volume) Servable() bool { return v.Status == StatusOK }

// Volume kinds.
const (
	KindPartition = "partition"
	KindWholeDisk = "whole-disk"
	KindLV        = "lvm-lv"
)

// WholeDisk names the volume of a disk that holds a filesystem directly.
const WholeDisk = "whole"

// section is a byte range of a disk as an io.ReaderAt.
type section struct {
	r    io.ReaderAt
	off  int64
	size int64
}

func (s *section) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= s.size {
		return 0, io.EOF
	}
	short := false
	if rem := s.size - off; int64(len(p)) > rem {
		p, short = p[:rem], true
	}
	n, err := s.r.ReadAt(p, s.off+off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// Map places bytes [off, off+n) of the section on its disk (gfs.Mapper).
func (s *section) Map(off, n int64) ([]gfs.Piece, error) {
	if off < 0 || off >= s.size {
		return nil, nil
	}
	return []gfs.Piece{{R: s.r, Off: s.off + off, Len: min(n, s.size-off)}}, nil
}

// diskVolumes lists the volumes of one disk: its partitions, or the disk
// itself when it has no partition table.
func diskVolumes(d repo.Disk, dr io.ReaderAt) ([]*Volume, []string, error) {
	t, err := partition.Read(dr, d.Size)
	if errors.Is(err, partition.ErrNoTable) {
		v := &Volume{Name: WholeDisk, Disk: d.Name, Kind: KindWholeDisk, Size: d.Size, ra: dr}
		probe(v)
		if v.Status == StatusEmpty {
			v.Reason = "the disk has no partition table and no filesystem rekindle knows (unformatted, or a format it cannot name)"
		}
		return []*Volume{v}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("disk %s: %w", d.Name, err)
	}
	var vols []*Volume
	for _, p := range t.Partitions {
		v := &Volume{Name: p.Name, Disk: d.Name, Kind: KindPartition, Offset: p.Start, Size: p.Size, Type: p.Type,
			ra: &section{r: dr, off: p.Start, size: p.Size}}
		switch {
		case p.Truncated:
			truncated(v, d.Size)
		case p.Dynamic:
			v.Status, v.Filesystem = StatusUnsupported, "ldm"
			v.Reason = "Windows dynamic disk (LDM): its volumes are not read; restore the whole disk and open it in Windows"
		default:
			probe(v)
		}
		vols = append(vols, v)
	}
	return vols, t.Warnings, nil
}

// truncated marks a partition the disk does not hold whole as damaged,
// naming the filesystem its first bytes show when the disk holds them.
func truncated(v *Volume, disk int64) {
	if v.Offset < disk {
		v.ra = &section{r: v.ra.(*section).r, off: v.Offset, size: disk - v.Offset}
		probe(v)
	}
	v.ra = nil
	v.Status = StatusDamaged
	v.Reason = fmt.Sprintf("the partition table places this partition at bytes %d..%d, but the disk holds only %d bytes "+
		"(a truncated disk image or an incomplete backup): its filesystem is not read; the disk's other volumes are served. "+
		"Back the disk up again, or restore the whole disk and repair it", v.Offset, v.Offset+v.Size, disk)
}

// probe reads the volume's first bytes and names what it holds.
func probe(v *Volume) {
	b := make([]byte, min(probeLen, v.Size))
	n, err := v.ra.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		v.Status, v.Reason = StatusDamaged, fmt.Sprintf("its first bytes cannot be read: %v", err)
		return
	}
	v.Filesystem, v.Status, v.Reason = detect(b[:n])
}

// openVolume opens the filesystem of a volume whose status is ok; label
// names it in the reader's errors, ntfsTimeout bounds each go-ntfs call (0:
// its default). An error makes the volume damaged or unsupported; a
// reader's panic is an error.
func openVolume(v *Volume, label string, ntfsTimeout time.Duration) (r gfs.Reader, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("%w while opening: %v", gfs.ErrPanic, p)
		}
	}()
	switch v.Filesystem {
	case fsExt:
		return ext4.Open(v.ra, v.Size)
	case fsFAT:
		return fat.Open(v.ra, v.Size)
	case fsNTFS:
		return ntfs.OpenLimited(v.ra, v.Size, ntfs.Limits{Name: "ntfs " + label, CallTimeout: ntfsTimeout})
	case fsXFS:
		return xfs.Open(v.ra, v.Size)
	}
	return nil, fmt.Errorf("%s: %w", v.Filesystem, gfs.ErrUnsupported)
}

// failOpen records why a volume could not be opened.
func failOpen(v *Volume, err error) {
	switch {
	case errors.Is(err, gfs.ErrUnsupported):
		v.Status = StatusUnsupported
	case errors.Is(err, gfs.ErrUnavailable):
		v.Status = StatusUnavailable
	default:
		v.Status = StatusDamaged
	}
	v.Reason = fmt.Sprintf("%s filesystem cannot be opened: %v", v.Filesystem, err)
}

// readme is the text of a volume's status entry.
func (v *Volume) readme() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "volume %s of disk %s: %s\n", v.Name, v.Disk, v.Status)
	fmt.Fprintf(&b, "kind: %s, offset %d, size %d bytes", v.Kind, v.Offset, v.Size)
	if v.Type != "" {
		fmt.Fprintf(&b, ", partition type %s", v.Type)
	}
	if v.Filesystem != "" {
		fmt.Fprintf(&b, ", filesystem %s", v.Filesystem)
	}
	if v.VG != "" {
		fmt.Fprintf(&b, ", volume group %s (uuid %s)", v.VG, v.VGUUID)
	}
	b.WriteString("\n")
	if v.Reason != "" {
		fmt.Fprintf(&b, "\n%s\n", v.Reason)
	}
	for _, n := range v.Notes {
		fmt.Fprintf(&b, "\nnote: %s\n", n)
	}
	return []byte(b.String())
}
