//go:build !unix

package durable

import (
	"io"
	"os"
)

// lockFile opens name; there is no file lock on this platform.
func lockFile(name string) (io.Closer, error) {
	return os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
}
