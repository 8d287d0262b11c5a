package gfs

import (
	"fmt"
	"io"
	"os"
	"path"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Tree walks slash paths ("/" is the root) over a Reader. It is safe for
// concurrent use when the Reader is.
type Tree struct {
	r     Reader
	label string
	dirs  *lru.Cache[uint64, *dirList] // directory Ino -> entries
	files *lru.Cache[uint64, io.ReaderAt]
	root  atomic.Pointer[Entry] // the root's entry, once read
}

type dirList struct {
	entries []Entry
	byName  map[string]int
}

// DefaultCachedDirs bounds the directories a Tree keeps listed.
const DefaultCachedDirs = 512

// NewTree walks r; label names the volume in errors.
func NewTree(r Reader, label string) *Tree {
	dirs, _ := lru.New[uint64, *dirList](DefaultCachedDirs)
	files, _ := lru.New[uint64, io.ReaderAt](256)
	return &Tree{r: r, label: label, dirs: dirs, files: files}
}

// Reader is the filesystem the tree walks.
func (t *Tree) Reader() Reader { return t.r }

// guard turns a panic of the reader into an error wrapping ErrPanic.
func (t *Tree) guard(op, p string, err *error) {
	if v := recover(); v != nil {
		*err = &os.PathError{Op: op, Path: p, Err: fmt.Errorf("%s: %w: %v (%s)", t.label, ErrPanic, v, firstFrames(debug.Stack()))}
	}
}

// firstFrames keeps the panicking function's line of a stack, for the log.
func firstFrames(st []byte) string {
	lines := strings.Split(string(st), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic(") && i+3 < len(lines) {
			return strings.TrimSpace(lines[i+2]) + " " + strings.TrimSpace(lines[i+3])
		}
	}
	return "no stack"
}

func (t *Tree) list(dir Entry) (*dirList, error) {
	if d, ok := t.dirs.Get(dir.Ino); ok {
		return d, nil
	}
	ents, err := t.r.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	d := &dirList{entries: ents, byName: make(map[string]int, len(ents))}
	for i, e := range ents {
		d.byName[e.Name] = i
	}
	t.dirs.Add(dir.Ino, d)
	return d, nil
}

// Lstat returns the entry at p without following a final symlink.
func (t *Tree) Lstat(p string) (e Entry, err error) {
	defer t.guard("lstat", p, &err)
	return t.lstat(p)
}

// rootEntry is the root's entry, read once (the volume never changes).
func (t *Tree) rootEntry() (Entry, error) {
	if e := t.root.Load(); e != nil {
		return *e, nil
	}
	e, err := t.r.Root()
	if err != nil {
		return Entry{}, err
	}
	e.Name = "/"
	t.root.Store(&e)
	return e, nil
}

func (t *Tree) lstat(p string) (Entry, error) {
	cur, err := t.rootEntry()
	if err != nil {
		return Entry{}, &os.PathError{Op: "lstat", Path: p, Err: fmt.Errorf("%s: %w", t.label, err)}
	}
	p = path.Clean("/" + p)
	if p == "/" {
		return cur, nil
	}
	for _, name := range strings.Split(p[1:], "/") {
		if !cur.Mode.IsDir() {
			return Entry{}, &os.PathError{Op: "lstat", Path: p, Err: fmt.Errorf("%s: not a directory", t.label)}
		}
		d, err := t.list(cur)
		if err != nil {
			return Entry{}, &os.PathError{Op: "lstat", Path: p, Err: fmt.Errorf("%s: %w", t.label, err)}
		}
		i, ok := d.byName[name]
		if !ok {
			return Entry{}, &os.PathError{Op: "lstat", Path: p, Err: os.ErrNotExist}
		}
		cur = d.entries[i]
	}
	return cur, nil
}

// ReadDir lists the directory at p.
func (t *Tree) ReadDir(p string) (out []Entry, err error) {
	defer t.guard("readdir", p, &err)
	e, err := t.lstat(p)
	if err != nil {
		return nil, err
	}
	if !e.Mode.IsDir() {
		return nil, &os.PathError{Op: "readdir", Path: p, Err: fmt.Errorf("%s: not a directory", t.label)}
	}
	d, err := t.list(e)
	if err != nil {
		return nil, &os.PathError{Op: "readdir", Path: p, Err: fmt.Errorf("%s: %w", t.label, err)}
	}
	return d.entries, nil
}

// Open returns the entry at p, a regular file, and its bytes.
func (t *Tree) Open(p string) (e Entry, ra io.ReaderAt, err error) {
	defer t.guard("open", p, &err)
	e, err = t.lstat(p)
	if err != nil {
		return Entry{}, nil, err
	}
	if !e.Mode.IsRegular() {
		return Entry{}, nil, &os.PathError{Op: "open", Path: p, Err: fmt.Errorf("%s: not a regular file", t.label)}
	}
	if ra, ok := t.files.Get(e.Ino); ok {
		return e, ra, nil
	}
	ra, err = t.r.Open(e)
	if err != nil {
		return Entry{}, nil, &os.PathError{Op: "open", Path: p, Err: fmt.Errorf("%s: %w", t.label, err)}
	}
	ra = flatten(guardedReaderAt{ra: ra, t: t, p: p}, e.Size)
	t.files.Add(e.Ino, ra)
	return e, ra, nil
}

// OpenCached is Open when it needs no I/O: every folder on the way listed
// in the tree's cache and the file opened before. ok is false otherwise
// (then Open); it never reads.
func (t *Tree) OpenCached(p string) (e Entry, ra io.ReaderAt, ok bool) {
	defer func() {
		if recover() != nil {
			e, ra, ok = Entry{}, nil, false
		}
	}()
	r := t.root.Load()
	if r == nil {
		return Entry{}, nil, false
	}
	cur := *r
	p = path.Clean("/" + p)
	if p == "/" {
		return Entry{}, nil, false
	}
	for _, name := range strings.Split(p[1:], "/") {
		if !cur.Mode.IsDir() {
			return Entry{}, nil, false
		}
		d, ok := t.dirs.Get(cur.Ino)
		if !ok {
			return Entry{}, nil, false
		}
		i, ok := d.byName[name]
		if !ok {
			return Entry{}, nil, false
		}
		cur = d.entries[i]
	}
	if !cur.Mode.IsRegular() {
		return Entry{}, nil, false
	}
	if ra, ok = t.files.Get(cur.Ino); !ok {
		return Entry{}, nil, false
	}
	return cur, ra, true
}

// Readlink returns the target of the symlink at p.
func (t *Tree) Readlink(p string) (s string, err error) {
	defer t.guard("readlink", p, &err)
	e, err := t.lstat(p)
	if err != nil {
		return "", err
	}
	if e.Mode&os.ModeSymlink == 0 {
		return "", &os.PathError{Op: "readlink", Path: p, Err: fmt.Errorf("%s: not a symlink", t.label)}
	}
	s, err = t.r.Readlink(e)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: p, Err: fmt.Errorf("%s: %w", t.label, err)}
	}
	return s, nil
}

// guardedReaderAt recovers a panic of a file's reader.
type guardedReaderAt struct {
	ra io.ReaderAt
	t  *Tree
	p  string
}

func (g guardedReaderAt) ReadAt(b []byte, off int64) (n int, err error) {
	defer g.t.guard("read", g.p, &err)
	return g.ra.ReadAt(b, off)
}

// Map is the file reader's Map (see Mapper), with its panics recovered;
// ErrNotMapped when the reader has none.
func (g guardedReaderAt) Map(off, n int64) (ps []Piece, err error) {
	defer g.t.guard("map", g.p, &err)
	m, ok := g.ra.(Mapper)
	if !ok {
		return nil, ErrNotMapped
	}
	return m.Map(off, n)
}

// MaxFlatPieces bounds the pieces a file's resolved map may have to be
// kept with the open file (40 bytes each): a file in more fragments is
// resolved on every Map, as it lies.
const MaxFlatPieces = 256

// flatFile is an open file whose bytes were resolved once, at open, down
// to the readers that hold them (Resolve through the file's extents, the
// partition, the logical volume): a READ's Map is a binary search in that
// list instead of a walk through every layer. The volume is a backup, read
// only: the list never goes stale.
type flatFile struct {
	guardedReaderAt
	pieces []Piece // from offset 0, covering the whole file
	starts []int64 // the file offset of each piece
}

// flatten returns g with its map resolved when the file maps in place in
// at most MaxFlatPieces pieces, g as it is otherwise.
func flatten(g guardedReaderAt, size int64) io.ReaderAt {
	if size <= 0 {
		return g
	}
	ps, got, err := Resolve(g, 0, size)
	if err != nil || got != size || len(ps) > MaxFlatPieces {
		return g
	}
	f := &flatFile{guardedReaderAt: g, pieces: slices.Clip(ps), starts: make([]int64, len(ps))}
	var at int64
	for i, p := range ps {
		f.starts[i] = at
		at += p.Len
	}
	return f
}

// Map returns the resolved pieces holding bytes [off, off+n) (Mapper).
func (f *flatFile) Map(off, n int64) ([]Piece, error) {
	if off < 0 {
		return nil, fmt.Errorf("%s: %s: negative offset", f.t.label, f.p)
	}
	i := sort.Search(len(f.pieces), func(i int) bool { return f.starts[i]+f.pieces[i].Len > off })
	end := off + n
	out := make([]Piece, 0, 2)
	for ; i < len(f.pieces) && f.starts[i] < end; i++ {
		p, at := f.pieces[i], f.starts[i]
		lo, hi := max(at, off), min(at+p.Len, end)
		q := Piece{R: p.R, Len: hi - lo}
		if p.R != nil {
			q.Off = p.Off + lo - at
		}
		out = append(out, q)
	}
	return out, nil
}
