package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		unit int64
		want int64
		err  string
	}{
		{"65536", 1, 65536, ""},
		{"256K", 1, 256 << 10, ""},
		{"256k", 1, 256 << 10, ""},
		{"1M", 1, 1 << 20, ""},
		{"4MiB", 1, 4 << 20, ""},
		{"4 MiB", 1, 4 << 20, ""},
		{"512MB", 1, 512e6, ""},
		{"1.5G", 1, 3 << 29, ""},
		{"2TiB", 1, 2 << 40, ""},
		{"1024", 1 << 20, 1 << 30, ""}, // --cache-mb 1024 still means MiB
		{"512M", 1 << 20, 512 << 20, ""},
		{"4GiB", 1 << 20, 4 << 30, ""},
		{"", 1, 0, "want a number"},
		{"M", 1, 0, "want a number"},
		{"-1K", 1, 0, "want a number"},
		{"12Q", 1, 0, `unknown unit "Q"`},
		{"1.5", 1, 0, "whole number"},
		{"99999999T", 1, 0, "below 8 EiB"},
	} {
		got, err := parseSize(tc.in, tc.unit)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseSize(%q): %d, %v; want error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q, %d) = %d, %v; want %d", tc.in, tc.unit, got, err, tc.want)
		}
	}
	if humanSize(256<<10) != "256KiB" || humanSize(3<<29) != "1536MiB" || humanSize(1000) != "1000" {
		t.Error("humanSize")
	}
}

// TestSizeFlags: --chunk-size and --cache-mb take suffixes through the
// binary (and --config), keep their integer forms, and refuse bad sizes
// with a usage error (exit 2) that says what to write.
func TestSizeFlags(t *testing.T) {
	dir := t.TempDir()
	chunk := func(repoDir string) int {
		b, err := os.ReadFile(filepath.Join(repoDir, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			ChunkSize int `json:"chunk_size"`
		}
		json.Unmarshal(b, &c)
		return c.ChunkSize
	}
	for arg, want := range map[string]int{"64K": 64 << 10, "1MiB": 1 << 20, "131072": 128 << 10} {
		r := filepath.Join(dir, "r"+arg)
		run(t, false, "init", "--repo", r, "--chunk-size", arg)
		if got := chunk(r); got != want {
			t.Errorf("--chunk-size %s: repository chunk size %d, want %d", arg, got, want)
		}
	}
	_, stderr, code := runCode(t, "init", "--repo", filepath.Join(dir, "bad"), "--chunk-size", "64Q")
	if code != 2 || !strings.Contains(stderr, `--chunk-size: size "64Q": unknown unit "Q"`) || !strings.Contains(stderr, "KiB") {
		t.Fatalf("bad --chunk-size: exit %d, %s", code, stderr)
	}

	repoDir := filepath.Join(dir, "r64K")
	_, stderr, code = runCode(t, "serve", "--repo", repoDir, "--nfs", freePort(t), "--portmap", "off", "--metrics", "off",
		"--api", freePort(t), "--cache-mb", "lots")
	if code != 2 || !strings.Contains(stderr, `--cache-mb: size "lots"`) {
		t.Fatalf("bad --cache-mb: exit %d, %s", code, stderr)
	}
	for _, tc := range []struct {
		flag, config string
		want         int64
	}{
		{"512M", "", 512 << 20},
		{"", "cache-mb: 64\n", 64 << 20}, // a number in YAML, as before
		{"", "cache-mb: 2GiB\n", 2 << 30},
	} {
		api := freePort(t)
		args := []string{"serve", "--repo", repoDir, "--nfs", freePort(t), "--portmap", "off", "--metrics", "off", "--api", api}
		if tc.flag != "" {
			args = append(args, "--cache-mb", tc.flag)
		}
		if tc.config != "" {
			cfg := filepath.Join(dir, "c.yaml")
			os.WriteFile(cfg, []byte(tc.config), 0o644)
			args = append(args, "--config", cfg)
		}
		s := &server{t: t, api: api, args: args}
		s.start()
		st, err := testClient(api).Status(context.Background())
		s.kill()
		if err != nil || st.Cache.MaxBytes != tc.want {
			t.Errorf("serve %v %q: cache max %d, %v; want %d", tc.flag, tc.config, st.Cache.MaxBytes, err, tc.want)
		}
	}
}
