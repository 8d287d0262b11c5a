package guestimg

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"
	"testing"
)

// cachedImage returns the disk image that build makes (in the folder it
// is given, returning its path there), made once for this package's
// source and kept under testdata/cache/guestimg (git-ignored), so the test
// processes of several packages share one build: a file lock makes the
// others wait for the first. The key is a hash of this package's Go files,
// so a change of what a builder makes builds anew. Where the source folder
// is not found (a binary built elsewhere), build runs in dir.
func cachedImage(tb testing.TB, dir, name string, build func(dir string) string) string {
	tb.Helper()
	_, file, _, ok := runtime.Caller(0)
	src := filepath.Dir(file)
	files, _ := filepath.Glob(filepath.Join(src, "*.go"))
	if !ok || len(files) == 0 {
		return build(dir)
	}
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		h.Write([]byte(filepath.Base(f) + "\x00"))
		h.Write(b)
	}
	cache := filepath.Join(src, "..", "cache", "guestimg")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(cache, name+"-"+hex.EncodeToString(h.Sum(nil))[:16]+".raw")
	lock, err := os.OpenFile(filepath.Join(cache, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		tb.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(out); err == nil {
		return out
	}
	old, _ := filepath.Glob(filepath.Join(cache, name+"-*.raw"))
	for _, o := range old { // made by an earlier source
		os.Remove(o)
	}
	tmp, err := os.MkdirTemp(cache, name+"-build-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Rename(build(tmp), out); err != nil {
		tb.Fatal(err)
	}
	return out
}
