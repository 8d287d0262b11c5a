// Package pathroot confines the file system paths a request names to the
// folders (roots) a server was configured to write to.
//
// A root is an existing folder, held with its symbolic links resolved. A
// path is admitted when it is absolute, has no ".." element, and, once the
// symbolic links of its existing part are resolved, lies inside a root; the
// resolved path is what the caller then uses, so a link planted later in
// the named path's parents does not redirect it.
package pathroot

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

var (
	// ErrOutside marks a path outside every root.
	ErrOutside = errors.New("outside the folders this server may write to")
	// ErrInvalid marks a path refused for its form: relative, "..", NUL.
	ErrInvalid = errors.New("not an acceptable path")
)

// Roots is a set of roots. The zero value admits nothing.
type Roots struct {
	dirs []string
}

// New returns the roots dirs; each must exist and be a folder.
func New(dirs ...string) (*Roots, error) {
	r := &Roots{}
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, fmt.Errorf("root %s: %w", d, err)
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil, fmt.Errorf("root %s: %w", d, err)
		}
		r.dirs = append(r.dirs, real)
	}
	return r, nil
}

// Dirs returns the roots, resolved.
func (r *Roots) Dirs() []string { return append([]string(nil), r.dirs...) }

// Resolve returns p with the symbolic links of its existing part resolved,
// when that lies inside a root.
func (r *Roots) Resolve(p string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("empty path: %w", ErrInvalid)
	case strings.ContainsRune(p, 0):
		return "", fmt.Errorf("path %q holds a NUL byte: %w", p, ErrInvalid)
	case !filepath.IsAbs(p):
		return "", fmt.Errorf("path %q is relative: give an absolute path (%w)", p, ErrInvalid)
	}
	for _, el := range strings.Split(filepath.ToSlash(p), "/") {
		if el == ".." {
			return "", fmt.Errorf("path %q: \"..\" is not allowed (%w)", p, ErrInvalid)
		}
	}
	real, err := resolveExisting(filepath.Clean(p))
	if err != nil {
		return "", fmt.Errorf("path %q: %w", p, err)
	}
	for _, d := range r.dirs {
		if within(d, real) {
			return real, nil
		}
	}
	roots := "none are configured"
	if len(r.dirs) > 0 {
		roots = strings.Join(r.dirs, ", ")
	}
	if real != filepath.Clean(p) {
		return "", fmt.Errorf("path %q leads to %s through a symbolic link, %w (%s)", p, real, ErrOutside, roots)
	}
	return "", fmt.Errorf("path %q is %w (%s)", p, ErrOutside, roots)
}

// resolveExisting resolves the symbolic links of the longest existing
// prefix of the clean absolute path p and appends the rest.
func resolveExisting(p string) (string, error) {
	rest := ""
	for cur := p; ; cur = filepath.Dir(cur) {
		real, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(real, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) || cur == filepath.Dir(cur) {
			return "", err
		}
		rest = filepath.Join(filepath.Base(cur), rest)
	}
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
