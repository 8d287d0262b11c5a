package vmfolder

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxVMXSize bounds the size of a .vmx file. Real ones are a few KiB; the
// bound keeps a hostile or mistaken file (a disk image renamed .vmx) from
// being read whole into memory.
const MaxVMXSize = 4 << 20

// VMX is a parsed .vmx file. Keys are compared case-insensitively (ASCII),
// as VMware does; when a key appears twice the last value wins, as it does for VMware.
type VMX struct {
	values map[string]string // lower-case key -> decoded value
	keys   []string          // keys as first written, in file order
}

// ParseVMX reads a .vmx file: `key = "value"` lines, blank lines and
// # comments. Values are normally quoted; VMware escapes characters such as
// `"` and `|` inside them as "|XX" in hex, and those escapes are decoded.
// Unquoted values are accepted as hand-edited files have them.
func ParseVMX(r io.Reader) (*VMX, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxVMXSize+1))
	if err != nil {
		return nil, fmt.Errorf("read vmx: %w", err)
	}
	if len(data) > MaxVMXSize {
		return nil, fmt.Errorf("vmx larger than %d bytes: not a VM configuration file", MaxVMXSize)
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return nil, fmt.Errorf("vmx has binary data (NUL byte at offset %d): not a VM configuration file", i)
	}
	v := &VMX{values: map[string]string{}}
	for n, line := range strings.Split(string(data), "\n") {
		key, value, ok, err := parseVMXLine(line)
		if err != nil {
			return nil, fmt.Errorf("vmx line %d: %w", n+1, err)
		}
		if !ok {
			continue
		}
		lk := lowerASCII(key)
		if _, seen := v.values[lk]; !seen {
			v.keys = append(v.keys, key)
		}
		v.values[lk] = value
	}
	return v, nil
}

// parseVMXLine returns ok=false for blank and comment lines.
func parseVMXLine(line string) (key, value string, ok bool, err error) {
	line = strings.TrimSpace(line) // also drops the \r of CRLF files
	if line == "" || line[0] == '#' {
		return "", "", false, nil
	}
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return "", "", false, fmt.Errorf("control character 0x%02x", c)
		}
	}
	k, rest, found := strings.Cut(line, "=")
	if !found {
		return "", "", false, fmt.Errorf("%q: expected key = \"value\"", clip(line))
	}
	key = strings.TrimSpace(k)
	if key == "" {
		return "", "", false, errors.New("empty key before '='")
	}
	if strings.ContainsAny(key, " \t\"#") {
		return "", "", false, fmt.Errorf("key %q: contains a space, quote or '#'", clip(key))
	}
	rest = strings.TrimSpace(rest)
	if rest == "" || rest[0] != '"' {
		// Unquoted: the value runs to a comment or the end of the line.
		if i := strings.IndexByte(rest, '#'); i >= 0 {
			rest = strings.TrimSpace(rest[:i])
		}
		if strings.ContainsRune(rest, '"') {
			return "", "", false, fmt.Errorf("key %q: stray quote in unquoted value", clip(key))
		}
		return key, decodeVMXEscapes(rest), true, nil
	}
	end := strings.IndexByte(rest[1:], '"')
	if end < 0 {
		return "", "", false, fmt.Errorf("key %q: value has no closing quote", clip(key))
	}
	raw := rest[1 : 1+end]
	tail := strings.TrimSpace(rest[2+end:])
	if tail != "" && tail[0] != '#' {
		return "", "", false, fmt.Errorf("key %q: unexpected %q after the closing quote", clip(key), clip(tail))
	}
	return key, decodeVMXEscapes(raw), true, nil
}

// decodeVMXEscapes turns VMware's "|XX" escapes into the byte 0xXX. A '|' not
// followed by two hex digits is kept as it is.
func decodeVMXEscapes(s string) string {
	if !strings.Contains(s, "|") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '|' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b.WriteByte(hi<<4 | lo)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// clip shortens s for an error message.
func clip(s string) string {
	const max = 60
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// Get returns the value of key; ASCII letters in keys compare
// case-insensitively.
func (v *VMX) Get(key string) (string, bool) {
	if v == nil {
		return "", false
	}
	s, ok := v.values[lowerASCII(key)]
	return s, ok
}

// lowerASCII folds the case of ASCII letters only. VMware's keys are ASCII;
// Unicode case mapping is not reversible (ToLower(ToUpper(k)) != k for some
// runes), which would make lookups depend on how a caller spells a key.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// Keys returns every key once, as first spelled in the file, in file order.
func (v *VMX) Keys() []string {
	if v == nil {
		return nil
	}
	return append([]string(nil), v.keys...)
}

// isFalse reports whether a vmx boolean is explicitly false. VMware writes
// "TRUE"/"FALSE" but reads any case and also accepts 0/1 and yes/no.
func isFalse(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "false", "0", "no", "off":
		return true
	}
	return false
}
