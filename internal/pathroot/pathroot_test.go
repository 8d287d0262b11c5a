package pathroot

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "vms")
	outside := filepath.Join(dir, "etc")
	for _, d := range []string{root, outside, filepath.Join(root, "prod")} {
		os.MkdirAll(d, 0o755)
	}
	os.Symlink(outside, filepath.Join(root, "escape"))                // a link out of the root
	os.Symlink(filepath.Join(root, "prod"), filepath.Join(dir, "in")) // a link into it
	r, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want string
		err  error
	}{
		{root, root, nil},
		{root + "/prod", root + "/prod", nil},
		{root + "/new/deeper", root + "/new/deeper", nil},
		{root + "//prod/./", root + "/prod", nil},
		{dir + "/in/x", root + "/prod/x", nil},
		{outside, "", ErrOutside},
		{"/", "", ErrOutside},
		{dir + "/vmsx", "", ErrOutside},
		{root + "/escape", "", ErrOutside},
		{root + "/escape/new/x", "", ErrOutside},
		{root + "/../etc", "", ErrInvalid},
		{root + "/prod/..", "", ErrInvalid},
		{"vms/prod", "", ErrInvalid},
		{"", "", ErrInvalid},
		{root + "/a\x00b", "", ErrInvalid},
	} {
		got, err := r.Resolve(tc.path)
		if !errors.Is(err, tc.err) || (tc.err == nil && got != tc.want) {
			t.Errorf("Resolve(%q) = %q, %v; want %q, %v", tc.path, got, err, tc.want, tc.err)
		}
	}
	var none Roots
	if _, err := none.Resolve(root); !errors.Is(err, ErrOutside) {
		t.Fatalf("no roots admitted %s: %v", root, err)
	}
}
