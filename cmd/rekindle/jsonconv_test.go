package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/internal/httpapi"
	"github.com/rekindle/rekindle/testdata/vmgen"
)

// The JSON conventions of docs/json.md, checked on every --json output the
// tests of this package produce (run and runCode call auditJSON) and on the
// replies of every GET route of the API (TestJSONConventions).

var snakeKey = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// durationKey names a duration: its number must be seconds, in a key ending _s.
var durationKey = regexp.MustCompile(`(^|_)(timeout|duration|within|interval|delay|took|elapsed|every|wait|age|ttl)($|_)`)

// dataKeys are objects whose keys are the user's names, not ours.
var dataKeys = []string{"network_map", "checks"}

// jsonViolations returns where v (decoded JSON) breaks the conventions: a
// key that is not snake_case, a null, a time without its zone or the zero
// time (left out instead).
func jsonViolations(path string, v any) []string {
	var out []string
	switch x := v.(type) {
	case nil:
		out = append(out, path+": null (an empty list is [], a missing value is left out)")
	case map[string]any:
		data := slices.Contains(dataKeys, path[strings.LastIndex(path, ".")+1:])
		for k, e := range x {
			if !data && !snakeKey.MatchString(k) {
				out = append(out, fmt.Sprintf("%s: key %q is not snake_case", path, k))
			}
			if _, num := e.(float64); num && !data && durationKey.MatchString(k) && !strings.HasSuffix(k, "_s") {
				out = append(out, fmt.Sprintf("%s: %q is a duration: seconds, in a key ending _s", path, k))
			}
			out = append(out, jsonViolations(path+"."+k, e)...)
		}
	case []any:
		for i, e := range x {
			out = append(out, jsonViolations(fmt.Sprintf("%s[%d]", path, i), e)...)
		}
	case string:
		if regexp.MustCompile(`^\d{4}-\d\d-\d\d[T ]\d\d:\d\d`).MatchString(x) {
			t, err := time.Parse(time.RFC3339Nano, x)
			switch {
			case err != nil:
				out = append(out, fmt.Sprintf("%s: time %q is not RFC 3339 with a zone", path, x))
			case t.IsZero():
				out = append(out, fmt.Sprintf("%s: zero time %q (leave it out)", path, x))
			}
		}
	}
	return out
}

// checkJSON decodes b, one JSON value or one a line, and returns the
// violations; a body that is not JSON is one.
func checkJSON(what string, b []byte) []string {
	var out []string
	dec := json.NewDecoder(bytes.NewReader(b))
	for n := 0; ; n++ {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			if n == 0 {
				out = append(out, what+": no JSON at all")
			}
			return out
		}
		if err != nil {
			return append(out, fmt.Sprintf("%s: not JSON: %v", what, err))
		}
		for _, m := range jsonViolations("$", v) {
			out = append(out, what+": "+m)
		}
	}
}

// auditJSON checks stdout of a successful command run with --json.
func auditJSON(t *testing.T, args []string, stdout string) {
	t.Helper()
	if !slices.Contains(args, "--json") || slices.Contains(args, "--") {
		return
	}
	for _, m := range checkJSON("rekindle "+strings.Join(args, " "), []byte(stdout)) {
		t.Error(m)
	}
}

func TestJSONViolations(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" for none
	}{
		{`{"ok_key": [1, "x"], "network_map": {"VM Network": "b"}}`, ""},
		{`{"created": "2026-12-02T14:00:00Z", "t": "2026-12-02T15:00:00.5+01:00"}`, ""},
		{`{"PointID": "x"}`, `key "PointID"`},
		{`[{"steps": [{"Seq": 1}]}]`, `$[0].steps[0]: key "Seq"`},
		{`{"vms": null}`, "$.vms: null"},
		{`{"ended": "0001-01-01T00:00:00Z"}`, "zero time"},
		{`{"created": "2026-12-02 14:00:00"}`, "not RFC 3339"},
		{"{\"a\": 1}\n{\"B\": 2}\n", `key "B"`},
		{`{"policy": {"keep_within": 90061000000000}}`, `"keep_within" is a duration`},
		{`{"keep_within_s": 90061, "ready_timeout_s": 1.5}`, ""},
	} {
		got := strings.Join(checkJSON("t", []byte(tc.in)), "; ")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestJSONConventions runs the --json commands on a repository with a
// backup and a published session, and calls every GET route of the API.
func TestJSONConventions(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	folder, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 3, MemoryMB: 256,
		Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillRandom, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	cmds := [][]string{
		{"backup", "import", "--repo", repoDir, "--app", "shop", "-q", "--json", folder},
		{"list", "vms", "--repo", repoDir, "--json"},
		{"list", "points", "--repo", repoDir, "--json"},
		{"list", "apps", "--repo", repoDir, "--json"},
		{"restore", "vm", "--repo", repoDir, "--hypervisor", "qemu", "--target", filepath.Join(dir, "vms"),
			"--nfs-server", "127.0.0.1", "--dry-run", "--json", "web01"},
		{"forget", "--repo", repoDir, "--keep-last", "1", "--keep-within", "7d", "--dry-run", "--json"},
		{"prune", "--repo", repoDir, "--dry-run", "--json"},
		{"verify", "--repo", repoDir, "--json"},
		{"job", "list", "--repo", repoDir, "--json"},
	}
	for _, args := range cmds {
		run(t, false, args...) // run audits the output
	}

	api := freePort(t)
	s := &server{t: t, api: api, args: []string{"serve", "--repo", repoDir, "--nfs", freePort(t),
		"--portmap", "off", "--api", api, "--metrics", "off"}}
	s.start()
	t.Cleanup(s.kill)
	out, _ := run(t, false, "publish", "--server", api, "--vm", "web01", "--json")
	var info struct{ ID string }
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.ID == "" {
		t.Fatalf("publish --json: %v\n%s", err, out)
	}
	run(t, false, "sessions", "list", "--server", api, "--json")
	run(t, false, "sessions", "show", "--server", api, "--json", info.ID)

	tok, err := httpapi.ReadToken(filepath.Join(repoDir, "state", httpapi.TokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/healthz", "/readyz", "/v1/status", "/v1/sessions", "/v1/sessions/" + info.ID, "/v1/sessions/rk-none"} {
		req, _ := http.NewRequest("GET", "http://"+api+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, m := range checkJSON("GET "+path, b) {
			t.Error(m)
		}
	}
}
