package view

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/go-git/go-billy/v5"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/vmfolder"
)

// PointFS is the read-only tree of restore points: /<vm>/<point>/<file>.
type PointFS struct {
	repo  *repo.Repo
	cache *repo.Cache

	mu    sync.RWMutex
	nodes map[string]*pnode // clean absolute path -> node
	ids   map[uint64]string

	// One reader per disk, kept across opens: go-nfs opens the file for every
	// READ, and readahead needs to see the whole stream.
	readers *lru.Cache[repo.Digest, *repo.DiskReader]
}

type pnode struct {
	info
	children []string    // sorted, for directories
	data     []byte      // small files: config files, descriptors
	index    repo.Digest // disk extents and large config files
	label    string      // for error messages
}

// NewPointFS returns the view of every restore point in r.
func NewPointFS(r *repo.Repo, cache *repo.Cache) (*PointFS, error) {
	readers, _ := lru.New[repo.Digest, *repo.DiskReader](256)
	fs := &PointFS{repo: r, cache: cache, readers: readers}
	if err := fs.Refresh(); err != nil {
		return nil, err
	}
	return fs, nil
}

// Refresh rereads the repository's restore points.
func (fs *PointFS) Refresh() error {
	pts, err := fs.repo.Points()
	if err != nil {
		return fmt.Errorf("restore point view: %w", err)
	}
	nodes := map[string]*pnode{}
	ids := map[uint64]string{}
	add := func(p string, n *pnode) {
		n.name = path.Base(p)
		n.id = HashID("points", p)
		nodes[p] = n
		ids[n.id] = p
		if p == "/" {
			return
		}
		parent := nodes[path.Dir(p)]
		parent.children = append(parent.children, n.name)
	}
	dir := func(p string, n *pnode) {
		n.mode = os.ModeDir | 0o555
		add(p, n)
	}
	dir("/", &pnode{})
	for _, pt := range pts {
		vmDir := "/" + pt.VM.Name
		if _, ok := nodes[vmDir]; !ok {
			dir(vmDir, &pnode{})
		}
		if pt.Created.After(nodes[vmDir].mtime) {
			nodes[vmDir].mtime = pt.Created
		}
		pd := vmDir + "/" + pt.ID
		dir(pd, &pnode{info: info{mtime: pt.Created}})
		for _, n := range PointFiles(pt) {
			n.mtime = pt.Created
			n.mode = 0o444
			add(pd+"/"+n.name, n)
		}
	}
	for _, n := range nodes {
		sort.Strings(n.children)
	}
	fs.mu.Lock()
	fs.nodes, fs.ids = nodes, ids
	fs.mu.Unlock()
	return nil
}

// PointFiles lists the files of a restore point's VM folder.
func PointFiles(pt *repo.RestorePoint) []*pnode {
	var out []*pnode
	for _, f := range pt.Files {
		n := &pnode{info: info{name: f.Name, size: f.Size}, data: f.Inline, index: f.Index,
			label: fmt.Sprintf("restore point %s file %s", pt.ID, f.Name)}
		if n.data == nil && f.Index.IsZero() {
			n.data = []byte{}
		}
		out = append(out, n)
	}
	for _, d := range pt.Disks {
		desc := vmfolder.FlatDescriptor(d.Name+"-flat.vmdk", d.Size, d.Adapter)
		out = append(out,
			&pnode{info: info{name: d.Name + ".vmdk", size: int64(len(desc))}, data: desc},
			&pnode{info: info{name: d.Name + "-flat.vmdk", size: d.Size}, index: d.Index,
				label: fmt.Sprintf("restore point %s disk %s", pt.ID, d.Name)})
	}
	return out
}

func clean(p string) string {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p) // no copy when p is clean
	}
	return path.Clean("/" + p)
}

func (fs *PointFS) lookup(p string) (*pnode, string, error) {
	p = clean(p)
	fs.mu.RLock()
	n := fs.nodes[p]
	fs.mu.RUnlock()
	if n == nil {
		return nil, p, &os.PathError{Op: "stat", Path: p, Err: os.ErrNotExist}
	}
	return n, p, nil
}

var errReadOnly = errors.New("restore points are read-only: publish a session to write")

func (fs *PointFS) Create(filename string) (billy.File, error) {
	return nil, &os.PathError{Op: "create", Path: filename, Err: os.ErrPermission}
}

func (fs *PointFS) Open(filename string) (billy.File, error) {
	return fs.OpenFile(filename, os.O_RDONLY, 0)
}

func (fs *PointFS) OpenFile(filename string, flag int, _ os.FileMode) (billy.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND) != 0 {
		return nil, &os.PathError{Op: "open", Path: filename, Err: os.ErrPermission}
	}
	n, p, err := fs.lookup(filename)
	if err != nil {
		return nil, err
	}
	if n.mode.IsDir() {
		return NewReadOnlyDir(p, errReadOnly), nil
	}
	if n.data != nil || n.size == 0 {
		return NewReadOnlyFile(p, bytes.NewReader(n.data), n.size, errReadOnly), nil
	}
	dr, err := fs.reader(n)
	if err != nil {
		return nil, err
	}
	return NewReadOnlyFile(p, dr, n.size, errReadOnly), nil
}

// OpenCached opens filename for reading when that needs no I/O: always for
// folders and small files, for a disk when its reader (index) is loaded
// already. ok is false otherwise (then Open). The NFS server answers READs
// of such files, when their bytes are cached, without a goroutine switch.
func (fs *PointFS) OpenCached(filename string) (billy.File, bool) {
	n, p, err := fs.lookup(filename)
	if err != nil {
		return nil, false
	}
	switch {
	case n.mode.IsDir():
		return NewReadOnlyDir(p, errReadOnly), true
	case n.data != nil || n.size == 0:
		return NewReadOnlyFile(p, bytes.NewReader(n.data), n.size, errReadOnly), true
	}
	dr, ok := fs.readers.Get(n.index)
	if !ok || dr.Size() != n.size {
		return nil, false
	}
	return NewReadOnlyFile(p, dr, n.size, errReadOnly), true
}

func (fs *PointFS) reader(n *pnode) (*repo.DiskReader, error) {
	if dr, ok := fs.readers.Get(n.index); ok {
		return dr, nil
	}
	dr, err := fs.repo.OpenDisk(n.index, fs.cache, n.label)
	if err != nil {
		return nil, err
	}
	if dr.Size() != n.size {
		return nil, fmt.Errorf("%s: index holds %d bytes, manifest says %d: %w", n.label, dr.Size(), n.size, repo.ErrCorrupt)
	}
	fs.readers.Add(n.index, dr)
	return dr, nil
}

func (fs *PointFS) Stat(filename string) (os.FileInfo, error) {
	n, _, err := fs.lookup(filename)
	if err != nil {
		return nil, err
	}
	return &n.info, nil // nodes are not changed once Refresh made them
}

func (fs *PointFS) Lstat(filename string) (os.FileInfo, error) { return fs.Stat(filename) }

func (fs *PointFS) ReadDir(p string) ([]os.FileInfo, error) {
	n, p, err := fs.lookup(p)
	if err != nil {
		return nil, err
	}
	if !n.mode.IsDir() {
		return nil, &os.PathError{Op: "readdir", Path: p, Err: errors.New("not a directory")}
	}
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	out := make([]os.FileInfo, 0, len(n.children))
	for _, c := range n.children {
		i := fs.nodes[path.Join(p, c)].info
		out = append(out, &i)
	}
	return out, nil
}

func (fs *PointFS) Rename(from, to string) error {
	return &os.LinkError{Op: "rename", Old: from, New: to, Err: os.ErrPermission}
}
func (fs *PointFS) Remove(filename string) error {
	return &os.PathError{Op: "remove", Path: filename, Err: os.ErrPermission}
}
func (fs *PointFS) Join(elem ...string) string { return path.Join(elem...) }
func (fs *PointFS) TempFile(dir, prefix string) (billy.File, error) {
	return nil, &os.PathError{Op: "tempfile", Path: dir, Err: os.ErrPermission}
}
func (fs *PointFS) MkdirAll(filename string, _ os.FileMode) error {
	return &os.PathError{Op: "mkdir", Path: filename, Err: os.ErrPermission}
}
func (fs *PointFS) Symlink(target, link string) error {
	return &os.PathError{Op: "symlink", Path: link, Err: os.ErrPermission}
}
func (fs *PointFS) Readlink(link string) (string, error) {
	return "", &os.PathError{Op: "readlink", Path: link, Err: errors.New("not a symlink")}
}
func (fs *PointFS) Chroot(p string) (billy.Filesystem, error) { return Sub(fs, p) }
func (fs *PointFS) Root() string                              { return "/" }
func (fs *PointFS) Capabilities() billy.Capability {
	return billy.ReadCapability | billy.SeekCapability
}

// FileID returns the stable id of path.
func (fs *PointFS) FileID(p string) (uint64, error) {
	n, _, err := fs.lookup(p)
	if err != nil {
		return 0, err
	}
	return n.id, nil
}

// PathOf returns the path whose id is id.
func (fs *PointFS) PathOf(id uint64) (string, error) {
	fs.mu.RLock()
	p, ok := fs.ids[id]
	fs.mu.RUnlock()
	if !ok {
		return "", fmt.Errorf("file id %016x: %w", id, os.ErrNotExist)
	}
	return p, nil
}

// Space reports the repository's filesystem as full: restore points take no
// writes.
func (fs *PointFS) Space() (total, free, avail uint64, err error) {
	total, _, _, err = FolderSpace(fs.repo.Dir)()
	return total, 0, 0, err
}
