package vmfolder

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// SourceDisk is one disk opened for reading, whatever its format. It is safe
// for concurrent use.
type SourceDisk interface {
	// ReadAt reads guest-visible bytes. Reads beyond Size return io.EOF as
	// os.File does; unallocated regions read as zeros.
	io.ReaderAt
	// Size is the guest-visible capacity in bytes.
	Size() int64
	// Format is "raw", "monolithicFlat", "monolithicSparse" or
	// "streamOptimized".
	Format() string
	// HasData reports whether [off, off+n) may hold non-zero bytes. False
	// means certainly all zeros, so the caller can skip reading it.
	HasData(off, n int64) (bool, error)
	Close() error
}

// Disk formats as Format reports them. Split (twoGbMaxExtent*) and ESXi
// (vmfs) disks report the format of their extents.
const (
	FormatRaw              = "raw"
	FormatMonolithicFlat   = "monolithicFlat"
	FormatMonolithicSparse = "monolithicSparse"
	FormatStreamOptimized  = "streamOptimized"
)

// OpenDisk opens the disk file a vmx names. What the file is comes from its
// name first: a file named .raw or .img is a raw image, whose size is the
// file's size; any other file (a .vmdk above all) must be a text VMDK
// descriptor with flat, sparse or zero extents, or a hosted sparse VMDK
// (monolithicSparse or streamOptimized) with its descriptor embedded. A
// .vmdk whose header is damaged is an error, never a raw disk: rekindle
// does not guess. Snapshot deltas, raw device mappings, ESXi sparse formats
// and other image formats (qcow2, VHD) are refused with an error saying so.
// OpenRawDisk reads a file as raw whatever its name.
func OpenDisk(path string) (SourceDisk, error) { return open(path, false) }

// OpenRawDisk opens path as a raw image, whatever its name says (for a raw
// disk the user declares so, e.g. `backup import --raw-disk`).
func OpenRawDisk(path string) (SourceDisk, error) { return open(path, true) }

// IsRawName reports whether a disk file's name says it is a raw image.
func IsRawName(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".raw", ".img":
		return true
	}
	return false
}

func open(path string, raw bool) (SourceDisk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open disk: %w", err)
	}
	d, err := openDisk(path, f, raw)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// ErrNotDisk is returned (wrapped) for a disk file that is not what its
// name says it is.
var ErrNotDisk = errors.New("disk refused")

// otherImageFormats are the magic numbers of image formats that are not
// VMDK, to name them in the error.
var otherImageFormats = []struct{ magic, name, fix string }{
	{"QFI\xfb", "a qcow2 image", "convert it: qemu-img convert -O vmdk -o subformat=monolithicFlat"},
	{"conectix", "a VHD image", "convert it: qemu-img convert -f vpc -O vmdk -o subformat=monolithicFlat"},
	{"vhdxfile", "a VHDX image", "convert it: qemu-img convert -f vhdx -O vmdk -o subformat=monolithicFlat"},
}

func openDisk(path string, f *os.File, forceRaw bool) (*disk, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	size := st.Size()
	if forceRaw {
		return newDisk(FormatRaw, []diskExtent{{size: size, file: f}}, []*os.File{f}), nil
	}
	head := make([]byte, min(size, sectorSize))
	if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	isSparse := len(head) >= 4 && string(head[:4]) == "KDMV"
	isCOWD := len(head) >= 4 && string(head[:4]) == "COWD"
	var text []byte
	if !isSparse && !isCOWD && size <= maxDescriptorSize {
		text = make([]byte, size)
		if _, err := f.ReadAt(text, 0); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if !looksLikeDescriptor(text) {
			text = nil
		}
	}
	if IsRawName(path) {
		if isSparse || isCOWD || text != nil {
			return nil, fmt.Errorf("%s: named as a raw image (%s) but it is a VMDK: rename it .vmdk (and its vmx fileName), or declare it raw (--raw-disk): %w",
				path, filepath.Ext(path), ErrNotDisk)
		}
		return newDisk(FormatRaw, []diskExtent{{size: size, file: f}}, []*os.File{f}), nil
	}
	switch {
	case isSparse:
		sp, err := openSparse(path, f, size)
		if err != nil {
			return nil, err
		}
		if err := checkEmbeddedDescriptor(path, sp); err != nil {
			return nil, err
		}
		format := FormatMonolithicSparse
		if sp.h.compressed() {
			format = FormatStreamOptimized
		}
		return newDisk(format, []diskExtent{{size: sp.size(), sparse: sp}}, []*os.File{f}), nil
	case isCOWD:
		return nil, fmt.Errorf("%s: ESX sparse (COWD) snapshot delta: consolidate the VM's snapshots before importing", path)
	case text != nil:
		desc, err := parseDescriptor(text)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		f.Close() // the data lives in the extents
		return openExtents(path, desc)
	}
	for _, o := range otherImageFormats {
		if bytes.HasPrefix(head, []byte(o.magic)) {
			return nil, fmt.Errorf("%s: %s, not a VMDK: %s: %w", path, o.name, o.fix, ErrNotDisk)
		}
	}
	what := "a VMDK"
	if !strings.EqualFold(filepath.Ext(path), ".vmdk") {
		what = "a VMDK or a raw image named .raw or .img"
	}
	return nil, fmt.Errorf("%s: not %s: it starts with neither a sparse header (KDMV) nor a text descriptor (%d bytes, first bytes %q): "+
		"the file is damaged or of another kind; a raw image must be named .raw or .img or declared with --raw-disk: %w",
		path, what, size, clip(string(head[:min(len(head), 8)])), ErrNotDisk)
}

// checkEmbeddedDescriptor refuses a sparse file that is a snapshot delta or
// whose descriptor disagrees with its header on the size.
func checkEmbeddedDescriptor(path string, sp *sparseExtent) error {
	d := sp.desc
	if d == nil {
		return nil
	}
	if err := checkNoParent(d); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(d.extents) == 1 && d.extents[0].sectors != int64(sp.h.capacity) {
		return fmt.Errorf("%s: embedded descriptor says %d sectors but the sparse header's capacity is %d sectors", path, d.extents[0].sectors, sp.h.capacity)
	}
	return nil
}

func checkNoParent(d *descriptor) error {
	if d.parentCID != noParentCID || d.parentHint != "" {
		return fmt.Errorf("snapshot delta disk (parent %q): consolidate the VM's snapshots before importing", d.parentHint)
	}
	return nil
}

// openExtents opens the extents a text descriptor names, in order.
func openExtents(path string, desc *descriptor) (*disk, error) {
	if err := checkNoParent(desc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var (
		exts  []diskExtent
		files []*os.File
	)
	fail := func(err error) (*disk, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	dir := filepath.Dir(path)
	format := FormatMonolithicFlat
	for _, e := range desc.extents {
		if e.sectors == 0 {
			continue
		}
		bytes := e.sectors * sectorSize
		if e.access == "NOACCESS" {
			return fail(fmt.Errorf("%s: extent %s: marked NOACCESS", path, e.file))
		}
		switch e.kind {
		case "ZERO":
			exts = append(exts, diskExtent{size: bytes})
			continue
		case "FLAT", "VMFS", "SPARSE":
		case "VMFSSPARSE", "SESPARSE":
			return fail(fmt.Errorf("%s: extent %s: %s snapshot delta: consolidate the VM's snapshots before importing", path, e.file, e.kind))
		case "VMFSRDM", "VMFSRAW", "VMFSPASSTHROUGHRAWDEVICEMAP":
			return fail(fmt.Errorf("%s: extent %s: raw device mapping (%s): the data lives on a LUN, not in the VM folder", path, e.file, e.kind))
		default:
			return fail(fmt.Errorf("%s: extent %s: extent type %s not supported", path, e.file, e.kind))
		}
		extPath, err := pathInFolder(dir, e.file)
		if err != nil {
			return fail(fmt.Errorf("%s: extent %q: %w", path, e.file, err))
		}
		f, err := os.Open(extPath)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is in the message already
			}
			return fail(fmt.Errorf("%s: extent %s: %w", path, e.file, err))
		}
		files = append(files, f)
		st, err := f.Stat()
		if err != nil {
			return fail(fmt.Errorf("%s: extent %s: %w", path, e.file, err))
		}
		if !st.Mode().IsRegular() {
			return fail(fmt.Errorf("%s: extent %s: not a regular file", path, e.file))
		}
		if e.kind == "SPARSE" {
			sp, err := openSparse(fmt.Sprintf("%s: extent %s", path, e.file), f, st.Size())
			if err != nil {
				return fail(err)
			}
			if int64(sp.h.capacity) < e.sectors {
				return fail(fmt.Errorf("%s: extent %s: descriptor says %d sectors but the sparse extent holds only %d sectors", path, e.file, e.sectors, sp.h.capacity))
			}
			if sp.h.compressed() {
				format = FormatStreamOptimized
			} else if format != FormatStreamOptimized {
				format = FormatMonolithicSparse
			}
			exts = append(exts, diskExtent{size: bytes, sparse: sp})
			continue
		}
		base := e.offset * sectorSize
		if st.Size() < base+bytes {
			return fail(fmt.Errorf("%s: extent %s: descriptor says %d sectors (%d bytes) from sector %d, but %s holds only %d bytes",
				path, e.file, e.sectors, bytes, e.offset, e.file, st.Size()))
		}
		exts = append(exts, diskExtent{size: bytes, file: f, base: base})
	}
	return newDisk(format, exts, files), nil
}

// diskExtent is one range of a disk: flat bytes of a file from base, a
// sparse extent, or zeros when both are nil.
type diskExtent struct {
	start  int64 // in the disk, set by newDisk
	size   int64
	file   *os.File
	base   int64
	sparse *sparseExtent
}

// disk is a SourceDisk made of extents in order.
type disk struct {
	format  string
	size    int64
	extents []diskExtent
	files   []*os.File
}

func newDisk(format string, exts []diskExtent, files []*os.File) *disk {
	d := &disk{format: format, extents: exts, files: files}
	for i := range d.extents {
		d.extents[i].start = d.size
		d.size += d.extents[i].size
	}
	return d
}

func (d *disk) Size() int64    { return d.size }
func (d *disk) Format() string { return d.format }

func (d *disk) Close() error {
	var errs []error
	for _, f := range d.files {
		errs = append(errs, f.Close())
	}
	d.files = nil
	return errors.Join(errs...)
}

// extentAt returns the index of the extent holding disk offset off < size.
func (d *disk) extentAt(off int64) int {
	return sort.Search(len(d.extents), func(i int) bool {
		return d.extents[i].start+d.extents[i].size > off
	})
}

func (d *disk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read disk at offset %d: negative offset", off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), d.size-off)
	done := int64(0)
	for i := d.extentAt(off); done < want; i++ {
		e := &d.extents[i]
		in := off + done - e.start
		n := min(want-done, e.size-in)
		q := p[done : done+n]
		switch {
		case e.sparse != nil:
			if err := e.sparse.readAt(q, in); err != nil {
				return int(done), err
			}
		case e.file != nil:
			k, err := e.file.ReadAt(q, e.base+in)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("%s: ends at %d bytes, inside the disk (was it truncated?): %w", e.file.Name(), e.base+in+int64(k), io.ErrUnexpectedEOF)
				}
				return int(done) + k, err
			}
		default:
			clear(q)
		}
		done += n
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

func (d *disk) HasData(off, n int64) (bool, error) {
	if off < 0 || n < 0 {
		return false, fmt.Errorf("disk range [%d, +%d): negative", off, n)
	}
	if off >= d.size || n == 0 {
		return false, nil
	}
	end := min(off+n, d.size)
	for i := d.extentAt(off); i < len(d.extents) && d.extents[i].start < end; i++ {
		e := &d.extents[i]
		from := max(off, e.start) - e.start
		to := min(end, e.start+e.size) - e.start
		var (
			has bool
			err error
		)
		switch {
		case e.sparse != nil:
			has, err = e.sparse.hasData(from, to-from)
		case e.file != nil:
			has, err = fileHasData(e.file, e.base+from, to-from)
		}
		if err != nil || has {
			return has, err
		}
	}
	return false, nil
}

// fileHasData asks the file system whether [off, off+n) of f holds data,
// using SEEK_DATA. File systems without hole support report everything as
// data, which is the safe answer.
func fileHasData(f *os.File, off, n int64) (bool, error) {
	pos, err := f.Seek(off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return false, nil // no data at or after off
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("%s: find data after %d: %w", f.Name(), off, err)
	}
	return pos < off+n, nil
}
