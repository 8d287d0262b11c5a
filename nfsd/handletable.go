package nfsd

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/rekindle/rekindle/internal/durable"
)

// handleTable gives stable file ids to the files of an export whose filesystem
// has none of its own (see FileIDer). A path's id is the first 8 bytes of the
// SHA-256 of its slash path, moved to the next free number on a collision; the
// table remembers every id it gave in an append-only log so that a handle names
// the same path after a restart.
//
// Log format (version 1), a sequence of records:
//
//	crc32  4  CRC-32 (IEEE) of the rest of the record
//	op     1  1 = add, 2 = forget
//	id     8  file id, big endian
//	len    2  length of the path, big endian
//	path   len bytes, the slash path ("/" is the root)
//
// A torn or corrupt tail is cut off when the log is opened. Appends are written at
// once but made durable by Sync, which the server calls before any reply that may
// carry a new handle leaves: one fsync covers every handle a READDIRPLUS minted.
type handleTable struct {
	fsys durable.FS
	file string

	mu      sync.Mutex
	byID    map[uint64]string
	byPath  map[string]uint64
	f       durable.File
	records int
	err     error // sticky append failure, reported by Sync

	appended atomic.Uint64
	synced   atomic.Uint64
	syncMu   sync.Mutex
}

const (
	opAdd    = 1
	opForget = 2
	// compactAfter is how many records a log may hold before a reopen rewrites it
	// without forgotten entries (when they outnumber the live ones).
	compactAfter = 4096
)

func openHandleTable(fsys durable.FS, file string) (*handleTable, error) {
	t := &handleTable{fsys: fsys, file: file, byID: map[uint64]string{}, byPath: map[string]uint64{}}
	data, err := durable.ReadFile(fsys, file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("handle table %s: %w", file, err)
	}
	good := t.replay(data)
	if err := durable.MkdirAll(fsys, filepath.Dir(file), 0o700); err != nil {
		return nil, fmt.Errorf("handle table %s: %w", file, err)
	}
	rewrote := false
	if t.records >= compactAfter && t.records > 2*len(t.byID) {
		if err := t.rewrite(); err != nil {
			return nil, err
		}
		rewrote = true
	}
	f, err := fsys.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("handle table %s: %w", file, err)
	}
	if good < len(data) && !rewrote {
		if err := f.Truncate(int64(good)); err != nil {
			f.Close()
			return nil, fmt.Errorf("handle table %s: cut torn tail: %w", file, err)
		}
	}
	if err := durable.SyncDir(fsys, filepath.Dir(file)); err != nil {
		f.Close()
		return nil, fmt.Errorf("handle table %s: %w", file, err)
	}
	t.f = f
	return t, nil
}

// replay applies the log's records and returns how many bytes were good.
func (t *handleTable) replay(data []byte) int {
	off := 0
	for len(data)-off >= 15 {
		rec := data[off:]
		n := int(binary.BigEndian.Uint16(rec[13:15]))
		if len(rec) < 15+n {
			break
		}
		if binary.BigEndian.Uint32(rec[0:4]) != crc32.ChecksumIEEE(rec[4:15+n]) {
			break
		}
		id := binary.BigEndian.Uint64(rec[5:13])
		p := string(rec[15 : 15+n])
		switch rec[4] {
		case opAdd:
			if old, ok := t.byID[id]; ok {
				delete(t.byPath, old)
			}
			t.byID[id] = p
			t.byPath[p] = id
		case opForget:
			if old, ok := t.byID[id]; ok {
				delete(t.byPath, old)
				delete(t.byID, id)
			}
		default:
			return off
		}
		t.records++
		off += 15 + n
	}
	return off
}

func encodeRecord(op byte, id uint64, p string) []byte {
	rec := make([]byte, 15+len(p))
	rec[4] = op
	binary.BigEndian.PutUint64(rec[5:13], id)
	binary.BigEndian.PutUint16(rec[13:15], uint16(len(p)))
	copy(rec[15:], p)
	binary.BigEndian.PutUint32(rec[0:4], crc32.ChecksumIEEE(rec[4:]))
	return rec
}

// rewrite replaces the log with one add record per live entry, atomically.
func (t *handleTable) rewrite() error {
	var buf []byte
	for id, p := range t.byID {
		buf = append(buf, encodeRecord(opAdd, id, p)...)
	}
	if err := durable.WriteFile(t.fsys, t.file, buf, 0o600); err != nil {
		return fmt.Errorf("handle table %s: compact: %w", t.file, err)
	}
	t.records = len(t.byID)
	return nil
}

// maxTablePath is the longest path the log format can hold.
const maxTablePath = 1<<16 - 1

// idFor returns p's id, giving it one if it has none. The new entry is durable
// only after the next Sync.
func (t *handleTable) idFor(p string) (uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.byPath[p]; ok {
		return id, nil
	}
	if len(p) > maxTablePath {
		return 0, fmt.Errorf("handle table: path of %d bytes is too long", len(p))
	}
	sum := sha256.Sum256([]byte(p))
	id := binary.BigEndian.Uint64(sum[:8])
	for {
		if _, taken := t.byID[id]; !taken {
			break
		}
		id++
	}
	t.append(encodeRecord(opAdd, id, p))
	t.byID[id] = p
	t.byPath[p] = id
	return id, nil
}

func (t *handleTable) pathOf(id uint64) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.byID[id]
	return p, ok
}

// forget drops id, so its handle goes stale.
func (t *handleTable) forget(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.byID[id]
	if !ok {
		return
	}
	t.append(encodeRecord(opForget, id, p))
	delete(t.byID, id)
	delete(t.byPath, p)
}

// append writes rec to the log; t.mu is held.
func (t *handleTable) append(rec []byte) {
	if t.err != nil {
		return
	}
	if _, err := t.f.Write(rec); err != nil {
		t.err = fmt.Errorf("handle table %s: append: %w", t.file, err)
		return
	}
	t.records++
	t.appended.Add(1)
}

// Sync makes every entry appended so far durable. Concurrent callers share one
// fsync.
func (t *handleTable) Sync() error {
	need := t.appended.Load()
	if t.synced.Load() >= need {
		return t.stickyErr()
	}
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	if t.synced.Load() >= need {
		return t.stickyErr()
	}
	upto := t.appended.Load()
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("handle table %s: fsync: %w", t.file, err)
	}
	t.synced.Store(upto)
	return t.stickyErr()
}

func (t *handleTable) stickyErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

func (t *handleTable) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil {
		return nil
	}
	err := t.f.Sync()
	if cerr := t.f.Close(); err == nil {
		err = cerr
	}
	t.f = nil
	if t.err == nil {
		t.err = io.ErrClosedPipe
	}
	return err
}
