package orchestrator_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator"
)

// TestLoadPlanOldCatalog: a session stored before the JSON conventions (its
// plan says "ready_timeout" in nanoseconds; the fixture was written by the
// code of that time) still loads with its timeout, and resumes.
func TestLoadPlanOldCatalog(t *testing.T) {
	r := newRig(t, false)
	old, err := os.ReadFile("testdata/plan-before-json-conventions.json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(old), `"ready_timeout":90000000000`) {
		t.Fatal("fixture is not in the old form")
	}
	s := &catalog.Session{ID: "rk-old", Kind: catalog.KindVApp, Target: "/dc/host/c0", Request: old}
	if err := r.cat.CreateSession(ctxT(t), s); err != nil {
		t.Fatal(err)
	}
	_, p, err := r.o.LoadPlan(ctxT(t), "rk-old")
	if err != nil {
		t.Fatal(err)
	}
	if p.Request.ReadyTimeout != 90*time.Second || len(p.VMs) != 3 {
		t.Fatalf("old plan loaded with ready timeout %v, %d VMs", p.Request.ReadyTimeout, len(p.VMs))
	}
	b, _ := json.Marshal(p.Request)
	if !strings.Contains(string(b), `"ready_timeout_s":90`) || strings.Contains(string(b), `"ready_timeout":`) {
		t.Fatalf("request written as %s", b)
	}
	if err := r.o.Resume(ctxT(t), "rk-old"); err != nil {
		t.Fatalf("resume of the old session: %v", err)
	}
}

// TestRequestJSON: the request round-trips in seconds, and unknown keys are
// still refused (the API relies on it).
func TestRequestJSON(t *testing.T) {
	in := orchestrator.Request{Kind: "vm", VMs: []string{"web01"}, Target: "t", Server: "s", ReadyTimeout: 1500 * time.Millisecond}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out orchestrator.Request
	if err := json.Unmarshal(b, &out); err != nil || out.ReadyTimeout != in.ReadyTimeout || out.VMs[0] != "web01" {
		t.Fatalf("%s -> %+v, %v", b, out, err)
	}
	if err := json.Unmarshal([]byte(`{"kind":"vm","ReadyTimeout":5}`), &out); err == nil {
		t.Fatal("unknown key accepted")
	}
}
