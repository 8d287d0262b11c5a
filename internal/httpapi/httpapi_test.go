package httpapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", TokenFileName)
	// Servers starting at once agree on one token.
	toks := make([]string, 8)
	var wg sync.WaitGroup
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := LoadOrCreateToken(path)
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok
		}()
	}
	wg.Wait()
	for _, tok := range toks[1:] {
		if tok != toks[0] || len(tok) < 40 {
			t.Fatalf("tokens differ or are short: %q", toks)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "state", ".api-token-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	again, err := LoadOrCreateToken(path)
	if err != nil || again != toks[0] {
		t.Fatalf("second start: %q %v, want the first token", again, err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadOrCreateToken(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("loose token file: %v", err)
	}
	os.Chmod(path, 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(path, link)
	if _, err := ReadToken(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symlinked token file: %v", err)
	}
}

func TestLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7480": true, "[::1]:7480": true, "localhost:7480": true, "127.9.9.9:1": true,
		":7480": false, "0.0.0.0:7480": false, "[::]:7480": false, "10.0.0.5:7480": false, "nfs1.example.com:7480": false, "7480": false,
	} {
		if got := LoopbackOnly(addr); got != want {
			t.Errorf("LoopbackOnly(%q) = %v", addr, got)
		}
	}
}

func TestGuard(t *testing.T) {
	tok := strings.Repeat("t", 43)
	g, err := NewGuard(GuardConfig{Token: tok, Names: []string{"NFS1.example.com."}, Public: []string{"/healthz"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewGuard(GuardConfig{}); err == nil {
		t.Fatal("a guard without a token")
	}
	reached := 0
	srv := httptest.NewServer(g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ })))
	defer srv.Close()
	for _, tc := range []struct {
		method, path, host, auth, ctype, origin, body string
		code                                          int
	}{
		{"GET", "/healthz", "", "", "", "", "", 200},
		{"POST", "/healthz", "", "", "", "", "", 401},
		{"GET", "/healthz", "evil.example", "", "", "", "", 403},
		{"GET", "/v1/x", "", "", "", "", "", 401},
		{"GET", "/v1/x", "", "Basic " + tok, "", "", "", 401},
		{"GET", "/v1/x", "", "Bearer " + tok + "x", "", "", "", 401},
		{"GET", "/v1/x", "", "bearer " + tok, "", "", "", 200},
		{"GET", "/v1/x", "nfs1.example.com:7480", "Bearer " + tok, "", "", "", 200},
		{"GET", "/v1/x", "[::1]:7480", "Bearer " + tok, "", "", "", 200},
		{"GET", "/v1/x", "127.0.0.1.evil.example", "Bearer " + tok, "", "", "", 403},
		{"POST", "/v1/x", "", "Bearer " + tok, "", "", "", 415},
		{"POST", "/v1/x", "", "Bearer " + tok, "text/plain", "", "{}", 415},
		{"DELETE", "/v1/x", "", "Bearer " + tok, "text/plain", "", "{}", 415},
		{"DELETE", "/v1/x", "", "Bearer " + tok, "", "", "", 200},
		{"POST", "/v1/x", "", "Bearer " + tok, "application/json", "", "{}", 200},
		{"POST", "/v1/x", "", "Bearer " + tok, "application/json", "https://evil.example", "{}", 403},
		{"POST", "/v1/x", "", "Bearer " + tok, "application/json", "null", "{}", 403},
		{"POST", "/v1/x", "", "Bearer " + tok, "application/json", "SAME", "{}", 200},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, body)
		if tc.host != "" {
			req.Host = tc.host
		}
		for k, v := range map[string]string{"Authorization": tc.auth, "Content-Type": tc.ctype, "Origin": tc.origin} {
			if v == "SAME" {
				v = srv.URL
			}
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		before := reached
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%+v: status %d", tc, resp.StatusCode)
		}
		if (reached > before) != (tc.code == 200) {
			t.Errorf("%+v: handler reached %v", tc, reached > before)
		}
		if tc.code == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%+v: 401 without WWW-Authenticate", tc)
		}
	}
}

func TestLocator(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	if f := FindLocalToken("7480"); f != "" {
		t.Fatalf("locator before any server: %q", f)
	}
	forget, err := WriteLocator("7480", "state/api-token")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("state/api-token")
	if f := FindLocalToken("7480"); f != abs {
		t.Fatalf("locator: %q, want %q", f, abs)
	}
	// A later server on the port replaced the record: ours is not removed.
	forget2, _ := WriteLocator("7480", "/other/api-token")
	forget()
	if f := FindLocalToken("7480"); f != "/other/api-token" {
		t.Fatalf("locator after an older server stopped: %q", f)
	}
	forget2()
	if f := FindLocalToken("7480"); f != "" {
		t.Fatalf("locator after stop: %q", f)
	}
	// A folder open to others is not trusted.
	os.Chmod(filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "rekindle"), 0o777)
	if _, err := WriteLocator("7480", "x"); err == nil {
		t.Fatal("locator in a world-writable folder")
	}
}
