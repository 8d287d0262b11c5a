package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print machine-readable JSON"}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows aligned in columns.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, h := range header {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, h)
	}
	fmt.Fprintln(tw)
	for _, r := range rows {
		for i, c := range r {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// progress shows long work: a bar on a terminal, a plain line every few
// seconds otherwise (logs and CI). It is safe for concurrent use.
type progress struct {
	mu    sync.Mutex
	what  string
	bar   *progressbar.ProgressBar
	w     io.Writer
	start time.Time
	last  time.Time
	done  bool
	count bool // done and total are counts, not bytes
}

func newProgress(what string, quiet bool) *progress { return newProgressUnit(what, quiet, false) }

// newProgressUnit is newProgress for counts (count true) or bytes.
func newProgressUnit(what string, quiet, count bool) *progress {
	p := &progress{what: what, w: os.Stderr, start: time.Now(), count: count}
	if quiet {
		p.w = io.Discard
		return p
	}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		p.bar = progressbar.NewOptions64(-1, progressbar.OptionSetDescription(what),
			progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowBytes(!count),
			progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowCount(), progressbar.OptionUseIECUnits(true), progressbar.OptionClearOnFinish())
	}
	return p
}

// update reports done of total bytes.
func (p *progress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	if p.bar != nil {
		if p.bar.GetMax64() != total {
			p.bar.ChangeMax64(total)
		}
		p.bar.Set64(done)
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 2*time.Second && done < total {
		return
	}
	p.last = now
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	rate := float64(done) / max(now.Sub(p.start).Seconds(), 1e-3)
	if p.count {
		fmt.Fprintf(p.w, "%s: %5.1f%%  %d of %d  %.0f/s\n", p.what, pct, done, total, rate)
		return
	}
	fmt.Fprintf(p.w, "%s: %5.1f%%  %s of %s  %s/s\n", p.what, pct, humanBytes(done), humanBytes(total), humanBytes(int64(rate)))
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil && !p.done {
		p.bar.Finish()
	}
	p.done = true
}
