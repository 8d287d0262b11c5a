package guestimg

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

// NameRules say which names a filesystem (and the tool that fills it) can
// hold, for Names.
type NameRules struct {
	// Spaces: names may hold spaces (not XFS through mkfs.xfs's
	// protofile, whose names end at white space).
	Spaces bool
	// Astral: names may hold characters outside Unicode's basic plane (not
	// FAT through mtools, which writes long names as UCS-2).
	Astral bool
}

// Names returns a namer for a big folder (Options.BigNames) whose names
// exercise a filesystem: plain short names (and upper-case 8.3 ones, FAT's
// without a long name), long ones (157 names, one of each length from 100
// up to 255 bytes, 255 UTF-16 units, 255 FAT long-name characters: the
// limit of every filesystem here; more of them made mtools' copy slower,
// each name's insertion scans the folder's slots), Unicode ones (Latin, Greek, Cyrillic, CJK, Hangul; emoji and a
// musical symbol where the rules allow), mixed case with dots,
// punctuation, spaces where allowed, and 50 names whose 8.3 short forms
// collide (FAT numbers them: LONGPR~1, ~2, ...). Every name holds its
// number, so names are unique also without regard to case (FAT, NTFS's
// Win32 namespace); the others start with it, so their short forms do not
// collide (mtools tries each numbered form against the whole folder: a
// group of 1000 took minutes). None holds a character Windows refuses
// (NTFS, FAT) or ':' (rekindle's NTFS streams are "file:stream"), nor
// ends in a dot or a space.
func Names(r NameRules) func(i int) string {
	return func(i int) string {
		switch i % 8 {
		case 1:
			if i%64 != 1 { // long names: one in 64, each length once
				return fmt.Sprintf("%05d-a-name-of-medium-length", i)
			}
			n := fmt.Sprintf("%05d-long-", i)
			fill := "abcdefghijklmnopqrstuvwxyz0123456789"
			size := 255 - (i/64)%156 // 255, 254, ... 100: each length once
			for len(n) < size {
				n += fill[:min(len(fill), size-len(n))]
			}
			return n
		case 2:
			return fmt.Sprintf("%05d-ünïcødé-日本語-Ελληνικά-Кириллица", i)
		case 3:
			if r.Astral {
				return fmt.Sprintf("%05d-emoji-🦀-🚀𝄞", i)
			}
			return fmt.Sprintf("%05d-中文-한국어-ÆØÅ", i)
		case 4:
			return fmt.Sprintf("%05d.MiXeD.Case.Tar.GZ", i)
		case 5:
			if r.Spaces {
				return fmt.Sprintf("%05d with spaces (copy) [1].txt", i)
			}
			return fmt.Sprintf("%05d-punct_+,;=[]{}'!@#%%&()~", i)
		case 6:
			if i < 400 {
				return fmt.Sprintf("longprefix-%05d.document", i)
			}
			return fmt.Sprintf("%05d-longprefix.document", i)
		case 7:
			return fmt.Sprintf("F%05d.TXT", i)
		}
		return fmt.Sprintf("f%05d", i)
	}
}

// CheckNames checks that names, what a listing of the tree's folder dir
// gave (in any order), are exactly the folder's entries, each once: it
// reports every name missing, listed twice or more, or not in the tree
// (at the volume's root, the filesystem's own lost+found, $-files and
// System Volume Information are left out). It returns whether they were.
func (t Tree) CheckNames(tb testing.TB, dir string, names []string) bool {
	tb.Helper()
	want := map[string]bool{}
	for p := range t { // an NTFS stream "file:stream" is an entry of file's folder
		if d, base := splitDir(p); d == dir {
			want[base] = true
		}
	}
	seen := map[string]int{}
	for _, n := range names {
		if dir == "" && (n == "lost+found" || strings.HasPrefix(n, "$") || n == "System Volume Information") {
			continue
		}
		seen[n]++
	}
	var missing, twice, extra []string
	for n := range want {
		if seen[n] == 0 {
			missing = append(missing, n)
		}
	}
	for n, c := range seen {
		switch {
		case !want[n]:
			extra = append(extra, n)
		case c > 1:
			twice = append(twice, fmt.Sprintf("%s (%d times)", n, c))
		}
	}
	if len(missing)+len(twice)+len(extra) == 0 {
		return true
	}
	sort.Strings(missing)
	sort.Strings(twice)
	sort.Strings(extra)
	tb.Errorf("folder %q lists %d names for its %d entries: %d missing %q, %d listed more than once %q, %d not in the tree %q",
		dir, len(names), len(want), len(missing), first(missing), len(twice), first(twice), len(extra), first(extra))
	return false
}

// splitDir splits a tree path into its folder ("" at the root) and name.
func splitDir(p string) (string, string) {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}
