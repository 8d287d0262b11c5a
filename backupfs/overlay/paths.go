package overlay

import (
	"os"
	"path"
	"strings"
	"syscall"
)

const (
	maxNameLen = 255
	maxPathLen = 4096
)

// cleanPath turns a name given by a caller into the overlay's form: clean,
// absolute, "/" for the root. ".." cannot climb above the root, and upper
// files are keyed by node id, never by name, so no name reaches the host
// filesystem.
func cleanPath(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", syscall.EINVAL
	}
	p := path.Clean("/" + name)
	if len(p) > maxPathLen {
		return "", syscall.ENAMETOOLONG
	}
	for rest := p[1:]; rest != ""; {
		var elem string
		elem, rest, _ = strings.Cut(rest, "/")
		if len(elem) > maxNameLen {
			return "", syscall.ENAMETOOLONG
		}
	}
	return p, nil
}

// parentOf returns the directory holding p; the root is its own parent.
func parentOf(p string) string { return path.Dir(p) }

// under reports whether p is strictly inside directory dir.
func under(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return len(p) > len(dir) && p[len(dir)] == '/' && p[:len(dir)] == dir
}

// rebase moves p, which is dir or inside it, to the same place under to.
func rebase(p, dir, to string) string {
	if p == dir {
		return to
	}
	return path.Join(to, p[len(dir):])
}

func pathErr(op, name string, err error) error {
	return &os.PathError{Op: op, Path: name, Err: err}
}

func linkErr(op, oldname, newname string, err error) error {
	return &os.LinkError{Op: op, Old: oldname, New: newname, Err: err}
}
