package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	durablefs "github.com/rekindle/rekindle/internal/durable"
)

// Lock kinds (see docs/repository-format.md, "Locks").
const (
	// LockShared is held by whatever adds to or reads the repository:
	// import, backup, forget, verify, export. Any number coexist.
	LockShared = "shared"
	// LockServe is a shared lock that also excludes a second serve.
	LockServe = "serve"
	// LockExclusive is held by prune and upgrade: it excludes every other lock.
	LockExclusive = "exclusive"
	// LockVM is a VM's backup claim (ClaimVM): it excludes only another
	// claim of the same VM (and, as every lock, an exclusive one).
	LockVM = "vm"
)

// Lock timing: a holder rewrites its lock file every LockRefresh; a lock
// not rewritten for LockStaleAfter belongs to a holder that is gone.
const (
	LockRefresh    = 5 * time.Minute
	LockStaleAfter = 30 * time.Minute
)

// ErrLocked is returned (wrapped, naming the holder) when a lock conflicts
// with one another process holds.
var ErrLocked = errors.New("repository is locked")

// claimedError is ClaimVM's refusal: errors.Is(err, ErrLocked) holds.
type claimedError string

func (e claimedError) Error() string        { return string(e) }
func (e claimedError) Is(target error) bool { return target == ErrLocked }

// LockInfo is the content of a lock file.
type LockInfo struct {
	ID        string    `json:"-"`
	Kind      string    `json:"kind"`
	Purpose   string    `json:"purpose"` // what the holder does, e.g. "serve"
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	VM        string    `json:"vm,omitempty"` // kind vm: the claimed VM's key
	Created   time.Time `json:"created"`
	Refreshed time.Time `json:"refreshed"`
}

// String names the holder for people.
func (l LockInfo) String() string {
	if l.Kind == LockVM {
		return fmt.Sprintf("VM backup claim (%s) held by pid %d on %s since %s (lock %s)", l.Purpose, l.PID, l.Host,
			l.Created.UTC().Format(time.RFC3339), l.ID)
	}
	return fmt.Sprintf("%s lock of %q held by pid %d on %s since %s (lock %s)", l.Kind, l.Purpose, l.PID, l.Host,
		l.Created.UTC().Format(time.RFC3339), l.ID)
}

// RepoLock is a lock this process holds. Unlock releases it.
type RepoLock struct {
	r    *Repo
	info LockInfo
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	lost error
	once sync.Once
}

func (r *Repo) lockDir() string { return filepath.Join(r.Dir, "locks") }

// Lock takes a lock of kind (LockShared, LockServe or LockExclusive) for
// purpose. It writes its own lock file, then reads every other: when one
// conflicts and is not stale, it removes its own file and fails with
// ErrLocked naming the holder. Because every holder writes before it looks,
// two conflicting lockers can both fail but never both succeed; Lock retries
// a few times before giving up, and a shared or serve lock meeting an
// exclusive one (a prune) keeps retrying for up to r.LockWait. Stale locks
// (not refreshed for LockStaleAfter, or of a process on this host that no
// longer runs) are removed. The lock is refreshed in the background until
// Unlock.
func (r *Repo) Lock(ctx context.Context, kind, purpose string) (*RepoLock, error) {
	l, _, err := r.take(ctx, lockRequest{kind: kind, purpose: purpose, wait: r.LockWait, waiting: r.LockWaiting})
	return l, err
}

// ClaimVM takes the backup claim of the VM whose key is vm (a stable
// identity: vCenter's instance UUID), so that no two backups of one VM run
// at once, in any process on any host using this repository (see
// docs/repository-format.md, "VM backup claims"). The claim is a lock file
// of kind LockVM, taken, refreshed, judged stale and released as every
// lock; it conflicts only with another claim of the same VM. Another live
// claim makes ClaimVM fail with ErrLocked naming its holder (host, pid,
// since when), after waiting up to wait for it to be released (calling
// waiting once per holder). The claims of holders that are gone (stale)
// are removed and returned: a backup that takes over such a claim knows
// that a backup snapshot that run left is nobody's.
func (r *Repo) ClaimVM(ctx context.Context, vm, purpose string, wait time.Duration, waiting func(holder LockInfo, wait time.Duration)) (*RepoLock, []LockInfo, error) {
	if vm == "" {
		return nil, nil, errors.New("claim VM: no VM key")
	}
	return r.take(ctx, lockRequest{kind: LockVM, purpose: purpose, vm: vm, wait: wait, waiting: waiting})
}

// lockRequest is what take takes.
type lockRequest struct {
	kind, purpose string
	vm            string // kind vm
	beside        string // a lock id not counted as a conflict
	// wait is how long to keep retrying against a holder worth waiting
	// for (an exclusive one for a shared or serve lock, another claim of
	// the VM for a claim); waiting is told once per such holder.
	wait    time.Duration
	waiting func(holder LockInfo, wait time.Duration)
}

// lockRetries is how many times Lock tries before it fails, when it does
// not wait.
const lockRetries = 3

// lockPause is the pause before attempt n (1, 2, ...): 50 ms, 200 ms,
// 450 ms, ... up to a second while Lock waits.
func lockPause(n int) time.Duration { return min(time.Duration(n*n)*50*time.Millisecond, time.Second) }

// lock is Lock, not counting the lock whose id is beside as a conflict, and
// waiting up to wait (not r.LockWait) for an exclusive holder.
func (r *Repo) lock(ctx context.Context, kind, purpose, beside string, wait time.Duration) (*RepoLock, error) {
	l, _, err := r.take(ctx, lockRequest{kind: kind, purpose: purpose, beside: beside, wait: wait, waiting: r.LockWaiting})
	return l, err
}

// take takes the lock req asks for, returning also the stale locks it
// removed on the way.
func (r *Repo) take(ctx context.Context, req lockRequest) (*RepoLock, []LockInfo, error) {
	kind, purpose, beside, wait := req.kind, req.purpose, req.beside, req.wait
	switch kind {
	case LockShared, LockServe, LockExclusive, LockVM:
	default:
		return nil, nil, fmt.Errorf("lock kind %q unknown", kind)
	}
	if err := durablefs.MkdirAll(r.fsys(), r.lockDir(), 0o755); err != nil {
		return nil, nil, fmt.Errorf("lock repository %s: %w", r.Dir, err)
	}
	host, _ := os.Hostname()
	start := time.Now()
	waitedFor := map[string]bool{}
	var stale []LockInfo
	var err error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			case <-time.After(lockPause(attempt)):
			}
		}
		now := time.Now().UTC()
		info := LockInfo{ID: newLockID(), Kind: kind, Purpose: purpose, Host: host, PID: os.Getpid(), VM: req.vm, Created: now, Refreshed: now}
		if err = r.writeLock(info); err != nil {
			return nil, nil, err
		}
		var holder *LockInfo
		var removed []LockInfo
		holder, removed, err = r.conflict(info, beside)
		stale = append(stale, removed...)
		if err == nil && holder == nil {
			l := &RepoLock{r: r, info: info, stop: make(chan struct{}), done: make(chan struct{})}
			go l.refresh()
			return l, stale, nil
		}
		r.fsys().Remove(r.lockPath(info.ID))
		if err != nil {
			return nil, nil, err
		}
		if holder.Kind == LockServe && kind == LockServe {
			return nil, nil, fmt.Errorf("%w: another `rekindle serve` uses this repository (%s); stop it first", ErrLocked, holder)
		}
		worthWaiting := kind != LockExclusive && holder.Kind == LockExclusive
		if kind == LockVM && holder.Kind == LockVM {
			err = claimedError(fmt.Sprintf("another backup of this VM is running: %s (the claim of a process that is gone is stale %s after its last refresh, or at once on its own host)",
				holder, LockStaleAfter))
			worthWaiting = true
		} else {
			err = fmt.Errorf("%w: %s wants a %s lock, but a %s", ErrLocked, purpose, kind, holder)
		}
		if worthWaiting && wait > 0 {
			if time.Since(start) < wait {
				if !waitedFor[holder.ID] {
					waitedFor[holder.ID] = true
					if req.waiting != nil {
						req.waiting(*holder, wait)
					}
				}
				continue
			}
			return nil, nil, fmt.Errorf("%w (waited %s for it to be released)", err, wait)
		}
		if attempt+1 >= lockRetries {
			return nil, nil, err
		}
	}
}

func newLockID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *Repo) lockPath(id string) string { return filepath.Join(r.lockDir(), id+".json") }

func (r *Repo) writeLock(info LockInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := r.writeFileAtomic(r.lockPath(info.ID), append(b, '\n'), true); err != nil {
		return fmt.Errorf("lock repository %s: %w", r.Dir, err)
	}
	return nil
}

// conflict returns the first live lock other than own that conflicts
// with it, removing stale ones on the way (and returning them).
func (r *Repo) conflict(own LockInfo, beside string) (*LockInfo, []LockInfo, error) {
	locks, err := r.Locks()
	if err != nil {
		return nil, nil, err
	}
	var removed []LockInfo
	for _, l := range locks {
		if l.ID == own.ID || l.ID == beside {
			continue
		}
		if r.stale(l) {
			// A stale VM claim is left to whoever claims that VM (or
			// prunes), so its taker learns that the claim's backup is gone.
			if l.Kind != LockVM || conflicts(own, l) {
				r.fsys().Remove(r.lockPath(l.ID))
				removed = append(removed, l)
			}
			continue
		}
		if conflicts(own, l) {
			return &l, removed, nil
		}
	}
	return nil, removed, nil
}

// conflicts says whether locks a and b exclude each other: an exclusive
// lock excludes every other, two serve locks exclude each other, and a VM
// claim excludes another claim of the same VM. A kind this version does not
// know conflicts only with an exclusive lock.
func conflicts(a, b LockInfo) bool {
	switch {
	case a.Kind == LockExclusive || b.Kind == LockExclusive:
		return true
	case a.Kind == LockServe && b.Kind == LockServe:
		return true
	case a.Kind == LockVM && b.Kind == LockVM:
		return a.VM == b.VM
	}
	return false
}

// stale reports whether l's holder is gone: not refreshed for
// LockStaleAfter, or a process of this host that no longer runs.
func (r *Repo) stale(l LockInfo) bool {
	if time.Since(l.Refreshed) > LockStaleAfter {
		return true
	}
	host, _ := os.Hostname()
	return l.Host == host && l.PID > 0 && syscall.Kill(l.PID, 0) == syscall.ESRCH
}

// Locks lists the lock files, stale ones included. A lock file that does
// not parse is reported with kind exclusive, so it blocks until it is stale
// by its modification time.
func (r *Repo) Locks() ([]LockInfo, error) {
	ents, err := r.fsys().ReadDir(r.lockDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list locks of %s: %w", r.Dir, err)
	}
	var out []LockInfo
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		b, err := durablefs.ReadFile(r.fsys(), filepath.Join(r.lockDir(), e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // released meanwhile
		}
		var l LockInfo
		if err != nil || json.Unmarshal(b, &l) != nil || l.Kind == "" {
			fi, serr := e.Info()
			if serr != nil {
				continue
			}
			l = LockInfo{Kind: LockExclusive, Purpose: "unreadable lock file", Created: fi.ModTime(), Refreshed: fi.ModTime()}
		}
		l.ID = id
		out = append(out, l)
	}
	return out, nil
}

// Info describes the lock.
func (l *RepoLock) Info() LockInfo { return l.info }

// Check returns an error when the lock was lost: its file is gone (another
// process judged it stale) or could not be refreshed. A long exclusive
// holder (prune) checks before each step that deletes.
func (l *RepoLock) Check() error {
	l.mu.Lock()
	err := l.lost
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := l.r.fsys().Stat(l.r.lockPath(l.info.ID)); err != nil {
		return fmt.Errorf("repository lock %s lost: %w", l.info.ID, err)
	}
	return nil
}

func (l *RepoLock) refresh() {
	defer close(l.done)
	t := time.NewTicker(LockRefresh)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if _, err := l.r.fsys().Stat(l.r.lockPath(l.info.ID)); err != nil {
				l.setLost(fmt.Errorf("repository lock %s lost: removed by another process", l.info.ID))
				return
			}
			info := l.info
			info.Refreshed = time.Now().UTC()
			if err := l.r.writeLock(info); err != nil {
				l.setLost(err)
			}
		}
	}
}

func (l *RepoLock) setLost(err error) {
	l.mu.Lock()
	l.lost = err
	l.mu.Unlock()
}

// Unlock releases the lock. It is safe to call more than once.
func (l *RepoLock) Unlock() error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		if rerr := l.r.fsys().Remove(l.r.lockPath(l.info.ID)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("unlock repository %s: %w", l.r.Dir, rerr)
		}
	})
	return err
}
