package overlay

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/rekindle/rekindle/internal/durable"
)

// The metadata journal: a checkpoint (the meta file) and an append-only log
// of the changes made since, so that a CREATE costs one small append and a
// shared fdatasync whether the session holds ten files or ten thousand.
// See the package comment for the format.

const (
	logName        = "log"
	logMagic       = "RKOVLOG1"
	recHeaderLen   = 8 // payload length, CRC-32C of the payload
	maxRecord      = maxMetaSize
	checkpointFrom = 4 << 20 // log bytes past which a commit writes a checkpoint
	// The log is written with zeros ahead of its records. An fdatasync
	// of a file that grew (ext4: a new size, new blocks) waits for a
	// commit of the filesystem's journal; one of blocks already written,
	// at an unchanged size, writes the blocks and flushes the disk's
	// cache only. So the log grows in steps, by as much as it holds (from
	// minLogStep, doubling, up to maxLogStep), and a CREATE's record
	// overwrites zeros in place: 2000 CREATEs grow it four times, and a
	// small session's log stays small.
	minLogStep = 64 << 10
	maxLogStep = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// logRecord is one committed change: the new state of every path it
// touched. Del and WDel name paths that no longer hold a node or whiteout.
type logRecord struct {
	Seq     uint64     `json:"seq"`
	NextSeq uint64     `json:"nextSeq"`
	Del     []string   `json:"del,omitempty"`
	Put     []metaNode `json:"put,omitempty"`
	WDel    []string   `json:"wdel,omitempty"`
	WPut    []string   `json:"wput,omitempty"`
}

func encodeRecord(r *logRecord) ([]byte, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding log record: %w", err)
	}
	if len(body) > maxRecord {
		return nil, fmt.Errorf("log record of %d bytes, more than %d", len(body), maxRecord)
	}
	b := make([]byte, recHeaderLen, recHeaderLen+len(body))
	binary.BigEndian.PutUint32(b[0:4], uint32(len(body)))
	binary.BigEndian.PutUint32(b[4:8], crc32.Checksum(body, castagnoli))
	return append(b, body...), nil
}

// replayLog applies the records of log b to st, which must be the
// checkpoint the log follows, and returns how many bytes of b are good. A
// torn or damaged tail (a record cut short, or whose checksum fails) ends
// the log: nothing after it was ever acknowledged, because an
// acknowledgement waits for an fdatasync that covers every earlier record.
// Records the checkpoint already includes are skipped. The caller validates
// st afterwards.
func replayLog(st *state, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if len(b) < len(logMagic) || string(b[:len(logMagic)]) != logMagic {
		return 0, fmt.Errorf("%w: log does not start with %q", ErrCorruptMeta, logMagic)
	}
	off := len(logMagic)
	for len(b)-off >= recHeaderLen {
		n := int(binary.BigEndian.Uint32(b[off:]))
		if n == 0 || n > maxRecord || n > len(b)-off-recHeaderLen {
			break // zeros or a cut record: the torn tail
		}
		body := b[off+recHeaderLen : off+recHeaderLen+n]
		if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[off+4:]) {
			break
		}
		var r logRecord
		if err := json.Unmarshal(body, &r); err != nil {
			return 0, fmt.Errorf("%w: log record at %d: %v", ErrCorruptMeta, off, err)
		}
		switch {
		case r.Seq <= st.logSeq:
			// Included in the checkpoint already.
		case r.Seq == st.logSeq+1:
			if err := st.apply(&r); err != nil {
				return 0, fmt.Errorf("%w: log record %d: %v", ErrCorruptMeta, r.Seq, err)
			}
			st.logSeq = r.Seq
		default:
			return 0, fmt.Errorf("%w: log record %d follows %d", ErrCorruptMeta, r.Seq, st.logSeq)
		}
		off += recHeaderLen + n
	}
	return off, nil
}

// apply applies one record to st.
func (st *state) apply(r *logRecord) error {
	for _, p := range r.Del {
		if err := checkMetaPath(p); err != nil {
			return err
		}
		delete(st.nodes, p)
	}
	for i := range r.Put {
		n, err := decodeNode(&r.Put[i])
		if err != nil {
			return fmt.Errorf("node %q: %v", r.Put[i].Path, err)
		}
		st.nodes[r.Put[i].Path] = n
	}
	for _, p := range r.WDel {
		delete(st.whiteouts, p)
	}
	for _, p := range r.WPut {
		if err := checkMetaPath(p); err != nil || p == "/" {
			return fmt.Errorf("whiteout %q: invalid path", p)
		}
		st.whiteouts[p] = struct{}{}
	}
	st.nextSeq = max(st.nextSeq, r.NextSeq)
	return nil
}

// journal writes the metadata. Its fields other than the sync ones are
// guarded by Overlay.mu; f is swapped only with g.mu held too.
type journal struct {
	fsys      durable.FS
	dir       string
	threshold int64

	f        durable.File // the log, open for writing at off
	off      int64
	size     int64  // the log file's size: [off, size) holds zeros written ahead
	seq      uint64 // the last record appended (or included in the checkpoint)
	metaSize int64
	// broken: the log's tail cannot be trusted (a failed append could not be
	// cut off, a sync or checkpoint failed): the next commit checkpoints.
	broken atomic.Bool

	g groupSync // marked: seq of the last record written; synced: durable
}

// openJournal replays the log of dir over st (its checkpoint), cuts a torn
// tail off, and opens the log for appending; a missing log is made.
func openJournal(fsys durable.FS, dir string, st *state, metaSize int64) (*journal, error) {
	j := &journal{fsys: fsys, dir: dir, threshold: max(checkpointFrom, 2*metaSize), metaSize: metaSize}
	name := filepath.Join(dir, logName)
	b, err := durable.ReadFile(fsys, name)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := durable.WriteFile(fsys, name, []byte(logMagic), 0o600); err != nil {
			return nil, err
		}
		b = []byte(logMagic)
	case err != nil:
		return nil, err
	}
	good, err := replayLog(st, b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := st.validate(); err != nil {
		return nil, fmt.Errorf("%s: after replay: %w", name, err)
	}
	f, err := fsys.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if good < len(logMagic) { // an empty file
		if _, err := f.WriteAt([]byte(logMagic), 0); err != nil {
			f.Close()
			return nil, err
		}
		good = len(logMagic)
	}
	size := max(int64(len(b)), int64(good))
	if good < len(b) && !allZero(b[good:]) {
		// Cut the torn tail, so that new records follow the last good one
		// and nothing of an unacknowledged record (a later one may have
		// reached the disk before a torn one) is read after them. The
		// zeros written ahead of the records (extendLocked) are what a log
		// ends with otherwise: they stay, to be overwritten.
		if err := f.Truncate(int64(good)); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: cutting a torn tail: %w", name, err)
		}
		size = int64(good)
	}
	if err := f.DataSync(); err != nil {
		f.Close()
		return nil, err
	}
	j.f, j.off, j.size, j.seq = f, int64(good), size, st.logSeq
	j.g.marked.Store(j.seq)
	j.g.synced.Store(j.seq)
	return j, nil
}

// needsCheckpoint reports whether the next commit should write a
// checkpoint instead of a record.
func (j *journal) needsCheckpoint() bool { return j.broken.Load() || j.off > j.threshold }

// appendLocked writes record rec (seq j.seq+1) at the end of the log. On
// failure the log is cut back to its last good record and the error
// returned; the record is not in the log.
func (j *journal) appendLocked(rec []byte) error {
	end := j.off + int64(len(rec))
	if end > j.size {
		j.extendLocked(end)
	}
	if _, err := j.f.WriteAt(rec, j.off); err != nil {
		if terr := j.f.Truncate(j.off); terr != nil {
			j.broken.Store(true)
		}
		j.size = j.off
		return err
	}
	j.off = end
	j.size = max(j.size, end)
	j.seq++
	j.g.marked.Store(j.seq)
	return nil
}

// extendLocked writes zeros from the log's end to a step boundary past
// end, for the records to come to overwrite in place. They become durable
// with the fdatasync of the record that follows (which waits for the
// journal commit of the new size once per step). A disk without room for
// them gets the record appended as it is: the zeros written are cut off
// again, so a full disk fails no call the old log would not have.
func (j *journal) extendLocked(end int64) {
	step := min(max(j.size, minLogStep), maxLogStep)
	to := (end + step - 1) / step * step
	if _, err := j.f.WriteAt(make([]byte, to-j.size), j.size); err != nil {
		if terr := j.f.Truncate(j.size); terr != nil {
			j.broken.Store(true)
		}
		return
	}
	j.size = to
}

// allZero reports whether b holds zeros only.
func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// sync makes the log durable up to record seq. Concurrent callers share
// one fdatasync.
func (j *journal) sync(seq uint64) error {
	return j.g.syncTo(seq, func() error {
		if err := j.f.DataSync(); err != nil {
			// The records may or may not be on disk: rewrite everything next.
			j.broken.Store(true)
			return err
		}
		return nil
	})
}

// checkpointLocked writes st (everything committed so far and the change
// being committed) as the new meta file and starts an empty log. On
// failure the journal is marked broken, so the next commit tries again.
func (j *journal) checkpointLocked(st *state) error {
	j.g.mu.Lock()
	defer j.g.mu.Unlock()
	st.logSeq = j.seq
	b, err := encodeMeta(st)
	if err == nil {
		err = durable.WriteFile(j.fsys, filepath.Join(j.dir, metaName), b, 0o600)
	}
	var f durable.File
	if err == nil {
		name := filepath.Join(j.dir, logName)
		err = durable.WriteFile(j.fsys, name, []byte(logMagic), 0o600)
		if err == nil {
			f, err = j.fsys.OpenFile(name, os.O_RDWR, 0)
		}
	}
	if err != nil {
		j.broken.Store(true)
		return err
	}
	j.f.Close()
	j.f, j.off, j.size, j.metaSize = f, int64(len(logMagic)), int64(len(logMagic)), int64(len(b))
	j.threshold = max(checkpointFrom, 2*j.metaSize)
	j.g.synced.Store(j.seq)
	j.broken.Store(false)
	return nil
}

func (j *journal) close() error {
	j.g.mu.Lock()
	defer j.g.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
