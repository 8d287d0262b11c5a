//go:build !linux

package durable

import (
	"os"
	"syscall"
)

func fdatasync(f *os.File) error { return f.Sync() }

// SyncAll syncs every filesystem: the portable stand-in for syncfs(2).
func (osFS) SyncAll(string) error {
	syscall.Sync()
	return nil
}
