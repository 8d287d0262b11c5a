package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/rekindle/rekindle/internal/httpjson"
)

// LoopbackNames are the names every server answers to.
var LoopbackNames = []string{"localhost", "127.0.0.1", "::1"}

// Guard checks every request before the routes see it. Build one with
// NewGuard.
type Guard struct {
	token  [sha256.Size]byte
	names  []string
	public []string
	log    *slog.Logger
}

// GuardConfig configures a Guard.
type GuardConfig struct {
	// Token is the bearer secret; it must not be empty.
	Token string
	// Names are the host names and addresses the API answers to, beyond
	// LoopbackNames (the --server-name, the --api listen host, --api-name).
	Names []string
	// Public are the paths answered without a token (GET and HEAD only).
	Public []string
	Logger *slog.Logger
}

// NewGuard returns a guard; it refuses an empty token.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	if len(cfg.Token) < minTokenLen {
		return nil, fmt.Errorf("api guard: token of %d characters: want at least %d", len(cfg.Token), minTokenLen)
	}
	g := &Guard{token: sha256.Sum256([]byte(cfg.Token)), public: cfg.Public, log: cfg.Logger}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	for _, n := range append(slices.Clone(LoopbackNames), cfg.Names...) {
		if n = normName(n); n != "" && !slices.Contains(g.names, n) {
			g.names = append(g.names, n)
		}
	}
	return g, nil
}

// Names returns the host names the guard admits, normalised.
func (g *Guard) Names() []string { return slices.Clone(g.names) }

// normName lowercases a host name, drops a port, brackets and a trailing
// dot: "Nfs1.Example.com.:7480" and "nfs1.example.com" are one name.
func normName(h string) string {
	h = strings.TrimSpace(h)
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// Wrap returns next behind the guard.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code, msg := g.check(r); code != 0 {
			g.log.Warn("api request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
				"status", code, "reason", msg)
			if code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="rekindle"`)
			}
			httpjson.Error(w, code, msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// check returns the status and message of a refusal, or 0.
func (g *Guard) check(r *http.Request) (int, string) {
	host := normName(r.Host)
	if !slices.Contains(g.names, host) {
		return http.StatusForbidden, fmt.Sprintf("Host %q is not a name of this server (it answers to %s; "+
			"start serve with --api-name %s to add one)", r.Host, strings.Join(g.names, ", "), orDash(host))
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && slices.Contains(g.public, r.URL.Path) {
		return 0, ""
	}
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) {
		return http.StatusForbidden, fmt.Sprintf("cross-origin request from %q refused: the API serves programs, not web pages", o)
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return http.StatusForbidden, "cross-site request refused: the API serves programs, not web pages"
	}
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return http.StatusUnauthorized, "this API needs a bearer token (Authorization: Bearer TOKEN): the server keeps it in its token file " +
			"(STATE/api-token); pass --token-file FILE or set REKINDLE_TOKEN"
	}
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], g.token[:]) != 1 {
		return http.StatusUnauthorized, "wrong bearer token: use the one in the server's token file (STATE/api-token)"
	}
	if needsJSON(r) {
		ct := r.Header.Get("Content-Type")
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: send the request body as application/json", ct)
		}
	}
	return 0, ""
}

// needsJSON: a request carrying a body, or one that changes state, must say
// its body is JSON. Browsers send a cross-site form or text/plain body
// without asking the server first; they never send application/json so.
func needsJSON(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return true
	}
	return r.ContentLength > 0 || slices.Contains(r.TransferEncoding, "chunked")
}

func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// sameOrigin reports whether Origin o names the host the request was sent
// to. The server serves no pages, so only a same-origin request is let on;
// Origin never grants anything by itself.
func sameOrigin(o string, r *http.Request) bool {
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return u.Scheme == scheme && strings.EqualFold(u.Host, r.Host)
}

func orDash(s string) string {
	if s == "" {
		return "NAME"
	}
	return s
}
