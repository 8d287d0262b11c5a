package orchestrator

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestNotesJoinTheStepDetail: notes said within a step become its detail's
// events (a detail of nothing, or a JSON object, gets them; a list is kept
// as it is), each emitted once; outside a step a note does nothing.
func TestNotesJoinTheStepDetail(t *testing.T) {
	Note(context.Background(), "nobody listens") // no step: no panic, nothing kept
	var emitted []string
	ctx, n := withNotes(context.Background(), func(m string) { emitted = append(emitted, m) })
	Note(ctx, "vm %s: SIGTERM: no exit within %s", "web01", "5s")
	Note(ctx, "export withdrawn")
	if strings.Join(emitted, "|") != "vm web01: SIGTERM: no exit within 5s|export withdrawn" {
		t.Fatalf("emitted %q", emitted)
	}
	for _, tc := range []struct {
		detail any
		want   string
	}{
		{nil, `{"events":[{"message":"vm web01: SIGTERM: no exit within 5s"},{"message":"export withdrawn"}]}`},
		{map[string]string{"vm": "ref-1"}, `{"events":[{"message":"vm web01: SIGTERM: no exit within 5s"},{"message":"export withdrawn"}],"vm":"ref-1"}`},
		{[]string{"a"}, `["a"]`},
	} {
		b, err := json.Marshal(n.withEvents(tc.detail))
		if err != nil {
			t.Fatal(err)
		}
		var v any
		json.Unmarshal(b, &v)
		stripTimes(v)
		got, _ := json.Marshal(v)
		if string(got) != tc.want {
			t.Errorf("detail %v: %s, want %s", tc.detail, got, tc.want)
		}
	}
}

// stripTimes removes the "time" of every event (they are now).
func stripTimes(v any) {
	switch x := v.(type) {
	case map[string]any:
		delete(x, "time")
		for _, e := range x {
			stripTimes(e)
		}
	case []any:
		for _, e := range x {
			stripTimes(e)
		}
	}
}
