package site

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Schedule runs protection cycles of one site every RPO, as `rekindle
// serve` does with --protect-site. A cycle that fails (vCenter down, a VM
// whose backup failed) is logged and counted, and the next one starts on
// time: a failure never ends the schedule.
type Schedule struct {
	Site string
	// Every is the recovery point objective: a cycle starts this long after
	// the previous one started (at once when that one took longer).
	Every time.Duration
	// Cycle runs one protection cycle (Protect with the site's options).
	Cycle   func(ctx context.Context) (*Package, error)
	Metrics *Metrics // may be nil
	Logger  *slog.Logger
	// Ran, when set, is called after each cycle (tests wait on it).
	Ran func(*Package, error)
}

// Run runs a cycle at once, then every s.Every, until ctx ends.
func (s *Schedule) Run(ctx context.Context) error {
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	every := s.Every
	if every <= 0 {
		every = time.Hour
	}
	for {
		start := time.Now()
		p, err := s.Cycle(ctx)
		if ctx.Err() != nil {
			return nil
		}
		ended := time.Now()
		s.Metrics.observe(s.Site, start, ended, p, err)
		switch {
		case err != nil:
			log.Error("protect cycle failed", "site", s.Site, "err", err, "package_stored", p != nil)
		default:
			log.Info("protect cycle done", "site", s.Site, "package", p.ID, "points", len(p.Points()), "duration", ended.Sub(start).Round(time.Millisecond))
		}
		if s.Ran != nil {
			s.Ran(p, err)
		}
		t := time.NewTimer(time.Until(start.Add(every)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Metrics are the protect schedule's Prometheus metrics, by site.
type Metrics struct {
	lastSuccess, duration, protected *prometheus.GaugeVec
	failures, cycles                 *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rekindle_protect_last_success_timestamp_seconds",
			Help: "When the site's last protect cycle that protected every VM ended (Unix time)."}, []string{"site"}),
		duration: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rekindle_protect_last_duration_seconds",
			Help: "How long the site's last protect cycle took."}, []string{"site"}),
		protected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rekindle_protect_last_vms_protected",
			Help: "VMs the site's last protect cycle backed up (its package names their points)."}, []string{"site"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rekindle_protect_failures_total",
			Help: "Protect cycles of the site that failed or left a VM unprotected."}, []string{"site"}),
		cycles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rekindle_protect_cycles_total",
			Help: "Protect cycles of the site by outcome (done, partial: package stored with VMs unprotected, failed: no package)."}, []string{"site", "state"}),
	}
	reg.MustRegister(m.lastSuccess, m.duration, m.protected, m.failures, m.cycles)
	return m
}

// Failures is the failed-cycle counter of site (for tests and tools).
func (m *Metrics) Failures(site string) prometheus.Counter { return m.failures.WithLabelValues(site) }

// LastSuccess is the last-success gauge of site (for tests and tools).
func (m *Metrics) LastSuccess(site string) prometheus.Gauge {
	return m.lastSuccess.WithLabelValues(site)
}

func (m *Metrics) observe(site string, start, ended time.Time, p *Package, err error) {
	if m == nil {
		return
	}
	m.duration.WithLabelValues(site).Set(ended.Sub(start).Seconds())
	if p != nil {
		m.protected.WithLabelValues(site).Set(float64(len(p.Points())))
	} else {
		m.protected.WithLabelValues(site).Set(0)
	}
	state := "done"
	switch {
	case err != nil && p != nil:
		state = "partial"
	case err != nil:
		state = "failed"
	}
	// Exported from the first cycle on, at 0 until one fails, so that an
	// alert on increase() sees the first failure.
	failures := m.failures.WithLabelValues(site)
	if err != nil {
		failures.Inc()
	} else {
		m.lastSuccess.WithLabelValues(site).Set(float64(ended.UnixNano()) / 1e9)
	}
	m.cycles.WithLabelValues(site, state).Inc()
}
