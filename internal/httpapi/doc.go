// Package httpapi is the front door of rekindle's HTTP API: what every
// request passes before it reaches a route, and the secret it is checked
// against.
//
// Vocabulary:
//
//   - token: the bearer secret every API call carries in
//     "Authorization: Bearer <token>", except the public routes.
//   - token file: where the server keeps its token (by default
//     STATE/api-token), created at first start with mode 0600 and refused
//     when other users may read it. The server's own CLI on the same machine
//     reads it; remote callers are given the token (--token-file,
//     REKINDLE_TOKEN).
//   - locator: a small per-user file naming the token file of the server
//     listening on a local port, so that `rekindle sessions list` run by the
//     server's user finds the token with no flag. It holds a path, never the
//     token.
//   - names: the host names the API answers to. A request whose Host header
//     is not one of them (loopback names, the server's configured names) is
//     refused: that is what defeats DNS rebinding, where a web page's own
//     host name comes to point at 127.0.0.1.
//   - public route: answered without a token (/healthz, /readyz,
//     /v1/openapi.json); it reveals nothing about sessions or repositories.
//
// The Guard refuses, in this order: a Host that is not a name (403), a
// cross-origin browser request (403), a missing or wrong token (401), and a
// request with a body or a state-changing method whose Content-Type is not
// application/json (415). A browser cannot send a cross-site request that
// passes the last two without the page knowing the token.
package httpapi
