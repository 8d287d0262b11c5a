package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// A documented command line: where it came from and its words.
type docLine struct {
	where string // file:line, or the command whose help holds it
	line  int    // line number in the file
	text  string // as written, continuation lines joined
	env   map[string]string
	// prose marks a command named inline in a sentence: it must exist and
	// take the flags shown, but need not be complete.
	prose bool
}

// docLines extracts every `rekindle ...` command line of a Markdown file:
// lines in ```sh blocks (continuations joined, comments dropped, `export
// VAR=value` lines kept as environment for the lines after them) and
// inline code spans that start with "rekindle ".
func docLines(path string) ([]docLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []docLine
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	inBlock, n := false, 0
	var pending string
	pendingAt := 0
	span := regexp.MustCompile("`(rekindle [^`]*)`")
	for sc.Scan() {
		n++
		ln := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(ln), "```") {
			inBlock = !inBlock && strings.TrimSpace(ln) != "```"
			continue
		}
		if !inBlock {
			for _, m := range span.FindAllStringSubmatch(ln, -1) {
				out = append(out, docLine{where: fmt.Sprintf("%s:%d", path, n), line: n, text: m[1], env: copyEnv(env), prose: true})
			}
			continue
		}
		if pending == "" {
			pendingAt = n
		}
		body := stripComment(ln)
		if strings.HasSuffix(strings.TrimSpace(body), `\`) {
			pending += strings.TrimSuffix(strings.TrimSpace(body), `\`) + " "
			continue
		}
		full := strings.TrimSpace(pending + strings.TrimSpace(body))
		pending = ""
		if k, v, ok := strings.Cut(strings.TrimPrefix(full, "export "), "="); ok && strings.HasPrefix(full, "export ") {
			env[k] = v
			continue
		}
		if strings.HasPrefix(full, "rekindle ") {
			out = append(out, docLine{where: fmt.Sprintf("%s:%d", path, pendingAt), line: pendingAt, text: full, env: copyEnv(env)})
		}
	}
	return out, sc.Err()
}

func copyEnv(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// stripComment drops a shell comment: a # at the start or after a space,
// outside quotes.
func stripComment(s string) string {
	var q rune
	for i, r := range s {
		switch {
		case q != 0:
			if r == q {
				q = 0
			}
		case r == '\'' || r == '"':
			q = r
		case r == '#' && (i == 0 || s[i-1] == ' '):
			return s[:i]
		}
	}
	return s
}

// expandSynopsis turns a synopsis into the concrete command lines it
// stands for: [x] is optional (one line with every optional part, one
// without), a|b|c inside a word is a choice (each choice appears in some
// line), a trailing ... after ] means "repeatable" and is dropped. Words
// are split as a shell would (quotes kept together).
func expandSynopsis(s string) ([][]string, error) {
	s = strings.ReplaceAll(s, "]...", "]")
	var with, without strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '[':
			depth++
			with.WriteRune(' ')
		case r == ']':
			if depth == 0 {
				return nil, fmt.Errorf("unbalanced ]")
			}
			depth--
			with.WriteRune(' ')
		default:
			with.WriteRune(r)
			if depth == 0 {
				without.WriteRune(r)
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced [")
	}
	var lines [][]string
	variants := []string{with.String()}
	if without.String() != s {
		variants = append(variants, without.String())
	}
	for _, variant := range variants {
		words, err := shellWords(variant)
		if err != nil {
			return nil, err
		}
		// A redirection ends the command's own words.
		for i, w := range words {
			if strings.HasPrefix(w, ">") {
				words = words[:i]
				break
			}
		}
		// Choices: line k takes the k-th choice of every word (or its last).
		most := 1
		for _, w := range words {
			most = max(most, len(strings.Split(w, "|")))
		}
		for k := 0; k < most; k++ {
			line := make([]string, 0, len(words))
			for _, w := range words {
				alts := strings.Split(w, "|")
				line = append(line, alts[min(k, len(alts)-1)])
			}
			lines = append(lines, line)
		}
	}
	return lines, nil
}

// shellWords splits s into words as sh does for plain words and quotes.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var q rune
	for _, r := range s {
		switch {
		case q != 0:
			if r == q {
				q = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			q, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if q != 0 {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
