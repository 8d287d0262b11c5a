//go:build !linux

package overlay

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
