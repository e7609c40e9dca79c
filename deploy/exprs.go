package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// RuleFile is the subset of a Prometheus rule file the artefacts use. Fields
// the file does not declare are rejected, so a misspelt key (say
// `anotations`) is an error rather than a silently dropped annotation.
type RuleFile struct {
	Groups []RuleGroup `yaml:"groups"`
}

// RuleGroup is one group of a rule file.
type RuleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval,omitempty"`
	Rules    []Rule `yaml:"rules"`
}

// Rule is one recording rule (Record set) or alerting rule (Alert set).
type Rule struct {
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// LoadRules reads and strictly decodes the Prometheus rule file at path. Every
// rule must have exactly one of record and alert, and an expression.
func LoadRules(path string) (*RuleFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f RuleFile
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, g := range f.Groups {
		for i, r := range g.Rules {
			if (r.Record == "") == (r.Alert == "") {
				return nil, fmt.Errorf("%s: group %q rule %d: exactly one of record and alert must be set", path, g.Name, i)
			}
			if strings.TrimSpace(r.Expr) == "" {
				return nil, fmt.Errorf("%s: group %q rule %q: empty expr", path, g.Name, r.Record+r.Alert)
			}
		}
	}
	return &f, nil
}

// RuleExprs returns the expression of every rule, recording and alerting, in
// the Prometheus rule file at path, in file order.
func RuleExprs(path string) ([]string, error) {
	f, err := LoadRules(path)
	if err != nil {
		return nil, err
	}
	var exprs []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	return exprs, nil
}

// dashboardPanel is the part of a Grafana panel that holds queries. Rows keep
// their children in Panels when collapsed.
type dashboardPanel struct {
	Title   string           `json:"title"`
	Panels  []dashboardPanel `json:"panels"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// DashboardExprs returns the PromQL expression of every query target of the
// Grafana dashboard JSON at path, in panel order, including panels nested in
// rows. Grafana variables ($set, $__rate_interval, ...) are left in place;
// ExpandGrafanaVars replaces them. Template variable queries such as
// label_values(...) are not PromQL and are not returned.
func DashboardExprs(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []dashboardPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var exprs []string
	var walk func([]dashboardPanel) error
	walk = func(ps []dashboardPanel) error {
		for _, p := range ps {
			for _, t := range p.Targets {
				if strings.TrimSpace(t.Expr) == "" {
					return fmt.Errorf("%s: panel %q target %q has no expr", path, p.Title, t.RefID)
				}
				exprs = append(exprs, t.Expr)
			}
			if err := walk(p.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return nil, err
	}
	return exprs, nil
}

// ExpandGrafanaVars replaces the Grafana variables in expr ($name, ${name},
// ${name:format} and [[name]]) with values[name], so that the result is plain
// PromQL. Names must start with a letter or underscore, which leaves regex
// back-references such as "$1" in label_replace alone. A variable missing
// from values is an error, listing every missing name.
func ExpandGrafanaVars(expr string, values map[string]string) (string, error) {
	re := regexp.MustCompile(`\$\{([A-Za-z_]\w*)(?::[^}]*)?\}|\[\[([A-Za-z_]\w*)(?::[^\]]*)?\]\]|\$([A-Za-z_]\w*)`)
	var missing []string
	out := re.ReplaceAllStringFunc(expr, func(m string) string {
		sub := re.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		v, ok := values[name]
		if !ok {
			if !slices.Contains(missing, name) {
				missing = append(missing, name)
			}
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for grafana variable(s) %s in %q", strings.Join(missing, ", "), expr)
	}
	return out, nil
}
