// Package guestfs presents the guest filesystems inside restore points as one
// read-only billy.Filesystem, for the /files NFS export and `rekindle files`:
//
//	/<vm>/<point>/<disk>/<volume>/<path inside the guest>
//
// A volume is a partition (p1, p5 for the first logical one), a logical
// volume of LVM2 (lvm-<vg>-<lv>) or, on a disk without a partition table,
// the whole disk (whole). A disk's folder lists the volumes whose files are
// served, and a <volume>.README.txt for every volume that cannot be opened
// (encrypted, unsupported, damaged: it says which and why) or is served with
// caveats (a journal not replayed).
//
// Nothing is read until asked: a point's volumes are found on the first
// listing of one of its disks, a volume's filesystem is opened on first use;
// both are kept in bounded caches and read through the repository's shared
// chunk cache. An open volume's metadata is charged to that chunk cache's
// bound (repo.Cache.Hold), and so are point layouts and folder listings,
// by their counted size (layoutBytes, listingBytes): opening volumes leaves
// fewer chunks cached, and past half the bound the least recently used
// volumes, layouts and listings are dropped, to be rebuilt on their next
// use. File attributes are the guest's; file ids (NFS fileid) are
// derived from the volume and the guest's own file number, so hard links
// share one.
package guestfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/go-git/go-billy/v5"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/willscott/go-nfs/file"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/view"
)

// ReadmeSuffix ends the name of a volume's status entry in its disk's folder.
const ReadmeSuffix = ".README.txt"

// TableReadme names the status entry of a disk whose partition table has
// entries that were skipped or lie past the disk's end.
const TableReadme = "partition-table" + ReadmeSuffix

// Options tune an FS.
type Options struct {
	// MaxPoints bounds the restore points whose volume layout is kept
	// (default 64); MaxVolumes the volumes kept open (default 32), which
	// are also charged VolumeCharge bytes each to the chunk cache's bound.
	// File data is not held here: it is read through the shared chunk
	// cache.
	MaxPoints  int
	MaxVolumes int
	// VolumeCharge is what an open volume is charged (default
	// VolumeCharge). Point layouts and folder listings are charged their
	// counted size (layoutBytes, listingBytes).
	VolumeCharge int64
	Logger       *slog.Logger
}

// FS is the read-only tree of guest files of every restore point.
type FS struct {
	repo  *repo.Repo
	cache *repo.Cache
	log   *slog.Logger

	mu     sync.RWMutex
	points map[string]map[string]*repo.RestorePoint // vm -> point id -> point

	layouts *lru.Cache[string, *layout]  // point id -> volumes
	trees   *lru.Cache[string, *openVol] // point/disk/volume -> open filesystem
	// listings keeps guest folders' converted entries, sorted by name: NFS
	// clients page through a large folder with one ReadDir per page.
	listings *lru.Cache[string, *listing]
	openMu   sync.Mutex // serialises layout scans and volume opens
	// volMu guards the Status, Reason and Notes of the volumes of shared
	// layouts: a volume's first open can find it damaged, or note a
	// journal not replayed, after its disk was listed.
	volMu sync.RWMutex

	volCharge int64
	failMu    sync.Mutex
	// failed keeps why a volume stopped being served (gfs.Availability)
	// once its reader is closed: it is not opened again, to hang again.
	failed map[string]error

	// Test seams, nil and zero in production: wrapVolume wraps a volume's
	// bytes before its filesystem is opened; ntfsTimeout bounds each
	// go-ntfs call.
	wrapVolume  func(key string, ra io.ReaderAt) io.ReaderAt
	ntfsTimeout time.Duration
}

// openVol is an open volume: its filesystem, what its reader noted when
// it opened, and its charge.
type openVol struct {
	tree   *gfs.Tree
	notes  []string
	charge charge
}

// listing is a guest folder's converted entries and their charge.
type listing struct {
	out    []os.FileInfo
	charge charge
}

// VolumeCharge is what an open volume is charged against the chunk cache's
// bound: an estimate of the most its caches hold (the directories and file
// maps a gfs.Tree keeps, the filesystem reader's own tables).
const VolumeCharge = 4 << 20

// layout is what a restore point's disks hold.
type layout struct {
	pt    *repo.RestorePoint
	disks map[string][]*Volume // disk name -> volumes, in table order
	warn  map[string][]string  // disk name -> partition table warnings

	charge charge
}

// New returns the guest file view of r's restore points.
func New(r *repo.Repo, cache *repo.Cache, opts Options) (*FS, error) {
	if opts.MaxPoints <= 0 {
		opts.MaxPoints = 64
	}
	if opts.MaxVolumes <= 0 {
		opts.MaxVolumes = 32
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.VolumeCharge <= 0 {
		opts.VolumeCharge = VolumeCharge
	}
	fs := &FS{repo: r, cache: cache, log: opts.Logger, volCharge: opts.VolumeCharge, failed: map[string]error{}}
	// Whatever leaves a cache gives its charge back.
	fs.layouts, _ = lru.NewWithEvict[string, *layout](opts.MaxPoints, func(_ string, l *layout) { l.charge.release() })
	fs.trees, _ = lru.NewWithEvict[string, *openVol](opts.MaxVolumes, func(key string, o *openVol) {
		if a, ok := o.tree.Reader().(gfs.Availability); ok {
			if err := a.Unavailable(); err != nil {
				fs.failMu.Lock()
				fs.failed[key] = err
				fs.failMu.Unlock()
			}
		}
		o.charge.release()
	})
	fs.listings, _ = lru.NewWithEvict[string, *listing](64, func(_ string, e *listing) { e.charge.release() })
	if err := fs.Refresh(); err != nil {
		return nil, err
	}
	return fs, nil
}

// Refresh rereads the repository's restore points.
func (fs *FS) Refresh() error {
	pts, err := fs.repo.Points()
	if err != nil {
		return fmt.Errorf("guest file view: %w", err)
	}
	m := map[string]map[string]*repo.RestorePoint{}
	for _, p := range pts {
		if m[p.VM.Name] == nil {
			m[p.VM.Name] = map[string]*repo.RestorePoint{}
		}
		m[p.VM.Name][p.ID] = p
	}
	fs.mu.Lock()
	fs.points = m
	fs.mu.Unlock()
	return nil
}

// OpenVolumes is how many volumes are open now.
func (fs *FS) OpenVolumes() int { return fs.trees.Len() }

func (fs *FS) point(vm, id string) (*repo.RestorePoint, bool) {
	fs.mu.RLock()
	p, ok := fs.points[vm][id]
	fs.mu.RUnlock()
	if ok {
		return p, true
	}
	if err := fs.Refresh(); err != nil {
		return nil, false
	}
	fs.mu.RLock()
	p, ok = fs.points[vm][id]
	fs.mu.RUnlock()
	return p, ok
}

// Volumes lists the volumes of a restore point's disk (scanning the point's
// disks on first use), as they stand: a volume not opened yet has the
// status its first bytes gave (probe); one whose open failed says why.
func (fs *FS) Volumes(vm, pointID, disk string) ([]*Volume, error) {
	_, vols, err := fs.volumes(vm, pointID, disk)
	if err != nil {
		return nil, err
	}
	out := make([]*Volume, len(vols))
	for i, v := range vols {
		out[i] = fs.snapshot(pointID, v)
	}
	return out, nil
}

// volumes returns the layout's own volumes of a disk (shared: read their
// status through snapshot or under volMu).
func (fs *FS) volumes(vm, pointID, disk string) (*layout, []*Volume, error) {
	l, err := fs.layout(vm, pointID)
	if err != nil {
		return nil, nil, err
	}
	vols, ok := l.disks[disk]
	if !ok {
		return nil, nil, fmt.Errorf("restore point %s has no disk %q: %w", pointID, disk, os.ErrNotExist)
	}
	return l, vols, nil
}

// snapshot is a copy of a layout's volume (of point id) as it stands now:
// one that stopped being served since it was opened says so.
func (fs *FS) snapshot(id string, v *Volume) *Volume {
	fs.volMu.RLock()
	c := *v
	c.Notes = slices.Clone(v.Notes)
	fs.volMu.RUnlock()
	if c.Status == StatusOK {
		if err := fs.unavailable(volKey(id, v)); err != nil {
			c.Status, c.Reason, c.ra = StatusUnavailable, err.Error(), nil
		}
	}
	return &c
}

// unavailable says why the volume key stopped being served (a call of its
// reader did not finish in time), nil while it is served.
func (fs *FS) unavailable(key string) error {
	fs.failMu.Lock()
	err := fs.failed[key]
	fs.failMu.Unlock()
	if err != nil {
		return err
	}
	if o, ok := fs.trees.Peek(key); ok {
		if a, ok := o.tree.Reader().(gfs.Availability); ok {
			return a.Unavailable()
		}
	}
	return nil
}

// setState changes what a layout's volume says of itself (change runs
// under volMu) and charges the layout its new size if it is still cached.
func (fs *FS) setState(l *layout, change func()) {
	fs.volMu.Lock()
	change()
	n := layoutBytes(l)
	fs.volMu.Unlock()
	fs.hold(&l.charge, n, dropper(fs.layouts, l.pt.ID, l))
}

func (fs *FS) layout(vm, id string) (*layout, error) {
	if l, ok := fs.layouts.Get(id); ok {
		l.charge.touch()
		return l, nil
	}
	pt, ok := fs.point(vm, id)
	if !ok {
		return nil, fmt.Errorf("vm %s restore point %s: %w", vm, id, os.ErrNotExist)
	}
	fs.openMu.Lock()
	defer fs.openMu.Unlock()
	if l, ok := fs.layouts.Get(id); ok {
		return l, nil
	}
	l := &layout{pt: pt, disks: map[string][]*Volume{}, warn: map[string][]string{}}
	readers := map[string]io.ReaderAt{}
	for _, d := range pt.Disks {
		label := fmt.Sprintf("restore point %s disk %s", pt.ID, d.Name)
		dr, err := fs.repo.OpenDisk(d.Index, fs.cache, label)
		if err != nil {
			return nil, err
		}
		readers[d.Name] = dr
		vols, warn, err := diskVolumes(d, dr)
		if err != nil {
			vols = []*Volume{{Name: WholeDisk, Disk: d.Name, Kind: KindWholeDisk, Size: d.Size, Status: StatusDamaged, Reason: err.Error()}}
		}
		l.disks[d.Name], l.warn[d.Name] = vols, warn
	}
	addLVM(pt, l, readers, fs.log)
	// Volumes are not opened here: the probe named what each holds, and a
	// volume's filesystem opens on its first access (tree). A volume still
	// open from before this layout was dropped keeps its notes.
	for _, vols := range l.disks {
		for _, v := range vols {
			if o, ok := fs.trees.Peek(volKey(pt.ID, v)); ok {
				v.Notes = o.notes
			}
		}
	}
	fs.layouts.Add(id, l)
	fs.hold(&l.charge, layoutBytes(l), dropper(fs.layouts, id, l))
	return l, nil
}

// charge is one cached thing's hold on the chunk cache's bound. The thing
// is cached first and charged after (hold): the cache's call to drop it
// can come at any time from then on, even before the charge is set, and
// whichever of release and set comes last gives the hold back. A charge
// is never left for something gone, nor something cached uncharged.
type charge struct {
	mu   sync.Mutex
	h    *repo.Held
	gone bool // the thing left its cache
}

// set makes h the thing's charge, giving back the one it replaces, or h
// itself when the thing is gone already.
func (c *charge) set(h *repo.Held) {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		h.Release()
		return
	}
	old := c.h
	c.h = h
	c.mu.Unlock()
	if old != nil {
		old.Release()
	}
}

// release gives the charge back: the thing left its cache.
func (c *charge) release() {
	c.mu.Lock()
	c.gone = true
	h := c.h
	c.h = nil
	c.mu.Unlock()
	if h != nil {
		h.Release()
	}
}

// touch marks the thing as used (its charge is released last).
func (c *charge) touch() {
	c.mu.Lock()
	h := c.h
	c.mu.Unlock()
	if h != nil {
		h.Touch()
	}
}

// hold charges bytes against the chunk cache's bound for a thing already
// cached; drop is how the cache makes the owner let go when it needs the
// room (it removes the thing, whose eviction releases c).
func (fs *FS) hold(c *charge, bytes int64, drop func()) {
	if fs.cache == nil {
		return
	}
	c.set(fs.cache.Hold(bytes, drop))
}

// dropper removes v from c if it is still what c holds at key (not a
// newer thing cached there since).
func dropper[V comparable](c *lru.Cache[string, V], key string, v V) func() {
	return func() {
		if cur, ok := c.Peek(key); ok && cur == v {
			c.Remove(key)
		}
	}
}

// Counted sizes of what layouts and listings keep: the structs themselves,
// their strings' bytes, slice and map slots.
var (
	volumeBytes    = int64(unsafe.Sizeof(Volume{}) + unsafe.Sizeof(section{}) + 8)
	entryInfoBytes = int64(unsafe.Sizeof(entryInfo{}) + unsafe.Sizeof(os.FileInfo(nil)))
	mapSlotBytes   = int64(64) // a map entry with its key's string header, rounded up
)

// layoutBytes is what a point's layout holds.
func layoutBytes(l *layout) int64 {
	n := int64(unsafe.Sizeof(layout{}))
	for d, vols := range l.disks {
		n += 2*mapSlotBytes + int64(2*len(d))
		for _, v := range vols {
			n += volumeBytes + int64(len(v.Name)+len(v.Disk)+len(v.Kind)+len(v.Type)+len(v.Filesystem)+
				len(v.Status)+len(v.Reason)+len(v.VG)+len(v.VGUUID))
			for _, s := range v.Notes {
				n += int64(unsafe.Sizeof(s)) + int64(len(s))
			}
		}
	}
	for _, w := range l.warn {
		for _, s := range w {
			n += int64(unsafe.Sizeof(s)) + int64(len(s))
		}
	}
	return n
}

// listingBytes is what a cached folder listing holds.
func listingBytes(p string, out []os.FileInfo) int64 {
	n := mapSlotBytes + int64(len(p))
	for _, fi := range out {
		n += entryInfoBytes + int64(len(fi.Name()))
	}
	return n
}

func volKey(point string, v *Volume) string { return point + "/" + v.Disk + "/" + v.Name }

// openTree opens v's filesystem (or returns it open), charging it to the
// chunk cache's bound, and returns what the reader notes about it.
func (fs *FS) openTree(key string, v *Volume) (*gfs.Tree, []string, error) {
	if o, ok := fs.trees.Get(key); ok {
		o.charge.touch()
		return o.tree, o.notes, nil
	}
	if fs.wrapVolume != nil {
		c := *v
		c.ra = fs.wrapVolume(key, v.ra)
		v = &c
	}
	r, err := openVolume(v, "volume "+key, fs.ntfsTimeout)
	if err != nil {
		return nil, nil, err
	}
	o := &openVol{tree: gfs.NewTree(r, "volume "+key)}
	if n, ok := r.(gfs.Noter); ok {
		o.notes = n.Notes()
	}
	// Released by the cache to make room: closed, reopened on next use.
	fs.trees.Add(key, o)
	fs.hold(&o.charge, fs.volCharge, dropper(fs.trees, key, o))
	return o.tree, o.notes, nil
}

// tree returns the open filesystem of a served volume, opening it on its
// first use. An open that fails makes the volume damaged (or unsupported):
// its disk's folder lists its status entry from then on.
func (fs *FS) tree(vm, id, disk, vol string) (*gfs.Tree, error) {
	l, vols, err := fs.volumes(vm, id, disk)
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		if v.Name != vol {
			continue
		}
		key := volKey(id, v)
		if err := fs.unavailable(key); err != nil {
			return nil, fmt.Errorf("%s/%s/%s/%s: %w", vm, id, disk, vol, err)
		}
		if o, ok := fs.trees.Get(key); ok {
			o.charge.touch()
			return o.tree, nil
		}
		if !fs.snapshot(id, v).Servable() {
			break
		}
		fs.openMu.Lock()
		defer fs.openMu.Unlock()
		if !fs.snapshot(id, v).Servable() { // an open just failed
			break
		}
		t, notes, err := fs.openTree(key, v)
		if err != nil {
			fs.setState(l, func() { failOpen(v, err) })
			fs.log.Warn("guest files: volume not served", "point", id, "disk", v.Disk, "volume", v.Name, "err", err)
			return nil, fmt.Errorf("volume %s: %w (its status: %s%s in the disk's folder)", key, err, v.Name, ReadmeSuffix)
		}
		if len(notes) > 0 && len(fs.snapshot(id, v).Notes) == 0 {
			fs.setState(l, func() { v.Notes = notes })
		}
		return t, nil
	}
	return nil, fmt.Errorf("%s/%s/%s/%s: %w", vm, id, disk, vol, os.ErrNotExist)
}

// loc is a path of the view split at its levels.
type loc struct {
	vm, point, disk, vol string
	inner                string // "/..." inside the volume, "" above it
	depth                int    // components before inner: 0 (root) .. 4 (volume)
	clean                string
}

func split(p string) loc {
	c := path.Clean("/" + p)
	l := loc{clean: c}
	if c == "/" {
		return l
	}
	parts := strings.SplitN(c[1:], "/", 5)
	l.depth = min(len(parts), 4)
	for i, s := range parts {
		switch i {
		case 0:
			l.vm = s
		case 1:
			l.point = s
		case 2:
			l.disk = s
		case 3:
			l.vol = s
			l.inner = "/"
		case 4:
			l.inner = "/" + s
		}
	}
	return l
}

func notExist(op, p string) error { return &os.PathError{Op: op, Path: p, Err: os.ErrNotExist} }

// entryInfo is an os.FileInfo carrying the NFS attributes go-nfs reads.
type entryInfo struct {
	name  string
	size  int64
	mode  os.FileMode
	mtime time.Time
	sys   file.FileInfo
}

func (i *entryInfo) Name() string       { return i.name }
func (i *entryInfo) Size() int64        { return i.size }
func (i *entryInfo) Mode() os.FileMode  { return i.mode }
func (i *entryInfo) ModTime() time.Time { return i.mtime }
func (i *entryInfo) IsDir() bool        { return i.mode.IsDir() }
func (i *entryInfo) Sys() any           { return i.sys }

func synthDir(name, p string, mtime time.Time) *entryInfo {
	return &entryInfo{name: name, mode: os.ModeDir | 0o555, mtime: mtime, size: 4096,
		sys: file.FileInfo{Nlink: 2, Fileid: view.HashID("files", p)}}
}

func guestInfo(key string, e gfs.Entry) *entryInfo {
	return &entryInfo{name: e.Name, size: e.Size, mode: e.Mode, mtime: e.Mtime,
		sys: file.FileInfo{Nlink: max(e.Nlink, 1), UID: e.UID, GID: e.GID,
			Fileid: view.HashID("files:"+key, strconv.FormatUint(e.Ino, 10))}}
}

// Lstat returns the attributes of p (a symlink's own).
func (fs *FS) Lstat(p string) (os.FileInfo, error) {
	l := split(p)
	switch l.depth {
	case 0:
		return synthDir("/", "/", time.Time{}), nil
	case 1:
		fs.mu.RLock()
		pts, ok := fs.points[l.vm]
		var newest time.Time
		for _, pt := range pts {
			if pt.Created.After(newest) {
				newest = pt.Created
			}
		}
		fs.mu.RUnlock()
		if !ok {
			if err := fs.Refresh(); err == nil {
				fs.mu.RLock()
				_, ok = fs.points[l.vm]
				fs.mu.RUnlock()
			}
			if !ok {
				return nil, notExist("lstat", l.clean)
			}
		}
		return synthDir(l.vm, l.clean, newest), nil
	case 2:
		pt, ok := fs.point(l.vm, l.point)
		if !ok {
			return nil, notExist("lstat", l.clean)
		}
		return synthDir(l.point, l.clean, pt.Created), nil
	case 3:
		pt, ok := fs.point(l.vm, l.point)
		if !ok {
			return nil, notExist("lstat", l.clean)
		}
		for _, d := range pt.Disks {
			if d.Name == l.disk {
				return synthDir(l.disk, l.clean, pt.Created), nil
			}
		}
		return nil, notExist("lstat", l.clean)
	}
	pt, ok := fs.point(l.vm, l.point)
	if !ok {
		return nil, notExist("lstat", l.clean)
	}
	if l.inner == "/" {
		if b, ok := fs.statusText(l); ok {
			return statusInfo(l.vol, l.clean, b, pt.Created), nil
		}
	}
	t, err := fs.tree(l.vm, l.point, l.disk, l.vol)
	if err != nil {
		return nil, &os.PathError{Op: "lstat", Path: l.clean, Err: err}
	}
	if l.inner == "/" {
		return synthDir(l.vol, l.clean, pt.Created), nil
	}
	e, err := t.Lstat(l.inner)
	if err != nil {
		return nil, err
	}
	return guestInfo(l.point+"/"+l.disk+"/"+l.vol, e), nil
}

func statusInfo(name, p string, b []byte, mtime time.Time) *entryInfo {
	return &entryInfo{name: name, size: int64(len(b)), mode: 0o444, mtime: mtime,
		sys: file.FileInfo{Nlink: 1, Fileid: view.HashID("files", p)}}
}

// statusText returns the text of the status entry l names: a volume's or
// the partition table's.
func (fs *FS) statusText(l loc) ([]byte, bool) {
	if l.vol == TableReadme {
		if w := fs.tableWarnings(l.vm, l.point, l.disk); len(w) > 0 {
			return tableReadme(l.disk, w), true
		}
		return nil, false
	}
	if v, ok := fs.readmeOf(l); ok {
		return v.readme(), true
	}
	return nil, false
}

// tableWarnings are what reading a disk's partition table skipped or found
// truncated.
func (fs *FS) tableWarnings(vm, point, disk string) []string {
	l, err := fs.layout(vm, point)
	if err != nil {
		return nil
	}
	return l.warn[disk]
}

func tableReadme(disk string, warn []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "partition table of disk %s: read with warnings\n\n", disk)
	for _, w := range warn {
		fmt.Fprintf(&b, "%s\n", w)
	}
	b.WriteString("\nA partition past the disk's end is listed with status damaged; a logical partition whose extended boot record is lost cannot be listed at all.\n")
	return []byte(b.String())
}

// readmeOf finds the volume whose status entry l names. Asking for the
// status entry of a volume not opened yet opens it: what its reader finds
// (damage, a journal not replayed) is what the entry says.
func (fs *FS) readmeOf(l loc) (*Volume, bool) {
	name, ok := strings.CutSuffix(l.vol, ReadmeSuffix)
	if !ok {
		return nil, false
	}
	_, vols, err := fs.volumes(l.vm, l.point, l.disk)
	if err != nil {
		return nil, false
	}
	for _, v := range vols {
		if v.Name != name {
			continue
		}
		s := fs.snapshot(l.point, v)
		if _, open := fs.trees.Peek(volKey(l.point, v)); s.Servable() && !open {
			fs.tree(l.vm, l.point, l.disk, name) // its error is the status entry's text
			s = fs.snapshot(l.point, v)
		}
		if hasReadme(s) {
			return s, true
		}
	}
	return nil, false
}

// hasReadme: a volume not served, or served with caveats, has a status
// entry (v as it stands: a snapshot).
func hasReadme(v *Volume) bool { return !v.Servable() || len(v.Notes) > 0 }

// Stat is Lstat: symlinks inside a guest point into the guest's namespace,
// which clients resolve themselves.
func (fs *FS) Stat(p string) (os.FileInfo, error) { return fs.Lstat(p) }

// ReadDir lists the folder at p.
func (fs *FS) ReadDir(p string) ([]os.FileInfo, error) {
	l := split(p)
	var out []os.FileInfo
	switch l.depth {
	case 0:
		if err := fs.Refresh(); err != nil {
			return nil, err
		}
		fs.mu.RLock()
		vms := make([]string, 0, len(fs.points))
		for vm := range fs.points {
			vms = append(vms, vm)
		}
		fs.mu.RUnlock()
		sort.Strings(vms)
		for _, vm := range vms {
			fi, err := fs.Lstat("/" + vm)
			if err == nil {
				out = append(out, fi)
			}
		}
		return out, nil
	case 1:
		if _, err := fs.Lstat(l.clean); err != nil {
			return nil, err
		}
		fs.mu.RLock()
		var ids []string
		for id := range fs.points[l.vm] {
			ids = append(ids, id)
		}
		fs.mu.RUnlock()
		sort.Strings(ids)
		for _, id := range ids {
			if pt, ok := fs.point(l.vm, id); ok {
				out = append(out, synthDir(id, l.clean+"/"+id, pt.Created))
			}
		}
		return out, nil
	case 2:
		pt, ok := fs.point(l.vm, l.point)
		if !ok {
			return nil, notExist("readdir", l.clean)
		}
		for _, d := range pt.Disks {
			out = append(out, synthDir(d.Name, l.clean+"/"+d.Name, pt.Created))
		}
		return out, nil
	case 3:
		vols, err := fs.Volumes(l.vm, l.point, l.disk)
		if err != nil {
			return nil, &os.PathError{Op: "readdir", Path: l.clean, Err: err}
		}
		pt, _ := fs.point(l.vm, l.point)
		for _, v := range vols { // as they stand: opening them is left to their first use
			if v.Servable() {
				out = append(out, synthDir(v.Name, l.clean+"/"+v.Name, pt.Created))
			}
			if hasReadme(v) {
				n := v.Name + ReadmeSuffix
				out = append(out, statusInfo(n, l.clean+"/"+n, v.readme(), pt.Created))
			}
		}
		if w := fs.tableWarnings(l.vm, l.point, l.disk); len(w) > 0 {
			out = append(out, statusInfo(TableReadme, l.clean+"/"+TableReadme, tableReadme(l.disk, w), pt.Created))
		}
		return out, nil
	}
	if e, ok := fs.listings.Get(l.clean); ok {
		e.charge.touch()
		return slices.Clone(e.out), nil
	}
	t, err := fs.tree(l.vm, l.point, l.disk, l.vol)
	if err != nil {
		return nil, &os.PathError{Op: "readdir", Path: l.clean, Err: err}
	}
	ents, err := t.ReadDir(l.inner)
	if err != nil {
		return nil, err
	}
	key := l.point + "/" + l.disk + "/" + l.vol
	out = make([]os.FileInfo, len(ents))
	for i, e := range ents {
		out[i] = guestInfo(key, e)
	}
	// By name, as go-nfs sorts the listing anew for each READDIR page: a
	// sorted one it checks in one pass, where the guest's order (hash,
	// B+tree of UTF-16 names, on-disk) cost a sort of the whole folder per
	// page, hundreds of pages for a 10 000-entry folder.
	slices.SortFunc(out, func(a, b os.FileInfo) int { return strings.Compare(a.Name(), b.Name()) })
	e := &listing{out: out}
	if prev, ok, _ := fs.listings.PeekOrAdd(l.clean, e); ok { // another ReadDir cached it meanwhile
		return slices.Clone(prev.out), nil
	}
	fs.hold(&e.charge, listingBytes(l.clean, out), dropper(fs.listings, l.clean, e))
	return slices.Clone(out), nil
}

// Readlink returns a guest symlink's target.
func (fs *FS) Readlink(p string) (string, error) {
	l := split(p)
	if l.depth < 4 || l.inner == "/" {
		return "", &os.PathError{Op: "readlink", Path: l.clean, Err: errors.New("not a symlink")}
	}
	t, err := fs.tree(l.vm, l.point, l.disk, l.vol)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: l.clean, Err: err}
	}
	return t.Readlink(l.inner)
}

// Open opens a file for reading.
func (fs *FS) Open(p string) (billy.File, error) { return fs.OpenFile(p, os.O_RDONLY, 0) }

// OpenFile opens a file; anything but reading is refused.
func (fs *FS) OpenFile(p string, flag int, _ os.FileMode) (billy.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND) != 0 {
		return nil, &os.PathError{Op: "open", Path: p, Err: os.ErrPermission}
	}
	l := split(p)
	if l.depth == 4 && l.inner == "/" {
		if b, ok := fs.statusText(l); ok {
			return view.NewReadOnlyFile(l.clean, bytes.NewReader(b), int64(len(b)), errReadOnly), nil
		}
	}
	if l.depth < 4 || l.inner == "/" {
		if _, err := fs.Lstat(p); err != nil {
			return nil, err
		}
		return view.NewReadOnlyDir(l.clean, errReadOnly), nil
	}
	t, err := fs.tree(l.vm, l.point, l.disk, l.vol)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: l.clean, Err: err}
	}
	e, err := t.Lstat(l.inner)
	if err != nil {
		return nil, err
	}
	if e.Mode.IsDir() {
		return view.NewReadOnlyDir(l.clean, errReadOnly), nil
	}
	e, ra, err := t.Open(l.inner)
	if err != nil {
		return nil, err
	}
	return newFile(l.clean, ra, e.Size), nil
}

func (fs *FS) Create(p string) (billy.File, error) {
	return nil, &os.PathError{Op: "create", Path: p, Err: os.ErrPermission}
}
func (fs *FS) Rename(from, to string) error {
	return &os.LinkError{Op: "rename", Old: from, New: to, Err: os.ErrPermission}
}
func (fs *FS) Remove(p string) error {
	return &os.PathError{Op: "remove", Path: p, Err: os.ErrPermission}
}
func (fs *FS) Join(elem ...string) string { return path.Join(elem...) }
func (fs *FS) TempFile(dir, prefix string) (billy.File, error) {
	return nil, &os.PathError{Op: "tempfile", Path: dir, Err: os.ErrPermission}
}
func (fs *FS) MkdirAll(p string, _ os.FileMode) error {
	return &os.PathError{Op: "mkdir", Path: p, Err: os.ErrPermission}
}
func (fs *FS) Symlink(target, link string) error {
	return &os.PathError{Op: "symlink", Path: link, Err: os.ErrPermission}
}
func (fs *FS) Chroot(p string) (billy.Filesystem, error) { return view.Sub(fs, p) }
func (fs *FS) Root() string                              { return "/" }
func (fs *FS) Capabilities() billy.Capability {
	return billy.ReadCapability | billy.SeekCapability
}

// Space reports the repository's filesystem as full: guest files take no
// writes.
func (fs *FS) Space() (total, free, avail uint64, err error) {
	total, _, _, err = view.FolderSpace(fs.repo.Dir)()
	return total, 0, 0, err
}

var errReadOnly = errors.New("guest files are read-only")
