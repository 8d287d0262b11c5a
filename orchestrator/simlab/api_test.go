package simlab

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator"
)

// TestRestoreAPI drives a restore, then a stop, through the HTTP API.
func TestRestoreAPI(t *testing.T) {
	l := newLab(t)
	ctx, cancel := context.WithCancel(context.Background())
	jobs := orchestrator.NewJobs(ctx, l.Orchestrator)
	srv := httptest.NewServer(jobs.Handler())
	defer func() { srv.Close(); cancel(); jobs.Wait() }()
	before := l.inventory(t)
	post := func(path string, body any) (int, map[string]any) {
		b, _ := json.Marshal(body)
		resp, err := http.Post(srv.URL+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	waitState := func(id, state string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			s, err := l.Catalog.Session(context.Background(), id)
			if err == nil && s.State == state {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("session %s never reached %s: %+v %v", id, state, s, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	req := l.Request(orchestrator.KindVApp)
	code, plan := post("/v1/restores", map[string]any{"kind": req.Kind, "app": req.App, "target": req.Target, "server": req.Server, "dry_run": true})
	if code != http.StatusOK || len(plan["groups"].([]any)) != 3 {
		t.Fatalf("dry run: %d %v", code, plan)
	}
	if after := l.inventory(t); !after.equal(before) {
		t.Fatal("a dry run changed vCenter")
	}
	code, out := post("/v1/restores", map[string]any{"kind": req.Kind, "app": req.App, "target": req.Target, "server": req.Server})
	if code != http.StatusAccepted {
		t.Fatalf("restore: %d %v", code, out)
	}
	id := out["session"].(string)
	waitState(id, catalog.SessionRunning)
	s, _ := l.Catalog.Session(context.Background(), id)
	for deadline := time.Now().Add(60 * time.Second); len(s.Steps) == 0 || s.Steps[len(s.Steps)-1].State != catalog.StepDone; {
		if time.Now().After(deadline) {
			t.Fatalf("restore did not finish: %+v", s.Steps)
		}
		time.Sleep(20 * time.Millisecond)
		s, _ = l.Catalog.Session(context.Background(), id)
	}
	// The restore's last step is recorded done a moment before its operation
	// returns; until then the API answers 409 (busy), as documented: wait.
	for deadline := time.Now().Add(30 * time.Second); ; {
		code, out := post("/v1/sessions/"+id+"/stop", nil)
		if code == http.StatusAccepted {
			break
		}
		if code != http.StatusConflict || time.Now().After(deadline) {
			t.Fatalf("stop: %d %v", code, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitState(id, catalog.SessionStopped)
	if after := l.inventory(t); !after.equal(before) {
		t.Fatalf("stop through the API left traces: %+v", after)
	}
	if code, _ := post("/v1/sessions/rk-nope/resume", nil); code != http.StatusNotFound {
		t.Fatalf("resume of an unknown session: %d", code)
	}
	if code, out := post("/v1/restores", map[string]any{"kind": "vm", "vms": []string{"nope"}, "server": "x"}); code != http.StatusBadRequest {
		t.Fatalf("unplannable restore: %d %v", code, out)
	}
}
