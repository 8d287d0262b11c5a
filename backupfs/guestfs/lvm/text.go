package lvm

import (
	"errors"
	"fmt"
	"strconv"
)

// Bounds on metadata text, so a hostile disk cannot make the parser
// allocate without limit or recurse without end. LVM itself nests four
// levels deep (vg / logical_volumes / lv / segment) and writes at most a few
// MiB of text.
const (
	MaxText   = 16 << 20 // bytes of one metadata text
	MaxDepth  = 16       // nested sections
	maxArray  = 1 << 16  // values of one array
	maxString = 1 << 16  // bytes of one string
)

// ErrSyntax means metadata text is not in LVM's configuration language.
var ErrSyntax = errors.New("lvm metadata: syntax error")

// Section is a section of LVM's configuration language:
//
//	name {
//		key = 1
//		key2 = "string"
//		key3 = ["a", 2]
//		child { ... }
//	}
//
// Keys keep their order; a repeated key keeps its last value (as LVM does).
type Section struct {
	Name     string
	Keys     []string
	Values   map[string]Value
	Sections []*Section
}

// Value is a number, a string or an array of numbers and strings.
type Value struct {
	Str   string
	Num   int64
	IsStr bool
	Array []Value // non-nil for an array (possibly empty)
	IsArr bool
}

// Section returns the child section called name.
func (s *Section) Section(name string) *Section {
	for _, c := range s.Sections {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Int returns key's number.
func (s *Section) Int(key string) (int64, bool) {
	v, ok := s.Values[key]
	if !ok || v.IsStr || v.IsArr {
		return 0, false
	}
	return v.Num, true
}

// String returns key's string.
func (s *Section) String(key string) (string, bool) {
	v, ok := s.Values[key]
	if !ok || !v.IsStr {
		return "", false
	}
	return v.Str, true
}

// Strings returns key's array of strings (the status and flags lists).
func (s *Section) Strings(key string) []string {
	v := s.Values[key]
	var out []string
	for _, e := range v.Array {
		if e.IsStr {
			out = append(out, e.Str)
		}
	}
	return out
}

// Parse parses metadata text into its top-level section (named "").
func Parse(text []byte) (*Section, error) {
	if len(text) > MaxText {
		return nil, fmt.Errorf("%w: %d bytes of text, more than %d", ErrSyntax, len(text), MaxText)
	}
	p := &parser{b: text}
	root := &Section{Values: map[string]Value{}}
	if err := p.body(root, 0, true); err != nil {
		return nil, err
	}
	return root, nil
}

type parser struct {
	b   []byte
	pos int
}

func (p *parser) errf(format string, a ...any) error {
	line := 1
	for _, c := range p.b[:min(p.pos, len(p.b))] {
		if c == '\n' {
			line++
		}
	}
	return fmt.Errorf("%w: line %d: %s", ErrSyntax, line, fmt.Sprintf(format, a...))
}

// skip passes white space, NULs (the area's padding) and # comments.
func (p *parser) skip() {
	for p.pos < len(p.b) {
		switch c := p.b[p.pos]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0:
			p.pos++
		case c == '#':
			for p.pos < len(p.b) && p.b[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func identChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '.' || c == '+' || c == '/' || c == '@' || c == ':'
}

// body parses "key = value" and "name { ... }" items until '}' (or the end,
// at the top level).
func (p *parser) body(s *Section, depth int, top bool) error {
	for {
		p.skip()
		if p.pos >= len(p.b) {
			if top {
				return nil
			}
			return p.errf("section %q is not closed", s.Name)
		}
		if p.b[p.pos] == '}' {
			if top {
				return p.errf("unexpected '}'")
			}
			p.pos++
			return nil
		}
		start := p.pos
		for p.pos < len(p.b) && identChar(p.b[p.pos]) {
			p.pos++
		}
		if p.pos == start {
			return p.errf("unexpected %q", p.b[p.pos])
		}
		name := string(p.b[start:p.pos])
		p.skip()
		if p.pos >= len(p.b) {
			return p.errf("%s: nothing follows", name)
		}
		switch p.b[p.pos] {
		case '{':
			if depth+1 > MaxDepth {
				return p.errf("sections nested deeper than %d", MaxDepth)
			}
			p.pos++
			c := &Section{Name: name, Values: map[string]Value{}}
			if err := p.body(c, depth+1, false); err != nil {
				return err
			}
			s.Sections = append(s.Sections, c)
		case '=':
			p.pos++
			v, err := p.value(true)
			if err != nil {
				return err
			}
			if _, dup := s.Values[name]; !dup {
				s.Keys = append(s.Keys, name)
			}
			s.Values[name] = v
		default:
			return p.errf("%s: expected '=' or '{', found %q", name, p.b[p.pos])
		}
	}
}

func (p *parser) value(arrayOK bool) (Value, error) {
	p.skip()
	if p.pos >= len(p.b) {
		return Value{}, p.errf("missing value")
	}
	switch c := p.b[p.pos]; {
	case c == '[' && arrayOK:
		p.pos++
		v := Value{IsArr: true, Array: []Value{}}
		for {
			p.skip()
			if p.pos < len(p.b) && p.b[p.pos] == ']' {
				p.pos++
				return v, nil
			}
			if len(v.Array) > 0 {
				if p.pos >= len(p.b) || p.b[p.pos] != ',' {
					return Value{}, p.errf("expected ',' or ']' in an array")
				}
				p.pos++
			}
			if len(v.Array) >= maxArray {
				return Value{}, p.errf("array longer than %d", maxArray)
			}
			e, err := p.value(false)
			if err != nil {
				return Value{}, err
			}
			v.Array = append(v.Array, e)
		}
	case c == '"':
		return p.str()
	case c == '-' || c >= '0' && c <= '9':
		start := p.pos
		p.pos++
		for p.pos < len(p.b) && (p.b[p.pos] >= '0' && p.b[p.pos] <= '9' || p.b[p.pos] == '.') {
			p.pos++
		}
		lit := string(p.b[start:p.pos])
		n, err := strconv.ParseInt(lit, 10, 64)
		if err != nil {
			// LVM's language has floats; metadata uses none. Keep the
			// literal as a string rather than guess a number.
			if _, ferr := strconv.ParseFloat(lit, 64); ferr != nil {
				return Value{}, p.errf("bad number %q", lit)
			}
			return Value{Str: lit, IsStr: true}, nil
		}
		return Value{Num: n}, nil
	}
	return Value{}, p.errf("unexpected %q where a value belongs", p.b[p.pos])
}

// str parses a double-quoted string; a backslash escapes the next byte.
func (p *parser) str() (Value, error) {
	p.pos++
	var out []byte
	for {
		if p.pos >= len(p.b) {
			return Value{}, p.errf("string is not closed")
		}
		c := p.b[p.pos]
		p.pos++
		switch c {
		case '"':
			return Value{Str: string(out), IsStr: true}, nil
		case '\\':
			if p.pos >= len(p.b) {
				return Value{}, p.errf("string is not closed")
			}
			c = p.b[p.pos]
			p.pos++
		}
		if len(out) >= maxString {
			return Value{}, p.errf("string longer than %d bytes", maxString)
		}
		out = append(out, c)
	}
}
