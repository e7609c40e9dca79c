package discovery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// MaxSourceBytes caps one file_sd file and one http_sd response body
// (32 MiB): room for the largest set (max_targets_per_set hosts) with a
// few labels each, and a bound on what a broken or hostile source can make
// the exporter read.
const MaxSourceBytes = 32 << 20

// Group is one Prometheus target group: target strings that share labels.
type Group struct {
	Targets []string          `json:"targets" yaml:"targets"`
	Labels  map[string]string `json:"labels" yaml:"labels"`
}

// parseJSON reads a JSON list of target groups (file_sd .json, http_sd).
// Unknown fields are ignored, as Prometheus ignores them.
func parseJSON(data []byte) ([]Group, error) {
	var groups []Group
	if err := json.Unmarshal(data, &groups); err != nil {
		return nil, fmt.Errorf("parse target groups: %w", err)
	}
	return groups, checkGroups(groups)
}

// parseYAML reads a YAML list of target groups (file_sd .yml/.yaml),
// strictly: an unknown key is an error, as in Prometheus.
func parseYAML(data []byte) ([]Group, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var groups []Group
	if err := dec.Decode(&groups); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse target groups: %w", err)
	}
	return groups, checkGroups(groups)
}

// checkGroups refuses label names and values Prometheus would refuse.
func checkGroups(groups []Group) error {
	for i, g := range groups {
		for name, value := range g.Labels {
			if !validLabelName(name) {
				return fmt.Errorf("target group %d: label name %q is invalid", i, name)
			}
			if !utf8.ValidString(value) {
				return fmt.Errorf("target group %d: label %q has a value that is not valid UTF-8", i, name)
			}
		}
		for _, t := range g.Targets {
			if !utf8.ValidString(t) {
				return fmt.Errorf("target group %d: a target is not valid UTF-8", i)
			}
		}
	}
	return nil
}
