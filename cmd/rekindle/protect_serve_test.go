package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/orchestrator/vcbackup/backuplab"
)

// metric reads one sample of a running server's /metrics (-1 when absent).
func metric(t *testing.T, addr, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// scrape reads a running server's /metrics: each rekindle_* family's type
// and the label names its samples carry.
func scrape(t *testing.T, addr string) map[string]string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	types := map[string]string{}
	labels := map[string]map[string]bool{}
	typeLine := regexp.MustCompile(`^# TYPE (rekindle_\w+) (\w+)$`)
	sample := regexp.MustCompile(`^(rekindle_\w+?)(_bucket|_sum|_count)?(\{[^}]*\})? `)
	label := regexp.MustCompile(`(\w+)="`)
	for _, ln := range strings.Split(string(b), "\n") {
		if m := typeLine.FindStringSubmatch(ln); m != nil {
			types[m[1]] = m[2]
			labels[m[1]] = map[string]bool{}
		} else if m := sample.FindStringSubmatch(ln); m != nil {
			name := m[1]
			if _, ok := types[name]; !ok {
				name += m[2] // a counter whose name ends _count, say
			}
			for _, l := range label.FindAllStringSubmatch(m[3], -1) {
				if l[1] != "le" && labels[name] != nil {
					labels[name][l[1]] = true
				}
			}
		}
	}
	out := map[string]string{}
	for name, typ := range types {
		var ls []string
		for l := range labels[name] {
			ls = append(ls, l)
		}
		sort.Strings(ls)
		out[name] = typ + " {" + strings.Join(ls, ",") + "}"
	}
	return out
}

// readmeMetrics is the README's table of metrics: name -> "type {labels}".
func readmeMetrics(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(rekindle_\\w+)(?:\\{([\\w,]*)\\})?` \\| (\\w+) \\| [^|]+ \\|$")
	out := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		ls := strings.Split(m[2], ",")
		if m[2] == "" {
			ls = nil
		}
		sort.Strings(ls)
		out[m[1]] = m[3] + " {" + strings.Join(ls, ",") + "}"
	}
	return out
}

// TestServeProtectsOnSchedule: `rekindle serve --protect-site` backs up the
// simulator's VM and stores site packages every --protect-every; once
// vCenter is gone its cycles fail and are counted, and serve goes on
// serving. On the way, with a job run, a protect cycle and NFS calls
// behind it, the server's /metrics is the README's table of metrics: each
// rekindle_* metric there with its type and labels, and nothing more.
func TestServeProtectsOnSchedule(t *testing.T) {
	lab := newBackupLab(t)
	ctx := context.Background()
	for _, vm := range []string{"db01", "web01"} {
		if _, err := lab.CreateVM(ctx, backuplab.VMSpec{Name: vm, Disks: []int64{2 << 20}, PowerOn: true}); err != nil {
			t.Fatal(err)
		}
		if err := lab.WriteDisk(vm, 0, 1<<20, []byte("data of "+vm)); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	job := filepath.Join(dir, "often.yaml")
	os.WriteFile(job, []byte(fmt.Sprintf("vcenter: {url: %q, insecure: true}\nname: often\nvms: [web01]\ninterval: 1s\n", lab.URL())), 0o600)
	run(t, false, "job", "define", "--repo", repoDir, job)
	api, metrics, nfsAddr := freePort(t), freePort(t), freePort(t)
	s := &server{t: t, api: api, args: []string{"serve", "--repo", repoDir, "--portmap", "off", "--metrics", metrics,
		"--api", api, "--nfs", nfsAddr, "--vc", lab.URL(), "--vc-insecure",
		"--protect-site", "hq", "--protect-every", "300ms", "--protect-vm", "db01"}}
	s.start()
	defer s.kill()
	packages := func() int {
		ents, _ := os.ReadDir(filepath.Join(repoDir, "sites"))
		return len(ents)
	}
	s.waitFor("two site packages", func() bool { return packages() >= 2 })
	if ts := metric(t, metrics, `rekindle_protect_last_success_timestamp_seconds{site="hq"}`); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last success %v after two cycles", ts)
	}
	if d := metric(t, metrics, `rekindle_protect_last_duration_seconds{site="hq"}`); d <= 0 {
		t.Fatalf("last duration %v", d)
	}
	s.waitFor("the job's first run", func() bool {
		return metric(t, metrics, `rekindle_job_runs_total{job="often",state="done"}`) >= 1
	})
	_, port, _ := net.SplitHostPort(nfsAddr)
	if out, err := exec.Command("nfs-ls", "nfs://127.0.0.1/rekindle?version=3&nfsport="+port+"&mountport="+port+"&auto-traverse-mounts=0").CombinedOutput(); err != nil {
		t.Logf("nfs-ls (only its calls count here): %v %s", err, out)
	}
	served, documented := scrape(t, metrics), readmeMetrics(t)
	if len(documented) < 20 {
		t.Fatalf("README's metrics table has %d rows", len(documented))
	}
	for name, form := range served {
		if documented[name] == "" {
			t.Errorf("README: the metrics table lacks %s (%s)", name, form)
		} else if documented[name] != form {
			t.Errorf("README: %s is %s in the table, %s at /metrics", name, documented[name], form)
		}
	}
	for name := range documented {
		if served[name] == "" {
			t.Errorf("README names %s, which /metrics does not export", name)
		}
	}
	out, _ := run(t, false, "list", "points", "--repo", repoDir, "--vm", "db01", "--json")
	if strings.Count(out, `"id"`) < 2 {
		t.Fatalf("points of db01 after two cycles:\n%s", out)
	}
	// vCenter goes away: cycles fail, serve stays.
	lab.Server.CloseClientConnections()
	lab.Server.Close()
	s.waitFor("a failed cycle counted", func() bool {
		return metric(t, metrics, `rekindle_protect_failures_total{site="hq"}`) >= 1
	})
	if _, err := testClient(api).Status(ctx); err != nil {
		t.Fatalf("serve after failed protect cycles: %v\n%s", err, s.log)
	}
	if s.cmd.ProcessState != nil {
		t.Fatalf("serve exited")
	}
	s.kill()
	if !strings.Contains(s.log.String(), "protect cycle failed") {
		t.Fatalf("no failed cycle in the log:\n%s", s.log)
	}
	if u, _ := url.Parse(lab.URL()); u.User == nil {
		t.Fatalf("the lab's URL %s has no credentials to leak", lab.URL())
	} else if pw, _ := u.User.Password(); strings.Contains(s.log.String(), pw+"@") {
		t.Fatalf("serve logged the vCenter password given in --vc:\n%s", s.log)
	}
}
