package vcbackup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"golang.org/x/sync/errgroup"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// extent is a byte range of a disk.
type extent struct{ off, n int64 }

// readPlan is what to read of one disk and what to take from the parent.
type readPlan struct {
	mode  string
	areas []extent    // sorted, disjoint, within the disk
	base  *repo.Index // parent's index for an incremental, else nil
}

func (p readPlan) bytes() int64 {
	var n int64
	for _, a := range p.areas {
		n += a.n
	}
	return n
}

// plan asks vCenter what to read of disk d: what changed since the parent
// point's changeId, or what is allocated. The note says why a disk that
// could have been incremental is full.
func (b *backuper) plan(ctx context.Context, vm, snap types.ManagedObjectReference, d disk, parent *repo.RestorePoint, cbt bool) (readPlan, string, error) {
	whole := readPlan{mode: ModeFull, areas: []extent{{0, d.size}}}
	if !cbt || d.changeID == "" {
		note := ""
		if cbt {
			note = "vCenter gave the snapshot no changeId: read whole"
		}
		return whole, note, nil
	}
	var prev *repo.Disk
	if parent != nil {
		if i := slices.IndexFunc(parent.Disks, func(pd repo.Disk) bool { return pd.Name == d.name }); i >= 0 {
			prev = &parent.Disks[i]
		}
	}
	note := ""
	switch {
	case prev == nil:
	case prev.ChangeID == "":
		note = fmt.Sprintf("parent point %s has no changeId for it: full read", parent.ID)
	case prev.Size != d.size:
		note = fmt.Sprintf("resized from %d to %d bytes since point %s: full read", prev.Size, d.size, parent.ID)
	default:
		areas, err := b.changedAreas(ctx, vm, snap, d, prev.ChangeID)
		if err == nil {
			base, err := b.cfg.Repo.LoadIndex(prev.Index)
			if err != nil {
				return readPlan{}, "", fmt.Errorf("parent point %s: %w", parent.ID, err)
			}
			return readPlan{mode: ModeIncremental, areas: areas, base: base}, "", nil
		}
		if ctx.Err() != nil {
			return readPlan{}, "", err
		}
		note = fmt.Sprintf("vCenter refused changeId %q of point %s (%v): full read", prev.ChangeID, parent.ID, err)
	}
	areas, err := b.changedAreas(ctx, vm, snap, d, "*")
	if err != nil {
		if ctx.Err() != nil {
			return readPlan{}, "", err
		}
		if note != "" {
			note += "; "
		}
		return whole, note + fmt.Sprintf("allocated areas unknown (%v): read whole", err), nil
	}
	return readPlan{mode: ModeFull, areas: areas}, note, nil
}

// changedAreas pages through QueryChangedDiskAreas (vCenter may answer for
// part of the disk at a time).
func (b *backuper) changedAreas(ctx context.Context, vm, snap types.ManagedObjectReference, d disk, changeID string) ([]extent, error) {
	var out []extent
	for off := int64(0); off < d.size; {
		res, err := methods.QueryChangedDiskAreas(ctx, b.c, &types.QueryChangedDiskAreas{
			This: vm, Snapshot: &snap, DeviceKey: d.key, StartOffset: off, ChangeId: changeID})
		if err != nil {
			return nil, err
		}
		info := res.Returnval
		for _, a := range info.ChangedArea {
			start, end := max(a.Start, 0), min(a.Start+a.Length, d.size)
			if end <= start {
				continue
			}
			if n := len(out); n > 0 && out[n-1].off+out[n-1].n >= start {
				if e := out[n-1].off + out[n-1].n; end > e {
					out[n-1].n = end - out[n-1].off
				}
				continue
			}
			out = append(out, extent{start, end - start})
		}
		next := info.StartOffset + info.Length
		if info.Length <= 0 || next <= off {
			return nil, fmt.Errorf("QueryChangedDiskAreas answered no progress at offset %d", off)
		}
		off = next
	}
	slices.SortFunc(out, func(a, b extent) int { return int(min(max(a.off-b.off, -1), 1)) })
	return out, nil
}

// rangeSource reads byte ranges of one disk over HTTP.
type rangeSource struct {
	c    *vim25.Client
	u    *url.URL
	read *atomic.Int64 // bytes received, for the Result
}

// readAt fills p from offset off with one Range request, which must be
// answered with exactly that range.
func (s *rangeSource) readAt(ctx context.Context, p []byte, off int64) error {
	dl := soap.DefaultDownload
	dl.Headers = map[string]string{"Range": "bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+int64(len(p))-1, 10)}
	res, err := s.c.Client.DownloadRequest(ctx, s.u, &dl)
	if err != nil {
		return fmt.Errorf("read %d bytes at offset %d: %w", len(p), off, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusPartialContent {
		return fmt.Errorf("read %d bytes at offset %d: %s answered %s, not a byte range", len(p), off, s.u.Path, res.Status)
	}
	n, err := io.ReadFull(res.Body, p)
	s.read.Add(int64(n))
	if err != nil {
		return fmt.Errorf("read %d bytes at offset %d: %w", len(p), off, err)
	}
	return nil
}

// probe asks for the first byte plan reads from u: nil when the host
// answers it as a range, else why not (a locked file, a 200 with the whole
// file, a fault).
func (b *backuper) probe(ctx context.Context, u *url.URL, plan readPlan, read *atomic.Int64) error {
	if len(plan.areas) == 0 {
		return nil
	}
	src := rangeSource{c: b.c, u: u, read: read}
	var one [1]byte
	return src.readAt(ctx, one[:], plan.areas[0].off)
}

type diskJob struct {
	disk disk
	plan readPlan
	src  diskSource
}

// pointWriter stores the chunks of one restore point's disks.
type pointWriter struct {
	r       *repo.Repo
	readers int

	read, new, stored, newChunks atomic.Int64
}

// disk builds the index of one disk version: the parent's chunks where
// nothing changed, and for each chunk an area touches, the parent's chunk
// (or zeros) with the areas' fresh bytes laid over it.
func (w *pointWriter) disk(ctx context.Context, job *diskJob, done func(int64)) (*repo.Index, int64, error) {
	cs := int64(w.r.ChunkSize())
	idx := repo.NewIndex(int(cs), job.disk.size)
	if job.plan.base != nil {
		if job.plan.base.Size != job.disk.size || len(job.plan.base.Chunks) != len(idx.Chunks) {
			return nil, 0, errors.New("parent index does not match the disk's size")
		}
		copy(idx.Chunks, job.plan.base.Chunks)
	}
	// Group the areas by chunk.
	type piece struct{ rel, off, n int64 }
	var chunks []int
	pieces := map[int][]piece{}
	for _, a := range job.plan.areas {
		for off := a.off; off < a.off+a.n; {
			i := int(off / cs)
			end := min(a.off+a.n, int64(i+1)*cs)
			if len(pieces[i]) == 0 {
				chunks = append(chunks, i)
			}
			pieces[i] = append(pieces[i], piece{rel: off - int64(i)*cs, off: off, n: end - off})
			off = end
		}
	}
	var read atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.readers)
	// fill reads chunk i: the parent's bytes (or zeros) and the areas'.
	fill := func(ctx context.Context, i int, buf []byte) error {
		if base := idx.Chunks[i]; !base.IsZero() {
			data, err := w.r.GetChunk(base)
			if err != nil {
				return fmt.Errorf("parent chunk %d: %w", i, err)
			}
			if len(data) != len(buf) {
				return fmt.Errorf("parent chunk %d: %d bytes, want %d", i, len(data), len(buf))
			}
			copy(buf, data)
		}
		for _, pc := range pieces[i] {
			if err := job.src.readAt(ctx, buf[pc.rel:pc.rel+pc.n], pc.off); err != nil {
				return err
			}
			read.Add(pc.n)
			done(pc.n)
		}
		return nil
	}
	store := func(i int, buf []byte) error {
		if repo.IsZero(buf) {
			idx.Chunks[i] = repo.ZeroDigest
			return nil
		}
		d := repo.Sum(buf)
		stored, wrote, err := w.r.PutChunk(d, buf)
		if err != nil {
			return err
		}
		idx.Chunks[i] = d
		if wrote {
			w.newChunks.Add(1)
			w.new.Add(int64(len(buf)))
			w.stored.Add(stored)
		}
		return nil
	}
	defer job.src.close()
	for _, i := range chunks {
		buf := make([]byte, idx.ChunkLen(i))
		if job.src.sequential() {
			// A stream is read in order here; chunks are stored in parallel.
			if gctx.Err() != nil {
				if err := g.Wait(); err != nil {
					return nil, read.Load(), err
				}
				return nil, read.Load(), ctx.Err()
			}
			if err := fill(gctx, i, buf); err != nil {
				if werr := g.Wait(); werr != nil {
					err = werr // the first error: a failed store ended the stream
				}
				return nil, read.Load(), err
			}
			g.Go(func() error { return store(i, buf) })
			continue
		}
		g.Go(func() error {
			if err := fill(gctx, i, buf); err != nil {
				return err
			}
			return store(i, buf)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, read.Load(), err
	}
	return idx, read.Load(), nil
}
