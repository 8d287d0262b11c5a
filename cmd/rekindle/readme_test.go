package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/testdata/vmgen"
)

func TestReorderArgs(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want string }{
		{"sessions show ID --json", "sessions show --json ID"},
		{"sessions show --json ID", "sessions show --json ID"},
		{"restore vapp shop --vc https://vc/sdk --dry-run --target /DC1/host/C1", "restore vapp --vc https://vc/sdk --dry-run --target /DC1/host/C1 shop"},
		{"migrate rk-1 --to x", "migrate --to x rk-1"},
		{"backup import DIR --app shop", "backup import --app shop DIR"},
		{"backup import --app=shop DIR -q", "backup import --app=shop -q DIR"},
		// A boolean flag takes no value: shop stays the NAME.
		{"restore vm --dry-run web01", "restore vm --dry-run web01"},
		// -- ends the flags: what follows is positional even if it looks like a flag.
		{"backup import --repo r -- -odd-folder --app", "backup import --repo r -- -odd-folder --app"},
		// An application flag given after the command moves before it.
		{"init --repo r --log-level debug", "--log-level debug init --repo r"},
		{"--log-format json list vms --repo r", "--log-format json list vms --repo r"},
		// Unknown flags stay for the parser to report.
		{"init --bogus --repo r", "init --bogus --repo r"},
		{"sessions show ID -h", "sessions show -h ID"},
		{"restore vm web01 --repo r --generate-bash-completion", "restore vm --repo r web01 --generate-bash-completion"},
		{"nosuch --x y", "nosuch --x y"},
	} {
		got := strings.Join(reorderArgs(app, append([]string{"rekindle"}, strings.Fields(tc.in)...))[1:], " ")
		if got != tc.want {
			t.Errorf("%s\n got  %s\n want %s", tc.in, got, tc.want)
		}
	}
}

// parseOnly is the application with every action and Before hook replaced
// by a recorder: the command line is parsed, required flags and argument
// counts checked, and nothing runs.
func parseOnly() (*cli.App, *[]string) {
	var reached []string
	var stub func([]*cli.Command)
	stub = func(cmds []*cli.Command) {
		for _, c := range cmds {
			stub(c.Subcommands)
			c.Before = nil
			if c.Action != nil {
				c.Action = func(ctx *cli.Context) error {
					reached = append(reached, ctx.Command.HelpName)
					return nil
				}
			}
		}
	}
	cmds := commands()
	stub(cmds)
	app := buildApp(cmds)
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	return app, &reached
}

// helpLines collects the example command lines of every command's help.
func helpLines(cmds []*cli.Command, path string) []docLine {
	var out []docLine
	for _, c := range cmds {
		name := strings.TrimSpace(path + " " + c.Name)
		for _, text := range []string{c.UsageText, c.Description} {
			for _, ln := range strings.Split(text, "\n") {
				ln = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(ln), "$ "))
				if strings.HasPrefix(ln, "rekindle ") {
					out = append(out, docLine{where: "rekindle " + name + " --help", text: stripComment(ln)})
				}
			}
		}
		out = append(out, helpLines(c.Subcommands, name)...)
	}
	return out
}

// TestDocumentedCommandsParse takes every rekindle command line of the
// README, the docs and the commands' --help examples, as written, and
// checks that it parses against the real command tree: the command
// exists, every flag belongs to it, values parse, required flags and
// arguments are there.
func TestDocumentedCommandsParse(t *testing.T) {
	var lines []docLine
	files, _ := filepath.Glob("../../docs/*.md")
	for _, f := range append([]string{"../../README.md"}, files...) {
		l, err := docLines(f)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l...)
	}
	if len(lines) < 20 {
		t.Fatalf("found only %d command lines in the README and docs", len(lines))
	}
	lines = append(lines, helpLines(commands(), "")...)
	checked := 0
	for _, dl := range lines {
		variants, err := expandSynopsis(dl.text)
		if err != nil {
			t.Errorf("%s: %q: %v", dl.where, dl.text, err)
			continue
		}
		for _, v := range variants {
			for k, val := range dl.env {
				t.Setenv(k, val)
			}
			app, reached := parseOnly()
			err := app.RunContext(context.Background(), reorderArgs(app, v))
			var ae *argsError
			incomplete := err != nil && (isUsage(err) || errors.As(err, &ae))
			if dl.prose && incomplete {
				err = nil
				*reached = append(*reached, "(prose)")
			}
			if err != nil || len(*reached) != 1 {
				t.Errorf("%s: %s\n  as run: %s\n  error: %v (exit %d), reached %v", dl.where, dl.text, strings.Join(v, " "), err, exitCode(err), *reached)
			}
			for k := range dl.env {
				t.Setenv(k, "")
			}
			checked++
		}
	}
	t.Logf("%d documented command lines, %d variants parsed", len(lines), checked)
}

func TestExpandSynopsis(t *testing.T) {
	got, err := expandSynopsis(`rekindle list vms|points --repo /r [--vm "web 01"]... [--json]`)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, l := range got {
		s = append(s, fmt.Sprintf("%q", l))
	}
	want := []string{
		`["rekindle" "list" "vms" "--repo" "/r" "--vm" "web 01" "--json"]`,
		`["rekindle" "list" "points" "--repo" "/r" "--vm" "web 01" "--json"]`,
		`["rekindle" "list" "vms" "--repo" "/r"]`,
		`["rekindle" "list" "points" "--repo" "/r"]`,
	}
	if !slices.Equal(s, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(s, "\n"), strings.Join(want, "\n"))
	}
}

// TestREADMERepositorySectionRuns runs the README's "A repository of
// backups" lines as written, through the built binary, with only the paths
// and the printed restore point id put in: every line must succeed.
func TestREADMERepositorySectionRuns(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	from, to := 0, 0
	for i, ln := range strings.Split(string(b), "\n") {
		switch {
		case ln == "### A repository of backups":
			from = i + 1
		case from > 0 && to == 0 && strings.HasPrefix(ln, "### "):
			to = i + 1
		}
	}
	all, err := docLines("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src, err := vmgen.Generate(filepath.Join(dir, "src"), vmgen.Spec{Name: "web01", Seed: 3,
		Disks: []vmgen.DiskSpec{{Size: 1 << 20, Fill: vmgen.FillMixed, Format: vmgen.FormatFlat}}})
	if err != nil {
		t.Fatal(err)
	}
	id := ""
	ran := 0
	for _, dl := range all {
		if dl.prose || dl.line < from || dl.line > to {
			continue
		}
		variants, err := expandSynopsis(dl.text)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range variants {
			args := make([]string, 0, len(v))
			for _, w := range v[1:] {
				w = strings.ReplaceAll(w, "/srv/rekindle", filepath.Join(dir, "repo"))
				w = strings.ReplaceAll(w, "/vmfs/volumes/ds1/web01", src)
				w = strings.ReplaceAll(w, "/restore/web01", filepath.Join(dir, fmt.Sprintf("restore%d", ran)))
				w = strings.ReplaceAll(w, "testdata/", "../../testdata/")
				if w == "ID" {
					w = id
				}
				args = append(args, w)
			}
			out, _ := run(t, false, args...)
			if args[0] == "backup" && id == "" {
				id = strings.TrimSpace(out)
			}
			ran++
		}
	}
	if ran < 8 || id == "" {
		t.Fatalf("ran %d README lines (import id %q): the section moved?", ran, id)
	}
}
