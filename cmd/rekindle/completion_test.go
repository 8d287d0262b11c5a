package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletionBash sources the printed script in a real bash and asks it
// to complete, as the shell does on TAB.
func TestCompletionBash(t *testing.T) {
	script, _ := run(t, false, "completion", "bash")
	dir := t.TempDir()
	os.Symlink(binary, filepath.Join(dir, "rekindle"))
	complete := func(words ...string) string {
		sh := script + "\nCOMP_WORDS=(" + strings.Join(words, " ") + "); COMP_CWORD=" +
			string(rune('0'+len(words)-1)) + "; _rekindle; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
		cmd := exec.Command("bash", "-c", sh)
		cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return string(out)
	}
	if got := complete("rekindle", "sess"); strings.TrimSpace(got) != "sessions" {
		t.Fatalf("rekindle sess<TAB>: %q", got)
	}
	if got := complete("rekindle", "sessions", "s"); !strings.Contains(got, "show\n") || !strings.Contains(got, "stop\n") {
		t.Fatalf("rekindle sessions s<TAB>: %q", got)
	}
	if got := complete("rekindle", "init", "--ch"); strings.TrimSpace(got) != "--chunk-size" {
		t.Fatalf("rekindle init --ch<TAB>: %q", got)
	}
	_, stderr, code := runCode(t, "completion", "tcsh")
	if code != exitUsage || !strings.Contains(stderr, "want bash, zsh or fish") {
		t.Fatalf("completion tcsh: exit %d %s", code, stderr)
	}
	if out, _ := run(t, false, "completion", "fish"); !strings.Contains(out, "complete -c rekindle") {
		t.Fatalf("fish script: %.200s", out)
	}
}
