package preflight

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// parse parses a config text for the test.
func parse(t *testing.T, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(text), filepath.Join(t.TempDir(), "fleet.yml"))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return cfg
}

// TestCheckWarnings checks that every kind of warning a start logs comes
// out of Check, in the documented order, and that a clean config has none.
func TestCheckWarnings(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		text string
		opts Options
		want []string // substrings of each warning's String(), in order
	}{
		{
			name: "clean",
			text: "host_sets:\n  - name: a\n    hosts: [127.0.0.1]\n    probes:\n      tcp: {port: 22}\n",
			opts: Options{FDLimit: 1 << 20},
		},
		{
			name: "insecure host keys",
			text: "host_sets:\n  - name: a\n    hosts: [127.0.0.1]\n    probes:\n      ssh:\n        user: u\n        password_file: " +
				filepath.Join(dir, "pw") + "\n        insecure_skip_host_key_verification: true\n        commands: [{name: x, run: x}]\n",
			opts: Options{FDLimit: 1 << 20},
			want: []string{`host set "a": Host key verification is disabled`},
		},
		{
			name: "weak algorithms",
			text: "host_sets:\n  - name: a\n    hosts: [127.0.0.1]\n    probes:\n      ssh:\n        user: u\n        password_file: " +
				filepath.Join(dir, "pw") + "\n        insecure_skip_host_key_verification: true" +
				"\n        algorithms:\n          kex: [\"+diffie-hellman-group14-sha1\"]\n          host_key: [ssh-ed25519, ssh-rsa]\n",
			opts: Options{FDLimit: 1 << 20},
			want: []string{"Host key verification is disabled", `fleet.yml:9: kex diffie-hellman-group14-sha1, host_key ssh-rsa`},
		},
		{
			name: "bastion without host key check, weak algorithms",
			text: "host_sets:\n  - name: a\n    hosts: [127.0.0.1]\n    probes:\n      ssh:\n        user: u\n        password_file: " +
				filepath.Join(dir, "pw") + "\n        known_hosts_file: " + filepath.Join(dir, "kh") +
				"\n        proxy_jump:\n          - host: jump1\n            insecure_skip_host_key_verification: true" +
				"\n            algorithms: {ciphers: [\"+aes128-cbc\"]}\n",
			opts: Options{FDLimit: 1 << 20},
			want: []string{`fleet.yml:9: proxy_jump[0] (jump1)`, `Weak SSH algorithms are enabled for a bastion`},
		},
		{
			name: "capacity",
			text: "global:\n  interval: 1s\n  timeout: 900ms\n  limits:\n    tcp: {rate: 1, burst: 1}\nhost_sets:\n  - name: a\n    hosts: [127.0.0.0/28]\n    probes:\n      tcp: {port: 22}\n",
			opts: Options{FDLimit: 1 << 20},
			want: []string{"Pool limits cannot cover the fleet within one interval"},
		},
		{
			name: "open-files limit",
			text: "host_sets:\n  - name: a\n    hosts: [127.0.0.1]\n    probes:\n      tcp: {port: 22}\n",
			opts: Options{FDLimit: 256, HTTPConnections: 256},
			want: []string{"RLIMIT_NOFILE is 256, but probes in flight, kept SSH connections and --web.max-connections may need 640"},
		},
		{
			name: "open-files limit with unbounded HTTP",
			text: "host_sets:\n  - name: a\n    hosts: [127.0.0.1]\n    probes:\n      tcp: {port: 22}\n",
			opts: Options{FDLimit: 1000},
			want: []string{"may need 1408"},
		},
	}
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kh"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Check(parse(t, tt.text), tt.opts)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			var got []string
			for _, w := range r.Warnings {
				got = append(got, w.String())
			}
			if len(got) != len(tt.want) {
				t.Fatalf("warnings %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("warning %d = %q, want it to contain %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestFDDemand pins the estimate: TCP and SSH slots bounded by the global
// limit, kept SSH connections, HTTP clients and the baseline.
func TestFDDemand(t *testing.T) {
	cfg := parse(t, `
global:
  concurrency: 100
  limits:
    tcp: {concurrency: 80}
    ssh: {concurrency: 40}
host_sets:
  - name: a
    hosts: [127.0.0.1, 127.0.0.2, 127.0.0.3]
    probes:
      ssh:
        user: u
        insecure_skip_host_key_verification: true
        reuse_connections: true
        password_file: /dev/null
        commands: [{name: x, run: x}]
`)
	targets, _, err := cfg.Targets()
	if err != nil {
		t.Fatal(err)
	}
	// min(100, 80+40) + 3 kept + 10 HTTP + baseline.
	if diff := cmp.Diff(100+3+10+fdBaseline, fdDemand(cfg, targets, 10)); diff != "" {
		t.Errorf("fdDemand (-want +got):\n%s", diff)
	}
}

// TestCheckErrors checks that a config whose files are unusable fails.
func TestCheckErrors(t *testing.T) {
	cfg := parse(t, "host_sets:\n  - name: a\n    hosts: [127.0.0.1]\n    probes:\n      ssh:\n        user: u\n        private_key_file: /nonexistent/key\n        insecure_skip_host_key_verification: true\n        commands: [{name: x, run: x}]\n")
	_, err := Check(cfg, Options{FDLimit: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/key") || !strings.Contains(err.Error(), `host set "a"`) {
		t.Fatalf("Check = %v, want an error naming the set and the key file", err)
	}
}

// TestCheckCountsDiscoveredHosts checks that discovered hosts join the
// target list and the capacity estimate.
func TestCheckCountsDiscoveredHosts(t *testing.T) {
	cfg := parse(t, "global:\n  interval: 1s\n  timeout: 900ms\n  limits:\n    tcp: {rate: 1, burst: 1}\n"+
		"host_sets:\n  - name: a\n    file_sd: [sd.json]\n    probes:\n      tcp: {port: 22}\n")
	r, err := Check(cfg, Options{FDLimit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Targets) != 0 || len(r.Warnings) != 0 {
		t.Fatalf("without discovered hosts: %d targets, warnings %v", len(r.Targets), r.Warnings)
	}
	r, err = Check(cfg, Options{FDLimit: 1 << 20, Discovered: map[string][]config.DiscoveredHost{"a": {{Entry: "127.0.0.0/28"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Targets) != 14 {
		t.Errorf("%d targets, want the 14 discovered hosts", len(r.Targets))
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0].String(), "Pool limits cannot cover") {
		t.Errorf("warnings = %v, want the capacity warning for the discovered hosts", r.Warnings)
	}
}
