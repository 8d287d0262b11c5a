package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/backupfs/guestfs"
	"github.com/rekindle/rekindle/backupfs/replicate"
	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/backupfs/retention"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/nfsd/datastore"
	"github.com/rekindle/rekindle/orchestrator"
	"github.com/rekindle/rekindle/orchestrator/site"
	"github.com/rekindle/rekindle/orchestrator/storeapi"
	"github.com/rekindle/rekindle/orchestrator/vcbackup"
)

// jsonRoots are the values the CLI prints with --json and the API answers
// with (docs/json.md): every printJSON and httpjson.Reply of the code.
var jsonRoots = []any{
	orchestrator.Plan{}, orchestrator.Request{}, orchestrator.Event{},
	site.RecoveryPlan{}, site.Package{},
	storeapi.SessionInfo{}, datastore.Status{},
	vcbackup.Result{}, vcbackup.AppResult{},
	guestfs.Item{}, guestfs.GetSummary{},
	jobSummary{}, catalog.JobRun{}, catalog.RebuildStats{},
	catalog.VMSummary{}, catalog.PointSummary{}, catalog.AppSummary{},
	replicate.Stats{}, repo.PruneReport{}, repo.VerifyReport{}, repo.IngestStats{}, repo.UpgradeReport{},
	retention.Decision{}, retention.Policy{}, forgetReport{},
}

// fillDurations sets every time.Duration reachable in v to d, making the
// pointers, one element of each slice and one entry of each map with
// string keys on the way; it returns how many it set.
func fillDurations(v reflect.Value, d time.Duration, depth int) int {
	if depth > 12 {
		return 0
	}
	if v.Type() == reflect.TypeOf(time.Duration(0)) {
		v.SetInt(int64(d))
		return 1
	}
	n := 0
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Field(i).CanSet() {
				n += fillDurations(v.Field(i), d, depth+1)
			}
		}
	case reflect.Pointer:
		if v.Type().Elem() == reflect.TypeOf(time.Time{}) {
			return 0
		}
		p := reflect.New(v.Type().Elem())
		if k := fillDurations(p.Elem(), d, depth+1); k > 0 {
			v.Set(p)
			n += k
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		if k := fillDurations(s.Index(0), d, depth+1); k > 0 {
			v.Set(s)
			n += k
		}
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			n += fillDurations(v.Index(i), d, depth+1)
		}
	case reflect.Map:
		if v.Type().Key().Kind() == reflect.String {
			m := reflect.MakeMap(v.Type())
			e := reflect.New(v.Type().Elem()).Elem()
			if k := fillDurations(e, d, depth+1); k > 0 {
				m.SetMapIndex(reflect.ValueOf("k").Convert(v.Type().Key()), e)
				v.Set(m)
				n += k
			}
		}
	}
	return n
}

// TestJSONDurationsInSeconds walks every type that reaches JSON output,
// sets each time.Duration in it to 1d1h1m1s, and checks the JSON says
// 90061 (seconds, in a key ending _s) and never the nanoseconds or Go's
// "25h1m1s".
func TestJSONDurationsInSeconds(t *testing.T) {
	const d = 25*time.Hour + time.Minute + time.Second
	total := 0
	for _, root := range jsonRoots {
		v := reflect.New(reflect.TypeOf(root)).Elem()
		n := fillDurations(v, d, 0)
		total += n
		b, err := json.Marshal(v.Interface())
		if err != nil {
			t.Errorf("%T: %v", root, err)
			continue
		}
		s := string(b)
		if strings.Contains(s, "90061000000000") || strings.Contains(s, d.String()) {
			t.Errorf("%T: a duration in nanoseconds or Go's form (docs/json.md: seconds, key _s):\n%s", root, s)
		}
		var decoded any
		json.Unmarshal(b, &decoded)
		for _, key := range secondsKeys("", decoded) {
			if !strings.HasSuffix(key, "_s") {
				t.Errorf("%T: %s is 90061 (a duration) but its key does not end in _s", root, key)
			}
		}
		if n > 0 && !strings.Contains(s, ":90061") {
			t.Logf("%T: %d durations, none printed", root, n)
		}
	}
	if total < 10 {
		t.Fatalf("only %d durations found in the JSON types: the walk is broken", total)
	}
}

// secondsKeys lists the paths whose value is the test's 90061.
func secondsKeys(path string, v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if f, ok := e.(float64); ok && f == 90061 {
				out = append(out, path+"."+k)
			}
			out = append(out, secondsKeys(path+"."+k, e)...)
		}
	case []any:
		for _, e := range x {
			out = append(out, secondsKeys(path+"[]", e)...)
		}
	}
	return out
}
