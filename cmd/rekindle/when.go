package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// whenUsage is the help text of a flag that takes a point in time.
const whenUsage = "RFC 3339 time (2026-11-21T23:00:00Z), local date or time (2026-11-21, 2026-11-21 23:00), or an age (36h, 2d, 1w)"

// parseWhen reads a point in time as people write one: an RFC 3339 time; a
// local date (its start) or date and time; or an age before now (a Go
// duration such as 36h or 90m, or whole days and weeks: 2d, 1w).
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", time.DateOnly} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if n := len(s); n >= 2 {
		if k, err := strconv.Atoi(s[:n-1]); err == nil && k >= 0 {
			switch s[n-1] {
			case 'd':
				return now.AddDate(0, 0, -k), nil
			case 'w':
				return now.AddDate(0, 0, -7*k), nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: want an %s", s, whenUsage)
}

// timeLayout prints times with their zone, so a time read off one machine
// means the same on another.
const timeLayout = "2006-01-02 15:04:05 MST"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(timeLayout)
}
