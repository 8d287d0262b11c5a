package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// The manual page is urfave/cli's ToMan (rendered by go-md2man) of this very
// command tree, so it cannot drift from --help: `make man` writes it to
// docs/man/rekindle.1 and TestManPage fails when that copy is stale.

func manCommand() *cli.Command {
	return &cli.Command{
		Name: "man", Usage: "print the manual page (roff, section 1)",
		Description: "Examples:\n  rekindle man > /usr/share/man/man1/rekindle.1\n  man -l docs/man/rekindle.1   # the copy `make man` writes",
		Action: func(c *cli.Context) error {
			page, err := manPage()
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(c.App.Writer, page)
			return err
		},
	}
}

// manPage renders the manual page of a fresh command tree.
func manPage() (string, error) {
	app := newApp()
	manUsage(app.Commands, "rekindle")
	app.Description = manDescription(app)
	return app.ToManWithSection(1)
}

// manUsage gives each command the synopsis and examples --help shows
// (ToMan prints only UsageText, not ArgsUsage or Description).
func manUsage(cmds []*cli.Command, parent string) {
	for _, c := range cmds {
		name := parent + " " + c.Name
		manUsage(c.Subcommands, name)
		if c.UsageText != "" {
			continue
		}
		synopsis := name
		if len(c.VisibleFlags()) > 0 {
			synopsis += " [options]"
		}
		if len(c.Subcommands) > 0 {
			synopsis += " command"
		}
		if c.ArgsUsage != "" {
			synopsis += " " + c.ArgsUsage
		}
		if d := strings.TrimSpace(c.Description); d != "" {
			synopsis += "\n\n" + d
		}
		c.UsageText = synopsis
	}
}

// manDescription is the page's DESCRIPTION: what rekindle is, its exit
// statuses (the README's "Exit status") and the environment variables its
// flags read.
func manDescription(app *cli.App) string {
	var b strings.Builder
	b.WriteString("rekindle keeps VM backups in a deduplicated repository and serves them as an NFS datastore " +
		"that vSphere hosts or QEMU mount directly, so a VM or a vApp runs again from its backup in seconds " +
		"while its disks move back to production storage. Flags may come anywhere on the line; `--` ends them.\n\n")
	b.WriteString("**Exit status**: 0 success; 1 a failure not listed here; 2 a usage error (unknown flag, " +
		"missing or extra argument, bad value); 3 not found (the VM, restore point, app or session named does not exist, " +
		"or the folder is not a repository); 4 the repository is damaged; 5 vCenter (or QEMU) refused or failed; " +
		"6 the rekindle server's API could not be reached.\n\n")
	env := map[string][]string{}
	var walk func(flags []cli.Flag)
	walk = func(flags []cli.Flag) {
		for _, f := range flags {
			ef, ok := f.(interface{ GetEnvVars() []string })
			if !ok {
				continue
			}
			for _, e := range ef.GetEnvVars() {
				flag := "--" + f.Names()[0]
				if !contains(env[e], flag) {
					env[e] = append(env[e], flag)
				}
			}
		}
	}
	walk(app.Flags)
	var cmds func([]*cli.Command)
	cmds = func(cs []*cli.Command) {
		for _, c := range cs {
			walk(c.Flags)
			cmds(c.Subcommands)
		}
	}
	cmds(app.Commands)
	names := make([]string, 0, len(env))
	for e := range env {
		names = append(names, e)
	}
	sort.Strings(names)
	b.WriteString("**Environment**: each variable gives the flag it names when the flag is not on the line:")
	for i, e := range names {
		sep := ","
		if i == 0 {
			sep = ""
		}
		fmt.Fprintf(&b, "%s %s (%s)", sep, e, strings.Join(env[e], ", "))
	}
	b.WriteString("; the vCenter password is read from REKINDLE_VC_PASSWORD (or GOVC_PASSWORD), never from a flag.\n\nMore in the README, docs/json.md (the JSON of --json and the API) and docs/openapi.json.")
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
