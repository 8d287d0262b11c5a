package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Bearer returns a transport that sends token with every request over
// base (http.DefaultTransport when nil).
func Bearer(base http.RoundTripper, token string) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &bearerTransport{base: base, token: token}
}

type bearerTransport struct {
	base  http.RoundTripper
	token string
}

func (t *bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.token == "" {
		return t.base.RoundTrip(r)
	}
	r = r.Clone(r.Context()) // a RoundTripper must not change the caller's request
	r.Header.Set("Authorization", "Bearer "+t.token)
	return t.base.RoundTrip(r)
}

// LoopbackOnly reports whether the listen address addr ("127.0.0.1:7480",
// "[::1]:7480", "localhost:7480") binds loopback only. An empty host, an
// unspecified address or any other name binds beyond this machine.
func LoopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
