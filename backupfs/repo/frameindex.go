package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/cespare/xxhash/v2"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// A frame index ("<index>.frames" beside an index file) holds the frame
// tables of the chunks an index names, copied from the chunk files, so that
// a reader of a disk nobody read since the server started reads a 4 KiB
// block with one read of its frame instead of the chunk's header first.
// Layout (little endian):
//
//	0  4  magic "RKT1"
//	4  32 the index's digest
//	36 4  entry count
//	40 .. entries: chunk digest (32), header length (4), the chunk file's
//	      first header-length bytes (layout 2 header, frame table and its checksum)
//	   8  xxhash64 of every byte before it
//
// It is a cache, never trusted: each table is parsed and checked like a chunk
// file's own header (its checksum, the digest it names), the frames read
// through it are checked against their xxhash64, and a read that fails
// through a table reads the chunk's header again.
const frameIndexMagic = "RKT1"

func (r *Repo) frameIndexPath(d Digest) string { return r.indexPath(d) + ".frames" }

// chunkHeader reads chunk d's layout 2 header and frame table; nil for a
// layout 1 chunk (one payload: no table worth keeping).
func (r *Repo) chunkHeader(d Digest) ([]byte, error) {
	f, err := r.openChunk(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, 1<<10)
	n, err := f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("chunk %s: %w", d, err)
	}
	head = head[:n]
	if ChunkLayoutVersion(head) != 2 {
		return nil, nil
	}
	hl := chunkHeaderLen(head)
	if hl == 0 {
		return nil, chunkErr(d, errors.New("bad header"))
	}
	if hl > len(head) {
		head = make([]byte, hl)
		if err := readFull(f, head, 0); err != nil {
			return nil, chunkErr(d, err)
		}
	}
	head = head[:hl]
	if _, err := parseLayout(head, -1); err != nil {
		return nil, chunkErr(d, err)
	}
	return head, nil
}

// buildFrameIndex reads the headers of x's chunks and returns the frame
// index file of index d. Missing and layout 1 chunks are left out.
func (r *Repo) buildFrameIndex(d Digest, x *Index) []byte {
	out := make([]byte, 40, 40+len(x.Chunks)*(36+200)+8)
	copy(out, frameIndexMagic)
	copy(out[4:], d[:])
	seen := map[Digest]bool{}
	k := 0
	for _, c := range x.Chunks {
		if c.IsZero() || seen[c] {
			continue
		}
		seen[c] = true
		head, err := r.chunkHeader(c)
		if err != nil || head == nil {
			continue
		}
		out = append(out, c[:]...)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(head)))
		out = append(out, head...)
		k++
	}
	binary.LittleEndian.PutUint32(out[36:], uint32(k))
	return binary.LittleEndian.AppendUint64(out, xxhash.Sum64(out))
}

// WriteFrameIndex (re)writes the frame index of index d from its chunks'
// headers. It is not synced: a crash leaves the old file, none, or the
// whole new one (temp file and rename), and a missing one is rebuilt.
func (r *Repo) WriteFrameIndex(d Digest, x *Index) error {
	return r.writeFrameIndex(d, r.buildFrameIndex(d, x))
}

func (r *Repo) writeFrameIndex(d Digest, b []byte) error {
	if err := r.writeFileAtomic(r.frameIndexPath(d), b, false); err != nil {
		return fmt.Errorf("frame index of index %s: %w", d, err)
	}
	return nil
}

// rebuildFrameIndex is the background rebuild of index d's frame index by a
// reader. The reader's own lock does not cover it: a prune inside `serve`
// runs beside the server's lock, and a rebuild may outlive the lock of the
// command that opened the disk. A frame index written after a prune removed
// its index would stay behind, so the rebuild reads the chunk headers
// without a lock (reads only), then takes a shared lock without waiting for
// an exclusive holder, checks that index d is still there, and writes. When
// a prune holds the repository it writes nothing (the next open retries).
func (r *Repo) rebuildFrameIndex(d Digest, x *Index) error {
	b := r.buildFrameIndex(d, x)
	lock, err := r.lock(context.Background(), LockShared, "frame index rebuild", "", 0)
	if err != nil {
		return fmt.Errorf("frame index of index %s not rebuilt: %w", d, err)
	}
	defer lock.Unlock()
	if _, err := r.fsys().Stat(r.indexPath(d)); err != nil {
		return fmt.Errorf("frame index of index %s not rebuilt: its index: %w", d, err)
	}
	return r.writeFrameIndex(d, b)
}

// parseFrameIndex checks a frame index file of index d and calls fn with
// each chunk's table, stopping when fn returns false.
func parseFrameIndex(d Digest, b []byte, fn func(Digest, *chunkLayout) bool) error {
	if len(b) < 48 || string(b[:4]) != frameIndexMagic {
		return errors.New("bad header")
	}
	if xxhash.Sum64(b[:len(b)-8]) != binary.LittleEndian.Uint64(b[len(b)-8:]) {
		return errors.New("checksum mismatch")
	}
	if Digest(b[4:36]) != d {
		return fmt.Errorf("names index %s", Digest(b[4:36]))
	}
	k := int(binary.LittleEndian.Uint32(b[36:]))
	p := b[40 : len(b)-8]
	for i := range k {
		if len(p) < 36 {
			return fmt.Errorf("entry %d: file ends", i)
		}
		c := Digest(p[:32])
		hl := int(binary.LittleEndian.Uint32(p[32:]))
		if hl > len(p)-36 {
			return fmt.Errorf("entry %d: file ends", i)
		}
		l, err := parseLayout(p[36:36+hl], -1)
		if err != nil {
			return fmt.Errorf("entry %d (chunk %s): %w", i, c, err)
		}
		if l.name != c {
			return fmt.Errorf("entry %d: chunk %s's table names chunk %s", i, c, l.name)
		}
		if !fn(c, l) {
			return nil
		}
		p = p[36+hl:]
	}
	if len(p) != 0 {
		return errors.New("bytes after the last entry")
	}
	return nil
}

// frameIndexBuilds keeps one background rebuild per repository and index.
var frameIndexBuilds sync.Map // frameIndexKey -> struct{}

type frameIndexKey struct {
	r *Repo
	d Digest
}

// LoadFrameIndex puts the frame tables of index x (digest d) into the
// cache's table part, as far as its share of the bound allows, and reports
// how many it kept. A missing or damaged frame index is rebuilt in the
// background (a read-only repository just goes without).
func (c *Cache) LoadFrameIndex(r *Repo, d Digest, x *Index) int {
	b, err := durablefs.ReadFile(r.fsys(), r.frameIndexPath(d))
	if err == nil {
		n := 0
		err = parseFrameIndex(d, b, func(cd Digest, l *chunkLayout) bool {
			if c.tableBytes.Load()+layoutBytes(len(l.frames)) > c.maxTable {
				return false
			}
			if _, ok := c.table(r, cd); !ok {
				c.keepTable(r, cd, l)
				n++
			}
			return true
		})
		if err == nil {
			return n
		}
	}
	// Missing or damaged (the tables kept before the damage stay: each was
	// checked): rebuild it.
	k := frameIndexKey{r, d}
	if _, busy := frameIndexBuilds.LoadOrStore(k, struct{}{}); !busy {
		go func() {
			defer frameIndexBuilds.Delete(k)
			_ = r.rebuildFrameIndex(d, x) // a cache: the next open retries
		}()
	}
	return 0
}

// verifyFrameIndex checks index d's frame index, when there is one, against
// the chunk files: every table it holds must be the chunk's own.
func (r *Repo) verifyFrameIndex(d Digest) error {
	b, err := durablefs.ReadFile(r.fsys(), r.frameIndexPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	perr := parseFrameIndex(d, b, func(c Digest, l *chunkLayout) bool {
		head, herr := r.chunkHeader(c)
		if herr != nil {
			return true // the chunk's own check reports it
		}
		var hl *chunkLayout
		if head != nil {
			hl, _ = parseLayout(head, -1)
		}
		if hl == nil || !sameLayout(hl, l) {
			err = fmt.Errorf("chunk %s: the kept table differs from the chunk file's (stale)", c)
			return false
		}
		return true
	})
	if perr != nil {
		return perr
	}
	return err
}

func sameLayout(a, b *chunkLayout) bool {
	if a.name != b.name || a.n != b.n || a.frameSize != b.frameSize || len(a.frames) != len(b.frames) {
		return false
	}
	for i := range a.frames {
		if a.frames[i] != b.frames[i] {
			return false
		}
	}
	return true
}
