package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"go.yaml.in/yaml/v3"
)

// Defaults of the discovery keys of a host set.
const (
	// DefaultFileSDRefreshInterval is file_sd_refresh_interval's default,
	// Prometheus' file_sd refresh_interval default: the files are also
	// read whenever fsnotify reports a change.
	DefaultFileSDRefreshInterval = 5 * time.Minute
	// DefaultHTTPSDRefreshInterval is http_sd.refresh_interval's default,
	// as in Prometheus.
	DefaultHTTPSDRefreshInterval = 60 * time.Second
	// DefaultHTTPSDTimeout is http_sd.timeout's default. An inherited
	// timeout is clamped to the refresh interval.
	DefaultHTTPSDTimeout = 10 * time.Second
)

// HTTPSD is one Prometheus http_sd endpoint: a URL answering a JSON list
// of target groups, fetched every RefreshInterval with the HTTP client
// settings of prometheus/common (basic auth, authorization, bearer token
// file, OAuth 2, TLS, proxy, headers).
type HTTPSD struct {
	URL string `yaml:"url"`
	// RefreshInterval is the time between two fetches.
	RefreshInterval Duration `yaml:"refresh_interval"`
	// Timeout bounds one fetch, from connecting to the end of the body.
	Timeout Duration `yaml:"timeout"`
	// HTTPClientConfig holds the client settings, inline as in
	// Prometheus' http_sd_configs.
	HTTPClientConfig commoncfg.HTTPClientConfig `yaml:",inline"`
}

// UnmarshalYAML applies the http_sd defaults, then decodes strictly. An
// inline struct's own UnmarshalYAML is not called, so the client defaults
// (follow_redirects and enable_http2 on) are applied here.
func (h *HTTPSD) UnmarshalYAML(unmarshal func(any) error) error {
	*h = HTTPSD{
		RefreshInterval:  Duration(DefaultHTTPSDRefreshInterval),
		HTTPClientConfig: commoncfg.DefaultHTTPClientConfig,
	}
	type plain HTTPSD
	return unmarshal((*plain)(h))
}

// Relabel actions, with Prometheus' names and meanings.
const (
	RelabelReplace   = "replace"
	RelabelKeep      = "keep"
	RelabelDrop      = "drop"
	RelabelKeepEqual = "keepequal"
	RelabelDropEqual = "dropequal"
	RelabelHashMod   = "hashmod"
	RelabelLabelMap  = "labelmap"
	RelabelLabelDrop = "labeldrop"
	RelabelLabelKeep = "labelkeep"
	RelabelLowercase = "lowercase"
	RelabelUppercase = "uppercase"
)

// Defaults of a relabel config, as in Prometheus.
const (
	DefaultRelabelSeparator   = ";"
	DefaultRelabelRegex       = "(.*)"
	DefaultRelabelReplacement = "$1"
)

// RelabelConfig is one step of a set's relabel_configs, with Prometheus'
// fields, defaults and semantics.
type RelabelConfig struct {
	SourceLabels []string `yaml:"source_labels,flow"`
	Separator    string   `yaml:"separator"`
	Regex        Regexp   `yaml:"regex"`
	Modulus      uint64   `yaml:"modulus"`
	TargetLabel  string   `yaml:"target_label"`
	Replacement  string   `yaml:"replacement"`
	Action       string   `yaml:"action"`
}

func defaultRelabelConfig() RelabelConfig {
	return RelabelConfig{
		Separator:   DefaultRelabelSeparator,
		Regex:       mustRegexp(DefaultRelabelRegex),
		Replacement: DefaultRelabelReplacement,
		Action:      RelabelReplace,
	}
}

// UnmarshalYAML applies the relabel defaults, then decodes strictly.
func (r *RelabelConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*r = defaultRelabelConfig()
	type plain RelabelConfig
	return unmarshal((*plain)(r))
}

// Regexp is a relabel regex: anchored at both ends, "." matching newlines
// too, as in Prometheus.
type Regexp struct {
	*regexp.Regexp
	// Source is the expression as written.
	Source string
}

// NewRegexp compiles s the way relabel_configs does.
func NewRegexp(s string) (Regexp, error) {
	re, err := regexp.Compile("^(?s:" + s + ")$")
	return Regexp{Regexp: re, Source: s}, err
}

func mustRegexp(s string) Regexp {
	re, err := NewRegexp(s)
	if err != nil {
		panic(err)
	}
	return re
}

// UnmarshalYAML compiles the expression. Like Duration's, it takes the
// node for the line its error reports.
func (re *Regexp) UnmarshalYAML(n *yaml.Node) error {
	s := n.Value
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!binary" {
		if err := n.Decode(&s); err != nil {
			return err
		}
	}
	r, err := NewRegexp(s)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid regex %q: %v", n.Line, s, err)}}
	}
	*re = r
	return nil
}

// MarshalYAML writes the expression as written.
func (re Regexp) MarshalYAML() (any, error) { return re.Source, nil }

// HasDiscovery reports whether the set has any discovery source.
func (hs *HostSet) HasDiscovery() bool { return len(hs.FileSD) > 0 || len(hs.HTTPSD) > 0 }

// applyDiscoveryDefaults fills in a set's discovery defaults and resolves
// its file paths against baseDir.
func (hs *HostSet) applyDiscoveryDefaults(baseDir string) {
	if hs.FileSDRefreshInterval == 0 && len(hs.FileSD) > 0 {
		hs.FileSDRefreshInterval = Duration(DefaultFileSDRefreshInterval)
	}
	for i, g := range hs.FileSD {
		hs.FileSD[i] = resolvePath(baseDir, g)
	}
	for i := range hs.HTTPSD {
		h := &hs.HTTPSD[i]
		if h.RefreshInterval == 0 {
			h.RefreshInterval = Duration(DefaultHTTPSDRefreshInterval)
		}
		if h.Timeout == 0 {
			h.Timeout = min(Duration(DefaultHTTPSDTimeout), h.RefreshInterval)
		}
		h.HTTPClientConfig.SetDirectory(baseDir)
	}
	for i := range hs.RelabelConfigs {
		r := &hs.RelabelConfigs[i]
		r.Action = strings.ToLower(r.Action)
		if r.Regex.Regexp == nil {
			// A hand-built config.
			r.Regex = mustRegexp(DefaultRelabelRegex)
		}
	}
}

// validateDiscovery checks a set's file_sd, http_sd and relabel_configs.
func (v *validator) validateDiscovery(sp []any, hs *HostSet) {
	seen := map[string]int{}
	for i, g := range hs.FileSD {
		p := at(sp, "file_sd", i)
		switch {
		case g == "":
			v.add(p, "file_sd pattern is empty")
			continue
		case strings.HasPrefix(g, "~"):
			v.add(p, "path %q starts with '~', which is not expanded: use an absolute path or one relative to the config file", g)
			continue
		}
		if _, err := filepath.Match(g, ""); err != nil {
			v.add(p, "file_sd pattern %q is not a valid glob: %v", g, err)
			continue
		}
		if ext := filepath.Ext(g); ext != ".json" && ext != ".yml" && ext != ".yaml" {
			v.add(p, "file_sd pattern %q must end in .json, .yml or .yaml: the extension decides the format", g)
		}
		if first, dup := seen[g]; dup {
			v.add(p, "file_sd pattern %q is already listed as file_sd[%d]", g, first)
		} else {
			seen[g] = i
		}
	}
	if len(hs.FileSD) > 0 {
		v.durationRange(at(sp, "file_sd_refresh_interval"), "file_sd_refresh_interval", hs.FileSDRefreshInterval, MinInterval, MaxInterval)
	}
	urls := map[string]int{}
	for i := range hs.HTTPSD {
		h := &hs.HTTPSD[i]
		p := at(sp, "http_sd", i)
		v.httpSDURL(at(p, "url"), h.URL)
		if first, dup := urls[h.URL]; dup && h.URL != "" {
			v.add(at(p, "url"), "url %q is already listed as http_sd[%d]", h.URL, first)
		} else {
			urls[h.URL] = i
		}
		if v.durationRange(at(p, "refresh_interval"), "refresh_interval", h.RefreshInterval, MinInterval, MaxInterval) &&
			v.durationRange(at(p, "timeout"), "timeout", h.Timeout, MinTimeout, MaxInterval) &&
			h.Timeout > h.RefreshInterval {
			v.add(at(p, "timeout"), "timeout %s exceeds the refresh_interval %s", h.Timeout, h.RefreshInterval)
		}
		if err := h.HTTPClientConfig.Validate(); err != nil {
			v.add(p, "%v", err)
		}
	}
	if len(hs.RelabelConfigs) > 0 && !hs.HasDiscovery() {
		v.add(at(sp, "relabel_configs"), "relabel_configs apply to discovered targets only: add file_sd or http_sd, or remove them")
	}
	for i := range hs.RelabelConfigs {
		v.relabel(at(sp, "relabel_configs", i), &hs.RelabelConfigs[i])
	}
}

// httpSDURL checks an http_sd url: absolute, http or https, with a host.
func (v *validator) httpSDURL(p []any, s string) {
	if s == "" {
		v.add(p, "url is required")
		return
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		v.add(p, "url %q is invalid: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		v.add(p, "url %q must use http or https", s)
	case u.Host == "":
		v.add(p, "url %q has no host", s)
	}
}

// relabel checks one relabel config by Prometheus' rules.
func (v *validator) relabel(p []any, r *RelabelConfig) {
	for j, name := range r.SourceLabels {
		if !isLabelName(name) {
			v.add(at(p, "source_labels", j), "source label %q is invalid: want [a-zA-Z_][a-zA-Z0-9_]*", name)
		}
	}
	def := defaultRelabelConfig()
	onlyDefaults := func(fields ...string) bool {
		for _, f := range fields {
			var same bool
			switch f {
			case "separator":
				same = r.Separator == def.Separator
			case "regex":
				same = r.Regex.Source == def.Regex.Source
			case "modulus":
				same = r.Modulus == 0
			case "replacement":
				same = r.Replacement == def.Replacement
			case "target_label":
				same = r.TargetLabel == ""
			case "source_labels":
				same = r.SourceLabels == nil
			}
			if !same {
				v.add(at(p, f), "%s cannot be set for the %s action", f, r.Action)
				return false
			}
		}
		return true
	}
	needTarget := func() bool {
		if r.TargetLabel == "" {
			v.add(at(p, "target_label"), "the %s action requires target_label", r.Action)
			return false
		}
		return true
	}
	switch r.Action {
	case RelabelReplace:
		if needTarget() && !templatedLabelName(r.TargetLabel) {
			v.add(at(p, "target_label"), "target_label %q is invalid for the replace action", r.TargetLabel)
		}
	case RelabelHashMod:
		if r.Modulus == 0 {
			v.add(at(p, "modulus"), "the hashmod action requires a modulus above 0")
		}
		if needTarget() && !isLabelName(r.TargetLabel) {
			v.add(at(p, "target_label"), "target_label %q is invalid for the hashmod action", r.TargetLabel)
		}
	case RelabelLowercase, RelabelUppercase:
		if needTarget() && !isLabelName(r.TargetLabel) {
			v.add(at(p, "target_label"), "target_label %q is invalid for the %s action", r.TargetLabel, r.Action)
		}
		onlyDefaults("replacement")
	case RelabelKeepEqual, RelabelDropEqual:
		if needTarget() && !isLabelName(r.TargetLabel) {
			v.add(at(p, "target_label"), "target_label %q is invalid for the %s action", r.TargetLabel, r.Action)
		}
		onlyDefaults("regex", "modulus", "separator", "replacement")
	case RelabelLabelMap:
		if !templatedLabelName(r.Replacement) {
			v.add(at(p, "replacement"), "replacement %q is invalid for the labelmap action", r.Replacement)
		}
	case RelabelLabelDrop, RelabelLabelKeep:
		onlyDefaults("source_labels", "target_label", "modulus", "separator", "replacement")
	case RelabelKeep, RelabelDrop:
	default:
		v.add(at(p, "action"), "unknown relabel action %q: want one of replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase", r.Action)
	}
}

// labelTemplate is a label name that may hold $1, ${1} or $name references
// to regex groups, as Prometheus accepts for target_label and labelmap's
// replacement.
var labelTemplate = regexp.MustCompile(`^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`)

func templatedLabelName(s string) bool {
	if !strings.Contains(s, "$") {
		return isLabelName(s)
	}
	return labelTemplate.MatchString(s)
}
