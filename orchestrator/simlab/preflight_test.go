package simlab

import (
	"errors"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/orchestrator"
)

// TestRestoreChecksBeforeChanging: a restore whose plan names a network or
// a datastore that does not exist fails before anything changes on the
// simulator (no datastore mounted, no VM registered, no vApp, no session),
// with an error that names what is missing and lists what exists.
func TestRestoreChecksBeforeChanging(t *testing.T) {
	l := newLab(t)
	ctx := ctxT(t)
	before := l.inventory(t)
	for _, tc := range []struct {
		name string
		edit func(*orchestrator.Request)
		want []string
	}{
		{"network", func(r *orchestrator.Request) { r.NetworkMap = map[string]string{"VM Network": "nosuch-net"} },
			[]string{`network "nosuch-net" does not exist`, "--network-map VM Network=nosuch-net", "networks there:", "DC0_DVPG0"}},
		{"datastore", func(r *orchestrator.Request) { r.MigrateTo = "nosuch-ds" },
			[]string{`--migrate-to datastore "nosuch-ds" does not exist`, "datastores there:", "LocalDS_0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := l.Request(orchestrator.KindVApp)
			tc.edit(&req)
			for _, run := range []string{"plan", "start"} {
				var err error
				if run == "plan" {
					_, err = l.Orchestrator.Plan(ctx, req)
				} else {
					var id string
					id, err = l.Orchestrator.Start(ctx, req)
					if after := l.inventory(t); !after.equal(before) {
						t.Fatalf("a refused restore changed the inventory:\nbefore %+v\nafter  %+v", before, after)
					}
					if id != "" {
						t.Fatalf("start made session %s", id)
					}
				}
				if err == nil || !errors.Is(err, orchestrator.ErrNotFound) {
					t.Fatalf("%s: want a not-found error, got %v", run, err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("%s: error %q does not say %q", run, err, w)
					}
				}
			}
			if after := l.inventory(t); !after.equal(before) {
				t.Fatalf("a refused restore changed the inventory:\nbefore %+v\nafter  %+v", before, after)
			}
			if list, err := l.Catalog.Sessions(ctx); err != nil || len(list) != 0 {
				t.Fatalf("a refused restore left sessions: %v %v", list, err)
			}
		})
	}
	// The same lab restores when the names exist: the check refuses only
	// what is missing.
	req := l.Request(orchestrator.KindVApp)
	req.NetworkMap = map[string]string{"VM Network": "DC0_DVPG0"}
	if _, err := l.Orchestrator.Plan(ctx, req); err != nil {
		t.Fatal(err)
	}
}
