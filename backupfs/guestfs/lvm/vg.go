package lvm

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// VG is a volume group as its metadata text describes it. Sizes and
// offsets in the text are in 512-byte sectors; here they are bytes.
type VG struct {
	Name       string
	ID         string // no dashes
	Seqno      int64
	ExtentSize int64 // bytes
	PVs        []*PVRef
	LVs        []*LV
}

// PVRef is a physical volume as the VG's metadata names it.
type PVRef struct {
	Name    string // pv0, pv1: the name segments use
	ID      string // no dashes; matches Label.UUID
	Device  string // the device it was on when the metadata was written (a hint)
	PEStart int64  // bytes from the PV's start to its first extent
	PECount int64
}

// LV is a logical volume.
type LV struct {
	Name     string
	ID       string
	Status   []string
	Visible  bool // hidden LVs are parts of others (thin pool data, raid images)
	Segments []*Segment
}

// Segment is a run of an LV's extents.
type Segment struct {
	StartExtent int64
	ExtentCount int64
	Type        string // striped (linear is striped with one stripe), thin, raid1, ...
	StripeSize  int64  // bytes; 0 for one stripe
	Stripes     []Stripe
}

// Stripe is where one stripe of a segment lies.
type Stripe struct {
	PV          string // a PVRef.Name
	StartExtent int64
}

// Size is the LV's size in bytes.
func (lv *LV) Size(vg *VG) int64 {
	var n int64
	for _, s := range lv.Segments {
		n += s.ExtentCount
	}
	return n * vg.ExtentSize
}

// Supported reports whether rekindle reads the LV's data, and if not why.
func (lv *LV) Supported() (bool, string) {
	for _, s := range lv.Segments {
		if s.Type != "striped" {
			return false, fmt.Sprintf("its segment type %q is not read (only linear and striped logical volumes are)", s.Type)
		}
	}
	if len(lv.Segments) == 0 {
		return false, "it has no segments"
	}
	return true, ""
}

// PVsNeeded names the PVs (PVRef.Name) the LV's data lies on.
func (lv *LV) PVsNeeded() []string {
	var out []string
	for _, s := range lv.Segments {
		for _, st := range s.Stripes {
			if !slices.Contains(out, st.PV) {
				out = append(out, st.PV)
			}
		}
	}
	return out
}

// Bounds on what one VG may hold (LVM's own limits are far below).
const (
	maxPVs      = 4096
	maxLVs      = 1 << 16
	maxSegments = 1 << 16
	maxStripes  = 128
	maxSector   = int64(1) << 53 // sectors: 4 EiB, so bytes fit an int64
)

// ParseVG turns metadata text into the volume group it describes.
func ParseVG(text []byte) (*VG, error) {
	root, err := Parse(text)
	if err != nil {
		return nil, err
	}
	var s *Section
	for _, c := range root.Sections {
		if _, ok := c.String("id"); ok && c.Section("physical_volumes") != nil {
			s = c
			break
		}
	}
	if s == nil {
		return nil, fmt.Errorf("%w: no volume group section", ErrSyntax)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("lvm metadata: volume group %s: %w: %s", s.Name, ErrDamaged, fmt.Sprintf(format, a...))
	}
	id, _ := s.String("id")
	vg := &VG{Name: s.Name, ID: normUUID(id)}
	vg.Seqno, _ = s.Int("seqno")
	es, ok := s.Int("extent_size")
	if !ok || es <= 0 || es > 1<<32 {
		return nil, bad("extent_size %d", es)
	}
	vg.ExtentSize = es * sectorSize
	pvs := s.Section("physical_volumes")
	if len(pvs.Sections) > maxPVs {
		return nil, bad("%d physical volumes", len(pvs.Sections))
	}
	for _, p := range pvs.Sections {
		id, ok := p.String("id")
		if !ok {
			return nil, bad("physical volume %s has no id", p.Name)
		}
		start, ok1 := p.Int("pe_start")
		count, ok2 := p.Int("pe_count")
		if !ok1 || !ok2 || start < 0 || start > maxSector || count < 0 || count > maxSector/es {
			return nil, bad("physical volume %s: pe_start %d, pe_count %d", p.Name, start, count)
		}
		dev, _ := p.String("device")
		vg.PVs = append(vg.PVs, &PVRef{Name: p.Name, ID: normUUID(id), Device: dev, PEStart: start * sectorSize, PECount: count})
	}
	if lvs := s.Section("logical_volumes"); lvs != nil {
		if len(lvs.Sections) > maxLVs {
			return nil, bad("%d logical volumes", len(lvs.Sections))
		}
		for _, l := range lvs.Sections {
			lv, err := parseLV(vg, l, es)
			if err != nil {
				return nil, bad("logical volume %s: %v", l.Name, err)
			}
			vg.LVs = append(vg.LVs, lv)
		}
	}
	return vg, nil
}

func parseLV(vg *VG, l *Section, es int64) (*LV, error) {
	id, _ := l.String("id")
	lv := &LV{Name: l.Name, ID: normUUID(id), Status: l.Strings("status")}
	lv.Visible = slices.Contains(lv.Status, "VISIBLE")
	if len(l.Sections) > maxSegments {
		return nil, fmt.Errorf("%d segments", len(l.Sections))
	}
	var next int64
	for _, sg := range l.Sections {
		seg := &Segment{}
		var ok bool
		seg.Type, ok = sg.String("type")
		if !ok {
			return nil, fmt.Errorf("%s has no type", sg.Name)
		}
		seg.StartExtent, _ = sg.Int("start_extent")
		seg.ExtentCount, _ = sg.Int("extent_count")
		if seg.StartExtent != next || seg.ExtentCount <= 0 || seg.ExtentCount > maxSector/es-next {
			return nil, fmt.Errorf("%s: extents %d+%d do not follow the segment before (%d)", sg.Name, seg.StartExtent, seg.ExtentCount, next)
		}
		next += seg.ExtentCount
		lv.Segments = append(lv.Segments, seg)
		if seg.Type != "striped" {
			continue // described, not read: Supported says why
		}
		n, _ := sg.Int("stripe_count")
		arr := sg.Values["stripes"].Array
		if n < 1 || n > maxStripes || int64(len(arr)) != 2*n || seg.ExtentCount%n != 0 {
			return nil, fmt.Errorf("%s: %d stripes, %d values in stripes, %d extents", sg.Name, n, len(arr), seg.ExtentCount)
		}
		if n > 1 {
			ss, _ := sg.Int("stripe_size")
			if ss <= 0 || ss > es || ss&(ss-1) != 0 {
				return nil, fmt.Errorf("%s: stripe_size %d sectors", sg.Name, ss)
			}
			seg.StripeSize = ss * sectorSize
		}
		for i := 0; i < len(arr); i += 2 {
			name, start := arr[i], arr[i+1]
			if !name.IsStr || start.IsStr || start.IsArr || start.Num < 0 {
				return nil, fmt.Errorf("%s: stripe %d is not a PV name and an extent", sg.Name, i/2)
			}
			ref := vg.pv(name.Str)
			if ref == nil {
				return nil, fmt.Errorf("%s: stripe on unknown physical volume %q", sg.Name, name.Str)
			}
			if per := seg.ExtentCount / n; start.Num > ref.PECount || per > ref.PECount-start.Num {
				return nil, fmt.Errorf("%s: stripe %d extents %d+%d pass the end of %s (%d extents)", sg.Name, i/2, start.Num, per, ref.Name, ref.PECount)
			}
			seg.Stripes = append(seg.Stripes, Stripe{PV: name.Str, StartExtent: start.Num})
		}
	}
	return lv, nil
}

func (vg *VG) pv(name string) *PVRef {
	for _, p := range vg.PVs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// ErrMissingPV means a logical volume needs a physical volume that is not
// at hand.
var ErrMissingPV = errors.New("physical volume missing")

// Open returns the data of a linear or striped LV as an io.ReaderAt.
// devices maps PV uuids (no dashes) to the PVs' devices.
func (vg *VG) Open(lv *LV, devices map[string]io.ReaderAt) (io.ReaderAt, error) {
	if ok, why := lv.Supported(); !ok {
		return nil, fmt.Errorf("logical volume %s/%s: %s", vg.Name, lv.Name, why)
	}
	r := &lvReader{vg: vg, size: lv.Size(vg)}
	for _, s := range lv.Segments {
		m := mappedSeg{seg: s, start: s.StartExtent * vg.ExtentSize, size: s.ExtentCount * vg.ExtentSize}
		for _, st := range s.Stripes {
			ref := vg.pv(st.PV)
			dev := devices[ref.ID]
			if dev == nil {
				return nil, fmt.Errorf("logical volume %s/%s: %w: %s (uuid %s, last seen as %s)", vg.Name, lv.Name, ErrMissingPV, ref.Name, ref.ID, ref.Device)
			}
			m.devs = append(m.devs, dev)
			m.offs = append(m.offs, ref.PEStart+st.StartExtent*vg.ExtentSize)
		}
		r.segs = append(r.segs, m)
	}
	return r, nil
}

type mappedSeg struct {
	seg         *Segment
	start, size int64 // bytes of the LV
	devs        []io.ReaderAt
	offs        []int64 // where each stripe starts on its device
}

type lvReader struct {
	vg   *VG
	size int64
	segs []mappedSeg
}

func (r *lvReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= r.size {
		return 0, io.EOF
	}
	done := 0
	for done < len(p) && off < r.size {
		dev, at, run := r.place(off)
		run = min(run, int64(len(p)-done))
		k, err := dev.ReadAt(p[done:done+int(run)], at)
		if k == 0 && err == nil {
			err = io.ErrNoProgress // a device breaking io.ReaderAt's contract must not spin this loop
		}
		done += k
		off += int64(k)
		if err != nil && !(errors.Is(err, io.EOF) && k == int(run)) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the PV is shorter than its metadata says
			}
			return done, err
		}
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// place finds byte off (0 <= off < size) of the LV: the device holding it,
// where, and how many bytes from there lie contiguously on that device.
func (r *lvReader) place(off int64) (dev io.ReaderAt, at, run int64) {
	i, _ := slices.BinarySearchFunc(r.segs, off, func(m mappedSeg, o int64) int {
		switch {
		case m.start+m.size <= o:
			return -1
		case m.start > o:
			return 1
		}
		return 0
	})
	m := r.segs[i]
	rel := off - m.start
	if n := int64(len(m.devs)); n > 1 {
		chunk := rel / m.seg.StripeSize
		within := rel % m.seg.StripeSize
		d := chunk % n
		return m.devs[d], m.offs[d] + (chunk/n)*m.seg.StripeSize + within, m.seg.StripeSize - within
	}
	return m.devs[0], m.offs[0] + rel, m.size - rel
}

// Map places bytes [off, off+n) of the logical volume on its physical
// volumes (gfs.Mapper), a stripe at a time.
func (r *lvReader) Map(off, n int64) ([]gfs.Piece, error) {
	if off < 0 || off >= r.size {
		return nil, nil
	}
	end := min(off+n, r.size)
	var out []gfs.Piece
	for off < end {
		dev, at, run := r.place(off)
		run = min(run, end-off)
		out = append(out, gfs.Piece{R: dev, Off: at, Len: run})
		off += run
	}
	return out, nil
}
