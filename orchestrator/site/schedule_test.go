package site

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// flaky is a VMBackuper stand-in whose first cycle fails every VM (vCenter
// refusing the snapshots, say), then imports as importer does.
type flaky struct {
	importer
	calls atomic.Int64
}

func (f *flaky) BackupVMs(ctx context.Context, names []string) (map[string]string, error) {
	n := f.calls.Add(1)
	if n == 1 {
		return nil, errors.New("injected: every backup of the first cycle fails")
	}
	im := f.importer
	im.dir = filepath.Join(im.dir, strconv.Itoa(int(n))) // a fresh VM folder each cycle
	return im.BackupVMs(ctx, names)
}

// TestScheduleSurvivesAFailedCycle runs protect cycles of the simulator's
// primary site on a short RPO: the first cycle fails, is counted, and the
// schedule goes on to store packages.
func TestScheduleSurvivesAFailedCycle(t *testing.T) {
	_, c := primary(t)
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"), repo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := &flaky{importer: importer{r: r, dir: t.TempDir()}}
	opts := ProtectOptions{ExtractOptions: ExtractOptions{Site: "hq", Datacenters: []string{"DC0"}}, VMs: []string{"DC0_C0_APP0_VM0"}}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	type result struct {
		p   *Package
		err error
	}
	ran := make(chan result, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &Schedule{Site: "hq", Every: 20 * time.Millisecond, Metrics: m,
		Cycle: func(ctx context.Context) (*Package, error) { return Protect(ctx, c.Client, r, b, opts) },
		Ran:   func(p *Package, err error) { ran <- result{p, err} }}
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	var got []result
	for len(got) < 3 {
		select {
		case res := <-ran:
			got = append(got, res)
		case <-time.After(time.Minute):
			t.Fatalf("only %d cycles within a minute", len(got))
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got[0].err == nil || got[0].p != nil {
		t.Fatalf("first cycle: %v, %v; want the injected failure", got[0].p, got[0].err)
	}
	for i, res := range got[1:] {
		if res.err != nil || res.p == nil || len(res.p.Points()) != 1 {
			t.Fatalf("cycle %d after the failure: %v, %v", i+2, res.p, res.err)
		}
	}
	ids, err := r.SitePackages()
	if err != nil || len(ids) < 2 {
		t.Fatalf("site packages %v, %v: want one per good cycle", ids, err)
	}
	if n := testutil.ToFloat64(m.Failures("hq")); n != 1 {
		t.Fatalf("rekindle_protect_failures_total{site=hq} = %v, want 1", n)
	}
	if ts := testutil.ToFloat64(m.LastSuccess("hq")); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last success %v: want a recent time", ts)
	}
	if n := testutil.ToFloat64(m.cycles.WithLabelValues("hq", "failed")); n != 1 {
		t.Fatalf("failed cycles %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.duration.WithLabelValues("hq")); n <= 0 {
		t.Fatalf("last duration %v, want > 0", n)
	}
}
