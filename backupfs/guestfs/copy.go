package guestfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/rekindle/rekindle/backupfs/guestfs/gfs"
)

// Item is one entry of a listing, for people and for --json.
type Item struct {
	Name   string      `json:"name"`
	Path   string      `json:"path"` // inside the restore point: <disk>/<volume>/...
	Type   string      `json:"type"` // dir, file, symlink, status, other
	Size   int64       `json:"size"`
	Mode   string      `json:"mode"`
	Mtime  time.Time   `json:"mtime"`
	Target string      `json:"target,omitempty"` // symlink target
	Volume *Volume     `json:"volume,omitempty"` // for volumes and their status entries
	mode   os.FileMode `json:"-"`
}

func pointPath(vm, point, p string) string {
	return path.Join("/", vm, point, path.Clean("/"+p))
}

// List lists p inside a restore point ("" or "/" lists its disks, a disk its
// volumes, then folders of the guest).
func (fs *FS) List(vm, point, p string) ([]Item, error) {
	full := pointPath(vm, point, p)
	fi, err := fs.Lstat(full)
	if err != nil {
		return nil, err
	}
	inner := strings.TrimPrefix(path.Clean("/"+p), "/")
	if !fi.IsDir() {
		return []Item{fs.item(vm, point, path.Dir("/"+inner), fi)}, nil
	}
	ents, err := fs.ReadDir(full)
	if err != nil {
		return nil, err
	}
	out := make([]Item, 0, len(ents))
	for _, e := range ents {
		out = append(out, fs.item(vm, point, "/"+inner, e))
	}
	return out, nil
}

func (fs *FS) item(vm, point, dir string, fi os.FileInfo) Item {
	p := strings.TrimPrefix(path.Join(dir, fi.Name()), "/")
	it := Item{Name: fi.Name(), Path: p, Size: fi.Size(), Mode: fi.Mode().String(), Mtime: fi.ModTime(), mode: fi.Mode()}
	switch {
	case fi.IsDir():
		it.Type = "dir"
	case fi.Mode()&os.ModeSymlink != 0:
		it.Type = "symlink"
		it.Target, _ = fs.Readlink(pointPath(vm, point, p))
	case fi.Mode().IsRegular():
		it.Type = "file"
	default:
		it.Type = "other"
	}
	// volumes and status entries: depth 2 inside the point
	if parts := strings.Split(p, "/"); len(parts) == 2 {
		if parts[1] == TableReadme {
			it.Type = "status"
		}
		name := strings.TrimSuffix(parts[1], ReadmeSuffix)
		if vols, err := fs.Volumes(vm, point, parts[0]); err == nil {
			for _, v := range vols {
				if v.Name == name {
					it.Volume = v
					if name != parts[1] {
						it.Type = "status"
					}
				}
			}
		}
	}
	return it
}

// GetSummary says what Get copied.
type GetSummary struct {
	Files    int      `json:"files"`
	Dirs     int      `json:"dirs"`
	Symlinks int      `json:"symlinks"`
	Bytes    int64    `json:"bytes"`
	Skipped  []string `json:"skipped,omitempty"` // device files, sockets, fifos
	To       string   `json:"to"`
}

// Get copies files or whole trees of a restore point into the local folder
// to (created if missing), keeping mode, mtime and symlinks; existing files
// are never overwritten. progress, when set, is called with the bytes
// copied so far and the bytes to copy in all.
func (fs *FS) Get(ctx context.Context, vm, point string, paths []string, to string, progress func(done, total int64)) (*GetSummary, error) {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return nil, fmt.Errorf("files get: %w", err)
	}
	s := &GetSummary{To: to}
	var total int64
	for _, p := range paths {
		if err := fs.walk(ctx, pointPath(vm, point, p), func(fi os.FileInfo) {
			if fi.Mode().IsRegular() {
				total += fi.Size()
			}
		}); err != nil {
			return s, fmt.Errorf("files get %s: %w", p, err)
		}
	}
	report := func(n int64) {
		if progress != nil {
			progress(n, total)
		}
	}
	for _, p := range paths {
		src := pointPath(vm, point, p)
		fi, err := fs.Lstat(src)
		if err != nil {
			return s, fmt.Errorf("files get %s: %w", p, err)
		}
		if err := fs.copyTree(ctx, src, filepath.Join(to, fi.Name()), fi, s, report); err != nil {
			return s, err
		}
	}
	return s, nil
}

func (fs *FS) copyTree(ctx context.Context, src, dst string, fi os.FileInfo, s *GetSummary, progress func(int64)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case fi.IsDir():
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		ents, err := fs.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := fs.copyTree(ctx, path.Join(src, e.Name()), filepath.Join(dst, e.Name()), e, s, progress); err != nil {
				return err
			}
		}
		s.Dirs++
		if err := os.Chmod(dst, fi.Mode().Perm()|0o700); err != nil {
			return err
		}
		return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := fs.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return fmt.Errorf("files get: %w", err)
		}
		s.Symlinks++
		return nil
	case fi.Mode().IsRegular():
		f, err := fs.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("files get: %w (nothing is overwritten: choose an empty --to)", err)
		}
		var holes io.ReaderAt // the file's own map, where it has one
		if g, ok := f.(*guestFile); ok {
			holes = g.ra
		}
		n, err := copySparse(ctx, out, f, holes, fi.Size(), func(n int64) {
			if progress != nil {
				progress(s.Bytes + n)
			}
		})
		s.Bytes += n
		if err != nil {
			out.Close()
			return fmt.Errorf("files get %s: %w", src, err)
		}
		if err := out.Close(); err != nil {
			return err
		}
		s.Files++
		if err := os.Chmod(dst, fi.Mode().Perm()); err != nil {
			return err
		}
		return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
	}
	s.Skipped = append(s.Skipped, src)
	return nil
}

// holeWindow is how far ahead copySparse asks a file's map for holes.
const holeWindow = 64 << 20

// copySparse copies size bytes of r, leaving all-zero blocks as holes. When
// holes maps the file's bytes (gfs.Mapper: its extents or runs), the holes
// it shows are skipped without being read: a 5 GiB sparse file costs its
// data, not 5 GiB of zeros.
func copySparse(ctx context.Context, w *os.File, r, holes io.ReaderAt, size int64, progress func(int64)) (int64, error) {
	buf := make([]byte, 1<<20)
	var off int64
	for off < size {
		hole, data := mapAt(holes, off, min(holeWindow, size-off))
		if hole > 0 {
			off += hole
			progress(off)
			continue
		}
		for end := off + data; off < end; {
			if err := ctx.Err(); err != nil {
				return off, err
			}
			n := int(min(int64(len(buf)), end-off))
			m, err := r.ReadAt(buf[:n], off)
			if m < n && err == nil {
				err = io.ErrUnexpectedEOF
			}
			if err != nil && !(errors.Is(err, io.EOF) && m == n) {
				return off, err
			}
			for o := 0; o < m; o += 64 << 10 {
				blk := buf[o:min(o+64<<10, m)]
				if allZero(blk) {
					continue
				}
				if _, err := w.WriteAt(blk, off+int64(o)); err != nil {
					return off, err
				}
			}
			off += int64(m)
			progress(off)
		}
	}
	return off, w.Truncate(size)
}

// mapAt splits the n bytes at off of r by its map: hole bytes from off
// that the map shows as a hole (skip them), else data bytes to read before
// the map's next hole. A reader that is nil or has no map is all data.
func mapAt(r io.ReaderAt, off, n int64) (hole, data int64) {
	if r == nil {
		return 0, n
	}
	ps, got, err := gfs.Resolve(r, off, n)
	if err != nil || len(ps) == 0 {
		return 0, n
	}
	if ps[0].R == nil {
		return min(ps[0].Len, n), 0
	}
	for _, p := range ps {
		if p.R == nil {
			break
		}
		data += p.Len
	}
	if data >= got || data <= 0 { // no hole in the window: read through its end
		data = n
	}
	return 0, min(data, n)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// walk calls fn for src and everything under it.
func (fs *FS) walk(ctx context.Context, src string, fn func(os.FileInfo)) error {
	fi, err := fs.Lstat(src)
	if err != nil {
		return err
	}
	fn(fi)
	if !fi.IsDir() {
		return nil
	}
	ents, err := fs.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() {
			if err := fs.walk(ctx, path.Join(src, e.Name()), fn); err != nil {
				return err
			}
		} else {
			fn(e)
		}
	}
	return nil
}

// Find calls fn for every entry under start (inside a restore point) whose
// name matches the shell pattern glob.
func (fs *FS) Find(ctx context.Context, vm, point, start, glob string, fn func(Item)) error {
	if _, err := path.Match(glob, ""); err != nil {
		return fmt.Errorf("files find --name %q: %w", glob, err)
	}
	var walk func(dir string) error
	walk = func(dir string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		items, err := fs.List(vm, point, dir)
		if err != nil {
			return err
		}
		for _, it := range items {
			if ok, _ := path.Match(glob, it.Name); ok {
				fn(it)
			}
			if it.Type == "dir" {
				if err := walk(it.Path); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(start)
}
