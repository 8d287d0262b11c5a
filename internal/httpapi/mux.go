package httpapi

import (
	"net/http"
	"slices"
)

// Mux is an http.ServeMux that remembers the patterns registered on it, so
// that the OpenAPI description can be checked against the routes a server
// really has.
type Mux struct {
	mux      http.ServeMux
	patterns []string
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{} }

// Handle registers h for pattern, as http.ServeMux.Handle.
func (m *Mux) Handle(pattern string, h http.Handler) {
	m.mux.Handle(pattern, h)
	m.patterns = append(m.patterns, pattern)
}

// HandleFunc registers fn for pattern, as http.ServeMux.HandleFunc.
func (m *Mux) HandleFunc(pattern string, fn func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(fn))
}

// ServeHTTP dispatches to the registered routes.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.mux.ServeHTTP(w, r) }

// Patterns returns the registered patterns ("GET /v1/sessions/{id}"),
// sorted.
func (m *Mux) Patterns() []string {
	p := slices.Clone(m.patterns)
	slices.Sort(p)
	return p
}
