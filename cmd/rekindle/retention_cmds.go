package main

import "github.com/urfave/cli/v2"

// retentionCommands are forget and prune.
func retentionCommands() []*cli.Command { return nil }
