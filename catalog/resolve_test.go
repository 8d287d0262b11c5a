package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/repo"
)

func TestResolvePoint(t *testing.T) {
	c, _ := openTemp(t)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 20, 23, 0, 0, 0, time.UTC)
	web1 := mkPoint("web01", "", t0, "", 1)
	web2 := mkPoint("web01", "", t0.Add(24*time.Hour), web1.ID, 1)
	db1 := mkPoint("db01", "", t0.Add(time.Hour), "", 1)
	indexAll(t, c, memSource{points: []*repo.RestorePoint{web1, web2, db1}})
	suffix := func(id string) string { return id[strings.IndexByte(id, '-')+1:] }
	for _, tc := range []struct {
		vm, ref string
		before  time.Time
		want    string // point id, or the error's text
		is      error
	}{
		{vm: "web01", ref: "", want: web2.ID},
		{vm: "web01", ref: "latest", want: web2.ID},
		{vm: "web01", ref: "LATEST", want: web2.ID},
		{vm: "web01", ref: "latest", before: t0.Add(time.Hour), want: web1.ID},
		{vm: "web01", ref: "latest", before: t0.Add(-time.Hour), want: "vm web01 has no restore point at or before 2026-11-20T22:00:00Z", is: ErrNotFound},
		{vm: "nosuch", ref: "latest", want: "vm nosuch has no restore point", is: ErrNotFound},
		{vm: "", ref: "latest", want: "name the VM", is: ErrNotFound},
		{vm: "web01", ref: web1.ID, want: web1.ID},
		{vm: "", ref: web1.ID, want: web1.ID},
		{vm: "web01", ref: web2.ID[:12], want: web2.ID},        // 20261121T230: one point
		{vm: "web01", ref: suffix(web1.ID)[:4], want: web1.ID}, // the random part
		{vm: "", ref: "2026112", want: "matches", is: ErrAmbiguous},
		{vm: "web01", ref: "2026112", want: "matches", is: ErrAmbiguous},
		{vm: "web01", ref: db1.ID, want: "vm web01 has no restore point " + db1.ID + " (" + db1.ID + " is a point of vm db01)", is: ErrNotFound},
		{vm: "web01", ref: "19990101T000000Z-abcdef", want: "vm web01 has no restore point 19990101T000000Z-abcdef (`rekindle list points --vm web01` lists them)", is: ErrNotFound},
		{vm: "web01", ref: "%", want: `vm web01 has no restore point "%"`, is: ErrNotFound},
	} {
		p, err := c.ResolvePoint(ctx, tc.vm, tc.ref, tc.before)
		switch {
		case tc.is == nil && (err != nil || p.ID != tc.want):
			t.Errorf("ResolvePoint(%q, %q): %v, %v; want %s", tc.vm, tc.ref, p, err, tc.want)
		case tc.is != nil && (err == nil || !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("ResolvePoint(%q, %q): error %v, want %v containing %q", tc.vm, tc.ref, err, tc.is, tc.want)
		}
	}
}
