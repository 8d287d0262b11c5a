package datastore

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"

	"github.com/rekindle/rekindle/internal/httpapi"
	"github.com/rekindle/rekindle/internal/httpjson"
	"github.com/rekindle/rekindle/orchestrator/storeapi"
)

// API routes, all JSON (docs/openapi.json describes them):
//
//	GET    /healthz                 the process is alive (no token needed)
//	GET    /readyz                  repository readable, NFS listening (no token needed)
//	GET    /v1/status               server, exports, cache
//	GET    /v1/sessions             every session, newest first
//	POST   /v1/sessions             publish: PublishRequest -> SessionInfo
//	GET    /v1/sessions/{id}        one session with its steps
//	DELETE /v1/sessions/{id}        discard: withdraw the export, delete the overlay
//
// Errors are {"error": "..."} with 400 (bad request), 404 (unknown session,
// VM or point) or 500.

// Status is the server's state as GET /v1/status reports it.
type Status = storeapi.Status

// Handler serves the HTTP API.
func (s *Service) Handler(version string) http.Handler {
	mux := http.NewServeMux()
	s.Routes(mux, version)
	return mux
}

// Routes registers the API's routes on mux.
func (s *Service) Routes(mux httpapi.Router, version string) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Reply(w, http.StatusOK, Health{Status: "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		h := s.ready()
		code := http.StatusOK
		if h.Status != "ready" {
			code = http.StatusServiceUnavailable
		}
		httpjson.Reply(w, code, h)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		var st Status
		st.Version, st.NFS, st.Server = version, s.NFSAddr().String(), s.cfg.ServerName
		if a := s.PortmapAddr(); a != nil {
			st.Portmap = a.String()
		}
		st.Exports = []string{PointsExport, SessionsExport}
		s.mu.Lock()
		st.Sessions = len(s.sessions)
		s.mu.Unlock()
		cs := s.cache.Stats()
		st.Cache.Hits, st.Cache.Misses, st.Cache.Bytes, st.Cache.MaxBytes = cs.Hits, cs.Misses, cs.Bytes, cs.MaxBytes
		httpjson.Reply(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		list, err := s.Sessions(r.Context())
		replyErr(w, list, err)
	})
	mux.HandleFunc("POST /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var req PublishRequest
		if err := httpjson.Decode(r.Body, &req); err != nil {
			httpjson.Error(w, http.StatusBadRequest, "publish request: "+err.Error())
			return
		}
		info, err := s.Publish(r.Context(), req)
		replyErr(w, info, err)
	})
	mux.HandleFunc("GET /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		info, err := s.Session(r.Context(), r.PathValue("id"))
		replyErr(w, info, err)
	})
	mux.HandleFunc("DELETE /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		err := s.Discard(r.Context(), r.PathValue("id"))
		replyErr(w, map[string]string{"discarded": r.PathValue("id")}, err)
	})
}

// Health is what /healthz and /readyz answer: a status and, for readiness,
// each check's outcome in one word. Details (paths, errors) go to the log,
// never to the unauthenticated caller.
type Health struct {
	Status string            `json:"status"` // ok, ready, not ready
	Checks map[string]string `json:"checks,omitempty"`
}

// ready checks that the repository can be read and that the NFS listener is
// bound and not stopped.
func (s *Service) ready() Health {
	h := Health{Status: "ready", Checks: map[string]string{"repository": "ok", "nfs": "ok"}}
	if _, err := os.Stat(filepath.Join(s.cfg.Repo.Dir, "points")); err != nil {
		s.log.Warn("not ready: repository unreadable", "repo", s.cfg.Repo.Dir, "err", err)
		h.Status, h.Checks["repository"] = "not ready", "unavailable"
	}
	select {
	case <-s.serveDone:
		h.Status, h.Checks["nfs"] = "not ready", "stopped"
	default:
		if s.nfs.Addr() == nil {
			h.Status, h.Checks["nfs"] = "not ready", "not listening"
		}
	}
	return h
}

func replyErr(w http.ResponseWriter, v any, err error) {
	switch {
	case err == nil:
		httpjson.Reply(w, http.StatusOK, v)
	case errors.Is(err, ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrInvalid):
		httpjson.Error(w, http.StatusBadRequest, err.Error())
	default:
		httpjson.Error(w, http.StatusInternalServerError, err.Error())
	}
}

// Client is the API's client (the orchestrator's, in storeapi).
type Client = storeapi.Client

// NewClient returns a client of the API at base.
func NewClient(base string) *Client { return storeapi.NewClient(base) }
