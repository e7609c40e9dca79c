package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDiscoveryKeysValid(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "fleet.yml")
	cfg, err := Parse([]byte(`
host_sets:
  - name: web
    labels: {dc: ""}
    file_sd: [sd/*.json, /abs/x.yml]
    http_sd:
      - url: https://cmdb.example/sd
        bearer_token_file: token
        tls_config: {ca_file: ca.pem, insecure_skip_verify: false}
        proxy_url: http://proxy.example:3128
        http_headers: {X-Team: {values: [a]}}
      - url: http://127.0.0.1:9/sd
        refresh_interval: 2s
    relabel_configs:
      - {source_labels: [__meta_url], target_label: dc}
      - {regex: 'Tmp.*', action: LabelDrop}
    probes: {icmp: }
`), file)
	if err != nil {
		t.Fatal(err)
	}
	hs := cfg.HostSets[0]
	if diff := cmp.Diff([]string{filepath.Join(dir, "sd/*.json"), "/abs/x.yml"}, hs.FileSD); diff != "" {
		t.Errorf("file_sd (-want +got):\n%s", diff)
	}
	if hs.FileSDRefreshInterval.D() != DefaultFileSDRefreshInterval {
		t.Errorf("file_sd_refresh_interval = %v", hs.FileSDRefreshInterval)
	}
	h0, h1 := hs.HTTPSD[0], hs.HTTPSD[1]
	if h0.RefreshInterval.D() != time.Minute || h0.Timeout.D() != 10*time.Second {
		t.Errorf("http_sd[0] refresh %v timeout %v, want the defaults", h0.RefreshInterval, h0.Timeout)
	}
	if h1.Timeout.D() != 2*time.Second {
		t.Errorf("http_sd[1] timeout = %v, want the refresh interval 2s", h1.Timeout)
	}
	if !h0.HTTPClientConfig.FollowRedirects || !h0.HTTPClientConfig.EnableHTTP2 {
		t.Error("the prometheus/common client defaults were not applied")
	}
	// Validate turns bearer_token_file into authorization.credentials_file.
	if a := h0.HTTPClientConfig.Authorization; a == nil || a.CredentialsFile != filepath.Join(dir, "token") {
		got := ""
		if a != nil {
			got = a.CredentialsFile
		}
		t.Errorf("bearer_token_file = %q, want it resolved against the config's directory", got)
	}
	if got := h0.HTTPClientConfig.TLSConfig.CAFile; got != filepath.Join(dir, "ca.pem") {
		t.Errorf("tls_config.ca_file = %q", got)
	}
	r := hs.RelabelConfigs
	if r[0].Action != RelabelReplace || r[0].Separator != ";" || r[0].Replacement != "$1" || r[0].Regex.Source != "(.*)" {
		t.Errorf("relabel defaults not applied: %+v", r[0])
	}
	if r[1].Action != RelabelLabelDrop {
		t.Errorf("action = %q, want it lowercased", r[1].Action)
	}
}

func TestDiscoveryKeysInvalid(t *testing.T) {
	const head = "host_sets:\n  - name: web\n    probes: {icmp: }\n"
	tests := []struct {
		name, body, want string
		line             int
	}{
		{"no hosts and no source", "    labels: {}\n", `hosts: at least one host is required, or a discovery source`, 2},
		{"empty glob", "    file_sd: ['']\n", `file_sd[0]: file_sd pattern is empty`, 4},
		{"bad glob", "    file_sd: ['a[.json']\n", `is not a valid glob`, 4},
		{"glob without a format", "    file_sd: ['targets/*']\n", `must end in .json, .yml or .yaml`, 4},
		{"tilde", "    file_sd: ['~/x.json']\n", `starts with '~'`, 4},
		{"glob twice", "    file_sd: [a.json, a.json]\n", `file_sd[1]: file_sd pattern`, 4},
		{"refresh too short", "    file_sd: [a.json]\n    file_sd_refresh_interval: 10ms\n", `file_sd_refresh_interval must be at least 1s`, 5},
		{"no url", "    http_sd: [{refresh_interval: 5s}]\n", `http_sd[0].url: url is required`, 4},
		{"ftp url", "    http_sd: [{url: 'ftp://x/sd'}]\n", `must use http or https`, 4},
		{"timeout over refresh", "    http_sd:\n      - url: http://x/sd\n        refresh_interval: 5s\n        timeout: 6s\n", `timeout 6s exceeds the refresh_interval 5s`, 7},
		{"misspelt client key", "    http_sd:\n      - url: http://x/sd\n        basic_auht: {username: a}\n", `basic_auht`, 6},
		{"misspelt tls key", "    http_sd:\n      - url: http://x/sd\n        tls_config: {ca_fil: x}\n", `ca_fil`, 6},
		{"two auth methods", "    http_sd:\n      - url: http://x/sd\n        basic_auth: {username: a, password: b}\n        bearer_token: c\n", `at most one of basic_auth`, 5},
		{"relabel without a source", "    hosts: [a]\n    relabel_configs: [{target_label: x}]\n", `relabel_configs apply to discovered targets only`, 5},
		{"bad regex", "    file_sd: [a.json]\n    relabel_configs: [{regex: '(', target_label: x}]\n", `invalid regex "("`, 5},
		{"unknown action", "    file_sd: [a.json]\n    relabel_configs: [{action: rename}]\n", `unknown relabel action "rename"`, 5},
		{"replace without target", "    file_sd: [a.json]\n    relabel_configs: [{source_labels: [a]}]\n", `the replace action requires target_label`, 5},
		{"hashmod without modulus", "    file_sd: [a.json]\n    relabel_configs: [{action: hashmod, target_label: s}]\n", `requires a modulus above 0`, 5},
		{"labeldrop with a target", "    file_sd: [a.json]\n    relabel_configs: [{action: labeldrop, regex: x, target_label: s}]\n", `target_label cannot be set for the labeldrop action`, 5},
		{"bad source label", "    file_sd: [a.json]\n    relabel_configs: [{source_labels: ['a-b'], target_label: s}]\n", `source label "a-b" is invalid`, 5},
		{"misspelt relabel key", "    file_sd: [a.json]\n    relabel_configs: [{target: s}]\n", `target`, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(head+tc.body), "t.yml")
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", head+tc.body)
			}
			l, n := errorLine(t, err, "t.yml", tc.want)
			if n != tc.line {
				t.Errorf("error %q at line %d, want %d", l, n, tc.line)
			}
			if !strings.HasPrefix(l, "t.yml:") {
				t.Errorf("error %q does not name the file", l)
			}
		})
	}
}

func TestTargetsWithDiscovered(t *testing.T) {
	cfg, err := Parse([]byte(`
global: {max_targets_per_set: 6}
host_sets:
  - name: web
    hosts: ["web1:22"]
    labels: {dc: "fra"}
    file_sd: [a.json]
    probes: {icmp: , tcp: }
`), "")
	if err != nil {
		t.Fatal(err)
	}
	ams := map[string]string{"dc": "ams"}
	base, _, err := cfg.Targets()
	if err != nil {
		t.Fatal(err)
	}
	targets, warnings, err := cfg.TargetsWith(map[string][]DiscoveredHost{"web": {
		{Entry: "WEB1:22"},
		{Entry: "10.0.0.[1-2]:22", Labels: ams},
		{Entry: "db:22", Labels: map[string]string{"dc": "fra"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tg := range targets {
		got = append(got, tg.Host+"/"+tg.Probe+"/"+tg.Labels["dc"])
	}
	want := []string{
		"web1:22/icmp/fra", "web1:22/tcp/fra",
		"10.0.0.1:22/icmp/ams", "10.0.0.1:22/tcp/ams", "10.0.0.2:22/icmp/ams", "10.0.0.2:22/tcp/ams",
		"db:22/icmp/fra", "db:22/tcp/fra",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `discovered entry "WEB1:22": 1 duplicate host(s) dropped`) {
		t.Errorf("warnings = %q, want the duplicate of web1:22", warnings)
	}
	// A static host's fingerprint does not change when discovery adds
	// hosts; a discovered host with the set's own labels fingerprints
	// like a static one would, one with other labels differently.
	if base[0].Fingerprint != targets[0].Fingerprint {
		t.Error("the static host's fingerprint changed")
	}
	again, _, _ := cfg.TargetsWith(map[string][]DiscoveredHost{"web": {{Entry: "10.0.0.1:22", Labels: map[string]string{"dc": "zrh"}}}})
	if again[2].Fingerprint == targets[2].Fingerprint {
		t.Error("a label change of a discovered host left its fingerprint alone")
	}
	// Hosts and discovered hosts share max_targets_per_set.
	_, _, err = cfg.TargetsWith(map[string][]DiscoveredHost{"web": {{Entry: "10.0.0.0/29"}}})
	if err == nil || !strings.Contains(err.Error(), "max_targets_per_set (6)") {
		t.Errorf("err = %v, want the cap", err)
	}
	if n, err := cfg.CheckDiscovered("web", []DiscoveredHost{{Entry: "10.0.0.[1-5]:22"}}, 0); err != nil || n != 5 {
		t.Errorf("CheckDiscovered = %d, %v; want 5 hosts", n, err)
	}
	if _, err := cfg.CheckDiscovered("web", []DiscoveredHost{{Entry: "10.0.0.[1-5]:22"}}, 1); err == nil {
		t.Error("CheckDiscovered ignored the other sources' hosts")
	}
	if _, err := cfg.CheckDiscovered("web", []DiscoveredHost{{Entry: "nope"}}, 0); err == nil {
		t.Error("CheckDiscovered accepted a host without the port tcp needs")
	}
}
