package httpapi

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rekindle/rekindle/internal/durable"
)

// TokenFileName is the token file's name in the state folder.
const TokenFileName = "api-token"

// minTokenLen is the shortest token accepted: 16 characters.
const minTokenLen = 16

// tokenBytes is how much randomness a new token carries.
const tokenBytes = 32

// ErrLooseTokenFile marks a token file other users may read or write.
var ErrLooseTokenFile = errors.New("token file readable by other users")

// LoadOrCreateToken returns the server's token from path, creating the file
// (mode 0600, 32 random bytes) when it does not exist. An existing file must
// be a regular file owned by this process's user that no other user may
// read or write.
func LoadOrCreateToken(path string) (string, error) {
	tok, err := readToken(path, true)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return tok, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("api token file %s: %w", path, err)
	}
	b := make([]byte, tokenBytes)
	rand.Read(b)
	tok = base64.RawURLEncoding.EncodeToString(b)
	// Written whole to a temporary name, then linked into place: a crash
	// leaves no half-written token, and two servers starting at once agree
	// on the first one's token (link fails when the name exists).
	tmp, err := os.CreateTemp(filepath.Dir(path), ".api-token-*")
	if err != nil {
		return "", fmt.Errorf("api token file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("api token file %s: %w", path, err)
	}
	if _, err := tmp.WriteString(tok + "\n"); err != nil {
		tmp.Close()
		return "", fmt.Errorf("api token file %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("api token file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("api token file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readToken(path, true)
		}
		return "", fmt.Errorf("api token file %s: %w", path, err)
	}
	if err := durable.SyncDir(durable.OS(), filepath.Dir(path)); err != nil {
		return "", fmt.Errorf("api token file %s: %w", path, err)
	}
	return tok, nil
}

// ReadToken reads a token file a client was pointed at. Like ssh with its
// keys, it refuses a file other users may read: the token would not be a
// secret.
func ReadToken(path string) (string, error) { return readToken(path, false) }

func readToken(path string, mustOwn bool) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return "", fmt.Errorf("api token file %s is a symbolic link: give the file itself", path)
		}
		return "", fmt.Errorf("api token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("api token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("api token file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("api token file %s has mode %04o: %w; run chmod 600 %s (or remove it and restart the server for a new token)",
			path, perm, ErrLooseTokenFile, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && mustOwn && int(st.Uid) != os.Geteuid() {
		return "", fmt.Errorf("api token file %s belongs to uid %d, not to the server's user (uid %d): %w",
			path, st.Uid, os.Geteuid(), ErrLooseTokenFile)
	}
	b := make([]byte, 4096)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return "", fmt.Errorf("api token file %s: empty (remove it and restart the server for a new token)", path)
	}
	tok := strings.TrimSpace(string(b[:n]))
	if len(tok) < minTokenLen || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("api token file %s: want one token of at least %d characters on one line", path, minTokenLen)
	}
	return tok, nil
}

// LocatorDir is the per-user folder of locators: $XDG_RUNTIME_DIR/rekindle,
// else rekindle-UID in the temporary folder. It must be this user's and
// closed to others; a folder someone else made is not used.
func LocatorDir() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("rekindle-%d", os.Geteuid()))
	if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
		dir = filepath.Join(rt, "rekindle")
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("api locator folder: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("api locator folder: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 || !ok || int(st.Uid) != os.Geteuid() {
		return "", fmt.Errorf("api locator folder %s: not a folder of uid %d closed to other users; not used", dir, os.Geteuid())
	}
	return dir, nil
}

func locatorPath(dir, port string) string { return filepath.Join(dir, "api-"+port) }

// WriteLocator records that the server on local port port keeps its token
// in tokenFile. The returned func removes the locator again.
func WriteLocator(port, tokenFile string) (func(), error) {
	dir, err := LocatorDir()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("api locator: %w", err)
	}
	p := locatorPath(dir, port)
	// Atomic through the one replace path (a temporary name of its own, so
	// two servers starting on one port do not write into one temporary
	// file), not synced: the locator lives in a runtime folder, and a
	// server writes it anew at every start.
	if err := durable.Replace(durable.OS(), p, []byte(abs+"\n"), 0o600, durable.Options{NoSync: true}); err != nil {
		return nil, fmt.Errorf("api locator: %w", err)
	}
	return func() {
		// Only our own record: a later server on the port may have replaced it.
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == abs {
			os.Remove(p)
		}
	}, nil
}

// FindLocalToken returns the token file the locator for local port port
// names, or "" when there is none.
func FindLocalToken(port string) string {
	dir, err := LocatorDir()
	if err != nil {
		return ""
	}
	b, err := os.ReadFile(locatorPath(dir, port))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
