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

// maxReported is how many problems an error lists; the rest are counted.
const maxReported = 20

// The wordings of yaml.v3 that the locator takes apart. TestYAMLWordings
// pins each of them, so that a library update that rewords one fails there
// rather than degrading the messages users see.
var (
	// syntaxRe matches a parser error: "yaml: line 2: mapping values are
	// not allowed in this context".
	syntaxRe = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)
	// unknownFieldRe matches a decoder error for a key the struct lacks.
	unknownFieldRe = regexp.MustCompile(`(?s)^field (.*) not found in type .*$`)
	// fieldTwiceRe matches two keys that decode to the same field name
	// (e.g. "a" and a !!binary key spelling "a").
	fieldTwiceRe = regexp.MustCompile(`(?s)^field (.*) already set in type .*$`)
	// dupKeyRe matches a key repeated within one mapping.
	dupKeyRe = regexp.MustCompile(`(?s)^mapping key (".*") already defined at line (\d+)$`)
	// mismatchRe matches a value of the wrong kind or type, with the value
	// quoted (and cut to 7 bytes plus "...") for scalars.
	mismatchRe = regexp.MustCompile("(?s)^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
)

// mapKey is a path element naming a key of a YAML mapping whose key node the
// error is about (e.g. an invalid label name); it is not shown in the path
// because the message quotes it.
type mapKey string

// fieldError is one problem at a path of the YAML tree. Path elements are
// string (struct field), int (sequence index) or mapKey. The message is
// formatted only when the problem is among those shown.
type fieldError struct {
	path []any
	// line is where the problem is reported; 0 means "resolve path".
	line   int
	format string
	args   []any
	// unknown, when set, makes this an unknown-field error for that key in
	// the mapping at path, which the message names instead of prefixing it.
	unknown string
}

// locator turns decode and validation errors into "file:line: path: msg"
// using the node tree parsed from the same bytes.
type locator struct {
	file string
	root *yaml.Node
}

// oneLine keeps each reported problem on one line: values quoted by the
// decoder may hold line breaks.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// yamlSyntaxError rewrites the parser's "yaml: line N: msg" as "file:N: msg".
func yamlSyntaxError(file string, err error) error {
	msg := err.Error()
	if m := syntaxRe.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: %s", file, m[1], oneLine(m[2]))
	}
	return fmt.Errorf("%s: %s", file, oneLine(strings.TrimPrefix(msg, "yaml: ")))
}

// summary joins the shown problem lines and counts the ones left out.
func (l *locator) summary(shown []string, total int) error {
	if more := total - len(shown); more > 0 {
		shown = append(shown, fmt.Sprintf("%s: and %d more errors", l.file, more))
	}
	return errors.New(strings.Join(shown, "\n"))
}

// problems formats the first maxReported problems by line, then a count of
// the rest. Each problem costs a path lookup; only the shown ones are
// formatted.
func (l *locator) problems(errs []fieldError) error {
	for i := range errs {
		if errs[i].line == 0 {
			errs[i].line = l.line(errs[i].path)
		}
	}
	slices.SortStableFunc(errs, func(a, b fieldError) int { return a.line - b.line })
	shown := make([]string, 0, min(len(errs), maxReported))
	for _, e := range errs[:min(len(errs), maxReported)] {
		shown = append(shown, fmt.Sprintf("%s:%d: %s", l.file, e.line, oneLine(l.render(e))))
	}
	return l.summary(shown, len(errs))
}

// render formats one problem without its file and line.
func (l *locator) render(e fieldError) string {
	if e.unknown != "" {
		return l.unknownField(e.path, e.unknown)
	}
	where := l.describe(e.path)
	if where == "" {
		where = "config"
	}
	return where + ": " + fmt.Sprintf(e.format, e.args...)
}

// unknownField words an unknown key of the mapping at path, listing the
// keys that mapping takes.
func (l *locator) unknownField(path []any, key string) string {
	where := l.describe(path)
	if len(path) == 0 {
		where = "the top level"
	}
	msg := fmt.Sprintf("field %q not found in %s", key, where)
	if valid := fieldsAt(path); len(valid) > 0 {
		msg += " (valid fields: " + strings.Join(valid, ", ") + ")"
	}
	return msg
}

// decodeError rewrites the decoder's errors so that each names the file, the
// line and the path of the offending field. Every error but one parser
// failure carries its line; the first maxReported by line are placed in the
// tree with one walk, so the cost is linear however many there are.
func (l *locator) decodeError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return yamlSyntaxError(l.file, err)
	}
	type decErr struct {
		line int // 0 when the decoder gave none
		msg  string
	}
	errs := make([]decErr, len(te.Errors))
	for i, e := range te.Errors {
		line, msg := cutLine(e)
		errs[i] = decErr{line, msg}
	}
	slices.SortStableFunc(errs, func(a, b decErr) int { return a.line - b.line })
	errs = errs[:min(len(errs), maxReported)]
	lines := make(map[int]bool, len(errs))
	for _, e := range errs {
		lines[e.line] = true
	}
	hits := l.nodesAt(lines)
	used := map[*yaml.Node]bool{}
	shown := make([]string, 0, len(errs))
	for _, e := range errs {
		if e.line == 0 {
			shown = append(shown, fmt.Sprintf("%s: %s", l.file, oneLine(e.msg)))
			continue
		}
		shown = append(shown, fmt.Sprintf("%s:%d: %s", l.file, e.line, oneLine(l.placeDecode(e.line, e.msg, hits[e.line], used))))
	}
	return l.summary(shown, len(te.Errors))
}

// cutLine splits the decoder's "line N: msg" into N and msg; an error
// without that prefix has line 0.
func cutLine(e string) (int, string) {
	rest, ok := strings.CutPrefix(e, "line ")
	if !ok {
		return 0, e
	}
	digits, msg, ok := strings.Cut(rest, ": ")
	n, err := strconv.Atoi(digits)
	if !ok || err != nil || n <= 0 {
		return 0, e
	}
	return n, msg
}

// placeDecode words one decoder error found at line, given the nodes on
// that line; used holds the nodes already named by a duration error.
func (l *locator) placeDecode(line int, msg string, hits []nodeHit, used map[*yaml.Node]bool) string {
	if mm := unknownFieldRe.FindStringSubmatch(msg); mm != nil {
		path, ok := keyAt(hits, line, mm[1])
		if !ok {
			return fmt.Sprintf("field %q not found", mm[1])
		}
		return l.unknownField(path, mm[1])
	}
	if mm := fieldTwiceRe.FindStringSubmatch(msg); mm != nil {
		path, _ := keyAt(hits, line, mm[1])
		if len(path) == 0 {
			return fmt.Sprintf("field %q is set twice", mm[1])
		}
		return fmt.Sprintf("%s: field %q is set twice", l.describe(path), mm[1])
	}
	if mm := dupKeyRe.FindStringSubmatch(msg); mm != nil {
		key, _ := strconv.Unquote(mm[1])
		path, _ := keyAt(hits, line, key)
		return fmt.Sprintf("%s: key %s is set twice (first at line %s)", l.describe(path), mm[1], mm[2])
	}
	if mm := mismatchRe.FindStringSubmatch(msg); mm != nil {
		n, path := l.valueAt(hits, line, mm[1], mm[2])
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
		return msg
	}
	if rest, ok := strings.CutPrefix(msg, durationErrPrefix); ok {
		q, err := strconv.QuotedPrefix(rest)
		val, _ := strconv.Unquote(q)
		if err == nil {
			// The same bad value twice on one line names each node once.
			if n, path := l.valueAt(unused(hits, used), line, "!!str", val); n != nil {
				used[n] = true
				if len(path) > 0 {
					return l.describe(path) + ": " + msg
				}
			}
		}
	}
	return msg
}

// unused returns the hits whose node is not in used.
func unused(hits []nodeHit, used map[*yaml.Node]bool) []nodeHit {
	out := make([]nodeHit, 0, len(hits))
	for _, h := range hits {
		if !used[h.node] {
			out = append(out, h)
		}
	}
	return out
}

// nodeHit is a node in value position (a mapping value or sequence item)
// with its key (nil for an item) and its path.
type nodeHit struct {
	key, node *yaml.Node
	path      []any
}

// nodesAt walks the tree once, without following aliases, and returns the
// nodes in value position whose own line or key's line is in lines, in
// document order.
func (l *locator) nodesAt(lines map[int]bool) map[int][]nodeHit {
	hits := map[int][]nodeHit{}
	doc := l.doc()
	if doc == nil || len(lines) == 0 {
		return hits
	}
	record := func(k, n *yaml.Node, path []any) {
		h := nodeHit{key: k, node: n, path: slices.Clone(path)}
		if lines[n.Line] {
			hits[n.Line] = append(hits[n.Line], h)
		}
		if k != nil && k.Line != n.Line && lines[k.Line] {
			hits[k.Line] = append(hits[k.Line], h)
		}
	}
	var visit func(n *yaml.Node, path []any)
	visit = func(n *yaml.Node, path []any) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := append(path, k.Value)
				if lines[k.Line] || lines[v.Line] {
					record(k, v, p)
				}
				visit(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := append(path, i)
				if lines[c.Line] {
					record(nil, c, p)
				}
				visit(c, p)
			}
		}
	}
	visit(doc, make([]any, 0, maxNestingDepth))
	return hits
}

// keyAt returns the path of the mapping holding key at line, and whether
// it was found.
func keyAt(hits []nodeHit, line int, key string) ([]any, bool) {
	for _, h := range hits {
		if h.key != nil && h.key.Line == line && h.key.Value == key {
			return h.path[:len(h.path)-1], true
		}
	}
	return nil, false
}

// valueAt returns the first node at line that fits a decoder message about
// a value of the given tag (and, for scalars, the value as the decoder
// quoted it, cut to a prefix and "..."), and its path. The document node
// itself is tried last.
func (l *locator) valueAt(hits []nodeHit, line int, tag, quoted string) (*yaml.Node, []any) {
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
	for _, h := range hits {
		if fits(h.node) {
			return h.node, h.path
		}
	}
	if doc := l.doc(); doc != nil && fits(doc) {
		return doc, nil
	}
	return nil, nil
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
