package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// locator turns decode and validation errors into "file:line: path: msg"
// using the node tree parsed from the same bytes.
type locator struct {
	file string
	root *yaml.Node
	// reported holds the duration nodes already named by an error, so that
	// the same bad value in two places is reported at both.
	reported map[*yaml.Node]bool
}

// oneLine keeps each reported problem on one line: values quoted by the
// decoder may hold line breaks.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// yamlSyntaxError rewrites the parser's "yaml: line N: msg" as "file:N: msg".
func yamlSyntaxError(file string, err error) error {
	msg := oneLine(strings.TrimPrefix(err.Error(), "yaml: "))
	if m := regexp.MustCompile(`^line (\d+): (.*)$`).FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: %s", file, m[1], m[2])
	}
	return fmt.Errorf("%s: %s", file, msg)
}

// decodeError rewrites the decoder's errors so that each names the file, the
// line and the path of the offending field.
func (l *locator) decodeError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return yamlSyntaxError(l.file, err)
	}
	var (
		lineRe     = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
		unknownRe  = regexp.MustCompile(`(?s)^field (.*) not found in type .*$`)
		twiceRe    = regexp.MustCompile(`(?s)^field (.*) already set in type .*$`)
		dupKeyRe   = regexp.MustCompile(`(?s)^mapping key (".*") already defined at line (\d+)$`)
		mismatchRe = regexp.MustCompile("(?s)^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
	)
	out := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		m := lineRe.FindStringSubmatch(e)
		if m == nil {
			out = append(out, oneLine(l.unplacedError(e)))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		msg := m[2]
		if mm := unknownRe.FindStringSubmatch(msg); mm != nil {
			path, ok := l.findKey(line, mm[1])
			where := l.describe(path)
			if len(path) == 0 {
				where = "the top level"
			}
			msg = fmt.Sprintf("field %q not found in %s", mm[1], where)
			if !ok {
				msg = fmt.Sprintf("field %q not found", mm[1])
			} else {
				if valid := fieldsAt(path); len(valid) > 0 {
					msg += " (valid fields: " + strings.Join(valid, ", ") + ")"
				}
			}
		} else if mm := twiceRe.FindStringSubmatch(msg); mm != nil {
			path, _ := l.findKey(line, mm[1])
			msg = fmt.Sprintf("%s: field %q is set twice", l.describe(path), mm[1])
			if len(path) == 0 {
				msg = fmt.Sprintf("field %q is set twice", mm[1])
			}
		} else if mm := dupKeyRe.FindStringSubmatch(msg); mm != nil {
			key, _ := strconv.Unquote(mm[1])
			path, _ := l.findKey(line, key)
			msg = fmt.Sprintf("%s: key %s is set twice (first at line %s)", l.describe(path), mm[1], mm[2])
		} else if mm := mismatchRe.FindStringSubmatch(msg); mm != nil {
			n, path := l.findValue(line, mm[1], mm[2])
			got := yamlKind(mm[1])
			if n != nil && n.Kind == yaml.ScalarNode {
				v := n.Value
				if len(v) > 40 {
					v = v[:37] + "..."
				}
				got += " " + strconv.Quote(v)
			}
			msg = fmt.Sprintf("want %s, got %s", goKind(mm[3]), got)
			if len(path) > 0 {
				msg = l.describe(path) + ": " + msg
			}
		}
		out = append(out, fmt.Sprintf("%s:%d: %s", l.file, line, oneLine(msg)))
	}
	return errors.New(strings.Join(out, "\n"))
}

// unplacedError places an error the decoder reported without a line: our
// own duration errors, found again by their quoted value.
func (l *locator) unplacedError(e string) string {
	if rest, ok := strings.CutPrefix(e, durationErrPrefix); ok {
		if q, err := strconv.QuotedPrefix(rest); err == nil {
			val, _ := strconv.Unquote(q)
			if n, path := l.findDuration(val); n != nil {
				return fmt.Sprintf("%s:%d: %s: %s", l.file, n.Line, l.describe(path), e)
			}
		}
	}
	return fmt.Sprintf("%s: %s", l.file, e)
}

// validationError formats the validation problems sorted by line.
func (l *locator) validationError(errs []fieldError) error {
	type placed struct {
		line int
		text string
	}
	out := make([]placed, 0, len(errs))
	for _, e := range errs {
		line := l.line(e.path)
		where := l.describe(e.path)
		if where == "" {
			where = "config"
		}
		out = append(out, placed{line, fmt.Sprintf("%s:%d: %s: %s", l.file, line, where, e.msg)})
	}
	slices.SortStableFunc(out, func(a, b placed) int { return a.line - b.line })
	lines := make([]string, len(out))
	for i, p := range out {
		lines[i] = p.text
	}
	return errors.New(strings.Join(lines, "\n"))
}

// doc returns the document's top-level node, following a leading alias.
func (l *locator) doc() *yaml.Node {
	n := l.root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	return deref(n)
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// lookup finds key in mapping n, returning the key and value nodes.
func lookup(n *yaml.Node, key string) (k, v *yaml.Node) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], deref(n.Content[i+1])
		}
	}
	return nil, nil
}

// line resolves path as far as the tree allows and returns the line of the
// deepest node reached: a field missing from the YAML (a default) is
// reported at its enclosing mapping.
func (l *locator) line(path []any) int {
	n := l.doc()
	if n == nil {
		return 1
	}
	line := max(n.Line, 1)
	for _, e := range path {
		switch e := e.(type) {
		case int:
			if n.Kind != yaml.SequenceNode || e >= len(n.Content) {
				return line
			}
			n = deref(n.Content[e])
			line = n.Line
		case string:
			k, v := lookup(n, e)
			if k == nil {
				return line
			}
			n, line = v, k.Line
		case mapKey:
			k, v := lookup(n, string(e))
			if k == nil {
				return line
			}
			n, line = v, k.Line
		}
	}
	return line
}

// describe renders path for messages, e.g. `host_sets[1] ("web").labels`,
// taking set names from the tree so it also works for decode errors.
func (l *locator) describe(path []any) string {
	var b strings.Builder
	n := l.doc()
	for i, e := range path {
		switch e := e.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", e)
			if n != nil && n.Kind == yaml.SequenceNode && e < len(n.Content) {
				n = deref(n.Content[e])
			} else {
				n = nil
			}
			if i == 1 && path[0] == "host_sets" {
				if _, name := lookup(n, "name"); name != nil && name.Kind == yaml.ScalarNode && name.Value != "" {
					fmt.Fprintf(&b, " (%q)", name.Value)
				}
			}
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e)
			_, n = lookup(n, e)
		case mapKey:
			// Quoted by the message itself.
		}
	}
	return b.String()
}

// walk visits every node in value position (the document, mapping values,
// sequence items) with its path, in document order, without following
// aliases. fn returns false to stop.
func walk(n *yaml.Node, path []any, fn func(key, n *yaml.Node, path []any) bool) bool {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := at(path, k.Value)
			if !fn(k, v, p) || !walk(v, p, fn) {
				return false
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := at(path, i)
			if !fn(nil, c, p) || !walk(c, p, fn) {
				return false
			}
		}
	}
	return true
}

// findKey returns the path of the mapping holding key at line, and whether
// it was found.
func (l *locator) findKey(line int, key string) ([]any, bool) {
	doc := l.doc()
	if doc == nil {
		return nil, false
	}
	check := func(m *yaml.Node) bool {
		if m.Kind != yaml.MappingNode {
			return false
		}
		for i := 0; i < len(m.Content); i += 2 {
			if k := m.Content[i]; k.Line == line && k.Value == key {
				return true
			}
		}
		return false
	}
	if check(doc) {
		return nil, true
	}
	var found []any
	ok := false
	walk(doc, nil, func(_, n *yaml.Node, path []any) bool {
		if check(n) {
			found, ok = path, true
			return false
		}
		return true
	})
	return found, ok
}

// findValue returns the first node in value position at line that fits a
// decoder message about a value of the given tag (and, for scalars, the
// value as the decoder quoted it, truncated with "..."), and its path.
func (l *locator) findValue(line int, tag, quoted string) (*yaml.Node, []any) {
	doc := l.doc()
	if doc == nil {
		return nil, nil
	}
	fits := func(n *yaml.Node) bool {
		if n.Line != line {
			return false
		}
		switch tag {
		case "!!seq":
			return n.Kind == yaml.SequenceNode
		case "!!map":
			return n.Kind == yaml.MappingNode
		}
		if n.Kind != yaml.ScalarNode {
			return false
		}
		if prefix, cut := strings.CutSuffix(quoted, "..."); cut {
			return strings.HasPrefix(n.Value, prefix)
		}
		return quoted == "" || n.Value == quoted
	}
	var (
		node  *yaml.Node
		found []any
	)
	walk(doc, nil, func(_, n *yaml.Node, path []any) bool {
		if fits(n) {
			node, found = n, path
			return false
		}
		return true
	})
	if node == nil && fits(doc) {
		return doc, nil
	}
	return node, found
}

// findDuration returns the first duration-valued scalar equal to val.
func (l *locator) findDuration(val string) (*yaml.Node, []any) {
	doc := l.doc()
	if doc == nil {
		return nil, nil
	}
	var (
		node  *yaml.Node
		found []any
	)
	walk(doc, nil, func(k, n *yaml.Node, path []any) bool {
		if k == nil || n.Kind != yaml.ScalarNode || n.Value != val || l.reported[n] {
			return true
		}
		switch k.Value {
		case "interval", "timeout", "packet_interval":
			if l.reported == nil {
				l.reported = map[*yaml.Node]bool{}
			}
			l.reported[n] = true
			node, found = n, path
			return false
		}
		return true
	})
	return node, found
}

// fieldsAt returns the YAML field names valid in the mapping at path, found
// by walking the Config type.
func fieldsAt(path []any) []string {
	t := reflect.TypeFor[Config]()
	for _, e := range path {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch e := e.(type) {
		case int:
			if t.Kind() != reflect.Slice {
				return nil
			}
			t = t.Elem()
		case string:
			if t.Kind() != reflect.Struct {
				return nil
			}
			f, ok := fieldByTag(t, e)
			if !ok {
				return nil
			}
			t = f.Type
		default:
			return nil
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if tag := yamlTag(t.Field(i)); tag != "" {
			names = append(names, tag)
		}
	}
	return names
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if yamlTag(t.Field(i)) == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func yamlTag(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "-" || !f.IsExported() {
		return ""
	}
	return tag
}

// yamlKind names a YAML tag for messages.
func yamlKind(tag string) string {
	switch tag {
	case "!!str":
		return "a string"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!null":
		return "null"
	case "!!timestamp":
		return "a timestamp"
	case "!!binary":
		return "binary data"
	}
	return tag
}

// goKind names a Go type from a decoder message for users.
func goKind(t string) string {
	switch t {
	case "int", "int64", "int32":
		return "an integer"
	case "float64":
		return "a number"
	case "bool":
		return "a boolean (true or false)"
	case "string":
		return "a string"
	case "[]string":
		return "a list of strings"
	case "map[string]string":
		return "a mapping of strings to strings"
	}
	if strings.HasPrefix(t, "[]") {
		return "a list"
	}
	if strings.HasPrefix(strings.TrimPrefix(t, "*"), "config.") {
		return "a mapping"
	}
	return t
}
