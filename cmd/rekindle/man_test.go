package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestManPage: `rekindle man` is the committed docs/man/rekindle.1 (stale
// copy: run `make man`), groff reads it without a warning, and the page as a
// reader sees it has every visible command, each with its own flags, in
// the order of the command tree.
func TestManPage(t *testing.T) {
	page, _ := run(t, false, "man")
	committed, err := os.ReadFile("../../docs/man/rekindle.1")
	if err != nil {
		t.Fatalf("%v (run `make man`)", err)
	}
	if string(committed) != page {
		t.Errorf("docs/man/rekindle.1 is stale: the commands changed; run `make man` and commit it")
	}
	if _, err := exec.LookPath("groff"); err != nil {
		t.Fatal("groff is needed (scripts/install-deps installs groff-base)")
	}
	// No hyphenation, long lines, no overstrike: one flag is one word.
	cmd := exec.Command("groff", "-man", "-Tutf8", "-rHY=0", "-rLL=500n", "-ww", "-P-cbou")
	cmd.Stdin = strings.NewReader(page)
	var text, warn bytes.Buffer
	cmd.Stdout, cmd.Stderr = &text, &warn
	if err := cmd.Run(); err != nil || warn.Len() > 0 {
		t.Fatalf("groff: %v\n%s", err, warn.String())
	}
	rendered := text.String()
	for _, want := range []string{"NAME", "rekindle - run VMs straight from their backups over NFS", "Exit status: 0 success",
		"REKINDLE_REPO (--repo)", "GOVC_URL (--vc)", "--log-format", "--log-level"} {
		if !strings.Contains(rendered, want) {
			t.Errorf("man page lacks %q", want)
		}
	}

	// Each command's synopsis, then its flags before the next command's.
	type section struct {
		name  string
		flags []string
	}
	var secs []section
	var walk func([]*cli.Command, string)
	walk = func(cmds []*cli.Command, parent string) {
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			s := section{name: parent + " " + c.Name}
			for _, f := range c.VisibleFlags() {
				s.flags = append(s.flags, "--"+f.Names()[0])
			}
			secs = append(secs, s)
			walk(c.Subcommands, s.name)
		}
	}
	walk(newApp().Commands, "rekindle")
	if len(secs) < 40 {
		t.Fatalf("only %d commands in the tree", len(secs))
	}
	at := 0
	starts := make([]int, len(secs))
	for i, s := range secs {
		loc := regexp.MustCompile(`\n +` + regexp.QuoteMeta(s.name) + `( \[| command| [A-Z]|\n)`).FindStringIndex(rendered[at:])
		if loc == nil {
			t.Fatalf("man page has no synopsis of %q (after the previous command's)", s.name)
		}
		at += loc[0] + 1
		starts[i] = at
	}
	for i, s := range secs {
		end := len(rendered)
		if i+1 < len(secs) {
			end = starts[i+1]
		}
		body := rendered[starts[i]:end]
		for _, f := range s.flags {
			if !strings.Contains(body, "\n       "+f) {
				t.Errorf("man page: %s lacks %s", s.name, f)
			}
		}
	}
}
