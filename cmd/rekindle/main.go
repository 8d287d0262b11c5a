// Command rekindle serves VM backups as an NFS datastore that hypervisors
// mount directly, and restores VMs and vApps from them in seconds.
//
// Each command parses its flags, calls one package function and renders the
// result: text for people, --json for scripts.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries an exit status: 2 for usage errors, 1 for a check that
// found problems after printing its report.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newApp().RunContext(ctx, os.Args)
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "rekindle:", ee.msg)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "rekindle:", err)
	os.Exit(1)
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "rekindle",
		Usage:   "run VMs straight from their backups over NFS",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"REKINDLE_LOG_LEVEL"}},
		},
		Before: func(c *cli.Context) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("--log-level %q: %w", c.String("log-level"), err)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
			return nil
		},
		Commands:             commands(),
		EnableBashCompletion: true,
		ExitErrHandler:       func(*cli.Context, error) {}, // main prints errors once
	}
}

func commands() []*cli.Command {
	cmds := append(repoCommands(), serveCommands()...)
	cmds = append(cmds, restoreCommands()...)
	cmds = append(cmds, demoCommand())
	for _, c := range cmds {
		if c.Name == "sessions" {
			c.Subcommands = append(c.Subcommands, sessionControlCommands()...)
		}
	}
	return cmds
}
