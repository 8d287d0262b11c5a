package site_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/retention"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator/site"
)

// TestForgetRacesSessionCreation runs a session's creation in the window
// between forget reading the pins and removing the point (a hook on the
// claim, deterministic: no timing): the point a session uses is never
// removed; a session created after the point left the catalog is refused.
func TestForgetRacesSessionCreation(t *testing.T) {
	for _, tc := range []struct {
		name string
		// sessionFirst: the session is created before the claim, else after.
		sessionFirst bool
	}{
		{"session created after the pins were read", true},
		{"session created after the point was claimed", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			r, err := repo.Init(filepath.Join(dir, "repo"), repo.InitOptions{})
			must(t, err)
			cat, err := catalog.Open(ctx, filepath.Join(dir, "catalog.db"))
			must(t, err)
			defer cat.Close()
			var ids []string
			for i, at := range []time.Time{time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC), time.Date(2026, 11, 21, 2, 0, 0, 0, time.UTC)} {
				p := &repo.RestorePoint{ID: repo.NewPointID(at), VM: repo.VMIdentity{Name: "web01"}, Created: at,
					Files: []repo.ConfigFile{{Name: "web01.vmx", Size: 1, Inline: []byte{'0' + byte(i)}}}}
				must(t, r.SavePoint(p))
				must(t, cat.IndexPoint(ctx, p))
				ids = append(ids, p.ID)
			}
			old := ids[0]

			o, err := site.ForgetOptions(ctx, r, cat) // the pins are read here: none
			must(t, err)
			if len(o.Pins) != 0 {
				t.Fatalf("pins before any session: %v", o.Pins)
			}
			createSession := func() error {
				return cat.CreateSession(ctx, &catalog.Session{ID: "restore-1", Kind: catalog.KindVM, State: catalog.SessionRunning,
					VMs: []catalog.SessionVM{{VM: "web01", PointID: old, Name: "web01"}}})
			}
			claim := o.Claim
			var sessionErr error
			o.Claim = func(id string) (string, error) {
				if id != old {
					t.Errorf("claim of %s, want only %s", id, old)
				}
				if tc.sessionFirst {
					sessionErr = createSession()
					return claim(id)
				}
				pinned, err := claim(id)
				sessionErr = createSession()
				return pinned, err
			}
			ds, err := retention.Forget(ctx, r, retention.Policy{Last: 1}, o)
			must(t, err)
			var d retention.Decision
			for _, x := range ds {
				if x.ID == old {
					d = x
				}
			}
			_, pointErr := r.Point(old)
			if tc.sessionFirst {
				must(t, sessionErr)
				if !d.Keep || !strings.Contains(strings.Join(d.Reasons, ";"), "session restore-1") {
					t.Errorf("decision for the pinned point = %+v, want kept naming session restore-1", d)
				}
				if pointErr != nil {
					t.Fatalf("the point session restore-1 uses was removed: %v", pointErr)
				}
				if _, err := cat.Point(ctx, old); err != nil {
					t.Errorf("the catalog lost the kept point: %v", err)
				}
				return
			}
			if !errors.Is(sessionErr, catalog.ErrNotFound) || !strings.Contains(sessionErr.Error(), old) {
				t.Fatalf("session on a point being forgotten: err = %v, want ErrNotFound naming %s", sessionErr, old)
			}
			if d.Keep || !errors.Is(pointErr, repo.ErrNotFound) {
				t.Errorf("decision %+v, point read err %v: want the unpinned point removed", d, pointErr)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
