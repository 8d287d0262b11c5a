package backupjob

import (
	"context"
	"sync"
	"time"

	"github.com/rekindle/rekindle/catalog"
)

// Scheduler runs due jobs until its context ends. It reads the jobs from
// the catalog on every pass, so a job defined while it runs is picked up.
// A job runs once at a time; different jobs run concurrently.
type Scheduler struct {
	Runner *Runner
	// Poll is the longest wait between passes (default 30s): the wait is
	// shorter when a job is due sooner.
	Poll time.Duration
	// Ran, when set, is called after each run (tests wait on it).
	Ran func(*catalog.JobRun)
}

// Run schedules until ctx ends, then waits for the runs in flight.
func (s *Scheduler) Run(ctx context.Context) error {
	poll := s.Poll
	if poll <= 0 {
		poll = 30 * time.Second
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	running := map[string]bool{}
	kick := make(chan struct{}, 1) // a run ended: look again now
	for {
		next := s.Runner.now().Add(poll)
		jobs, err := s.Runner.Catalog.Jobs(ctx)
		if err != nil {
			s.Runner.logger().Error("jobs: read the catalog", "err", err)
		}
		for _, j := range jobs {
			d, err := Parse(j.Definition)
			if err != nil {
				s.Runner.logger().Error("job definition does not parse: not scheduled", "job", j.Name, "err", err)
				continue
			}
			from := j.Created
			if runs, err := s.Runner.Catalog.JobRuns(ctx, j.Name, 1); err == nil && len(runs) > 0 {
				from = runs[0].Started
			}
			due := d.Next(from)
			mu.Lock()
			busy := running[d.Name]
			mu.Unlock()
			if busy {
				continue
			}
			if due.After(s.Runner.now()) {
				if due.Before(next) {
					next = due
				}
				continue
			}
			mu.Lock()
			running[d.Name] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				run, err := s.Runner.Run(ctx, d, "schedule")
				if err != nil {
					s.Runner.logger().Error("job run not recorded", "job", d.Name, "err", err)
				}
				mu.Lock()
				delete(running, d.Name)
				mu.Unlock()
				if s.Ran != nil && run != nil {
					s.Ran(run)
				}
				select {
				case kick <- struct{}{}:
				default:
				}
			}()
		}
		wait := time.Until(next)
		if wait < 100*time.Millisecond {
			wait = 100 * time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-kick:
			t.Stop()
		}
	}
}
