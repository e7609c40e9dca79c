package config

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestYAMLWordings pins the yaml.v3 messages the locator takes apart. If a
// library update rewords one, this fails naming it, instead of users
// silently getting messages without a path.
func TestYAMLWordings(t *testing.T) {
	type twoInts struct {
		A int `yaml:"a"`
		B int `yaml:"b"`
	}
	strict := func(in string) error {
		dec := yaml.NewDecoder(strings.NewReader(in))
		dec.KnownFields(true)
		var v twoInts
		return dec.Decode(&v)
	}
	// entry returns the only TypeError entry of err.
	entry := func(t *testing.T, err error) string {
		t.Helper()
		var te *yaml.TypeError
		if !errors.As(err, &te) || len(te.Errors) != 1 {
			t.Fatalf("want one *yaml.TypeError entry, got %T %v", err, err)
		}
		return te.Errors[0]
	}
	tests := []struct {
		wording string
		got     func(t *testing.T) string
		want    string         // exact text
		re      *regexp.Regexp // the locator's pattern, applied after "line N: "
		groups  []string       // what re must capture
	}{
		{
			wording: "parser error with a line",
			got: func(t *testing.T) string {
				var n yaml.Node
				return yaml.Unmarshal([]byte("a: b\n  c: d\n"), &n).Error()
			},
			want:   "yaml: line 2: mapping values are not allowed in this context",
			re:     syntaxRe,
			groups: []string{"2", "mapping values are not allowed in this context"},
		},
		{
			wording: "unknown field",
			got:     func(t *testing.T) string { return entry(t, strict("a: 1\nx: 2\n")) },
			want:    "line 2: field x not found in type config.twoInts",
			re:      unknownFieldRe,
			groups:  []string{"x"},
		},
		{
			wording: "field set twice",
			got:     func(t *testing.T) string { return entry(t, strict("? !!binary YQ==\n: 1\na: 2\n")) },
			want:    "line 3: field a already set in type config.twoInts",
			re:      fieldTwiceRe,
			groups:  []string{"a"},
		},
		{
			wording: "duplicate mapping key",
			got:     func(t *testing.T) string { return entry(t, strict("a: 1\nb: 2\na: 3\n")) },
			want:    `line 3: mapping key "a" already defined at line 1`,
			re:      dupKeyRe,
			groups:  []string{`"a"`, "1"},
		},
		{
			wording: "scalar of the wrong type",
			got:     func(t *testing.T) string { return entry(t, strict("a: manymanymany\n")) },
			want:    "line 1: cannot unmarshal !!str `manyman...` into int",
			re:      mismatchRe,
			groups:  []string{"!!str", "manyman...", "int"},
		},
		{
			wording: "collection of the wrong kind",
			got:     func(t *testing.T) string { return entry(t, strict("b: [1]\n")) },
			want:    "line 1: cannot unmarshal !!seq into int",
			re:      mismatchRe,
			groups:  []string{"!!seq", "", "int"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.wording, func(t *testing.T) {
			got := tc.got(t)
			if got != tc.want {
				t.Fatalf("yaml.v3 changed the wording of %q:\n got %q\nwant %q", tc.wording, got, tc.want)
			}
			msg := got
			if line, rest := cutLine(got); line > 0 {
				msg = rest
			}
			m := tc.re.FindStringSubmatch(msg)
			if m == nil {
				t.Fatalf("the locator's pattern %s no longer matches yaml.v3's %q wording %q", tc.re, tc.wording, msg)
			}
			if got := m[1:]; fmt.Sprint(got) != fmt.Sprint(tc.groups) {
				t.Errorf("pattern %s captures %q from %q, want %q", tc.re, got, msg, tc.groups)
			}
		})
	}
}

// cpuTime returns the user and system CPU time the process has used so far.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timeBound scales a wall-clock bound for the race detector.
//
// Outside the race detector the bound is twice the goal: these tests tell
// linear from quadratic (the old code took minutes), on a machine shared
// with other test packages; the benchmarks record the actual figures.
func timeBound(d time.Duration) time.Duration {
	if raceEnabled {
		return 10 * d
	}
	return 2 * d
}

// TestErrorsLinearTime feeds configs with 100,000 problems of one kind each.
// The former locator searched the whole tree for every error and took
// minutes on these; each must now be judged well within a second, listing
// the first 20 problems by line and counting the rest.
func TestErrorsLinearTime(t *testing.T) {
	const n = 100_000
	gen := func(head, item string) []byte {
		var b bytes.Buffer
		b.WriteString(head)
		for i := range n {
			if strings.Contains(item, "%") {
				fmt.Fprintf(&b, item, i)
			} else {
				b.WriteString(item)
			}
		}
		return b.Bytes()
	}
	tests := []struct {
		name  string
		data  []byte
		first string // the first line of the error
	}{
		{
			name:  "unknown keys in one mapping",
			data:  gen("global:\n", "  k%d: 1\n"),
			first: `big.yml:2: field "k0" not found in global (valid fields: interval,`,
		},
		{
			name:  "repeated label",
			data:  gen("host_sets:\n- name: a\n  hosts: [a]\n  probes: {icmp: {}}\n  labels:\n", "    l: v%d\n"),
			first: `big.yml:6: host_sets[0] ("a").labels: 100000 labels, more than the 64 a set may have`,
		},
		{
			name:  "bad durations",
			data:  gen("host_sets:\n", "- {interval: 1x}\n"),
			first: `big.yml:2: host_sets[0].interval: invalid duration "1x"`,
		},
		{
			name:  "values of the wrong type",
			data:  gen("host_sets:\n", "- {hosts: 1}\n"),
			first: `big.yml:2: host_sets[0].hosts: want a list of strings, got an integer "1"`,
		},
		{
			name:  "bad host entries",
			data:  gen("host_sets:\n- name: a\n  probes: {icmp: {}}\n  hosts:\n", "  - a!\n"),
			first: `big.yml:5: host_sets[0] ("a").hosts[0]: entry "a!": invalid host name "a!"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.data) > MaxConfigSize {
				t.Fatalf("generated %d bytes, over MaxConfigSize", len(tc.data))
			}
			start, cpu0 := time.Now(), cpuTime(t)
			_, err := Parse(tc.data, "big.yml")
			took, cpu := time.Since(start), cpuTime(t)-cpu0
			t.Logf("%d bytes judged in %v (%v of CPU)", len(tc.data), took, cpu)
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			lines := strings.Split(err.Error(), "\n")
			if !strings.HasPrefix(lines[0], tc.first) {
				t.Errorf("first error line %q, want it to start with %q", lines[0], tc.first)
			}
			if len(lines) != maxReported+1 {
				t.Fatalf("error has %d lines, want %d problems and a count:\n%s", len(lines), maxReported, err)
			}
			for _, l := range lines[:maxReported] {
				if !regexp.MustCompile(`^big\.yml:\d+: `).MatchString(l) {
					t.Errorf("line %q does not name file and line", l)
				}
			}
			if tc.name != "repeated label" {
				if want := fmt.Sprintf("big.yml: and %d more errors", n-maxReported); lines[maxReported] != want {
					t.Errorf("last line %q, want %q", lines[maxReported], want)
				}
			}
			// The old code needed over a minute for each of the first four.
			// The bound is on CPU time: on a shared machine the wall clock
			// also measures the neighbours.
			if bound := timeBound(time.Second); cpu > bound {
				t.Errorf("%d bytes judged with %v of CPU, want under %v", len(tc.data), cpu, bound)
			}
		})
	}
}
