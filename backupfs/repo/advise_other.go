//go:build !linux

package repo

// adviseRandom is a no-op where posix_fadvise is not at hand.
func adviseRandom(any) {}
