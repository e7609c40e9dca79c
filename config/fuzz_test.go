package config

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, every error
// line must name the file, and a config it accepts must expand within its
// caps.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.yml"))
	seeds = append(seeds, filepath.Join("..", "config.example.yml"), "default.yml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("host_sets:\n- name: a\n  hosts: ['10.0.0.[1-3]:22', '[::1]:22', 2001:db8::/126]\n  probes: {icmp: , tcp: {port: 1}}\n"))
	f.Add([]byte("host_sets:\n- name: d\n  file_sd: [a.json]\n  http_sd: [{url: 'http://127.0.0.1:9/sd', basic_auth: {username: u}, http_headers: {X: {values: [v]}}, tls_config: {insecure_skip_verify: true}, proxy_url: 'http://127.0.0.1:3128'}]\n  relabel_configs: [{source_labels: [__address__], regex: '(.*):22', target_label: host}]\n  probes: {icmp: }\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("x: &x {a: 1}\ny: {<<: *x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "fuzz.yml")
		if err != nil {
			if cfg != nil {
				t.Fatal("Parse returned a config with its error")
			}
			for _, l := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(l, "fuzz.yml:") {
					t.Fatalf("error line %q does not name the file", l)
				}
			}
			return
		}
		if len(cfg.Hash) != 64 || cfg.Filename != "fuzz.yml" {
			t.Fatalf("Hash %q Filename %q", cfg.Hash, cfg.Filename)
		}
		// Parse decodes from the node tree, which ignores KnownFields; the
		// schema check must be as strict as a KnownFields decoder.
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		var strict Config
		if err := dec.Decode(&strict); err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("Parse accepted what a KnownFields decoder refuses: %v", err)
		}
		// Keep each run cheap: a lower cap may now refuse the config, but
		// only with the cap error.
		capped := cfg.Global.MaxTargetsPerSet > 4096
		if capped {
			cfg.Global.MaxTargetsPerSet = 4096
		}
		targets, _, err := cfg.Targets()
		if err != nil {
			if !capped || !strings.Contains(err.Error(), "max_targets_per_set") {
				t.Fatalf("Targets of a valid config: %v", err)
			}
			return
		}
		perSet := map[string]int{}
		for _, tg := range targets {
			perSet[tg.Set]++
			if tg.Fingerprint == "" || tg.Host == "" || tg.Name == "" || tg.Timeout <= 0 || tg.Timeout > tg.Interval {
				t.Fatalf("bad target %+v", *tg)
			}
		}
		for set, n := range perSet {
			if n > cfg.Global.MaxTargetsPerSet*len(ProbeTypes()) {
				t.Fatalf("set %q has %d targets, over the cap %d", set, n, cfg.Global.MaxTargetsPerSet)
			}
		}
	})
}

// FuzzExpand expands one arbitrary host entry: it must never panic, respect
// the cap, agree with its own count, and produce host labels that parse back
// to themselves.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{
		"db1.example.com", "192.0.2.1", "2001:db8::1", "db:22", "[2001:db8::1]:22", "[::1]",
		"web[001-120].dc1", "r[1-2]-[01-03]", "10.0.0.0/24", "2001:db8::/120", "10.0.0.[250-260]",
		"fe80::1%eth0", "::ffff:10.0.0.1", "a[0-999999999999999999][0-9]", "::/0", "[1-2]", "[::1]:[22-23]",
	} {
		f.Add(s)
	}
	const limit = 256
	f.Fuzz(func(t *testing.T, entry string) {
		hosts, err := expandEntry(entry, limit)
		if err != nil {
			return
		}
		if len(hosts) > limit {
			t.Fatalf("%q expanded to %d hosts, over the cap %d", entry, len(hosts), limit)
		}
		e, err := parseEntry(entry)
		if err != nil {
			t.Fatalf("parseEntry(%q) failed after expandEntry succeeded: %v", entry, err)
		}
		if e.count != uint64(len(hosts)) {
			t.Fatalf("%q: count %d but expanded to %d", entry, e.count, len(hosts))
		}
		for _, a := range hosts {
			if a.name == "" || a.host == "" || a.port < 0 || a.port > 65535 {
				t.Fatalf("%q: bad host %+v", entry, a)
			}
			again, err := parseHost(a.host)
			if err != nil {
				t.Fatalf("%q: host label %q does not parse: %v", entry, a.host, err)
			}
			if again != a {
				t.Fatalf("%q: host label %q parses to %+v, want %+v", entry, a.host, again, a)
			}
		}
	})
}
