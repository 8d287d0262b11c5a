// Package benchdata makes the inputs the repository benchmarks share: a VM
// folder with one mixed disk (random, zero and repeated regions) and
// repositories holding it at several chunk sizes. Sizes come from
// REKINDLE_BENCH_MB (default 256) so a quick run can use less.
package benchdata

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/rekindle/rekindle/backupfs/ingest"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// ChunkSizes are the chunk sizes the benchmarks compare.
var ChunkSizes = []int{256 << 10, 1 << 20, 4 << 20}

// Size is the benchmark disk size in bytes.
func Size() int64 {
	mb, err := strconv.Atoi(os.Getenv("REKINDLE_BENCH_MB"))
	if err != nil || mb <= 0 {
		mb = 256
	}
	return int64(mb) << 20
}

var (
	once   sync.Once
	dir    string
	folder string
	err    error
	repos  sync.Map // [2]int{chunk size, format version} -> *repo.Repo
	mu     sync.Mutex
)

// Folder returns the VM folder (flat VMDK) and the path of its extent.
func Folder() (string, string, error) {
	once.Do(func() {
		dir, err = os.MkdirTemp("", "rekindle-bench-")
		if err != nil {
			return
		}
		folder, err = vmgen.Generate(dir, vmgen.Spec{Name: "bench01", Seed: 11,
			Disks: []vmgen.DiskSpec{{Size: Size(), Fill: vmgen.FillMixed, Format: vmgen.FormatFlat, MaxData: -1}}})
	})
	return folder, filepath.Join(folder, "bench01-flat.vmdk"), err
}

// Repo returns a repository of the given chunk size holding the folder, in
// the current format.
func Repo(chunk int) (*repo.Repo, *repo.RestorePoint, error) { return RepoVersion(chunk, 0) }

// RepoVersion is Repo in the given repository format version (0: current),
// so a benchmark can compare layouts in one run.
func RepoVersion(chunk, version int) (*repo.Repo, *repo.RestorePoint, error) {
	mu.Lock()
	defer mu.Unlock()
	f, _, err := Folder()
	if err != nil {
		return nil, nil, err
	}
	if version == 0 {
		version = repo.FormatVersion
	}
	key := [2]int{chunk, version}
	if v, ok := repos.Load(key); ok {
		r := v.(*repo.Repo)
		p, err := r.LatestPoint("bench01")
		return r, p, err
	}
	r, err := repo.Init(filepath.Join(dir, fmt.Sprintf("repo-%d-v%d", chunk, version)), repo.InitOptions{ChunkSize: chunk, Version: version})
	if err != nil {
		return nil, nil, err
	}
	p, err := ingest.Import(context.Background(), r, f, ingest.Options{})
	if err != nil {
		return nil, nil, err
	}
	repos.Store(key, r)
	return r, p, nil
}

// Cleanup removes everything the package made.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}
