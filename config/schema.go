package config

import (
	"reflect"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// maxMappingKeys bounds the keys of any mapping in a config. The schema
// never needs more (its widest type has 13 fields, labels are capped at
// MaxLabelsPerSet), and yaml.v3 compares every key of a mapping with every
// other before decoding it: a mapping of 100,000 keys would take seconds.
const maxMappingKeys = MaxLabelsPerSet

var durationType = reflect.TypeFor[Duration]()

// schemaCheck is the pass over the node tree that runs before decoding. It
// reports what the decoder would find slowly or not at all: unknown and
// repeated keys (with their exact place, in time linear in the input),
// oversized mappings, too many labels, and bad or zero durations. When it
// finds nothing, every mapping the decoder will see is small.
type schemaCheck struct {
	errs []fieldError
	// seen holds the (node, type) pairs reached through an alias, so that a
	// node shared by many aliases is checked once per type rather than once
	// per path to it.
	seen map[schemaVisit]bool
	// fields caches the YAML field names of each struct type.
	fields map[reflect.Type]map[string]reflect.Type
}

type schemaVisit struct {
	n *yaml.Node
	t reflect.Type
}

// checkSchema checks the document root against the Config type.
func checkSchema(root *yaml.Node) []fieldError {
	s := &schemaCheck{
		seen:   map[schemaVisit]bool{},
		fields: map[reflect.Type]map[string]reflect.Type{},
	}
	doc := root
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		doc = doc.Content[0]
	}
	s.check(doc, reflect.TypeFor[Config](), make([]any, 0, maxNestingDepth))
	return s.errs
}

// add records a problem; path is copied because callers reuse its array.
func (s *schemaCheck) add(line int, path []any, format string, args ...any) {
	s.errs = append(s.errs, fieldError{path: slices.Clone(path), line: line, format: format, args: args})
}

// check checks node n, found at path, against type t. path's backing array
// is shared down the recursion: elements are only ever appended.
func (s *schemaCheck) check(n *yaml.Node, t reflect.Type, path []any) {
	if n == nil {
		return
	}
	if n.Kind == yaml.AliasNode {
		n = deref(n)
		if n == nil || s.seen[schemaVisit{n, t}] {
			return
		}
		s.seen[schemaVisit{n, t}] = true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		s.structKeys(n, t, path)
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		s.labels(n, path)
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			s.check(c, t.Elem(), append(path, i))
		}
	case t == durationType && n.Kind == yaml.ScalarNode:
		// Durations are checked here rather than by the decoder so that a
		// file full of bad ones is refused without decoding it at all.
		d, err := model.ParseDuration(n.Value)
		if n.ShortTag() == "!!binary" {
			var dd Duration
			err = dd.UnmarshalYAML(n)
			d = model.Duration(dd)
		}
		if err != nil {
			s.add(n.Line, path, durationErrFormat, n.Value)
		} else if d == 0 {
			// Every duration of the schema must be positive, so an
			// explicit zero is a mistake; leaving the key out inherits
			// the default.
			name := "duration"
			if len(path) > 0 {
				name, _ = path[len(path)-1].(string)
			}
			s.add(n.Line, path, "%s must be positive: leave the key out to use the default", name)
		}
	default:
		// A kind the type does not take: the decoder reports the
		// mismatch, after comparing the keys of a mapping pairwise.
		s.sizeGuard(n, path)
	}
}

// structKeys checks the keys of mapping m against struct type t.
func (s *schemaCheck) structKeys(m *yaml.Node, t reflect.Type, path []any) {
	fields := s.fieldsOf(t)
	if fields == nil {
		// An inline map: the decoder checks the values.
		s.labels(m, path)
		return
	}
	var first map[string]*yaml.Node
	if len(m.Content) > 16 {
		first = make(map[string]*yaml.Node, len(m.Content)/2)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			s.sizeGuard(k, path)
			continue
		}
		if isMergeKey(k) {
			s.merge(v, t, path)
			continue
		}
		if prev := firstKey(m, i, k, first); prev != nil {
			s.add(k.Line, path, "key %q is set twice (first at line %d)", k.Value, prev.Line)
			continue
		}
		name, ok := keyName(k)
		if !ok {
			continue // the decoder reports a key that is no string
		}
		ft, ok := fields[name]
		if !ok {
			s.errs = append(s.errs, fieldError{path: slices.Clone(path), line: k.Line, unknown: name})
			continue
		}
		s.check(v, ft, append(path, name))
	}
}

// merge checks the mappings merged into a struct by a "<<" key.
func (s *schemaCheck) merge(v *yaml.Node, t reflect.Type, path []any) {
	var from []*yaml.Node
	switch d := deref(v); {
	case d == nil:
	case d.Kind == yaml.MappingNode:
		from = []*yaml.Node{v}
	case d.Kind == yaml.SequenceNode:
		from = d.Content
	}
	for _, f := range from {
		d := deref(f)
		if d == nil || d.Kind != yaml.MappingNode || s.seen[schemaVisit{d, t}] {
			continue
		}
		s.seen[schemaVisit{d, t}] = true
		s.structKeys(d, t, path)
	}
}

// labels checks a set's labels mapping: its size and repeated names. The
// names themselves are validated after decoding.
func (s *schemaCheck) labels(m *yaml.Node, path []any) {
	if n := len(m.Content) / 2; n > MaxLabelsPerSet {
		s.add(m.Line, path, "%d labels, more than the %d a set may have", n, MaxLabelsPerSet)
	}
	var first map[string]*yaml.Node
	if len(m.Content) > 16 {
		first = make(map[string]*yaml.Node, len(m.Content)/2)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			s.sizeGuard(k, path)
			continue
		}
		if prev := firstKey(m, i, k, first); prev != nil {
			s.add(k.Line, path, "key %q is set twice (first at line %d)", k.Value, prev.Line)
		}
		s.sizeGuard(v, path)
	}
}

// sizeGuard refuses a mapping too large for the decoder to compare its
// keys pairwise, in a place where no mapping of that size can be valid.
func (s *schemaCheck) sizeGuard(n *yaml.Node, path []any) {
	n = deref(n)
	if n != nil && n.Kind == yaml.MappingNode && len(n.Content)/2 > maxMappingKeys {
		s.add(n.Line, path, "unexpected mapping of %d keys", len(n.Content)/2)
	}
}

// firstKey returns the earlier key of m (before index i) equal to k, or
// nil. Small mappings are scanned; first, when non-nil, indexes larger
// ones as the scan goes.
func firstKey(m *yaml.Node, i int, k *yaml.Node, first map[string]*yaml.Node) *yaml.Node {
	if first == nil {
		for j := 0; j < i; j += 2 {
			if p := m.Content[j]; p.Kind == yaml.ScalarNode && p.Value == k.Value {
				return p
			}
		}
		return nil
	}
	if p, ok := first[k.Value]; ok {
		return p
	}
	first[k.Value] = k
	return nil
}

// keyName returns the string a key decodes to: its text, unless a tag such
// as !!binary says otherwise.
func keyName(k *yaml.Node) (string, bool) {
	switch k.ShortTag() {
	case "!!str", "!!int", "!!float", "!!bool", "!!null":
		return k.Value, true
	}
	var name string
	if err := k.Decode(&name); err != nil {
		return "", false
	}
	return name, true
}

// isMergeKey reports whether k is YAML's "<<" merge key.
func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

// fieldsOf returns the YAML field names of struct type t with their types.
func (s *schemaCheck) fieldsOf(t reflect.Type) map[string]reflect.Type {
	if f, ok := s.fields[t]; ok {
		return f
	}
	f := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		sf := t.Field(i)
		if tag := yamlTag(sf); tag != "" {
			f[tag] = sf.Type
			continue
		}
		if !isInline(sf) {
			continue
		}
		// An inline struct's keys are its parent's (the HTTP client
		// settings of http_sd); an inline map takes any key, which the
		// nil map says.
		if sf.Type.Kind() != reflect.Struct {
			f = nil
			break
		}
		for k, ft := range s.fieldsOf(sf.Type) {
			f[k] = ft
		}
	}
	s.fields[t] = f
	return f
}

// isInline reports whether f is a `yaml:",inline"` field.
func isInline(f reflect.StructField) bool {
	_, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return f.IsExported() && slices.Contains(strings.Split(opts, ","), "inline")
}
