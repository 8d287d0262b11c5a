package retention

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// history is a point every 6 hours for 60 days, ending 2026-12-02 06:00.
func history(vm string) []Point {
	end := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	var out []Point
	for i := range 60 * 4 {
		t := end.Add(-time.Duration(i) * 6 * time.Hour)
		out = append(out, Point{ID: fmt.Sprintf("%s-%03d", vm, i), VM: vm, Created: t})
	}
	return out
}

func kept(ds []Decision, vm string) []time.Time {
	var out []time.Time
	for _, d := range ds {
		if d.VM == vm && d.Keep {
			out = append(out, d.Created)
		}
	}
	return out
}

func TestPolicies(t *testing.T) {
	day := func(s string) time.Time { tt, _ := time.Parse("2006-01-02 15", s); return tt }
	cases := []struct {
		name   string
		policy Policy
		want   []time.Time
	}{
		{"last 3", Policy{Last: 3}, []time.Time{day("2026-12-02 06"), day("2026-12-02 00"), day("2026-12-01 18")}},
		{"daily 3", Policy{Daily: 3}, []time.Time{day("2026-12-02 06"), day("2026-12-01 18"), day("2026-11-30 18")}},
		// ISO weeks: Mon 2026-11-30 starts the newest one.
		{"weekly 3", Policy{Weekly: 3}, []time.Time{day("2026-12-02 06"), day("2026-11-29 18"), day("2026-11-22 18")}},
		{"monthly 3", Policy{Monthly: 3}, []time.Time{day("2026-12-02 06"), day("2026-11-30 18"), day("2026-10-31 18")}},
		{"within 13h", Policy{Within: 13 * time.Hour}, []time.Time{day("2026-12-02 06"), day("2026-12-02 00"), day("2026-12-01 18")}},
		{"hourly 2 + daily 2", Policy{Hourly: 2, Daily: 2}, []time.Time{day("2026-12-02 06"), day("2026-12-02 00"), day("2026-12-01 18")}},
		// No rule: only the newest point stays (the next incremental's parent).
		{"empty", Policy{}, []time.Time{day("2026-12-02 06")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pts := append(history("web01"), history("db01")...)
			ds := Apply(pts, c.policy, nil)
			if len(ds) != len(pts) {
				t.Fatalf("%d decisions for %d points", len(ds), len(pts))
			}
			for _, vm := range []string{"web01", "db01"} {
				if got := kept(ds, vm); !slices.EqualFunc(got, c.want, time.Time.Equal) {
					t.Fatalf("%s kept %v, want %v", vm, got, c.want)
				}
			}
		})
	}
}

func TestPinsAndReasons(t *testing.T) {
	pts := history("web01")
	old := pts[100].ID
	ds := Apply(pts, Policy{Last: 1}, map[string]string{old: "in use by session s1"})
	for _, d := range ds {
		switch {
		case d.ID == old:
			if !d.Keep || !slices.Contains(d.Reasons, "in use by session s1") {
				t.Fatalf("pinned point: %+v", d)
			}
		case d.ID == pts[0].ID:
			if !d.Keep || !strings.Contains(strings.Join(d.Reasons, ";"), "parent of the next incremental") {
				t.Fatalf("newest point: %+v", d)
			}
		default:
			if d.Keep || d.Reasons[0] != "no rule keeps it" {
				t.Fatalf("point %s: %+v", d.ID, d)
			}
		}
	}
}
