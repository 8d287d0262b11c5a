package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/internal/httpapi"
	"github.com/rekindle/rekindle/internal/httpjson"
	"github.com/rekindle/rekindle/internal/pathroot"
)

// Jobs runs orchestrator operations for the HTTP API in the background, one
// at a time per session, for as long as the server runs.
type Jobs struct {
	o   *Orchestrator
	ctx context.Context

	mu      sync.Mutex
	running map[string]string // session -> operation
	wg      sync.WaitGroup

	confine func(string) (string, error)
}

// NewJobs returns a job runner whose operations end when ctx does.
func NewJobs(ctx context.Context, o *Orchestrator) *Jobs {
	return &Jobs{o: o, ctx: ctx, running: map[string]string{}}
}

// ConfineDatastores makes the API vet every datastore a request names (a
// restore's migrate_to, a migrate's "to") with fn before anything runs, and
// use the name fn returns. Drivers whose datastores are local folders
// (qemu) need it: a request must not write disks wherever it likes. An
// error of fn matching pathroot.ErrOutside is a 403, pathroot.ErrInvalid a
// 400. Call it before Handler.
func (j *Jobs) ConfineDatastores(fn func(string) (string, error)) { j.confine = fn }

// datastore vets name with the confine function, if any.
func (j *Jobs) datastore(field, name string) (string, error) {
	if j.confine == nil || name == "" {
		return name, nil
	}
	p, err := j.confine(name)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return p, nil
}

// Wait returns when every running operation has returned.
func (j *Jobs) Wait() { j.wg.Wait() }

// errBusy is returned when a session already has an operation running.
var errBusy = errors.New("busy")

func (j *Jobs) run(id, op string, fn func(ctx context.Context) error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if cur, ok := j.running[id]; ok {
		return errors.Join(errBusy, errors.New("session "+id+" is busy with "+cur+": wait for it (GET /v1/sessions/"+id+")"))
	}
	j.running[id] = op
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		if err := fn(j.ctx); err != nil {
			j.o.log().Error("operation failed", "session", id, "op", op, "err", err)
		}
		j.mu.Lock()
		delete(j.running, id)
		j.mu.Unlock()
	}()
	return nil
}

// Handler serves the restore operations; sessions are read through the
// datastore API (GET /v1/sessions/{id} shows the steps):
//
//	POST /v1/restores                  Request (+ "dry_run": true) -> {"session": id} or the plan
//	POST /v1/sessions/{id}/resume      -> 202 {"session": id}
//	POST /v1/sessions/{id}/stop        -> 202
//	POST /v1/sessions/{id}/migrate     {"to": datastore} -> 202
//
// Operations run in the background; 409 when the session is busy.
func (j *Jobs) Handler() http.Handler {
	mux := http.NewServeMux()
	j.Routes(mux)
	return mux
}

// Routes registers the routes Handler serves on mux.
func (j *Jobs) Routes(mux httpapi.Router) {
	mux.HandleFunc("POST /v1/restores", func(w http.ResponseWriter, r *http.Request) {
		// A Request and "dry_run": Request decodes itself (durations in
		// seconds), so it is not embedded in the body's struct, whose decoding
		// it would take over.
		var fields map[string]json.RawMessage
		var body struct {
			Request
			DryRun bool
		}
		err := httpjson.Decode(r.Body, &fields)
		if err == nil {
			if dr, ok := fields["dry_run"]; ok {
				err = json.Unmarshal(dr, &body.DryRun)
				delete(fields, "dry_run")
			}
		}
		if err == nil {
			var b []byte
			if b, err = json.Marshal(fields); err == nil {
				err = json.Unmarshal(b, &body.Request)
			}
		}
		if err != nil {
			httpjson.Error(w, http.StatusBadRequest, "restore request: "+err.Error())
			return
		}
		if body.MigrateTo, err = j.datastore("migrate_to", body.MigrateTo); err != nil {
			replyErr(w, 0, nil, err)
			return
		}
		if body.DryRun {
			p, err := j.o.Plan(r.Context(), body.Request)
			replyErr(w, http.StatusOK, p, err)
			return
		}
		id, err := j.o.Create(r.Context(), body.Request)
		if err != nil {
			replyErr(w, 0, nil, err)
			return
		}
		err = j.run(id, "restore", func(ctx context.Context) error { return j.o.Resume(ctx, id) })
		replyErr(w, http.StatusAccepted, map[string]string{"session": id}, err)
	})
	op := func(name string, fn func(ctx context.Context, id string, body map[string]string) error) {
		mux.HandleFunc("POST /v1/sessions/{id}/"+name, func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			body := map[string]string{}
			if err := httpjson.Decode(r.Body, &body); err != nil && !errors.Is(err, io.EOF) {
				httpjson.Error(w, http.StatusBadRequest, err.Error())
				return
			}
			if to, ok := body["to"]; ok {
				var err error
				if body["to"], err = j.datastore("to", to); err != nil {
					replyErr(w, 0, nil, err)
					return
				}
			}
			if _, _, err := j.o.LoadPlan(r.Context(), id); err != nil {
				replyErr(w, 0, nil, err)
				return
			}
			err := j.run(id, name, func(ctx context.Context) error { return fn(ctx, id, body) })
			replyErr(w, http.StatusAccepted, map[string]string{"session": id}, err)
		})
	}
	op("resume", func(ctx context.Context, id string, _ map[string]string) error { return j.o.Resume(ctx, id) })
	op("stop", func(ctx context.Context, id string, _ map[string]string) error { return j.o.Stop(ctx, id) })
	op("migrate", func(ctx context.Context, id string, body map[string]string) error {
		return j.o.Migrate(ctx, id, body["to"])
	})
}

func replyErr(w http.ResponseWriter, code int, v any, err error) {
	switch {
	case err == nil:
		httpjson.Reply(w, code, v)
	case errors.Is(err, pathroot.ErrOutside):
		httpjson.Error(w, http.StatusForbidden, err.Error())
	case errors.Is(err, pathroot.ErrInvalid):
		httpjson.Error(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, errBusy):
		httpjson.Error(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrPlan):
		httpjson.Error(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, catalog.ErrNotFound), errors.Is(err, ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, err.Error())
	default:
		httpjson.Error(w, http.StatusInternalServerError, err.Error())
	}
}
