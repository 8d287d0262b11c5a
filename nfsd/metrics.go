package nfsd

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rekindle/rekindle/internal/accept"
)

// Reasons counted by rekindle_nfs_refused_total.
const (
	refusedClient  = "client"  // address outside the server's allow-list
	refusedExport  = "export"  // address outside an export's allow-list, or no such export
	refusedPath    = "path"    // refused by a subtree rule or Config.Authorize
	refusedHandle  = "handle"  // malformed file handle
	refusedStale   = "stale"   // handle of a removed export or file
	refusedName    = "name"    // empty, "..", "/" or NUL in a name
	refusedAuth    = "auth"    // unsupported credential flavor
	refusedGarbage = "garbage" // not an RPC call, too large, or undecodable arguments
	refusedROFS    = "rofs"    // change on a read-only export
	// refusedPermission: the caller's identity may not (mode bits, owner)
	refusedPermission = "permission"
	refusedTimeout    = "timeout" // record not finished within Limits.RecordTimeout
	refusedMemory     = "memory"  // no room in Limits.RecordMemory in time
	// And, from the accept gate: "conns" (Limits.MaxConns open), "per_client"
	// (Limits.MaxConnsPerClient open from the address); "client" also counts
	// connections from outside every allow-list, closed at once.
)

type metrics struct {
	calls      *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	readBytes  prometheus.Counter
	writeBytes prometheus.Counter
	conns      prometheus.Gauge
	refused    *prometheus.CounterVec
	duplicates prometheus.Counter
	// acceptErrors counts transient accept errors, retried, by listener.
	acceptErrors *prometheus.CounterVec
	// nfs holds calls' and duration's series of each NFS procedure once a
	// call of it was answered (Server.observeNFS); a series appears in
	// /metrics at its first call, as through WithLabelValues.
	nfs [len(nfsProcNames)]atomic.Pointer[procMetrics]
}

// procMetrics are one procedure's series.
type procMetrics struct {
	calls    prometheus.Counter
	duration prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rekindle_nfs_calls_total",
			Help: "RPC calls answered, by procedure (NFS procedures by name, MOUNT and portmapper ones prefixed).",
		}, []string{"proc"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rekindle_nfs_call_duration_seconds",
			Help:    "Time from reading a call to writing its reply, by procedure.",
			Buckets: []float64{50e-6, 200e-6, 1e-3, 5e-3, 20e-3, 100e-3, 500e-3, 2, 10},
		}, []string{"proc"}),
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rekindle_nfs_read_bytes_total",
			Help: "Bytes returned by successful NFS READ calls.",
		}),
		writeBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rekindle_nfs_write_bytes_total",
			Help: "Bytes written by successful NFS WRITE calls.",
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rekindle_nfs_connections",
			Help: "Open client TCP connections to the NFS port.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rekindle_nfs_refused_total",
			Help: "Calls and connections refused, by reason.",
		}, []string{"reason"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rekindle_nfs_duplicate_calls_total",
			Help: "Calls sent again (same client, XID and arguments) and answered from the duplicate request cache.",
		}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rekindle_nfs_accept_errors_total",
			Help: "Transient accept errors (out of file descriptors or kernel memory), retried with backoff, by listener.",
		}, []string{"listener"}),
	}
	// Every reason and listener is exported from the start, at 0, so an
	// alert on rate() or increase() sees the first refusal, and /metrics
	// shows every series the README lists.
	for _, r := range []string{refusedClient, refusedExport, refusedPath, refusedHandle, refusedStale, refusedName,
		refusedAuth, refusedGarbage, refusedROFS, refusedPermission, refusedTimeout, refusedMemory,
		accept.RefusedConns, accept.RefusedPerClient} {
		m.refused.WithLabelValues(r)
	}
	m.acceptErrors.WithLabelValues("nfs")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.calls, m.duration, m.readBytes, m.writeBytes, m.conns, m.refused, m.duplicates, m.acceptErrors} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("nfsd: metrics already registered (one server per registry): %w", err)
			}
			return nil, fmt.Errorf("nfsd: register metrics: %w", err)
		}
	}
	return m, nil
}
