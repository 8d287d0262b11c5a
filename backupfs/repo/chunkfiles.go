package repo

import (
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// DefaultOpenChunkFiles is how many chunk files a repository keeps open
// between reads unless SetOpenChunkFiles says otherwise: 1024 files of
// 256 KiB chunks cover 256 MiB of a disk, the default chunk cache's bound.
const DefaultOpenChunkFiles = 1024

// chunkFiles keeps the most recently read chunk files open, so that a read
// of a chunk whose frames are not cached (evicted, or not decoded yet) costs
// one pread, not an open (a path walk through chunks/xx/, cold after the page
// cache was dropped), a pread and a close. The count is bounded (LRU); a
// file in use by a reader is closed when its last reader is done.
//
// A kept file must not outlive the chunk file it was opened as: Linux keeps
// an unlinked file readable (and its blocks allocated) while it is open.
// Prune and Upgrade, which remove or replace chunk files, forget them here.
// A file replaced by another process cannot be seen this way; content
// addressing makes its old bytes the same chunk, every frame read is checked
// against its xxhash64, and a read that fails through a kept file is retried
// through a file opened anew (withChunkFile).
type chunkFiles struct {
	mu    sync.Mutex
	max   int    // 0: DefaultOpenChunkFiles; <0: none kept
	gen   uint64 // bumped by forget: a file opened before is not kept
	open  *simplelru.LRU[Digest, *chunkFile]
	opens atomic.Int64 // files opened, kept or not
}

// chunkFile is an open chunk file and its references: one per reader using
// it, one while it is kept.
type chunkFile struct {
	durablefs.File
	refs int
}

// SetOpenChunkFiles sets how many chunk files r keeps open between reads
// (DefaultOpenChunkFiles until set), at most a quarter of the process's
// file-descriptor limit; 0 keeps none: every read opens the file and closes
// it. Files over the new bound are closed once no read uses them.
func (r *Repo) SetOpenChunkFiles(n int) {
	n = fdBound(n)
	c := &r.files
	c.mu.Lock()
	defer c.mu.Unlock()
	if n <= 0 {
		c.max = -1
		if c.open != nil {
			c.open.Purge()
			c.open = nil
		}
		return
	}
	c.max = n
	if c.open != nil {
		c.open.Resize(n)
	}
}

// fdBound caps n chunk files to a quarter of the file-descriptor limit (the
// NFS server's connections take up to half by default).
func fdBound(n int) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur/4 < uint64(n) {
		return max(int(rl.Cur/4), 1)
	}
	return n
}

// dropRef ends one reference to f; the last closes it. Called with c.mu held.
func (f *chunkFile) dropRef() {
	if f.refs--; f.refs == 0 {
		f.Close() // read-only: nothing to lose
	}
}

// get returns chunk d's open file, kept or opened now, and whether it was
// kept from before (and so may be stale: see withChunkFile). The caller
// calls put when done with it.
func (c *chunkFiles) get(r *Repo, d Digest) (*chunkFile, bool, error) {
	c.mu.Lock()
	if c.open != nil {
		if f, ok := c.open.Get(d); ok {
			f.refs++
			c.mu.Unlock()
			return f, true, nil
		}
	}
	gen := c.gen
	c.mu.Unlock()
	file, err := r.openChunk(d)
	if err != nil {
		return nil, false, err
	}
	c.opens.Add(1)
	adviseRandom(file)
	f := &chunkFile{File: file, refs: 1}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max < 0 || c.gen != gen {
		return f, false, nil // not kept: a prune ran meanwhile, or keeping is off
	}
	if c.open == nil {
		n := c.max
		if n == 0 {
			n = fdBound(DefaultOpenChunkFiles)
		}
		c.open, _ = simplelru.NewLRU(n, func(_ Digest, f *chunkFile) { f.dropRef() })
	}
	if kept, ok := c.open.Get(d); ok {
		// Another reader opened it meanwhile: share that one.
		kept.refs++
		f.dropRef()
		return kept, false, nil
	}
	f.refs++
	c.open.Add(d, f)
	return f, false, nil
}

// put ends a reader's use of f.
func (c *chunkFiles) put(f *chunkFile) {
	c.mu.Lock()
	f.dropRef()
	c.mu.Unlock()
}

// forget closes chunk d's kept file (once no read uses it): the chunk file
// was removed or replaced.
func (c *chunkFiles) forget(d Digest) {
	c.mu.Lock()
	c.gen++
	if c.open != nil {
		c.open.Remove(d)
	}
	c.mu.Unlock()
}

// withChunkFile runs fn on chunk d's open file. When fn fails on a file
// kept from an earlier read, the file is forgotten and fn runs once more on
// the chunk file opened anew: the kept one may be a file another process
// replaced (a damaged chunk stored again), whose bytes fn refused. fn must
// be safe to run twice.
func (r *Repo) withChunkFile(d Digest, fn func(f durablefs.File) error) error {
	f, kept, err := r.files.get(r, d)
	if err != nil {
		return err
	}
	err = fn(f.File)
	r.files.put(f)
	if err == nil || !kept {
		return err
	}
	r.files.forget(d)
	if f, _, err = r.files.get(r, d); err != nil {
		return err
	}
	defer r.files.put(f)
	return fn(f.File)
}
