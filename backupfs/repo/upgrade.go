package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// UpgradeReport says what Upgrade did.
type UpgradeReport struct {
	From          int           `json:"from_version"`
	To            int           `json:"to_version"`
	Chunks        int           `json:"chunks"`           // chunk files looked at
	Rewritten     int           `json:"chunks_rewritten"` // layout 1 chunks rewritten in layout 2
	BytesBefore   int64         `json:"bytes_before"`     // stored bytes of the rewritten chunks, before
	BytesAfter    int64         `json:"bytes_after"`      // and after
	AlreadyLatest bool          `json:"already_latest"`   // nothing to do: version 2, no layout 1 chunk
	Duration      time.Duration `json:"-"`                // MarshalJSON writes duration_s
}

// MarshalJSON writes the duration in seconds (docs/json.md).
func (u UpgradeReport) MarshalJSON() ([]byte, error) {
	type plain UpgradeReport
	return json.Marshal(struct {
		plain
		DurationSeconds float64 `json:"duration_s"`
	}{plain(u), u.Duration.Seconds()})
}

// UpgradeProgress is told the chunk folders done and their total.
type UpgradeProgress func(done, total int64)

// upgradeBatch bounds the chunks rewritten between two syncs: every new
// chunk file of a batch is made durable (one syncfs) before the first of
// them replaces its old file.
const upgradeBatch = 64

// Upgrade brings the repository to FormatVersion, holding its exclusive
// lock (no serve, backup or prune runs meanwhile): first config.json says
// version 2 (durably), then every layout 1 chunk is decoded, checked
// against its name and rewritten in layout 2 under the same name, so
// indexes and points do not change. New files are written to tmp/ and made
// durable, batch by batch, before they replace the old ones by rename: a
// crash or a kill at any point leaves every chunk whole in one layout or
// the other (both read), and running Upgrade again finishes the work. A
// chunk that fails its check is left as it is and named in the error
// (`rekindle verify` tells which points it affects).
func (r *Repo) Upgrade(ctx context.Context, progress UpgradeProgress) (*UpgradeReport, error) {
	start := time.Now()
	lock, err := r.Lock(ctx, LockExclusive, "upgrade")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	rep := &UpgradeReport{From: r.Config.Version, To: FormatVersion}
	if r.Config.Version < FormatVersion {
		cfg := r.Config
		cfg.Version = FormatVersion
		b, _ := json.MarshalIndent(cfg, "", "  ")
		if err := r.writeFileAtomic(filepath.Join(r.Dir, "config.json"), append(b, '\n'), true); err != nil {
			return nil, fmt.Errorf("upgrade repository %s: writing config.json: %w", r.Dir, err)
		}
		r.Config = cfg
	}
	folders, err := r.objectFolders(filepath.Join(r.Dir, "chunks"))
	if err != nil {
		return nil, fmt.Errorf("upgrade repository %s: %w", r.Dir, err)
	}
	type pending struct {
		tmp, path string
		d         Digest
	}
	var batch []pending
	// flush makes the batch's new files durable, then puts them in place.
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := r.Sync(); err != nil {
			return err
		}
		dirs := map[string]bool{}
		for _, p := range batch {
			if err := r.fsys().Rename(p.tmp, p.path); err != nil {
				return fmt.Errorf("upgrade repository %s: %w", r.Dir, err)
			}
			r.files.forget(p.d) // a kept file is the layout 1 one
			dirs[filepath.Dir(p.path)] = true
		}
		// The renames: durable before Upgrade says it is done.
		for dir := range dirs {
			if err := durablefs.SyncDir(r.fsys(), dir); err != nil {
				return fmt.Errorf("upgrade repository %s: %w", r.Dir, err)
			}
		}
		batch = batch[:0]
		return nil
	}
	var bad []error
	for i, dir := range folders {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := lock.Check(); err != nil {
			return nil, err
		}
		ents, err := r.fsys().ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("upgrade repository %s: %w", r.Dir, err)
		}
		for _, e := range ents {
			d, err := ParseDigest(e.Name())
			if err != nil || e.IsDir() {
				continue // not a chunk: readers ignore it too
			}
			rep.Chunks++
			raw, err := r.ReadChunkRaw(d)
			if err != nil {
				return nil, fmt.Errorf("upgrade repository %s: %w", r.Dir, err)
			}
			if ChunkLayoutVersion(raw) != 1 {
				continue
			}
			data, err := VerifyChunk(d, raw)
			if err != nil {
				bad = append(bad, fmt.Errorf("chunk %s: %w", d, err))
				continue
			}
			enc := EncodeChunk(d, data)
			tmp := filepath.Join(r.tmpDir(), strconv.Itoa(os.Getpid())+"-upgrade-"+d.String())
			if err := r.writeNew(tmp, enc); err != nil {
				return nil, fmt.Errorf("upgrade repository %s: chunk %s: %w", r.Dir, d, err)
			}
			batch = append(batch, pending{tmp, r.ChunkPath(d), d})
			rep.Rewritten++
			rep.BytesBefore += int64(len(raw))
			rep.BytesAfter += int64(len(enc))
			if len(batch) >= upgradeBatch {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
		if progress != nil {
			progress(int64(i+1), int64(len(folders)))
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	rep.AlreadyLatest = rep.From == FormatVersion && rep.Rewritten == 0
	rep.Duration = time.Since(start)
	if len(bad) > 0 {
		return rep, fmt.Errorf("upgrade repository %s: %d damaged chunks left in layout 1 (run `rekindle verify` for the points they affect): %w",
			r.Dir, len(bad), errors.Join(bad...))
	}
	return rep, nil
}

// writeNew writes b to a new file at name, without syncing it.
func (r *Repo) writeNew(name string, b []byte) error {
	f, err := r.fsys().OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		r.fsys().Remove(name)
	}
	return err
}
