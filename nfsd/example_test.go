package nfsd_test

import (
	"context"
	"log/slog"
	"net/netip"
	"os"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rekindle/rekindle/nfsd"
)

// A datastore export for hypervisors, with one session's folder reserved for the
// hosts that run that session's VMs.
func Example() {
	dir, _ := os.MkdirTemp("", "rekindle")
	defer os.RemoveAll(dir)
	os.Mkdir(dir+"/session-42", 0o755)

	s, err := nfsd.New(nfsd.Config{
		Listen:   "127.0.0.1:0",
		StateDir: dir + "/state",
		Logger:   slog.New(slog.DiscardHandler),
		Registry: prometheus.NewRegistry(),
		Allow:    []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.20.0.0/16")},
	})
	if err != nil {
		panic(err)
	}
	if err := s.AddExport(nfsd.Export{Path: "/rekindle", FS: osfs.New(dir), ID: 1}); err != nil {
		panic(err)
	}
	// Only these hosts may look into the session's folder.
	s.SetSubtreeAllow("/rekindle", "/session-42", []netip.Prefix{netip.MustParsePrefix("10.20.1.7/32")})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx) }()
	// ... hypervisors mount <host>:/rekindle on s.Addr() ...
	cancel()
	if err := <-done; err != nil {
		panic(err)
	}
	// Output:
}
