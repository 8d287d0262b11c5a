// Package retention decides which restore points a retention policy keeps,
// restic-style, per VM. It is pure: it reads a list of points and returns a
// decision for each, with the reasons, and deletes nothing.
//
// Vocabulary:
//
//   - policy: keep-last N (the N newest points), keep-hourly/daily/weekly/
//     monthly N (for each of the N newest hours, days, ISO weeks or months
//     that have points, the newest point in it), keep-within D (every point
//     made within D of the VM's newest point). A point is kept when any rule
//     keeps it. Times are bucketed in UTC.
//   - pin: a point that must stay whatever the policy says, with why: a
//     point a restore session runs from. The newest point of every VM is
//     always kept as well: it is the parent the next incremental backup
//     reads unchanged chunks from.
package retention

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Policy is a retention policy. The zero Policy keeps nothing but the pins
// and the newest points; callers refuse it (see Empty).
type Policy struct {
	Last    int           `json:"keep_last,omitempty" yaml:"keep_last,omitempty"`
	Hourly  int           `json:"keep_hourly,omitempty" yaml:"keep_hourly,omitempty"`
	Daily   int           `json:"keep_daily,omitempty" yaml:"keep_daily,omitempty"`
	Weekly  int           `json:"keep_weekly,omitempty" yaml:"keep_weekly,omitempty"`
	Monthly int           `json:"keep_monthly,omitempty" yaml:"keep_monthly,omitempty"`
	Within  time.Duration `json:"-" yaml:"keep_within,omitempty"` // JSON: keep_within_s
}

type plainPolicy Policy

// MarshalJSON writes Within as keep_within_s, in seconds (docs/json.md).
func (p Policy) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		plainPolicy
		WithinSeconds float64 `json:"keep_within_s,omitempty"`
	}{plainPolicy(p), p.Within.Seconds()})
}

// UnmarshalJSON reads keep_within_s.
func (p *Policy) UnmarshalJSON(b []byte) error {
	var v struct {
		plainPolicy
		WithinSeconds float64 `json:"keep_within_s"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Policy(v.plainPolicy)
	p.Within = time.Duration(v.WithinSeconds * float64(time.Second))
	return nil
}

// Empty reports whether the policy has no rule.
func (p Policy) Empty() bool { return p == Policy{} }

// Validate refuses negative counts and durations.
func (p Policy) Validate() error {
	for name, n := range map[string]int{"keep-last": p.Last, "keep-hourly": p.Hourly, "keep-daily": p.Daily,
		"keep-weekly": p.Weekly, "keep-monthly": p.Monthly} {
		if n < 0 {
			return fmt.Errorf("--%s %d: must be 0 or more", name, n)
		}
	}
	if p.Within < 0 {
		return fmt.Errorf("--keep-within %s: must be 0 or more", p.Within)
	}
	return nil
}

// Point is what a decision needs to know of a restore point.
type Point struct {
	ID      string    `json:"id"`
	VM      string    `json:"vm"`
	Created time.Time `json:"created"`
}

// Decision is the verdict on one point.
type Decision struct {
	Point
	Keep    bool     `json:"keep"`
	Reasons []string `json:"reasons"`
}

type bucketRule struct {
	name string
	n    int
	key  func(time.Time) string
}

// Apply decides for every point. pins maps point ids to why they must stay.
// Decisions come grouped by VM (by name), newest point first.
func Apply(points []Point, p Policy, pins map[string]string) []Decision {
	byVM := map[string][]Point{}
	var vms []string
	for _, pt := range points {
		if _, ok := byVM[pt.VM]; !ok {
			vms = append(vms, pt.VM)
		}
		byVM[pt.VM] = append(byVM[pt.VM], pt)
	}
	sort.Strings(vms)
	rules := []bucketRule{
		{"hourly", p.Hourly, func(t time.Time) string { return t.UTC().Format("2006-01-02 15h") }},
		{"daily", p.Daily, func(t time.Time) string { return t.UTC().Format("2006-01-02") }},
		{"weekly", p.Weekly, func(t time.Time) string {
			y, w := t.UTC().ISOWeek()
			return fmt.Sprintf("%d-W%02d", y, w)
		}},
		{"monthly", p.Monthly, func(t time.Time) string { return t.UTC().Format("2006-01") }},
	}
	var out []Decision
	for _, vm := range vms {
		pts := byVM[vm]
		sort.Slice(pts, func(i, j int) bool {
			if !pts[i].Created.Equal(pts[j].Created) {
				return pts[i].Created.After(pts[j].Created)
			}
			return pts[i].ID > pts[j].ID
		})
		ds := make([]Decision, len(pts))
		for i, pt := range pts {
			ds[i].Point = pt
		}
		keep := func(i int, why string) {
			ds[i].Keep = true
			ds[i].Reasons = append(ds[i].Reasons, why)
		}
		keep(0, "newest point: the parent of the next incremental backup")
		for i := range pts {
			if why, ok := pins[pts[i].ID]; ok {
				keep(i, why)
			}
			if i < p.Last {
				keep(i, fmt.Sprintf("last %d", p.Last))
			}
			if p.Within > 0 && !pts[i].Created.Before(pts[0].Created.Add(-p.Within)) {
				keep(i, fmt.Sprintf("within %s of the newest", p.Within))
			}
		}
		for _, r := range rules {
			if r.n <= 0 {
				continue
			}
			last, count := "", 0
			for i := range pts {
				k := r.key(pts[i].Created)
				if k == last {
					continue
				}
				last = k
				count++
				if count > r.n {
					break
				}
				keep(i, fmt.Sprintf("%s %s", r.name, k))
			}
		}
		for i := range ds {
			if !ds[i].Keep {
				ds[i].Reasons = []string{"no rule keeps it"}
			}
		}
		out = append(out, ds...)
	}
	return out
}
