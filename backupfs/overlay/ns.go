package overlay

import (
	"errors"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5"
)

// maxRetries bounds the loops that redo a step when a concurrent change got
// in between preparing it (copy-up, base listing) and committing it.
const maxRetries = 16

var errBusy = errors.New("too many concurrent changes")

// fileInfo is the os.FileInfo of the overlay. Sys returns a *syscall.Stat_t
// (on Unix) whose Ino is the file id.
type fileInfo struct {
	name     string
	size     int64
	mode     os.FileMode
	mtime    time.Time
	id       uint64
	uid, gid uint32
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) Mode() os.FileMode  { return fi.mode }
func (fi *fileInfo) ModTime() time.Time { return fi.mtime }
func (fi *fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *fileInfo) Sys() any {
	return statSys(fi.id, fi.IsDir(), fi.uid, fi.gid, fi.size)
}

// nodeInfo describes a node from a copy taken under mu. A file's size and
// mtime are its data file's, or the node's own until it has one.
func (o *Overlay) nodeInfo(name string, n node) (os.FileInfo, error) {
	fi := &fileInfo{name: name, mode: n.Mode, id: n.ID, uid: n.UID, gid: n.GID, mtime: time.Unix(0, n.MTime)}
	if n.Kind == kindDir {
		fi.mode |= os.ModeDir
		return fi, nil
	}
	st, err := o.fs.Stat(o.dataPath(n.ID))
	return o.fileNodeInfo(fi, n, st, err)
}

// fileNodeInfo completes fi, a file node's description, from st, its data
// file's (err: its data file's Stat's error).
func (o *Overlay) fileNodeInfo(fi *fileInfo, n node, st os.FileInfo, err error) (os.FileInfo, error) {
	switch {
	case err == nil:
		fi.size, fi.mtime = st.Size(), st.ModTime()
		if n.Origin != "" {
			fi.size = o.fileSize(n.ID, fi.size)
		}
	case errors.Is(err, os.ErrNotExist):
		fi.size = n.BaseLimit
	default:
		return nil, err
	}
	return fi, nil
}

// fileSize is the size of file id, whose data file is dataSize long: a
// data file holding a record region past the file's end is longer (see
// region.go). The size is the open content's, or else its bitmap header's.
// The data file was stat-ed first: a region made after that started past
// the size it found.
func (o *Overlay) fileSize(id uint64, dataSize int64) int64 {
	o.mu.Lock()
	c := o.contents[id]
	o.mu.Unlock()
	if c != nil {
		if s := c.regionSize.Load(); s != -2 {
			c.stateMu.Lock()
			defer c.stateMu.Unlock()
			return c.size
		}
	}
	if s, ok := o.regionSizeOf(id); ok {
		return s
	}
	return dataSize
}

func (o *Overlay) baseInfo(name, p string, bi os.FileInfo) os.FileInfo {
	return &fileInfo{name: name, size: bi.Size(), mode: bi.Mode(), mtime: bi.ModTime(), id: o.baseID(p)}
}

// StatOpen is Stat (and Lstat) of name for f, a file o opened as name,
// taken from f's content: its node, looked up by id, and its data file's
// descriptor, without the lookups of the path in the base and in o.fs.
// ok is false when f cannot tell (not o's, a directory, a base file without
// a node, an error): the caller stats the path then. It is what Stat says
// unless name changed (renamed, removed) since f was opened.
func (o *Overlay) StatOpen(name string, f billy.File) (fi os.FileInfo, ok bool) {
	of, isOurs := f.(*file)
	if !isOurs || of.o != o || of.c == nil || of.closed.Load() || o.check() != nil {
		return nil, false
	}
	p, err := cleanPath(name)
	if err != nil {
		return nil, false
	}
	fi, err = of.c.stat(path.Base(p))
	return fi, err == nil
}

// stat is the overlay's Stat of c's file, named name (the last element).
func (c *content) stat(name string) (os.FileInfo, error) {
	o := c.o
	o.mu.Lock()
	var n node
	p, ok := o.byID[c.id]
	if ok && o.st.nodes[p] != nil {
		n = *o.st.nodes[p]
	} else {
		ok = false
	}
	o.mu.Unlock()
	if !ok || n.Kind != kindFile {
		return nil, os.ErrNotExist // a base file without a node, or gone
	}
	fi := &fileInfo{name: name, mode: n.Mode, id: n.ID, uid: n.UID, gid: n.GID, mtime: time.Unix(0, n.MTime)}
	// The descriptor is the data file at its path: it is made whole
	// before it is opened (createData) and never replaced while loaded.
	// While the content is held (or wanted) exclusively, by a sync's
	// checkpoint say, the path is stat-ed instead of waiting for it, as
	// Stat does.
	var (
		st  os.FileInfo
		err error
	)
	if c.mu.TryRLock() {
		if c.loaded && c.data != nil {
			st, err = c.data.Stat()
		}
		c.mu.RUnlock()
	}
	if st == nil && err == nil {
		st, err = o.fs.Stat(o.dataPath(n.ID))
	}
	return o.fileNodeInfo(fi, n, st, err)
}

// Stat describes the file or directory at name.
func (o *Overlay) Stat(name string) (os.FileInfo, error) { return o.stat("stat", name) }

// Lstat is Stat: the overlay makes no symbolic links (base ones show as such).
func (o *Overlay) Lstat(name string) (os.FileInfo, error) { return o.stat("lstat", name) }

func (o *Overlay) stat(op, name string) (os.FileInfo, error) {
	if err := o.check(); err != nil {
		return nil, pathErr(op, name, err)
	}
	p, err := cleanPath(name)
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	bi, err := o.baseLstat(p)
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	o.mu.Lock()
	e := o.lookupLocked(p, bi)
	var n node
	if e.n != nil {
		n = *e.n
	}
	o.mu.Unlock()
	base := path.Base(p)
	switch {
	case e.n != nil:
		fi, err := o.nodeInfo(base, n)
		if err != nil {
			return nil, pathErr(op, name, err)
		}
		return fi, nil
	case e.bi != nil:
		return o.baseInfo(base, p, e.bi), nil
	}
	return nil, pathErr(op, name, os.ErrNotExist)
}

// ReadDir lists a directory, sorted by name.
func (o *Overlay) ReadDir(name string) ([]os.FileInfo, error) {
	if err := o.check(); err != nil {
		return nil, pathErr("readdir", name, err)
	}
	p, err := cleanPath(name)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	bi, kids, err := o.baseDir(p)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	o.mu.Lock()
	e := o.lookupLocked(p, bi)
	if !e.exists() {
		o.mu.Unlock()
		return nil, pathErr("readdir", name, os.ErrNotExist)
	}
	if !e.isDir() {
		o.mu.Unlock()
		return nil, pathErr("readdir", name, syscall.ENOTDIR)
	}
	ents := o.listLocked(p, e, kids)
	nodes := make([]node, len(ents))
	for i, d := range ents {
		if d.n != nil {
			nodes[i] = *d.n
		}
	}
	o.mu.Unlock()
	out := make([]os.FileInfo, 0, len(ents))
	for i, d := range ents {
		if d.n == nil {
			out = append(out, o.baseInfo(d.name, path.Join(p, d.name), d.bi))
			continue
		}
		fi, err := o.nodeInfo(d.name, nodes[i])
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, pathErr("readdir", name, err)
		}
		out = append(out, fi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// baseDir returns the base entry at p and, if it is a directory, its listing.
func (o *Overlay) baseDir(p string) (os.FileInfo, []os.FileInfo, error) {
	bi, err := o.baseLstat(p)
	if err != nil || bi == nil || !bi.IsDir() {
		return bi, nil, err
	}
	kids, err := o.baseReadDir(p)
	return bi, kids, err
}

// MkdirAll creates directory name and any missing parents.
func (o *Overlay) MkdirAll(name string, perm os.FileMode) error {
	if err := o.check(); err != nil {
		return pathErr("mkdir", name, err)
	}
	p, err := cleanPath(name)
	if err != nil {
		return pathErr("mkdir", name, err)
	}
	var chain []string // root first
	for q := p; ; q = parentOf(q) {
		chain = append([]string{q}, chain...)
		if q == "/" {
			break
		}
	}
	bis := make(map[string]os.FileInfo, len(chain))
	for _, q := range chain {
		bi, err := o.baseLstat(q)
		if err != nil {
			return pathErr("mkdir", name, err)
		}
		bis[q] = bi
	}
	now := time.Now().UnixNano()
	o.mu.Lock()
	created := false
	for _, q := range chain {
		e := o.lookupLocked(q, bis[q])
		if e.exists() {
			if !e.isDir() {
				o.mu.Unlock()
				return pathErr("mkdir", name, syscall.ENOTDIR)
			}
			continue
		}
		o.addNodeLocked(q, &node{ID: o.newIDLocked(), Kind: kindDir, Mode: perm.Perm(), MTime: now, Opaque: true})
		o.touchDirLocked(parentOf(q), bis[parentOf(q)], now)
		created = true
	}
	if !created {
		o.mu.Unlock()
		return nil
	}
	save := o.commitLocked()
	o.mu.Unlock()
	if err := save(); err != nil {
		return pathErr("mkdir", name, err)
	}
	return nil
}

// Create creates or truncates name for reading and writing.
func (o *Overlay) Create(name string) (billy.File, error) {
	return o.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

// Open opens name for reading.
func (o *Overlay) Open(name string) (billy.File, error) {
	return o.OpenFile(name, os.O_RDONLY, 0)
}

// OpenFile opens name like os.OpenFile. Opening a base file for writing
// records a node for it (once); opening never copies data and, for a file
// already open or known, allocates only the handle.
func (o *Overlay) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	if err := o.check(); err != nil {
		return nil, pathErr("open", name, err)
	}
	p, err := cleanPath(name)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	write := acc == os.O_WRONLY || acc == os.O_RDWR
	f := &file{o: o, name: name, read: acc != os.O_WRONLY, write: write, appendMode: flag&os.O_APPEND != 0}

	bi, err := o.baseLstat(p)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	var biDir os.FileInfo
	if flag&os.O_CREATE != 0 {
		if biDir, err = o.baseLstat(parentOf(p)); err != nil {
			return nil, pathErr("open", name, err)
		}
	}
	o.mu.Lock()
	e := o.lookupLocked(p, bi)
	switch {
	case !e.exists():
		if flag&os.O_CREATE == 0 {
			o.mu.Unlock()
			return nil, pathErr("open", name, os.ErrNotExist)
		}
		de := o.lookupLocked(parentOf(p), biDir)
		if !de.exists() || !de.isDir() {
			o.mu.Unlock()
			if de.exists() {
				return nil, pathErr("open", name, syscall.ENOTDIR)
			}
			return nil, pathErr("open", name, os.ErrNotExist)
		}
		now := time.Now().UnixNano()
		n := &node{ID: o.newIDLocked(), Kind: kindFile, Mode: perm.Perm(), MTime: now}
		o.addNodeLocked(p, n)
		o.touchDirLocked(parentOf(p), biDir, now)
		f.c = o.acquireLocked(n.ID, n, "", nil)
		save := o.commitLocked()
		o.mu.Unlock()
		if err := save(); err != nil {
			if !o.byIDHas(n.ID) {
				f.c.removed.Store(true) // undone: nobody will name this id again
			}
			o.release(f.c)
			return nil, pathErr("open", name, err)
		}
		o.claimSpare(n.ID, now)
		o.filesCreated.Add(1)
		return f, nil
	case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		o.mu.Unlock()
		return nil, pathErr("open", name, os.ErrExist)
	case e.isDir():
		o.mu.Unlock()
		if write {
			return nil, pathErr("open", name, syscall.EISDIR)
		}
		f.dir = true
		return f, nil
	case e.n != nil:
		f.c = o.acquireLocked(e.n.ID, e.n, "", nil)
		o.mu.Unlock()
	case !e.bi.Mode().IsRegular():
		o.mu.Unlock()
		return nil, pathErr("open", name, billy.ErrNotSupported)
	case !write:
		f.c = o.acquireLocked(o.baseID(p), nil, p, e.bi)
		o.mu.Unlock()
	default:
		o.mu.Unlock()
		if f.c, err = o.copyUp(p); err != nil {
			return nil, pathErr("open", name, err)
		}
	}
	if write && flag&os.O_TRUNC != 0 {
		if err := f.c.truncate(0); err != nil {
			o.release(f.c)
			return nil, pathErr("open", name, err)
		}
	}
	return f, nil
}

// TempFile creates a new file in dir whose name starts with prefix.
func (o *Overlay) TempFile(dir, prefix string) (billy.File, error) {
	if dir == "" {
		dir = "/"
	}
	for range 10000 {
		name := path.Join(dir, prefix+strconv.FormatUint(uint64(rand.Uint32()), 10))
		f, err := o.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, pathErr("tempfile", path.Join(dir, prefix+"*"), os.ErrExist)
}

// copyUp makes the file at p a node, if it is a base file, and returns its
// content, acquired. Only metadata is written: the data stays in the base.
func (o *Overlay) copyUp(p string) (*content, error) {
	bi, err := o.baseLstat(p)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	e := o.lookupLocked(p, bi)
	switch {
	case !e.exists():
		o.mu.Unlock()
		return nil, os.ErrNotExist
	case e.isDir():
		o.mu.Unlock()
		return nil, syscall.EISDIR
	case e.n != nil:
		c := o.acquireLocked(e.n.ID, e.n, "", nil)
		o.mu.Unlock()
		return c, nil
	case !bi.Mode().IsRegular():
		o.mu.Unlock()
		return nil, billy.ErrNotSupported
	}
	id := o.baseID(p)
	c := o.acquireLocked(id, nil, p, bi)
	o.mu.Unlock()

	// Holding the content's lock keeps its readers and writers out until it
	// knows it has a node.
	c.mu.Lock()
	if c.upper {
		c.mu.Unlock()
		return c, nil
	}
	o.mu.Lock()
	if e := o.lookupLocked(p, bi); e.n != nil || e.bi == nil {
		// Removed, or replaced by another file, since we looked.
		o.mu.Unlock()
		c.mu.Unlock()
		o.release(c)
		return nil, os.ErrNotExist
	}
	o.addNodeLocked(p, &node{ID: id, Kind: kindFile, Mode: bi.Mode().Perm(), MTime: bi.ModTime().UnixNano(),
		Origin: p, BaseLimit: bi.Size()})
	wait, err := o.commitTxLocked()
	o.mu.Unlock()
	if err == nil {
		// The node exists (if not yet durably): the content is upper now.
		c.upper, c.origin, c.baseLimit, c.loaded = true, p, bi.Size(), false
		err = wait()
	}
	c.mu.Unlock()
	if err != nil {
		o.release(c)
		return nil, err
	}
	return c, nil
}

// materializeDir turns the directory at p into an opaque node whose
// content is all nodes, so that it can move by metadata alone. Base files
// inside become nodes with an origin; no data is copied.
func (o *Overlay) materializeDir(p string) error {
	for range maxRetries {
		bi, kids, err := o.baseDir(p)
		if err != nil {
			return err
		}
		o.mu.Lock()
		e := o.lookupLocked(p, bi)
		if !e.exists() {
			o.mu.Unlock()
			return os.ErrNotExist
		}
		if !e.isDir() {
			o.mu.Unlock()
			return syscall.ENOTDIR
		}
		if e.n != nil && e.n.Opaque {
			o.mu.Unlock()
			return nil
		}
		var files, dirs []string
		for _, d := range o.listLocked(p, e, kids) {
			c := path.Join(p, d.name)
			switch {
			case d.n != nil && d.n.Kind == kindDir && !d.n.Opaque:
				dirs = append(dirs, c)
			case d.n != nil:
			case d.bi.IsDir():
				dirs = append(dirs, c)
			case d.bi.Mode().IsRegular():
				files = append(files, c)
			default:
				o.mu.Unlock()
				return pathErr("rename", c, billy.ErrNotSupported)
			}
		}
		if len(files)+len(dirs) == 0 {
			n := e.n
			if n == nil {
				n = &node{ID: o.baseID(p), Kind: kindDir, Mode: bi.Mode().Perm(), MTime: bi.ModTime().UnixNano()}
				o.addNodeLocked(p, n)
			}
			o.markLocked(p)
			n.Opaque = true
			o.pruneWhiteoutsLocked(p)
			save := o.commitLocked()
			o.mu.Unlock()
			return save()
		}
		o.mu.Unlock()
		for _, c := range files {
			ct, err := o.copyUp(c)
			if errors.Is(err, os.ErrNotExist) {
				continue // gone meanwhile; the next round sees
			}
			if err != nil {
				return err
			}
			o.release(ct)
		}
		for _, c := range dirs {
			if err := o.materializeDir(c); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return errBusy
}

// Remove removes a file or an empty directory.
func (o *Overlay) Remove(name string) error {
	if err := o.check(); err != nil {
		return pathErr("remove", name, err)
	}
	p, err := cleanPath(name)
	if err != nil {
		return pathErr("remove", name, err)
	}
	if p == "/" {
		return pathErr("remove", name, syscall.EBUSY)
	}
	bi, kids, err := o.baseDir(p)
	if err != nil {
		return pathErr("remove", name, err)
	}
	biDir, err := o.baseLstat(parentOf(p))
	if err != nil {
		return pathErr("remove", name, err)
	}
	o.mu.Lock()
	e := o.lookupLocked(p, bi)
	if !e.exists() {
		o.mu.Unlock()
		return pathErr("remove", name, os.ErrNotExist)
	}
	isDir := e.isDir()
	if isDir && len(o.listLocked(p, e, kids)) > 0 {
		o.mu.Unlock()
		return pathErr("remove", name, syscall.ENOTEMPTY)
	}
	var g gone
	if e.n != nil {
		g = o.dropNodeLocked(p)
	}
	if isDir {
		o.pruneWhiteoutsLocked(p)
	}
	o.whiteoutLocked(p, bi)
	o.touchDirLocked(parentOf(p), biDir, time.Now().UnixNano())
	save := o.commitLocked()
	o.mu.Unlock()
	if err := save(); err != nil {
		g.keep(o)
		return pathErr("remove", name, err)
	}
	g.drop(o)
	return nil
}

// gone is a file node taken out of the table whose data awaits deletion.
type gone struct {
	id uint64
	c  *content // acquired, if the file was open or cached
}

// dropNodeLocked removes the node at p; a file's data is deleted by the
// returned gone once the metadata no longer names it.
func (o *Overlay) dropNodeLocked(p string) gone {
	n := o.delNodeLocked(p)
	if n.Kind != kindFile {
		return gone{}
	}
	g := gone{id: n.ID}
	delete(o.synced, n.ID)
	if c := o.contents[n.ID]; c != nil {
		c.removed.Store(true)
		c.refs++
		g.c = c
	}
	return g
}

func (g gone) drop(o *Overlay) {
	if g.id == 0 {
		return
	}
	if g.c != nil {
		// Under the content lock, so a first write cannot recreate the
		// data file behind us.
		g.c.mu.Lock()
	}
	o.fs.Remove(o.dataPath(g.id))
	o.fs.Remove(o.mapPath(g.id))
	if g.c != nil {
		g.c.mu.Unlock()
		o.release(g.c)
	}
}

// keep abandons the deletion (the metadata still names the file); the
// files are collected when the upper directory is next opened.
func (g gone) keep(o *Overlay) {
	if g.c != nil {
		if o.byIDHas(g.id) {
			g.c.removed.Store(false) // the removal was undone
		}
		o.release(g.c)
	}
}

// byIDHas reports whether a node has id.
func (o *Overlay) byIDHas(id uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.byID[id]
	return ok
}

// Rename moves oldpath to newpath, replacing what is there like rename(2):
// a file replaces a file, a directory an empty directory. Base files and
// directories move by metadata alone and keep their ids and content.
func (o *Overlay) Rename(oldpath, newpath string) error {
	if err := o.check(); err != nil {
		return linkErr("rename", oldpath, newpath, err)
	}
	po, err := cleanPath(oldpath)
	if err != nil {
		return linkErr("rename", oldpath, newpath, err)
	}
	pn, err := cleanPath(newpath)
	if err != nil {
		return linkErr("rename", oldpath, newpath, err)
	}
	if po == "/" || pn == "/" {
		return linkErr("rename", oldpath, newpath, syscall.EBUSY)
	}
	if under(pn, po) {
		return linkErr("rename", oldpath, newpath, syscall.EINVAL)
	}
	for range maxRetries {
		done, err := o.renameOnce(po, pn)
		if done {
			if err != nil {
				return linkErr("rename", oldpath, newpath, err)
			}
			return nil
		}
	}
	return linkErr("rename", oldpath, newpath, errBusy)
}

// renameOnce reports done=false when a concurrent change undid its
// preparation and it should be tried again.
func (o *Overlay) renameOnce(po, pn string) (done bool, err error) {
	biOld, err := o.baseLstat(po)
	if err != nil {
		return true, err
	}
	// Decide under mu how to make the source a node (node fields change).
	const (
		ready = iota
		copyFile
		materialize
		unsupported
	)
	o.mu.Lock()
	e := o.lookupLocked(po, biOld)
	exists, how := e.exists(), ready
	switch {
	case !exists:
	case e.isDir() && !(e.n != nil && e.n.Opaque):
		how = materialize
	case e.n == nil && e.bi.Mode().IsRegular():
		how = copyFile
	case e.n == nil:
		how = unsupported
	}
	o.mu.Unlock()
	switch {
	case !exists:
		return true, os.ErrNotExist
	case po == pn:
		return true, nil
	case how == copyFile:
		c, err := o.copyUp(po)
		if err != nil {
			return !errors.Is(err, os.ErrNotExist), err
		}
		o.release(c)
	case how == materialize:
		if err := o.materializeDir(po); err != nil {
			return !errors.Is(err, os.ErrNotExist), err
		}
	case how == unsupported:
		return true, billy.ErrNotSupported
	}

	biNew, newKids, err := o.baseDir(pn)
	if err != nil {
		return true, err
	}
	biOldDir, err := o.baseLstat(parentOf(po))
	if err != nil {
		return true, err
	}
	biNewDir, err := o.baseLstat(parentOf(pn))
	if err != nil {
		return true, err
	}
	o.mu.Lock()
	src := o.st.nodes[po]
	if src == nil || (src.Kind == kindDir && !src.Opaque) {
		o.mu.Unlock()
		return false, nil
	}
	de := o.lookupLocked(parentOf(pn), biNewDir)
	if !de.exists() {
		o.mu.Unlock()
		return true, os.ErrNotExist
	}
	if !de.isDir() {
		o.mu.Unlock()
		return true, syscall.ENOTDIR
	}
	var g gone
	if dst := o.lookupLocked(pn, biNew); dst.exists() {
		switch {
		case src.Kind == kindFile && dst.isDir():
			o.mu.Unlock()
			return true, syscall.EISDIR
		case src.Kind == kindDir && !dst.isDir():
			o.mu.Unlock()
			return true, syscall.ENOTDIR
		case dst.isDir() && len(o.listLocked(pn, dst, newKids)) > 0:
			o.mu.Unlock()
			return true, syscall.ENOTEMPTY
		}
		if dst.n != nil {
			g = o.dropNodeLocked(pn)
		}
		if dst.isDir() {
			o.pruneWhiteoutsLocked(pn)
		}
	}
	moving := []string{po}
	if src.Kind == kindDir {
		for q := range o.st.nodes {
			if under(q, po) {
				moving = append(moving, q)
			}
		}
	}
	moved := make([]*node, len(moving))
	for i, q := range moving {
		moved[i] = o.delNodeLocked(q)
	}
	for i, q := range moving {
		o.addNodeLocked(rebase(q, po, pn), moved[i])
	}
	o.pruneWhiteoutsLocked(po)
	o.whiteoutLocked(po, biOld)
	now := time.Now().UnixNano()
	o.touchDirLocked(parentOf(po), biOldDir, now)
	o.touchDirLocked(parentOf(pn), biNewDir, now)
	save := o.commitLocked()
	o.mu.Unlock()
	if err := save(); err != nil {
		g.keep(o)
		return true, err
	}
	g.drop(o)
	return true, nil
}

// changeNode applies f to the node at name, making one first if name is a
// base entry, and persists the result.
func (o *Overlay) changeNode(op, name string, f func(n *node)) error {
	if err := o.check(); err != nil {
		return pathErr(op, name, err)
	}
	p, err := cleanPath(name)
	if err != nil {
		return pathErr(op, name, err)
	}
	bi, err := o.baseLstat(p)
	if err != nil {
		return pathErr(op, name, err)
	}
	for range maxRetries {
		o.mu.Lock()
		e := o.lookupLocked(p, bi)
		switch {
		case !e.exists():
			o.mu.Unlock()
			return pathErr(op, name, os.ErrNotExist)
		case e.n == nil && e.bi.IsDir():
			e.n = &node{ID: o.baseID(p), Kind: kindDir, Mode: bi.Mode().Perm(), MTime: bi.ModTime().UnixNano()}
			o.addNodeLocked(p, e.n)
		case e.n == nil && e.bi.Mode().IsRegular():
			o.mu.Unlock()
			c, err := o.copyUp(p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return pathErr(op, name, err)
			}
			o.release(c)
			continue
		case e.n == nil:
			o.mu.Unlock()
			return pathErr(op, name, billy.ErrNotSupported)
		}
		o.markLocked(p)
		f(e.n)
		save := o.commitLocked()
		o.mu.Unlock()
		if err := save(); err != nil {
			return pathErr(op, name, err)
		}
		return nil
	}
	return pathErr(op, name, errBusy)
}

// Chmod sets the permission bits of name.
func (o *Overlay) Chmod(name string, mode os.FileMode) error {
	return o.changeNode("chmod", name, func(n *node) { n.Mode = mode.Perm() })
}

// Chown sets the owner of name.
func (o *Overlay) Chown(name string, uid, gid int) error { return o.chown("chown", name, uid, gid) }

// Lchown is Chown: the overlay makes no symbolic links.
func (o *Overlay) Lchown(name string, uid, gid int) error { return o.chown("lchown", name, uid, gid) }

func (o *Overlay) chown(op, name string, uid, gid int) error {
	return o.changeNode(op, name, func(n *node) {
		// -1 leaves an id unchanged, as in chown(2).
		if uid != -1 {
			n.UID = uint32(uid)
		}
		if gid != -1 {
			n.GID = uint32(gid)
		}
	})
}

// Chtimes sets the modification time of name (the access time is not kept).
func (o *Overlay) Chtimes(name string, atime, mtime time.Time) error {
	if err := o.check(); err != nil {
		return pathErr("chtimes", name, err)
	}
	p, err := cleanPath(name)
	if err != nil {
		return pathErr("chtimes", name, err)
	}
	bi, err := o.baseLstat(p)
	if err != nil {
		return pathErr("chtimes", name, err)
	}
	o.mu.Lock()
	e := o.lookupLocked(p, bi)
	o.mu.Unlock()
	if e.isDir() || !e.exists() {
		return o.changeNode("chtimes", name, func(n *node) { n.MTime = mtime.UnixNano() })
	}
	// A file's mtime is its data file's.
	c, err := o.copyUp(p)
	if err != nil {
		return pathErr("chtimes", name, err)
	}
	defer o.release(c)
	if err := c.chtimes(atime, mtime); err != nil {
		return pathErr("chtimes", name, err)
	}
	return nil
}
