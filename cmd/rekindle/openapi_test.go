package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/rekindle/rekindle/internal/httpapi"
	"github.com/rekindle/rekindle/nfsd/datastore"
	"github.com/rekindle/rekindle/orchestrator"
)

func openAPIDoc(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestOpenAPIDescribesEveryRoute: the routes serve registers (with restores
// enabled) are exactly the operations docs/openapi.json describes.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	jobs := orchestrator.NewJobs(context.Background(), &orchestrator.Orchestrator{})
	registered := apiRoutes(&datastore.Service{}, jobs).Patterns()
	var described []string
	for path, item := range openAPIDoc(t).Paths.Map() {
		for method := range item.Operations() {
			described = append(described, method+" "+path)
		}
	}
	slices.Sort(described)
	for _, p := range registered {
		if !slices.Contains(described, p) {
			t.Errorf("route %q is registered but not described in docs/openapi.json", p)
		}
	}
	for _, p := range described {
		if !slices.Contains(registered, p) {
			t.Errorf("%q is described in docs/openapi.json but the server has no such route", p)
		}
	}
}

// TestOpenAPIRoutesAnswer: a real server (with restores on qemu) answers
// every described operation, and each reply (status, content type, body)
// is what the description says.
func TestOpenAPIRoutesAnswer(t *testing.T) {
	dir := t.TempDir()
	api, state, _ := apiServer(t, "--hypervisor", "qemu", "--qemu-dir", filepath.Join(dir, "q"))
	tok, err := httpapi.ReadToken(filepath.Join(state, httpapi.TokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	doc := openAPIDoc(t)
	doc.Servers = openapi3.Servers{{URL: "http://" + api}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	do := func(method, path, body string, auth bool, want int) {
		t.Helper()
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, "http://"+api+path, r)
		if body != "" || method == "POST" {
			req.Header.Set("Content-Type", "application/json")
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Errorf("%s %s: not described: %v", method, path, err)
			return
		}
		seen[method+" "+route.Path] = true
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Errorf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
			Status: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(strings.NewReader(string(b))),
			Options: &openapi3filter.Options{IncludeResponseStatus: true},
		}
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			t.Errorf("%s %s: reply %d %s does not match the description: %v", method, path, resp.StatusCode, b, err)
		}
	}
	do("GET", "/healthz", "", false, 200)
	do("GET", "/readyz", "", false, 200)
	do("GET", "/v1/openapi.json", "", false, 200)
	do("GET", "/v1/status", "", false, 401)
	do("GET", "/v1/status", "", true, 200)
	do("GET", "/v1/sessions", "", true, 200)
	do("POST", "/v1/sessions", `{"vms":[{"vm":"nope"}]}`, true, 404)
	do("POST", "/v1/sessions", `{"vms":[]}`, true, 400)
	do("GET", "/v1/sessions/rk-none", "", true, 404)
	do("DELETE", "/v1/sessions/rk-none", "", true, 404)
	do("POST", "/v1/restores", `{"kind":"vm","vms":["nope"],"server":"127.0.0.1","dry_run":true}`, true, 400)
	do("POST", "/v1/sessions/rk-none/resume", "", true, 404)
	do("POST", "/v1/sessions/rk-none/stop", "{}", true, 404)
	do("POST", "/v1/sessions/rk-none/migrate", `{"to":"`+filepath.Join(state, "migrated", "x")+`"}`, true, 404)
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if !seen[method+" "+path] {
				t.Errorf("%s %s is described but this test never called it", method, path)
			}
		}
	}
}
