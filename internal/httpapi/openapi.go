package httpapi

import (
	_ "embed"
	"net/http"
)

// OpenAPI is the OpenAPI 3 description of the whole API, served at
// /v1/openapi.json; docs/openapi.json is a copy a test keeps identical.
//
//go:embed openapi.json
var OpenAPI []byte

// OpenAPIPath is where the description is served.
const OpenAPIPath = "/v1/openapi.json"

// PublicPaths are answered without a token: liveness, readiness and the
// description itself, none of which says anything about sessions or backups.
var PublicPaths = []string{"/healthz", "/readyz", OpenAPIPath}

// Router is where routes are registered: an *http.ServeMux or a *Mux.
type Router interface {
	HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request))
}

// DocRoutes registers GET /v1/openapi.json.
func DocRoutes(m Router) {
	m.HandleFunc("GET "+OpenAPIPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(OpenAPI)
	})
}
