package httpapi

import (
	"bytes"
	"context"
	"os"
	"slices"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestOpenAPIDocument: the description is valid OpenAPI 3, every operation
// outside PublicPaths needs the bearer token, and docs/openapi.json is the
// document the server serves.
func TestOpenAPIDocument(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not valid OpenAPI 3: %v", err)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			public := op.Security != nil && len(*op.Security) == 0
			if public != slices.Contains(PublicPaths, path) {
				t.Errorf("%s %s: described as public=%v; the guard says %v", method, path, public, !public)
			}
		}
	}
	docs, err := os.ReadFile("../../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(docs, OpenAPI) {
		t.Fatal("docs/openapi.json differs from internal/httpapi/openapi.json: copy it over (cp internal/httpapi/openapi.json docs/)")
	}
}
