package overlay

import (
	"errors"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rekindle/rekindle/internal/durable"
)

// Names in the data folder. A data or bitmap file's bytes are durable after
// its fdatasync, its name only after an fsync of the data folder. Two things
// keep that second sync off most COMMITs:
//
//   - the data folder's fsync is a group commit (groupSync): a sync that needs the
//     folder durable waits for (or runs) one fsync that started after every
//     name made so far, and concurrent syncs of different files share it.
//   - spare data files: the first data file made for a node created in the
//     session also makes empty data files for the ids of the next
//     spareBatch nodes to be created (ids follow a counter, so they are
//     known ahead), all covered by one folder fsync. A node that finds its
//     spare needs no new name, so its COMMIT syncs its data only. When
//     fewer than half a batch is left, the CREATE that claims one starts
//     the next batch in a goroutine, so that no call waits for 64 file
//     creations (a WRITE did, once per 64 small files). An empty
//     data file of a file without origin means what a missing one means (no
//     bytes, size 0); spares never claimed are removed on Close, or as
//     leftovers when the upper directory is opened.

// spareBatch is how many spare data files one batch makes.
const spareBatch = 64

// groupSync is a group commit: writers count what they wrote (marked), and
// a caller that needs everything up to a count durable waits for a sync
// that started after it was written, or runs one; concurrent callers share
// it. The journal's log and the data folder's names use it.
type groupSync struct {
	mu     sync.Mutex    // held by the sync under way
	marked atomic.Uint64 // written: records appended, names made
	synced atomic.Uint64 // known durable
}

// needed reports whether something marked is not known durable.
func (g *groupSync) needed() bool { return g.synced.Load() < g.marked.Load() }

// syncTo makes everything up to want durable, running fn (the sync) unless
// a sync that started after want was marked has ended.
func (g *groupSync) syncTo(want uint64, fn func() error) error {
	if g.synced.Load() >= want {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.synced.Load() >= want {
		return nil
	}
	upto := g.marked.Load()
	if err := fn(); err != nil {
		return err
	}
	g.synced.Store(upto)
	return nil
}

// syncNames makes every name made in the data folder so far durable.
func (o *Overlay) syncNames() error {
	return o.names.syncTo(o.names.marked.Load(), func() error { return durable.SyncDir(o.fs, o.dataDir) })
}

// newName follows the creation of a data or bitmap file: with Options.Sync
// its name is made durable now; without, by the next sync of any file.
func (o *Overlay) newName() error {
	o.names.marked.Add(1)
	if !o.sync {
		return nil
	}
	return o.syncNames()
}

// seqID is the id of the node created with counter value seq.
func (o *Overlay) seqID(seq uint64) uint64 {
	return o.hashID("\x00upper\x00" + strconv.FormatUint(seq, 10))
}

// reserveSparesLocked picks the ids of the nodes to be created with the
// next ahead counter values that have no spare yet, and marks them being
// made (making), so that a node created with one of them waits for its
// spare (waitSpareLocked) instead of missing it. spareMu is held.
func (o *Overlay) reserveSparesLocked(ahead uint64) []uint64 {
	o.mu.Lock()
	from, to := max(o.spareEnd, o.st.nextSeq), o.st.nextSeq+ahead
	var ids []uint64
	for seq := from; seq < to; seq++ {
		if id := o.seqID(seq); o.byID[id] == "" && o.contents[id] == nil {
			ids = append(ids, id)
		}
	}
	o.spareEnd = max(o.spareEnd, to)
	o.mu.Unlock()
	for _, id := range ids {
		o.making[id] = struct{}{}
	}
	return ids
}

// makeSpares makes the spare data files of ids, reserved by
// reserveSparesLocked. A failure only means fewer spares. The names are
// counted (names.marked) once their files exist, and only then given out,
// so a node's first sync cannot miss the folder sync its name needs.
func (o *Overlay) makeSpares(ids []uint64) {
	var made []uint64
	for _, id := range ids {
		if o.closed.Load() {
			break
		}
		f, err := o.fs.OpenFile(o.dataPath(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			break // a full disk: the files made so far stay spares
		}
		f.Close()
		made = append(made, id)
	}
	// One count for the batch, so that the syncs running while it is made
	// do not each sync the folder again for names nobody uses yet.
	if len(made) > 0 {
		o.names.marked.Add(1)
	}
	o.spareMu.Lock()
	for _, id := range made {
		o.spares[id] = struct{}{}
	}
	for _, id := range ids {
		delete(o.making, id)
	}
	o.spareCond.Broadcast()
	o.spareMu.Unlock()
}

// claimSpare takes id's spare data file, if it has one, for the node just
// created with mtime. Its name is durable once the data folder's names made
// so far are. When fewer than half a batch of spares is left, the next
// batch is made in the background, off the calls' path.
func (o *Overlay) claimSpare(id uint64, mtime int64) {
	o.spareMu.Lock()
	o.waitSpareLocked(id)
	_, ok := o.spares[id]
	delete(o.spares, id)
	var next []uint64
	if ok && len(o.spares) < spareBatch/2 && !o.refilling && !o.closed.Load() {
		next = o.reserveSparesLocked(spareBatch + spareBatch/2)
	}
	if len(next) > 0 {
		o.refilling = true
		o.refills.Add(1)
	}
	o.spareMu.Unlock()
	if len(next) > 0 {
		go func() {
			defer o.refills.Done()
			o.makeSpares(next)
			o.spareMu.Lock()
			o.refilling = false
			o.spareMu.Unlock()
		}()
	}
	if !ok {
		return
	}
	t := time.Unix(0, mtime)
	if err := o.fs.Chtimes(o.dataPath(id), t, t); err != nil {
		// Not usable: without its data file the node reads as empty, and
		// the first write makes one.
		o.fs.Remove(o.dataPath(id))
	}
}

// waitSpareLocked waits while id's spare is being made; spareMu is held.
func (o *Overlay) waitSpareLocked(id uint64) {
	for {
		if _, ok := o.making[id]; !ok {
			return
		}
		o.spareCond.Wait()
	}
}

// waitSpare waits while id's spare is being made.
func (o *Overlay) waitSpare(id uint64) {
	o.spareMu.Lock()
	o.waitSpareLocked(id)
	o.spareMu.Unlock()
}

// removeSpares deletes the spares never claimed (on Close), once the
// batch being made in the background is done.
func (o *Overlay) removeSpares() {
	o.refills.Wait()
	o.spareMu.Lock()
	defer o.spareMu.Unlock()
	for id := range o.spares {
		o.fs.Remove(o.dataPath(id))
		delete(o.spares, id)
	}
}
