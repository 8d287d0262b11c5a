package main

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/rekindle/rekindle/backupfs/repo"
	"github.com/rekindle/rekindle/catalog"
	"github.com/rekindle/rekindle/orchestrator"
)

// Exit statuses, documented in the README ("Exit status"). Scripts tell a
// typo from a missing backup from a damaged repository from a vCenter fault
// without reading the message.
const (
	exitOK         = 0
	exitFailure    = 1 // anything not below
	exitUsage      = 2 // the command line is wrong: unknown flag, missing argument, bad value
	exitNotFound   = 3 // what was named does not exist: VM, restore point, app, session
	exitDamaged    = 4 // the repository is damaged: a chunk, index or manifest fails its check
	exitHypervisor = 5 // vCenter (or QEMU) refused or failed: login, certificate, a fault
	exitServer     = 6 // the rekindle server's API could not be reached
)

// exitError carries an exit status with its message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageErr(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Sprintf(format, args...)}
}

// hypervisorError marks an error as the hypervisor's (exit status 5).
type hypervisorError struct{ err error }

func (e *hypervisorError) Error() string { return e.err.Error() }
func (e *hypervisorError) Unwrap() error { return e.err }

// serverError marks a failure to reach the rekindle server (exit status 6).
type serverError struct{ err error }

func (e *serverError) Error() string { return e.err.Error() }
func (e *serverError) Unwrap() error { return e.err }

// exitCode classifies err. The most specific cause wins: a damaged chunk
// found while restoring is "damaged", not "not found".
func exitCode(err error) int {
	var ee *exitError
	var he *hypervisorError
	var se *serverError
	var ae *argsError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ae):
		return exitUsage
	case errors.Is(err, repo.ErrCorrupt), errors.Is(err, repo.ErrMissing):
		return exitDamaged
	case errors.As(err, &he):
		return exitHypervisor
	case errors.As(err, &se), isDial(err):
		return exitServer
	case errors.Is(err, repo.ErrNotFound), errors.Is(err, catalog.ErrNotFound), errors.Is(err, orchestrator.ErrNotFound),
		errors.Is(err, repo.ErrNotRepository):
		return exitNotFound
	case isUsage(err), errors.Is(err, catalog.ErrAmbiguous), errors.Is(err, orchestrator.ErrPlan):
		return exitUsage
	}
	return exitFailure
}

// isDial is a failure to connect; outside the hypervisor's calls (marked
// above) the only server this command dials is rekindle's own API.
func isDial(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// isUsage recognizes the errors urfave/cli returns for the command line
// without a type to test: required flags.
func isUsage(err error) bool {
	m := err.Error()
	return strings.HasPrefix(m, "Required flag") || strings.HasPrefix(m, "Required flags")
}
