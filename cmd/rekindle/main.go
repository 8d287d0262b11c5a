// Command rekindle serves VM backups as an NFS datastore that hypervisors
// mount directly, and restores VMs and vApps from them in seconds.
//
// Each command parses its flags, calls one package function and renders the
// result: text for people, --json for scripts.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	endProfile := startProfile(os.Getenv("REKINDLE_CPUPROFILE"))
	code := runCLI(ctx, os.Args, os.Stderr)
	endProfile()
	stop()
	os.Exit(code)
}

// runCLI runs the command line args and returns the exit status, having
// printed any error to stderr once.
func runCLI(ctx context.Context, args []string, stderr io.Writer) int {
	app := newApp()
	err := app.RunContext(ctx, reorderArgs(app, args))
	if err == nil {
		return 0
	}
	code := exitCode(err)
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(stderr, "rekindle:", msg)
	}
	return code
}

func newApp() *cli.App { return buildApp(commands()) }

// buildApp is the application over a command tree (tests swap actions).
func buildApp(cmds []*cli.Command) *cli.App {
	checkArgs(cmds)
	usageErrors(cmds)
	return &cli.App{
		Name:    "rekindle",
		Usage:   "run VMs straight from their backups over NFS",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"REKINDLE_LOG_LEVEL"}},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json (one JSON object a line, for log collectors)", EnvVars: []string{"REKINDLE_LOG_FORMAT"}},
		},
		Before: func(c *cli.Context) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return usageErr("--log-level %q: want debug, info, warn or error", c.String("log-level"))
			}
			opts := &slog.HandlerOptions{Level: lvl}
			switch c.String("log-format") {
			case "text":
				slog.SetDefault(slog.New(slog.NewTextHandler(c.App.ErrWriter, opts)))
			case "json":
				slog.SetDefault(slog.New(slog.NewJSONHandler(c.App.ErrWriter, opts)))
			default:
				return usageErr("--log-format %q: want text or json", c.String("log-format"))
			}
			return nil
		},
		Commands:             cmds,
		EnableBashCompletion: true,
		ErrWriter:            os.Stderr,
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageErr("%v (see `rekindle --help`)", err)
		},
		ExitErrHandler: func(*cli.Context, error) {}, // run prints errors once
	}
}

// usageErrors makes every command's flag-parsing error a usage error (exit
// status 2) that points at the command's help, instead of printing the
// whole help text.
func usageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		usageErrors(c.Subcommands)
		c.OnUsageError = func(ctx *cli.Context, err error, _ bool) error {
			name := "rekindle"
			if ctx.Command != nil && ctx.Command.HelpName != "" {
				name = ctx.Command.HelpName
			}
			return usageErr("%v (see `%s --help`)", err, name)
		}
	}
}

func commands() []*cli.Command {
	cmds := append(repoCommands(), serveCommands()...)
	cmds = append(cmds, restoreCommands()...)
	cmds = append(cmds, filesCommands()...)
	cmds = append(cmds, demoCommand(), completionCommand(), manCommand())
	cmds = append(cmds, retentionCommands()...)
	cmds = append(cmds, jobCommand())
	cmds = append(cmds, protectCommands()...)
	cmds = append(cmds, siteCommands()...)
	cmds = append(cmds, replicateCommands()...)
	for _, c := range cmds {
		if c.Name == "backup" {
			c.Subcommands = append(c.Subcommands, vcBackupCommands()...)
		}
		if c.Name == "sessions" {
			c.Subcommands = append(c.Subcommands, sessionControlCommands()...)
		}
	}
	return cmds
}
