// Package replicate copies a rekindle repository to another (a recovery
// site's): what the target lacks, in an order that keeps the target
// consistent at every instant.
//
// Vocabulary:
//
//   - source, target: the repository read from and the one written to. The
//     target is created, with the source's settings, when it holds none.
//   - Backend: a repository's storage as replication sees it, named objects
//     of five kinds (chunks, indexes, points, apps, sites). Local is a
//     folder; an object store or a remote rekindle server is another
//     Backend behind the same interface.
//   - phase: one kind of object being copied. Phases run in the order
//     chunks, indexes, points, apps, sites, each ending with a Flush of the
//     target, so an object reaches the target only after everything it
//     names is durable there. A copy killed at any moment leaves a target
//     whose every point, and every site package, names only data it holds;
//     the next run copies only what is still missing.
//   - refused: a source object that fails its check (a chunk whose bytes do
//     not hash to its name, an index that does not decode). It is not
//     written, and neither is anything that needs it; the run fails naming
//     it.
//
// Replication adds and never deletes: the target keeps points the source
// has since forgotten (the target's own retention governs them).
package replicate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// Options tune a copy.
type Options struct {
	// Workers is how many chunks are copied at once (default GOMAXPROCS).
	Workers int
	// Progress, when set, is called as bytes are copied, one call at a time.
	Progress func(Progress)
	// SitePoints returns the restore point ids a site package names. The
	// default reads datacenters[].vms[].point (docs/repository-format.md,
	// "Site packages").
	SitePoints func(pkg []byte) ([]string, error)
}

// Progress is how far a copy is.
type Progress struct {
	Phase Kind
	// Done and Total count the bytes this run copies (all phases).
	Done, Total int64
}

// Refusal is a source object that failed its check and was not written.
type Refusal struct {
	Kind   Kind     `json:"kind"`
	Name   string   `json:"name"`
	Error  string   `json:"error"`
	Points []string `json:"points"` // restore points not copied because of it
}

// Stats is what one copy did.
type Stats struct {
	Source string `json:"source"`
	Target string `json:"target"`
	// Created is true when this run created the target repository.
	Created       bool `json:"created"`
	Chunks        int  `json:"chunks"`         // copied
	ChunksPresent int  `json:"chunks_present"` // needed, already in the target
	Indexes       int  `json:"indexes"`
	Points        int  `json:"points"`
	Apps          int  `json:"apps"`
	Sites         int  `json:"sites"`
	// Copied lists the restore points and apps this run wrote, so a caller
	// can index them in the target's catalog.
	CopiedPoints []string  `json:"copied_points"`
	CopiedApps   []string  `json:"copied_apps"`
	Bytes        int64     `json:"bytes"` // stored bytes written to the target
	Refused      []Refusal `json:"refused"`
	// SkippedSites are site packages not copied because a point they name
	// is not in the target.
	SkippedSites   []string  `json:"skipped_sites"`
	Started        time.Time `json:"started"`
	Seconds        float64   `json:"seconds"`
	BytesPerSecond float64   `json:"bytes_per_second"`
}

// ErrRefused is returned (wrapped, naming each object) when source objects
// failed their checks; it also wraps repo.ErrCorrupt when one was damaged.
var ErrRefused = errors.New("source objects refused")

// Copy copies what target lacks from source (see the package comment). It
// holds both repositories' shared locks while it runs. On error, Stats
// still says what was copied.
func Copy(ctx context.Context, source, target Backend, opts Options) (*Stats, error) {
	st := &Stats{Source: source.String(), Target: target.String(), Started: time.Now().UTC(), Refused: []Refusal{}, SkippedSites: []string{},
		CopiedPoints: []string{}, CopiedApps: []string{}}
	err := copyAll(ctx, source, target, opts, st)
	st.Seconds = time.Since(st.Started).Seconds()
	if st.Seconds > 0 {
		st.BytesPerSecond = float64(st.Bytes) / st.Seconds
	}
	if err != nil {
		return st, fmt.Errorf("replicate %s to %s: %w", source, target, err)
	}
	return st, nil
}

type copier struct {
	src, dst Backend
	opts     Options
	st       *Stats
	progMu   sync.Mutex
	done     int64
	total    int64
	phase    Kind
	corrupt  bool // a refused object was damaged (not merely missing)
}

// progress reports n more bytes copied; calls to Options.Progress are
// serialized.
func (c *copier) progress(n int64) {
	c.progMu.Lock()
	defer c.progMu.Unlock()
	c.done += n
	if c.opts.Progress != nil {
		c.opts.Progress(Progress{Phase: c.phase, Done: c.done, Total: c.total})
	}
}

func copyAll(ctx context.Context, src, dst Backend, opts Options, st *Stats) error {
	srcCfg, err := src.Config(ctx)
	if err != nil {
		return err
	}
	unlockSrc, err := src.Lock(ctx, "replicate to "+dst.String())
	if err != nil {
		return err
	}
	defer unlockSrc.Unlock()
	dstCfg, err := dst.Config(ctx)
	if errors.Is(err, repo.ErrNotRepository) {
		cfg, cerr := newConfig(*srcCfg)
		if cerr == nil {
			cerr = dst.Create(ctx, cfg)
		}
		if cerr != nil {
			return cerr
		}
		st.Created, dstCfg, err = true, &cfg, nil
	}
	if err != nil {
		return err
	}
	if dstCfg.ChunkSize != srcCfg.ChunkSize {
		return fmt.Errorf("target chunk size %d differs from the source's %d: replicate into an empty folder or a repository made with `rekindle init --chunk-size %d`",
			dstCfg.ChunkSize, srcCfg.ChunkSize, srcCfg.ChunkSize)
	}
	if dstCfg.Version < srcCfg.Version {
		// Chunks are copied as they are stored: a version 2 chunk in a
		// version 1 repository is one the releases that made it cannot read.
		return fmt.Errorf("target repository is format version %d and the source version %d: its chunks would be unreadable by the rekindle releases that made the target; replicate into an empty folder (or one made by this rekindle's `rekindle init`)",
			dstCfg.Version, srcCfg.Version)
	}
	unlockDst, err := dst.Lock(ctx, "replicate from "+src.String())
	if err != nil {
		return err
	}
	defer unlockDst.Unlock()
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.SitePoints == nil {
		opts.SitePoints = sitePoints
	}
	c := &copier{src: src, dst: dst, opts: opts, st: st}
	return c.run(ctx)
}

func names(objs []Object) map[string]int64 {
	m := make(map[string]int64, len(objs))
	for _, o := range objs {
		m[o.Name] = o.Size
	}
	return m
}

func (c *copier) list(ctx context.Context, b Backend, kind Kind) (map[string]int64, error) {
	objs, err := b.List(ctx, kind)
	if err != nil {
		return nil, err
	}
	return names(objs), nil
}

func (c *copier) run(ctx context.Context) error {
	// Plan: the points the target lacks, the indexes they need that it
	// lacks, the chunks those need that it lacks. An index already in the
	// target has its chunks there (they were flushed before it was written).
	srcPoints, err := c.list(ctx, c.src, Points)
	if err != nil {
		return err
	}
	dstPoints, err := c.list(ctx, c.dst, Points)
	if err != nil {
		return err
	}
	dstIndexes, err := c.list(ctx, c.dst, Indexes)
	if err != nil {
		return err
	}
	type pointPlan struct {
		id      string
		raw     []byte
		indexes []string
	}
	var points []*pointPlan
	idxUsers := map[string][]string{} // index -> points needing it
	for _, id := range sortedKeys(srcPoints) {
		if _, ok := dstPoints[id]; ok {
			continue
		}
		raw, err := c.src.Read(ctx, Points, id)
		if err != nil {
			return err
		}
		p, err := repo.DecodeRestorePoint(raw)
		if err != nil || p.ID != id {
			if err == nil {
				err = fmt.Errorf("manifest names itself %s", p.ID)
			}
			c.refuse(Points, id, err, []string{id})
			continue
		}
		pp := &pointPlan{id: id, raw: raw}
		add := func(d repo.Digest) {
			n := d.String()
			pp.indexes = append(pp.indexes, n)
			if _, ok := dstIndexes[n]; !ok {
				idxUsers[n] = append(idxUsers[n], id)
			}
		}
		for _, d := range p.Disks {
			add(d.Index)
		}
		for _, f := range p.Files {
			if !f.Index.IsZero() {
				add(f.Index)
			}
		}
		points = append(points, pp)
	}

	type indexPlan struct {
		name   string
		raw    []byte
		chunks []string
	}
	var indexes []*indexPlan
	chunkUsers := map[string][]string{} // chunk -> points needing it
	var dstChunks map[string]int64
	if len(idxUsers) > 0 {
		if dstChunks, err = c.list(ctx, c.dst, Chunks); err != nil {
			return err
		}
	}
	badIndex := map[string]bool{}
	for _, n := range sortedKeys(idxUsers) {
		raw, err := c.src.Read(ctx, Indexes, n)
		if err == nil {
			err = checkIndex(n, raw)
		}
		if err != nil {
			if !errors.Is(err, repo.ErrNotFound) && !errors.Is(err, repo.ErrCorrupt) {
				return err
			}
			c.refuse(Indexes, n, err, idxUsers[n])
			badIndex[n] = true
			continue
		}
		x, _ := repo.DecodeIndex(raw)
		ip := &indexPlan{name: n, raw: raw}
		seen := map[repo.Digest]bool{}
		for _, d := range x.Chunks {
			if d.IsZero() || seen[d] {
				continue
			}
			seen[d] = true
			cn := d.String()
			ip.chunks = append(ip.chunks, cn)
			if _, ok := dstChunks[cn]; ok {
				continue
			}
			chunkUsers[cn] = appendNew(chunkUsers[cn], idxUsers[n]...)
		}
		indexes = append(indexes, ip)
	}
	present := map[string]bool{}
	for _, ip := range indexes {
		for _, cn := range ip.chunks {
			if _, ok := dstChunks[cn]; ok && !present[cn] {
				present[cn] = true
				c.st.ChunksPresent++
			}
		}
	}
	var srcChunks map[string]int64
	if len(chunkUsers) > 0 {
		if srcChunks, err = c.list(ctx, c.src, Chunks); err != nil {
			return err
		}
	}
	for n := range chunkUsers {
		c.total += srcChunks[n]
	}
	for _, ip := range indexes {
		c.total += int64(len(ip.raw))
	}
	for _, pp := range points {
		c.total += int64(len(pp.raw))
	}

	// Chunks.
	badChunk, err := c.copyChunks(ctx, chunkUsers, srcChunks)
	if err != nil {
		return err
	}
	if err := c.flush(ctx, Chunks); err != nil {
		return err
	}

	// Indexes whose chunks all arrived.
	c.phase = Indexes
	for _, ip := range indexes {
		if anyIn(ip.chunks, badChunk) {
			badIndex[ip.name] = true
			continue
		}
		if err := c.write(ctx, Indexes, ip.name, ip.raw); err != nil {
			return err
		}
		c.st.Indexes++
	}
	if err := c.flush(ctx, Indexes); err != nil {
		return err
	}

	// Points whose indexes are all in the target.
	c.phase = Points
	have := map[string]bool{}
	for id := range dstPoints {
		have[id] = true
	}
	for _, pp := range points {
		if anyIn(pp.indexes, badIndex) {
			continue
		}
		if err := c.write(ctx, Points, pp.id, pp.raw); err != nil {
			return err
		}
		c.st.Points++
		c.st.CopiedPoints = append(c.st.CopiedPoints, pp.id)
		have[pp.id] = true
	}
	if err := c.flush(ctx, Points); err != nil {
		return err
	}

	// Apps: small manifests that may change in place; copy when different.
	c.phase = Apps
	srcApps, err := c.list(ctx, c.src, Apps)
	if err != nil {
		return err
	}
	dstApps, err := c.list(ctx, c.dst, Apps)
	if err != nil {
		return err
	}
	for _, n := range sortedKeys(srcApps) {
		raw, err := c.src.Read(ctx, Apps, n)
		if err != nil {
			return err
		}
		if _, ok := dstApps[n]; ok {
			cur, err := c.dst.Read(ctx, Apps, n)
			if err == nil && string(cur) == string(raw) {
				continue
			}
		}
		if _, err := repo.DecodeApp(raw); err != nil {
			c.refuse(Apps, n, err, nil)
			continue
		}
		if err := c.write(ctx, Apps, n, raw); err != nil {
			return err
		}
		c.st.Apps++
		c.st.CopiedApps = append(c.st.CopiedApps, n)
	}
	if err := c.flush(ctx, Apps); err != nil {
		return err
	}

	// Site packages last, each only when every point it names is there.
	c.phase = Sites
	srcSites, err := c.list(ctx, c.src, Sites)
	if err != nil {
		return err
	}
	dstSites, err := c.list(ctx, c.dst, Sites)
	if err != nil {
		return err
	}
	for _, id := range sortedKeys(srcSites) {
		if _, ok := dstSites[id]; ok {
			continue
		}
		raw, err := c.src.Read(ctx, Sites, id)
		if err != nil {
			return err
		}
		pts, err := c.opts.SitePoints(raw)
		if err != nil {
			c.refuse(Sites, id, err, nil)
			continue
		}
		var missing []string
		for _, p := range pts {
			if !have[p] {
				missing = append(missing, p)
			}
		}
		if len(missing) > 0 {
			c.st.SkippedSites = append(c.st.SkippedSites, id)
			if len(c.st.Refused) == 0 {
				// Nothing was refused: the package names points the source lacks.
				c.refuse(Sites, id, fmt.Errorf("names restore points not in the source: %s", strings.Join(missing, ", ")), nil)
			}
			continue
		}
		if err := c.write(ctx, Sites, id, raw); err != nil {
			return err
		}
		c.st.Sites++
	}
	if err := c.flush(ctx, Sites); err != nil {
		return err
	}
	return c.refusedErr()
}

// copyChunks copies the chunks in need, each checked (SHA-256 of its
// decoded bytes against its name) before it is written. It returns the
// chunks refused; an error is a failure of the target or of the context.
func (c *copier) copyChunks(ctx context.Context, need map[string][]string, sizes map[string]int64) (map[string]bool, error) {
	c.phase = Chunks
	bad := map[string]bool{}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Workers)
	for _, n := range sortedKeys(need) {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			raw, err := c.src.Read(gctx, Chunks, n)
			if err == nil {
				d, _ := repo.ParseDigest(n)
				_, err = repo.VerifyChunk(d, raw)
			}
			if err != nil {
				if !errors.Is(err, repo.ErrNotFound) && !errors.Is(err, repo.ErrCorrupt) {
					return err
				}
				mu.Lock()
				bad[n] = true
				c.refuse(Chunks, n, err, need[n])
				mu.Unlock()
				c.progress(sizes[n])
				return nil
			}
			if err := c.dst.Write(gctx, Chunks, n, raw); err != nil {
				return err
			}
			mu.Lock()
			c.st.Chunks++
			c.st.Bytes += int64(len(raw))
			mu.Unlock()
			c.progress(int64(len(raw)))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return bad, ctx.Err()
}

func (c *copier) write(ctx context.Context, kind Kind, name string, raw []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.dst.Write(ctx, kind, name, raw); err != nil {
		return err
	}
	c.st.Bytes += int64(len(raw))
	if kind == Indexes || kind == Points {
		c.progress(int64(len(raw)))
	}
	return nil
}

// flush ends a phase: nothing of the next phase is written before what this
// one wrote is durable.
func (c *copier) flush(ctx context.Context, kind Kind) error {
	if err := c.dst.Flush(ctx); err != nil {
		return fmt.Errorf("after copying %s: %w", kind, err)
	}
	return nil
}

// refuse records a refused object; callers of copyChunks hold mu.
func (c *copier) refuse(kind Kind, name string, err error, points []string) {
	c.corrupt = c.corrupt || errors.Is(err, repo.ErrCorrupt)
	pts := append([]string{}, points...)
	sort.Strings(pts)
	c.st.Refused = append(c.st.Refused, Refusal{Kind: kind, Name: name, Error: err.Error(), Points: pts})
}

func (c *copier) refusedErr() error {
	if len(c.st.Refused) == 0 {
		return nil
	}
	sort.Slice(c.st.Refused, func(i, j int) bool {
		a, b := c.st.Refused[i], c.st.Refused[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Name < b.Name
	})
	var lines []string
	for _, r := range c.st.Refused {
		line := fmt.Sprintf("source %s %s: %s: not written", strings.TrimSuffix(string(r.Kind), "s"), r.Name, r.Error)
		if len(r.Points) > 0 {
			line += " (restore points not copied: " + strings.Join(r.Points, ", ") + ")"
		}
		lines = append(lines, line)
	}
	if len(c.st.SkippedSites) > 0 {
		lines = append(lines, "site packages not copied: "+strings.Join(c.st.SkippedSites, ", "))
	}
	err := fmt.Errorf("%w (%d): %s", ErrRefused, len(c.st.Refused), strings.Join(lines, "; "))
	if c.corrupt {
		err = fmt.Errorf("%w: %w", err, repo.ErrCorrupt)
	}
	return err
}

// checkIndex proves an index file is the one its name promises and decodes.
func checkIndex(name string, raw []byte) error {
	if repo.Sum(raw).String() != name {
		return fmt.Errorf("index %s: %w: checksum mismatch", name, repo.ErrCorrupt)
	}
	if _, err := repo.DecodeIndex(raw); err != nil {
		return fmt.Errorf("index %s: %w: %v", name, repo.ErrCorrupt, err)
	}
	return nil
}

// sitePoints reads the restore point ids a site package (format 1) names.
func sitePoints(b []byte) ([]string, error) {
	var p struct {
		Datacenters []struct {
			VMs []struct {
				Point string `json:"point"`
			} `json:"vms"`
		} `json:"datacenters"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("site package: %w", err)
	}
	var out []string
	for _, dc := range p.Datacenters {
		for _, vm := range dc.VMs {
			if vm.Point != "" {
				out = append(out, vm.Point)
			}
		}
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func anyIn(names []string, set map[string]bool) bool {
	for _, n := range names {
		if set[n] {
			return true
		}
	}
	return false
}

func appendNew(dst []string, src ...string) []string {
	for _, s := range src {
		dup := false
		for _, d := range dst {
			if d == s {
				dup = true
				break
			}
		}
		if !dup {
			dst = append(dst, s)
		}
	}
	return dst
}

// Watch copies, then again every interval, until ctx ends (new protect
// cycles and backups follow within an interval). Each copy's outcome goes
// to each; a failed copy does not end the watch. The locks are held only
// while a copy runs, so prune can run between copies.
//
// A poll first lists the source's points, apps and site packages (reading
// the apps, which change in place): when that is what it was at the start
// of the last copy that left nothing behind (no error, no refusal, no
// package skipped), nothing new can be there, and the poll neither copies
// nor touches the target. Any other poll is a Copy, which copies only what
// the target lacks and resumes whatever an earlier copy left undone.
func Watch(ctx context.Context, source, target Backend, interval time.Duration, opts Options, each func(*Stats, error)) {
	if interval <= 0 {
		interval = time.Minute
	}
	var clean string // the source's fingerprint when the last clean copy started
	for {
		fp, ferr := fingerprint(ctx, source)
		if ferr != nil || fp != clean {
			st, err := Copy(ctx, source, target, opts)
			if ctx.Err() != nil {
				return
			}
			each(st, err)
			clean = ""
			if ferr == nil && err == nil && len(st.Refused) == 0 && len(st.SkippedSites) == 0 {
				clean = fp
			}
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// fingerprint digests the names and sizes of b's points and site packages
// and the contents of its apps: what a new backup or protect cycle changes.
// Chunks and indexes are not listed: nothing new is copied without a new
// point naming it.
func fingerprint(ctx context.Context, b Backend) (string, error) {
	h := sha256.New()
	for _, kind := range []Kind{Points, Apps, Sites} {
		objs, err := b.List(ctx, kind)
		if err != nil {
			return "", err
		}
		sort.Slice(objs, func(i, j int) bool { return objs[i].Name < objs[j].Name })
		for _, o := range objs {
			fmt.Fprintf(h, "%s/%s %d\n", kind, o.Name, o.Size)
			if kind == Apps {
				raw, err := b.Read(ctx, kind, o.Name)
				if err != nil {
					return "", err
				}
				sum := sha256.Sum256(raw)
				h.Write(sum[:])
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
