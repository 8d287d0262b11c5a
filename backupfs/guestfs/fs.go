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

	layouts *lru.Cache[string, *layout]   // point id -> volumes
	trees   *lru.Cache[string, *gfs.Tree] // point/disk/volume -> open filesystem
	// listings keeps guest folders' converted entries: NFS clients page
	// through a large folder with one ReadDir per page.
	listings *lru.Cache[string, []os.FileInfo]
	openMu   sync.Mutex // serialises layout scans and volume opens
	// volMu guards the Status, Reason and Notes of the volumes of shared
	// layouts: a volume's first open can find it damaged, or note a
	// journal not replayed, after its disk was listed.
	volMu sync.RWMutex

	volCharge int64
	holdMu    sync.Mutex
	holds     map[string]*repo.Held // open volume, "layout:"+point, "listing:"+path -> its charge to the chunk cache's bound
	notes     map[string][]string   // open volume -> what its reader noted when opened
	// failed keeps why a volume stopped being served (gfs.Availability)
	// once its reader is closed: it is not opened again, to hang again.
	failed map[string]error

	// Test seams, nil and zero in production: wrapVolume wraps a volume's
	// bytes before its filesystem is opened; ntfsTimeout bounds each
	// go-ntfs call.
	wrapVolume  func(key string, ra io.ReaderAt) io.ReaderAt
	ntfsTimeout time.Duration
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
	fs := &FS{repo: r, cache: cache, log: opts.Logger, volCharge: opts.VolumeCharge,
		holds: map[string]*repo.Held{}, notes: map[string][]string{}, failed: map[string]error{}}
	fs.layouts, _ = lru.NewWithEvict[string, *layout](opts.MaxPoints, func(id string, _ *layout) { fs.uncharge(layoutHold + id) })
	fs.trees, _ = lru.NewWithEvict[string, *gfs.Tree](opts.MaxVolumes, func(key string, t *gfs.Tree) {
		fs.holdMu.Lock()
		delete(fs.notes, key)
		if a, ok := t.Reader().(gfs.Availability); ok {
			if err := a.Unavailable(); err != nil {
				fs.failed[key] = err
			}
		}
		fs.holdMu.Unlock()
		fs.uncharge(key)
	})
	fs.listings, _ = lru.NewWithEvict[string, []os.FileInfo](64, func(p string, _ []os.FileInfo) { fs.uncharge(listingHold + p) })
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
	fs.holdMu.Lock()
	err := fs.failed[key]
	fs.holdMu.Unlock()
	if err != nil {
		return err
	}
	if t, ok := fs.trees.Peek(key); ok {
		if a, ok := t.Reader().(gfs.Availability); ok {
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
	id := l.pt.ID
	if cur, ok := fs.layouts.Peek(id); ok && cur == l {
		fs.charge(layoutHold+id, n, func() { fs.layouts.Remove(id) })
	}
}

func (fs *FS) layout(vm, id string) (*layout, error) {
	if l, ok := fs.layouts.Get(id); ok {
		fs.touch(layoutHold + id)
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
			if _, ok := fs.trees.Peek(volKey(pt.ID, v)); ok {
				fs.holdMu.Lock()
				v.Notes = fs.notes[volKey(pt.ID, v)]
				fs.holdMu.Unlock()
			}
		}
	}
	fs.charge(layoutHold+id, layoutBytes(l), func() { fs.layouts.Remove(id) })
	fs.layouts.Add(id, l)
	return l, nil
}

// Keys of the holdings of layouts and listings (open volumes' are their
// volume keys).
const (
	layoutHold  = "layout:"
	listingHold = "listing:"
)

// charge holds bytes against the chunk cache's bound for key, replacing
// what key held; drop is how the owner lets go when the cache needs the
// room (it must remove the cached thing, whose eviction calls uncharge).
func (fs *FS) charge(key string, bytes int64, drop func()) {
	if fs.cache == nil {
		return
	}
	h := fs.cache.Hold(bytes, drop)
	fs.holdMu.Lock()
	old := fs.holds[key]
	fs.holds[key] = h
	fs.holdMu.Unlock()
	if old != nil {
		old.Release()
	}
}

// uncharge gives back what key held.
func (fs *FS) uncharge(key string) {
	fs.holdMu.Lock()
	h := fs.holds[key]
	delete(fs.holds, key)
	fs.holdMu.Unlock()
	if h != nil {
		h.Release()
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
	if t, ok := fs.trees.Get(key); ok {
		fs.touch(key)
		fs.holdMu.Lock()
		notes := fs.notes[key]
		fs.holdMu.Unlock()
		return t, notes, nil
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
	var notes []string
	if n, ok := r.(gfs.Noter); ok {
		notes = n.Notes()
	}
	t := gfs.NewTree(r, "volume "+key)
	// Released by the cache to make room: closed, reopened on next use.
	fs.charge(key, fs.volCharge, func() { fs.trees.Remove(key) })
	fs.holdMu.Lock()
	fs.notes[key] = notes
	fs.holdMu.Unlock()
	fs.trees.Add(key, t)
	return t, notes, nil
}

// touch marks an open volume as used (its charge is released last).
func (fs *FS) touch(key string) {
	fs.holdMu.Lock()
	h := fs.holds[key]
	fs.holdMu.Unlock()
	if h != nil {
		h.Touch()
	}
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
		if t, ok := fs.trees.Get(key); ok {
			fs.touch(key)
			return t, nil
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
	if out, ok := fs.listings.Get(l.clean); ok {
		fs.touch(listingHold + l.clean)
		return slices.Clone(out), nil
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
	fs.charge(listingHold+l.clean, listingBytes(l.clean, out), func() { fs.listings.Remove(l.clean) })
	fs.listings.Add(l.clean, out)
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
