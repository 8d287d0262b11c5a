package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// urfave/cli v2 stops reading flags at a command's first positional
// argument, so `rekindle sessions show ID --json` would take --json as a
// second ID. People type flags anywhere on the line; reorderArgs moves them
// before the positional arguments of the command they belong to, using the
// command tree's own flag definitions, so every command (and every command
// added later) gets it without doing anything.
//
// Rules: a flag that takes a value consumes the next argument unless it is
// written --flag=value; a boolean flag consumes nothing; `--` ends the flags
// and everything after it stays positional; a flag the command does not
// define but the application does (e.g. --log-level) moves before the
// command name; an unknown flag stays where the parser will report it.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	rest := args[1:]
	// The shell-completion marker must stay last.
	var tail []string
	if n := len(rest); n > 0 && rest[n-1] == "--generate-bash-completion" {
		rest, tail = rest[:n-1], rest[n-1:]
	}
	var global, out []string
	appFlags := flagIndex(app.Flags, true)
	// Application level: flags up to the command name.
	i := 0
	for i < len(rest) {
		a := rest[i]
		if a == "--" || !isFlag(a) {
			break
		}
		n := flagArity(appFlags, a)
		if n < 0 {
			n = 0 // unknown: let the parser complain
		}
		global = append(global, rest[i:min(i+1+n, len(rest))]...)
		i += 1 + n
	}
	if i >= len(rest) || rest[i] == "--" {
		return join(args[0], global, rest[i:], tail)
	}
	cmd := findCommand(app.Commands, rest[i])
	if cmd == nil {
		return join(args[0], global, rest[i:], tail)
	}
	out = append(out, rest[i])
	rest = rest[i+1:]
	for {
		own := flagIndex(cmd.Flags, !cmd.HideHelp)
		var flags, pos []string
		ended := false
		var next *cli.Command
		var after []string
		for j := 0; j < len(rest); j++ {
			a := rest[j]
			if ended {
				pos = append(pos, a)
				continue
			}
			if a == "--" {
				ended = true
				continue
			}
			if !isFlag(a) {
				if len(pos) == 0 && len(cmd.Subcommands) > 0 {
					if sub := findCommand(cmd.Subcommands, a); sub != nil {
						next, after = sub, rest[j+1:]
						break
					}
				}
				pos = append(pos, a)
				continue
			}
			if n := flagArity(own, a); n >= 0 {
				end := min(j+1+n, len(rest))
				flags = append(flags, rest[j:end]...)
				j = end - 1
				continue
			}
			if n := flagArity(appFlags, a); n >= 0 {
				end := min(j+1+n, len(rest))
				global = append(global, rest[j:end]...)
				j = end - 1
				continue
			}
			flags = append(flags, a) // unknown: reported by the parser
		}
		out = append(out, flags...)
		if next != nil {
			// Positional arguments before a subcommand name belong to no one:
			// keep them where the parser sees them.
			out = append(out, pos...)
			out = append(out, next.Name)
			cmd, rest = next, after
			continue
		}
		if ended || anyFlagLike(pos) {
			out = append(out, "--")
		}
		out = append(out, pos...)
		break
	}
	return join(args[0], global, out, tail)
}

func join(prog string, parts ...[]string) []string {
	out := []string{prog}
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

func anyFlagLike(s []string) bool {
	for _, a := range s {
		if isFlag(a) {
			return true
		}
	}
	return false
}

// flagIndex maps each flag name and alias to whether it takes a value.
func flagIndex(flags []cli.Flag, help bool) map[string]bool {
	m := map[string]bool{}
	for _, f := range flags {
		takes := true
		if tv, ok := f.(interface{ TakesValue() bool }); ok {
			takes = tv.TakesValue()
		}
		for _, n := range f.Names() {
			m[n] = takes
		}
	}
	if help {
		m["help"], m["h"] = false, false
	}
	return m
}

// flagArity is how many following arguments flag a consumes: 0 or 1, or -1
// when the flag is not in idx.
func flagArity(idx map[string]bool, a string) int {
	name := strings.TrimLeft(a, "-")
	name, _, hasValue := strings.Cut(name, "=")
	takes, ok := idx[name]
	switch {
	case !ok:
		return -1
	case takes && !hasValue:
		return 1
	default:
		return 0
	}
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// argsSpec is how many positional arguments a command's ArgsUsage asks for:
// "" none, "NAME" one, "[NAME]" zero or one, "NAME..." one or more.
func argsSpec(usage string) (lo, hi int) {
	for _, w := range strings.Fields(usage) {
		opt := strings.HasPrefix(w, "[")
		many := strings.HasSuffix(w, "...") || strings.HasSuffix(w, "...]")
		if !opt {
			lo++
		}
		if many {
			return lo, -1
		}
		hi++
	}
	return lo, hi
}

// checkArgs wraps every command's Action so the count of positional
// arguments is checked against its ArgsUsage before the action runs: one
// rule and one message for every command, exit status 2.
func checkArgs(cmds []*cli.Command) {
	for _, c := range cmds {
		checkArgs(c.Subcommands)
		if c.Action == nil {
			continue
		}
		action, usage := c.Action, c.ArgsUsage
		c.Action = func(ctx *cli.Context) error {
			lo, hi := argsSpec(usage)
			n := ctx.NArg()
			if n < lo || (hi >= 0 && n > hi) {
				want := "no arguments"
				if usage != "" {
					want = usage
				}
				got := "none"
				if n > 0 {
					got = fmt.Sprintf("%q", ctx.Args().Slice())
				}
				return &argsError{fmt.Sprintf("%s: want %s, got %s (see `%s --help`)", ctx.Command.HelpName, want, got, ctx.Command.HelpName)}
			}
			return action(ctx)
		}
	}
}

// argsError is a wrong count of positional arguments (exit status 2).
type argsError struct{ msg string }

func (e *argsError) Error() string { return e.msg }
