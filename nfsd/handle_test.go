package nfsd

import (
	"strings"
	"testing"
)

// TestIsCleanRel checks the fast path's test for a path it may use as it
// is: exactly the paths splitPath returns unchanged, joined.
func TestIsCleanRel(t *testing.T) {
	for _, p := range []string{
		"a", "vm/disk-flat.vmdk", "a/b/c", "a.b/.c/..d",
		"", "/", "/a", "a/", "a//b", "./a", "a/.", "a/./b", "a/../b", "..", ".", "a\x00b",
	} {
		parts, err := splitPath(p)
		same := err == nil && len(parts) > 0 && strings.Join(parts, "/") == p
		if got := isCleanRel(p); got != same {
			t.Errorf("isCleanRel(%q) = %v; splitPath gives %q, %v", p, got, parts, err)
		}
	}
}
