package main

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"gopkg.in/yaml.v3"
)

// sizeUsage says how size flags are written; it ends their usage text.
const sizeUsage = "a number with K, M, G, T or KiB, MiB, GiB, TiB (binary: 1024) or KB, MB, GB, TB (decimal: 1000)"

// sizeSuffixes maps a size's suffix (lower case) to its multiplier. The
// short forms are binary, as `dd`, QEMU and vSphere read them.
var sizeSuffixes = map[string]int64{
	"b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// parseSize reads a size: "256K", "4MiB", "1.5G", "512MB", or a plain
// number, which counts in unit bytes (1 for a byte count, 1<<20 for a flag
// named in MiB) so the integer forms flags took before still mean what they
// meant.
func parseSize(s string, unit int64) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, suffix := t, ""
	if i >= 0 {
		num, suffix = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	mult := unit
	if suffix != "" {
		m, ok := sizeSuffixes[suffix]
		if !ok {
			return 0, fmt.Errorf("size %q: unknown unit %q: want %s", s, t[i:], sizeUsage)
		}
		mult = m
	}
	f, err := strconv.ParseFloat(num, 64)
	if num == "" || err != nil || f < 0 {
		return 0, fmt.Errorf("size %q: want %s", s, sizeUsage)
	}
	v := f * float64(mult)
	if v > math.MaxInt64 || v != math.Trunc(v) {
		return 0, fmt.Errorf("size %q: not a whole number of bytes below 8 EiB", s)
	}
	return int64(v), nil
}

// sizeFlag reads flag name of c as a size (see parseSize); bad input is a
// usage error naming the flag.
func sizeFlag(c *cli.Context, name string, unit int64) (int64, error) {
	n, err := parseSize(c.String(name), unit)
	if err != nil {
		return 0, usageErr("--%s: %v", name, err)
	}
	return n, nil
}

// sizeKeys are the --config keys that hold sizes: YAML may give them as
// numbers, and the string flags they feed take text.
var sizeKeys = map[string]bool{"cache-mb": true, "record-memory-mb": true}

// yamlConfig loads a --config file for altsrc, with numeric sizes as text.
func yamlConfig(path string) (altsrc.InputSourceContext, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	m := map[any]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	for k, v := range m {
		if ks, ok := k.(string); ok && sizeKeys[ks] {
			switch v.(type) {
			case int, int64, uint64, float64:
				m[k] = fmt.Sprint(v)
			}
		}
	}
	return altsrc.NewMapInputSource(path, m), nil
}

// humanSize is n in the largest binary unit that divides it ("256KiB"), for
// flag defaults that parseSize reads back.
func humanSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return fmt.Sprintf("%d%s", n/u.m, u.s)
		}
	}
	return strconv.FormatInt(n, 10)
}

// serveCheck is `serve --check`: it refuses a --config key that is no flag
// of serve (altsrc would ignore it), a bad size and a missing --repo, and
// serves nothing.
func serveCheck(c *cli.Context) error {
	if cfg := c.String("config"); cfg != "" {
		b, err := os.ReadFile(cfg)
		if err != nil {
			return usageErr("--config: %v", err)
		}
		m := map[string]any{}
		if err := yaml.Unmarshal(b, &m); err != nil {
			return usageErr("--config %s: %v", cfg, err)
		}
		known := map[string]bool{}
		for _, f := range c.Command.Flags {
			for _, n := range f.Names() {
				known[n] = true
			}
		}
		for k := range m {
			if !known[k] {
				return usageErr("--config %s: %q is not a flag of rekindle serve (see rekindle serve --help)", cfg, k)
			}
		}
	}
	for _, f := range []string{"cache-mb", "record-memory-mb"} {
		if _, err := sizeFlag(c, f, 1<<20); err != nil {
			return err
		}
	}
	if c.String("repo") == "" {
		return usageErr("serve: --repo (or REKINDLE_REPO, or repo: in --config) is required")
	}
	fmt.Fprintf(c.App.Writer, "settings ok: repository %s, NFS %s, API %s\n", c.String("repo"), c.String("nfs"), c.String("api"))
	return nil
}
