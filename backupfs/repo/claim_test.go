package repo_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// TestClaimVM: a VM's backup claim excludes another claim of the same VM
// only: claims of two VMs, and claims beside shared and serve locks,
// coexist; an exclusive lock (prune) and a claim exclude each other.
func TestClaimVM(t *testing.T) {
	r, err := repo.Init(t.TempDir(), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sv, err := r.Lock(ctx, repo.LockServe, "serve")
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := r.ClaimVM(ctx, "instance-uuid:a", "backup of VM a", 0, nil)
	if err != nil {
		t.Fatalf("claim beside serve: %v", err)
	}
	b, _, err := r.ClaimVM(ctx, "instance-uuid:b", "backup of VM b", 0, nil)
	if err != nil {
		t.Fatalf("claims of two VMs: %v", err)
	}
	sh, err := r.Lock(ctx, repo.LockShared, "import")
	if err != nil {
		t.Fatalf("shared lock beside claims: %v", err)
	}
	sh.Unlock()
	_, _, err = r.ClaimVM(ctx, "instance-uuid:a", "backup of VM a again", 0, nil)
	if !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), `VM backup claim (backup of VM a)`) {
		t.Fatalf("second claim of VM a: %v, want refused naming the first", err)
	}
	sv.Unlock()
	if _, err := r.Lock(ctx, repo.LockExclusive, "prune"); !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), "VM backup claim") {
		t.Fatalf("prune beside claims: %v", err)
	}
	a.Unlock()
	b.Unlock()
	x, err := r.Lock(ctx, repo.LockExclusive, "prune")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.ClaimVM(ctx, "instance-uuid:a", "backup of VM a", 0, nil); !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), `"prune"`) {
		t.Fatalf("claim beside prune: %v", err)
	}
	x.Unlock()
	if locks, _ := r.Locks(); len(locks) != 0 {
		t.Fatalf("locks left: %+v", locks)
	}
}
