package repo

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// Problem is one damaged or missing object and every restore point it hurts.
type Problem struct {
	Kind   string   `json:"kind"` // "chunk", "index" or "frames" (an index's frame index)
	Digest Digest   `json:"digest"`
	Error  string   `json:"error"`  // what is wrong with it
	Points []string `json:"points"` // ids of the restore points that need it
	Files  []string `json:"files"`  // "point/disk" names that need it
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Points   int       `json:"points"`
	Indexes  int       `json:"indexes"`
	Chunks   int64     `json:"chunks"`
	Bytes    int64     `json:"bytes"` // uncompressed bytes re-hashed
	Problems []Problem `json:"problems"`
}

// OK reports whether nothing is damaged.
func (v *VerifyReport) OK() bool { return len(v.Problems) == 0 }

// VerifyProgress is called as chunks are checked.
type VerifyProgress func(done, total int64)

type use struct{ point, file string }

// Verify re-reads and re-hashes every index and chunk the given restore
// points reference. It reports each damaged or missing object once, with
// every restore point that references it.
func (r *Repo) Verify(ctx context.Context, points []*RestorePoint, progress VerifyProgress) (*VerifyReport, error) {
	rep := &VerifyReport{Points: len(points), Problems: []Problem{}}
	chunkUses := map[Digest][]use{}
	indexUses := map[Digest][]use{}
	for _, p := range points {
		for _, d := range p.Disks {
			indexUses[d.Index] = append(indexUses[d.Index], use{p.ID, d.Name})
		}
		for _, f := range p.Files {
			if !f.Index.IsZero() {
				indexUses[f.Index] = append(indexUses[f.Index], use{p.ID, f.Name})
			}
		}
	}
	idxDigests := make([]Digest, 0, len(indexUses))
	for d := range indexUses {
		idxDigests = append(idxDigests, d)
	}
	sort.Slice(idxDigests, func(i, j int) bool { return idxDigests[i].String() < idxDigests[j].String() })
	for _, d := range idxDigests {
		rep.Indexes++
		x, err := r.LoadIndex(d)
		if err != nil {
			rep.Problems = append(rep.Problems, problem("index", d, err, indexUses[d]))
			continue
		}
		if err := r.verifyFrameIndex(d); err != nil {
			rep.Problems = append(rep.Problems, problem("frames", d, fmt.Errorf("frame index of index %s: %w (delete %s: it is rebuilt)", d, err, r.frameIndexPath(d)), indexUses[d]))
		}
		for _, c := range x.Chunks {
			if !c.IsZero() {
				chunkUses[c] = appendUses(chunkUses[c], indexUses[d])
			}
		}
	}
	chunks := make([]Digest, 0, len(chunkUses))
	for d := range chunkUses {
		chunks = append(chunks, d)
	}
	sort.Slice(chunks, func(i, j int) bool { return chunks[i].String() < chunks[j].String() })

	var mu sync.Mutex
	var done atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	work := make(chan Digest)
	g.Go(func() error {
		defer close(work)
		for _, d := range chunks {
			select {
			case work <- d:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range runtime.GOMAXPROCS(0) {
		g.Go(func() error {
			for d := range work {
				b, err := r.VerifyChunk(d)
				mu.Lock()
				if err != nil {
					rep.Problems = append(rep.Problems, problem("chunk", d, err, chunkUses[d]))
				} else {
					rep.Bytes += int64(len(b))
				}
				rep.Chunks++
				mu.Unlock()
				if n := done.Add(1); progress != nil {
					progress(n, int64(len(chunks)))
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	sort.Slice(rep.Problems, func(i, j int) bool {
		a, b := rep.Problems[i], rep.Problems[j]
		if a.Kind != b.Kind {
			return a.Kind > b.Kind // indexes first
		}
		return a.Digest.String() < b.Digest.String()
	})
	return rep, nil
}

func appendUses(dst, src []use) []use {
	for _, u := range src {
		dup := false
		for _, x := range dst {
			if x == u {
				dup = true
				break
			}
		}
		if !dup {
			dst = append(dst, u)
		}
	}
	return dst
}

func problem(kind string, d Digest, err error, uses []use) Problem {
	msg := err.Error()
	switch {
	case errors.Is(err, ErrNotFound):
		msg = "missing"
	case errors.Is(err, ErrCorrupt):
		msg = "damaged: " + msg
	}
	pr := Problem{Kind: kind, Digest: d, Error: msg}
	seen := map[string]bool{}
	for _, u := range uses {
		if !seen[u.point] {
			pr.Points = append(pr.Points, u.point)
			seen[u.point] = true
		}
		pr.Files = append(pr.Files, fmt.Sprintf("%s/%s", u.point, u.file))
	}
	sort.Strings(pr.Points)
	sort.Strings(pr.Files)
	return pr
}
