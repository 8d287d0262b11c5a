package site

import (
	"os"
	"testing"
)

// FuzzDecode feeds the package decoder untrusted bytes: a package comes
// from a replicated repository. It must not panic, and what it accepts
// must encode and decode to the same package.
func FuzzDecode(f *testing.F) {
	if b, err := os.ReadFile("../../docs/site-package.example.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"format":1,"id":"hq-20261121T100000Z-0a0b0c","site":"hq","created":"2026-11-21T10:00:00Z","datacenters":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			return
		}
		out, err := p.Encode()
		if err != nil {
			t.Fatalf("a decoded package does not encode: %v", err)
		}
		q, err := Decode(out)
		if err != nil {
			t.Fatalf("an encoded package does not decode: %v", err)
		}
		again, _ := q.Encode()
		if string(again) != string(out) {
			t.Fatal("encode is not stable")
		}
	})
}

// TestExample: the documented example is a valid package.
func TestExample(t *testing.T) {
	b, err := os.ReadFile("../../docs/site-package.example.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Datacenters) == 0 || len(p.Datacenters[0].VApps) == 0 || len(p.Points()) == 0 {
		t.Fatalf("the example shows too little: %+v", p)
	}
}
