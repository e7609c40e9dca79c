package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"
)

// errorLine returns the line of err's message that contains want and the
// line number that line names as "file:N:", or -1 when it names none.
func errorLine(t *testing.T, err error, file, want string) (string, int) {
	t.Helper()
	for _, l := range strings.Split(err.Error(), "\n") {
		if !strings.Contains(l, want) {
			continue
		}
		m := regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:(\d+): `).FindStringSubmatch(l)
		if m == nil {
			return l, -1
		}
		n, err := strconv.Atoi(m[1])
		if err != nil {
			t.Fatalf("line number %q: %v", m[1], err)
		}
		return l, n
	}
	t.Fatalf("error does not contain %q:\n%v", want, err)
	return "", 0
}

// TestLoadInvalid loads one testdata file per validation rule and checks
// the message and the line it names (marked "# <" in each file).
func TestLoadInvalid(t *testing.T) {
	tests := []struct {
		file string
		want string
		line int
	}{
		{"invalid-unknown-field.yml", `field "intervl" not found in global`, 3},
		{"invalid-duration.yml", `global.interval: invalid duration "5 minutes"`, 2},
		{"invalid-type.yml", `global.concurrency: want an integer, got a string "many"`, 2},
		{"invalid-duplicate-key.yml", `host_sets[0] ("web").labels: key "team" is set twice (first at line 5)`, 6},
		{"invalid-multiple-documents.yml", `more than one YAML document`, 6},
		{"invalid-no-host-sets.yml", `at least one host set is required`, 3},
		{"invalid-global-interval.yml", `global.interval: interval must be positive`, 2},
		{"invalid-global-timeout.yml", `global.timeout: timeout 45s exceeds the interval 30s`, 3},
		{"invalid-global-concurrency.yml", `global.concurrency: concurrency must be at least 1`, 2},
		{"invalid-max-targets-per-set.yml", `max_targets_per_set must be between 1 and 1048576`, 2},
		{"invalid-limit-concurrency.yml", `global.limits.tcp.concurrency: concurrency must be at least 1`, 4},
		{"invalid-limit-rate.yml", `global.limits.icmp.rate: rate must be a finite number >= 0`, 4},
		{"invalid-limit-rate-nan.yml", `global.limits.icmp.rate: rate must be a finite number >= 0`, 4},
		{"invalid-limit-burst.yml", `global.limits.ssh.burst: burst must be >= 0`, 5},
		{"invalid-set-name-empty.yml", `host_sets[1].name: name is required`, 5},
		{"invalid-set-name-chars.yml", `host_sets[0] ("web servers").name: set name "web servers" is invalid`, 2},
		{"invalid-set-name-dots.yml", `host_sets[0] ("..").name: set name ".." is invalid`, 2},
		{"invalid-set-name-duplicate.yml", `host_sets[1] ("web").name: set name "web" is already used by host_sets[0]`, 5},
		{"invalid-set-timeout.yml", `host_sets[0] ("web").timeout: timeout 6s exceeds the interval 5s`, 4},
		{"invalid-probe-timeout.yml", `host_sets[0] ("web").probes.tcp.timeout: timeout 30s exceeds the set's interval 20s`, 8},
		{"invalid-no-hosts.yml", `host_sets[0] ("web").hosts: at least one host is required`, 3},
		{"invalid-no-probes.yml", `host_sets[0] ("web").probes: at least one probe (icmp, tcp or ssh) is required`, 4},
		{"invalid-label-name.yml", `host_sets[0] ("web").labels: label name "9x" is invalid`, 6},
		{"invalid-label-name-dunder.yml", `label name "__meta" is invalid: names starting with "__" are reserved`, 5},
		{"invalid-label-reserved.yml", `host_sets[0] ("web").labels: label name "instance" is reserved: Prometheus sets it on every series it scrapes`, 5},
		{"invalid-label-reserved-job.yml", `label name "job" is reserved: Prometheus sets it on every series it scrapes`, 5},
		{"invalid-label-reserved-port.yml", `label name "port" is reserved: the exporter sets it itself`, 5},
		{"invalid-label-value-utf8.yml", `label "team" has a value that is not valid UTF-8`, 5},
		{"invalid-icmp-count.yml", `host_sets[0] ("web").probes.icmp.count: count must be between 1 and 65535, got 0`, 6},
		{"invalid-icmp-count-large.yml", `host_sets[0] ("web").probes.icmp.count: count must be between 1 and 65535, got 70000`, 6},
		{"invalid-icmp-count-timeout.yml", `count 10 with packet_interval 1s cannot complete within the timeout 5s`, 7},
		{"invalid-icmp-size.yml", `host_sets[0] ("web").probes.icmp.size: size must be between 0 and 65500, got 70000`, 6},
		{"invalid-icmp-packet-interval.yml", `probes.icmp.packet_interval: packet_interval must be positive`, 6},
		{"invalid-tcp-port.yml", `host_sets[0] ("web").probes.tcp.port: port must be between 1 and 65535, got 70000`, 6},
		{"invalid-tcp-ports-and-port.yml", `host_sets[0] ("web").probes.tcp.ports: ports and port cannot both be set`, 7},
		{"invalid-tcp-ports-duplicate.yml", `host_sets[0] ("web").probes.tcp.ports[2]: port 22 is listed twice`, 9},
		{"invalid-tcp-ports-range.yml", `host_sets[0] ("web").probes.tcp.ports[1]: port must be between 1 and 65535, got 70000`, 8},
		{"invalid-tcp-ports-empty.yml", `host_sets[0] ("web").probes.tcp.ports: ports must list at least one port`, 6},
		{"invalid-tcp-port-missing.yml", `host_sets[0] ("web").hosts[1]: entry "b.example.com" has no port and probes.tcp.port is not set`, 5},
		{"invalid-ssh-port.yml", `probes.ssh.port: port must be between 1 and 65535, got 0`, 9},
		{"invalid-ssh-user.yml", `host_sets[0] ("web").probes.ssh.user: user is required`, 5},
		{"invalid-ssh-auth.yml", `host_sets[0] ("web").probes.ssh: at least one authentication method is required`, 5},
		{"invalid-ssh-known-hosts.yml", `probes.ssh.known_hosts_file: known_hosts_file is required unless insecure_skip_host_key_verification is true`, 5},
		{"invalid-ssh-known-hosts-and-insecure.yml", `insecure_skip_host_key_verification and known_hosts_file are mutually exclusive`, 9},
		{"invalid-ssh-host-key-policy.yml", `probes.ssh.host_key_policy: host_key_policy must be "strict" or "tofu", got "trust"`, 9},
		{"invalid-ssh-tofu-insecure.yml", `probes.ssh.host_key_policy: host_key_policy tofu verifies host keys`, 9},
		{"invalid-proxy-jump-host.yml", `probes.ssh.proxy_jump[0].host: host "bastion1:99999": port must be between 1 and 65535`, 10},
		{"invalid-proxy-jump-host-missing.yml", `probes.ssh.proxy_jump[0].host: host is required`, 10},
		{"invalid-proxy-jump-connections.yml", `probes.ssh.proxy_jump[1].connections: connections applies to the whole chain`, 13},
		{"invalid-proxy-jump-auth.yml", `probes.ssh.proxy_jump[0].passphrase_file: passphrase_file requires private_key_file`, 11},
		{"invalid-limit-bastion-concurrency.yml", `global.limits.bastion.concurrency: concurrency must be at least 1, got 0`, 4},
		{"invalid-ssh-passphrase-without-key.yml", `probes.ssh.passphrase_file: passphrase_file requires private_key_file`, 8},
		{"invalid-ssh-certificate-without-key.yml", `probes.ssh.certificate_file: certificate_file requires private_key_file`, 8},
		{"invalid-ssh-tilde-path.yml", `path "~/.ssh/id_ed25519" starts with '~', which is not expanded`, 7},
		{"invalid-ssh-max-output-bytes.yml", `probes.ssh.max_output_bytes: max_output_bytes must be at least 1, got 0`, 9},
		{"invalid-command-name-empty.yml", `probes.ssh.commands[0].name: command name is required`, 10},
		{"invalid-command-name-chars.yml", `probes.ssh.commands[0].name: command name "load avg" is invalid`, 10},
		{"invalid-command-name-duplicate.yml", `probes.ssh.commands[1].name: command name "uptime" is already used by commands[0]`, 12},
		{"invalid-command-run.yml", `probes.ssh.commands[0].run: run is required`, 11},
		{"invalid-command-timeout.yml", `probes.ssh.commands[0].timeout: timeout 8s exceeds the ssh probe's timeout 5s`, 13},
		{"invalid-ssh-algorithms-mixed.yml", `probes.ssh.algorithms.ciphers[1]: either every entry starts with '+' (append to the defaults) or none does (replace them); got "+nope-cbc"`, 11},
		{"invalid-ssh-algorithms-unknown.yml", `probes.ssh.algorithms.host_key[1]: unknown host_key algorithm "ssh-rsa-sha1" (known: rsa-sha2-256-cert-v01@openssh.com`, 12},
		{"invalid-ssh-shell-without-mode.yml", `probes.ssh.shell: shell settings apply to mode: shell only; add mode: shell or remove the shell block`, 9},
		{"invalid-ssh-mode.yml", `probes.ssh.mode: mode must be "exec" or "shell", got "telnet"`, 9},
		{"invalid-ssh-shell-prompt.yml", `probes.ssh.shell.prompt: prompt "[#>" is not a valid regular expression: missing closing ]`, 11},
		{"invalid-ssh-ignore-lines.yml", `probes.ssh.commands[0].ignore_lines[1]: ignore_lines "(unclosed" is not a valid regular expression: missing closing )`, 12},
		{"invalid-ssh-keyboard-interactive.yml", `probes.ssh.keyboard_interactive[0].answer_file: answer_file is required`, 11},
		{"invalid-host-name.yml", `host_sets[0] ("web").hosts[1]: entry "bad_host!.example.com": invalid host name`, 5},
		{"invalid-host-ipv4.yml", `entry "10.0.0.256": invalid IPv4 address or host name`, 4},
		{"invalid-host-port.yml", `entry "a.example.com:99999": port 99999 is out of range 1-65535`, 4},
		{"invalid-host-range.yml", `invalid range [20-10]: end 10 is less than start 20`, 4},
		{"invalid-host-range-expansion.yml", `entry "10.0.0.[250-260]" expands to "10.0.0.256": invalid IPv4 address or host name`, 4},
		{"invalid-host-cidr.yml", `entry "10.0.0.1/24" has host bits set: did you mean "10.0.0.0/24"?`, 4},
		{"invalid-too-many-targets.yml", `host_sets[0] ("web").hosts[1]: entry "10.1.0.0/23" expands to 510 hosts, taking the set past max_targets_per_set (1000)`, 7},
		{"invalid-too-many-targets-total.yml", `host_sets[1] ("s1").hosts: the host sets up to this one expand to 3145722 targets (hosts times enabled probes), more than max_targets (3000000)`, 9},
		{"invalid-nesting.yml", `YAML nested deeper than 32 levels`, 34},
		{"invalid-max-targets.yml", `global.max_targets: max_targets must be between 1 and 4194304, got 5000000`, 2},
		{"invalid-zero-duration.yml", `host_sets[0] ("web").timeout: timeout must be positive: leave the key out to use the default`, 4},
		{"invalid-interval-too-short.yml", `global.interval: interval must be at least 1s, got 500ms`, 2},
		{"invalid-interval-too-long.yml", `host_sets[0] ("web").interval: interval must be at most 1d, got 2d`, 4},
		{"invalid-global-concurrency-large.yml", `global.concurrency: concurrency must be at most 1048576, got 2000000`, 2},
		{"invalid-limit-rate-large.yml", `global.limits.tcp.rate: rate must be at most 1e+06, got 5e+06`, 4},
		{"invalid-limit-burst-large.yml", `global.limits.tcp.burst: burst must be at most 1048576, got 2000000`, 5},
		{"invalid-icmp-packet-interval-long.yml", `probes.icmp.packet_interval: packet_interval must be at most 1m, got 2m`, 6},
		{"invalid-ssh-max-output-bytes-large.yml", `probes.ssh.max_output_bytes: max_output_bytes must be at most 1073741824, got 9223372036854775807`, 9},
		{"invalid-ssh-too-many-commands.yml", `probes.ssh.commands: 65 commands, more than the 64 one probe may run`, 9},
		{"invalid-label-count.yml", `host_sets[0] ("web").labels: 65 labels, more than the 64 a set may have`, 6},
		{"invalid-retry-interval.yml", `host_sets[0] ("web").retry_interval: retry_interval 2m exceeds the interval 1m`, 4},
		{"invalid-retry-interval-short.yml", `host_sets[0] ("web").retry_interval: retry_interval must be at least 1s, got 100ms`, 4},
		{"invalid-source-address.yml", `host_sets[0] ("web").source_address: source_address 192.0.2.1 is not an address of this machine`, 5},
		{"invalid-source-address-syntax.yml", `host_sets[0] ("web").source_address: source_address "uplink1.example.com" is not an IP address`, 3},
		{"invalid-source-address-unspecified.yml", `source_address :: is unspecified: leave the key out to let the kernel choose`, 3},
		{"invalid-source-address-family.yml", `host_sets[0] ("web").ip_protocol: ip_protocol ip6 contradicts source_address 127.0.0.1, which can only reach ip4 addresses`, 5},
		{"invalid-mapping-size.yml", `host_sets[0].name: unexpected mapping of 65 keys`, 3},
		{"invalid-dns-ttl-order.yml", `global.dns.min_ttl: min_ttl 10m exceeds max_ttl 1m`, 3},
		{"invalid-ip-protocol.yml", `host_sets[0] ("web").ip_protocol: ip_protocol must be "ip4" or "ip6", got "ipv6"`, 4},
		{"invalid-ip-protocol-preferred.yml", `host_sets[0] ("web").preferred_ip_protocol: preferred_ip_protocol must be "ip4" or "ip6", got "ip5"`, 4},
		{"invalid-ip-protocol-pinned.yml", `host_sets[0] ("web").ip_protocol: ip_protocol pins the address family`, 4},
	}
	covered := map[string]bool{}
	for _, tc := range tests {
		covered[tc.file] = true
		t.Run(strings.TrimSuffix(tc.file, ".yml"), func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			cfg, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want error containing %q", path, tc.want)
			}
			if cfg != nil {
				t.Errorf("Load(%s) returned a config with its error", path)
			}
			l, line := errorLine(t, err, path, tc.want)
			if line != tc.line {
				t.Errorf("error names line %d, want %d:\n%s", line, tc.line, l)
			}
		})
	}
	files, err := filepath.Glob(filepath.Join("testdata", "invalid-*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s is not covered by a test case", f)
		}
	}
}

// TestParseValid checks that defaults and inheritance produce the expected
// configuration.
func TestParseValid(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "fleet.yml")
	icmpDefault := func(timeout time.Duration) *ICMPProbe {
		return &ICMPProbe{Count: 1, PacketInterval: Duration(time.Second), Size: 56, Timeout: Duration(timeout)}
	}
	defaultLimits := ProbeLimits{
		ICMP:    Limit{Concurrency: 4096},
		TCP:     Limit{Concurrency: 256},
		SSH:     Limit{Concurrency: 64},
		Bastion: Limit{Concurrency: DefaultBastionConcurrency},
	}
	defaultDNS := DNS{
		MinTTL: Duration(time.Second), MaxTTL: Duration(5 * time.Minute),
		NegativeTTL: Duration(30 * time.Second), MaxStale: Duration(5 * time.Minute),
	}
	defaultGlobalWant := Global{
		Interval:         Duration(time.Minute),
		Timeout:          Duration(10 * time.Second),
		Concurrency:      4096,
		MaxTargets:       1000000,
		MaxTargetsPerSet: 65536,
		Limits:           defaultLimits,
		DNS:              defaultDNS,
	}
	tests := []struct {
		name string
		yaml string
		want Config
	}{
		{
			name: "minimal set gets every default",
			yaml: "host_sets:\n- name: a\n  hosts: [a.example.com]\n  probes:\n    icmp: {}\n",
			want: Config{
				Global: defaultGlobalWant,
				HostSets: []HostSet{{
					Name: "a", Hosts: []string{"a.example.com"},
					Interval: Duration(time.Minute), RetryInterval: Duration(time.Minute), Timeout: Duration(10 * time.Second),
					Labels: map[string]string{},
					Probes: Probes{ICMP: icmpDefault(DefaultICMPTimeout)},
				}},
			},
		},
		{
			name: "empty probe key enables the probe with defaults",
			yaml: "host_sets:\n- name: a\n  hosts: [a.example.com:80]\n  probes:\n    icmp:\n    tcp:\n",
			want: Config{
				Global: defaultGlobalWant,
				HostSets: []HostSet{{
					Name: "a", Hosts: []string{"a.example.com:80"},
					Interval: Duration(time.Minute), RetryInterval: Duration(time.Minute), Timeout: Duration(10 * time.Second),
					Labels: map[string]string{},
					Probes: Probes{ICMP: icmpDefault(DefaultICMPTimeout), TCP: &TCPProbe{Timeout: Duration(10 * time.Second)}},
				}},
			},
		},
		{
			name: "partial limits keep the other defaults and derive burst",
			yaml: "global:\n  limits:\n    icmp: {rate: 2.5}\n    ssh: {rate: 0.2}\n    tcp: {rate: 10, burst: 3}\n" +
				"host_sets:\n- name: a\n  hosts: [a.example.com]\n  probes: {icmp: {}}\n",
			want: Config{
				Global: Global{
					Interval: Duration(time.Minute), Timeout: Duration(10 * time.Second),
					Concurrency: 4096, MaxTargets: 1000000, MaxTargetsPerSet: 65536,
					Limits: ProbeLimits{
						ICMP:    Limit{Concurrency: 4096, Rate: 2.5, Burst: 2},
						TCP:     Limit{Concurrency: 256, Rate: 10, Burst: 3},
						SSH:     Limit{Concurrency: 64, Rate: 0.2, Burst: 1},
						Bastion: Limit{Concurrency: DefaultBastionConcurrency},
					},
					DNS: defaultDNS,
				},
				HostSets: []HostSet{{
					Name: "a", Hosts: []string{"a.example.com"},
					Interval: Duration(time.Minute), RetryInterval: Duration(time.Minute), Timeout: Duration(10 * time.Second),
					Labels: map[string]string{},
					Probes: Probes{ICMP: icmpDefault(DefaultICMPTimeout)},
				}},
			},
		},
		{
			name: "inherited timeouts are clamped to the interval, probe timeout overrides",
			yaml: "global:\n  interval: 5s\n" +
				"host_sets:\n- name: a\n  interval: 2s\n  hosts: [a.example.com]\n  labels: {team: x}\n" +
				"  probes:\n    icmp: {count: 3, packet_interval: 200ms}\n    tcp: {port: 22, timeout: 1500ms}\n",
			want: Config{
				Global: Global{
					Interval: Duration(5 * time.Second), Timeout: Duration(5 * time.Second),
					Concurrency: 4096, MaxTargets: 1000000, MaxTargetsPerSet: 65536, Limits: defaultLimits,
					DNS: defaultDNS,
				},
				HostSets: []HostSet{{
					Name: "a", Hosts: []string{"a.example.com"},
					Interval: Duration(2 * time.Second), RetryInterval: Duration(2 * time.Second), Timeout: Duration(2 * time.Second),
					Labels: map[string]string{"team": "x"},
					Probes: Probes{
						ICMP: &ICMPProbe{Count: 3, PacketInterval: Duration(200 * time.Millisecond), Size: 56, Timeout: Duration(2 * time.Second)},
						TCP:  &TCPProbe{Port: 22, Timeout: Duration(1500 * time.Millisecond)},
					},
				}},
			},
		},
		{
			name: "retry_interval and source_address are kept as given",
			yaml: "host_sets:\n- name: a\n  interval: 5m\n  retry_interval: 30s\n  source_address: 127.0.0.1\n" +
				"  hosts: [a.example.com]\n  probes: {icmp: {}}\n",
			want: Config{
				Global: defaultGlobalWant,
				HostSets: []HostSet{{
					Name: "a", Hosts: []string{"a.example.com"},
					Interval: Duration(5 * time.Minute), RetryInterval: Duration(30 * time.Second), Timeout: Duration(10 * time.Second),
					SourceAddress: "127.0.0.1",
					Labels:        map[string]string{},
					Probes:        Probes{ICMP: icmpDefault(DefaultICMPTimeout)},
				}},
			},
		},
		{
			name: "ssh defaults, relative paths resolved against the config directory",
			yaml: "host_sets:\n- name: a\n  hosts: [a.example.com]\n  timeout: 20s\n  probes:\n    ssh:\n" +
				"      user: u\n      private_key_file: keys/id\n      passphrase_file: ../pass\n      known_hosts_file: /etc/ssh/known_hosts\n" +
				"      commands:\n      - {name: up, run: uptime}\n      - {name: df, run: df, timeout: 5s}\n",
			want: Config{
				Global: defaultGlobalWant,
				HostSets: []HostSet{{
					Name: "a", Hosts: []string{"a.example.com"},
					Interval: Duration(time.Minute), RetryInterval: Duration(time.Minute), Timeout: Duration(20 * time.Second),
					Labels: map[string]string{},
					Probes: Probes{SSH: &SSHProbe{
						Port: 22, User: "u",
						PrivateKeyFile: filepath.Join(dir, "keys/id"),
						PassphraseFile: filepath.Join(filepath.Dir(dir), "pass"),
						KnownHostsFile: "/etc/ssh/known_hosts",
						MaxOutputBytes: 1 << 20,
						Timeout:        Duration(20 * time.Second),
						Mode:           SSHModeExec,
						HostKeyPolicy:  HostKeyPolicyStrict,
						Shell:          defaultShell(),
						Commands: []Command{
							{Name: "up", Run: "uptime", Timeout: Duration(20 * time.Second)},
							{Name: "df", Run: "df", Timeout: Duration(5 * time.Second)},
						},
					}},
				}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml), file)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tc.want, *cfg, cmpopts.IgnoreFields(Config{}, "Hash", "Filename"), cmpopts.IgnoreUnexported(Config{})); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
			if cfg.Filename != file {
				t.Errorf("Filename = %q, want %q", cfg.Filename, file)
			}
		})
	}
}

func TestParseHashAndFilename(t *testing.T) {
	data := []byte("host_sets:\n- name: a\n  hosts: [a.example.com]\n  probes: {icmp: {}}\n")
	tests := []struct {
		name     string
		filename string
		data     []byte
	}{
		{"named", "x.yml", data},
		{"unnamed", "", data},
		{"a comment changes the hash", "x.yml", append([]byte("# c\n"), data...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(tc.data, tc.filename)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Filename != tc.filename {
				t.Errorf("Filename = %q, want %q", cfg.Filename, tc.filename)
			}
			sum := sha256.Sum256(tc.data)
			if want := hex.EncodeToString(sum[:]); cfg.Hash != want {
				t.Errorf("Hash = %q, want %q", cfg.Hash, want)
			}
		})
	}
}

func TestParseErrorsNameFile(t *testing.T) {
	tests := []struct {
		name, filename, yaml, want string
	}{
		{"syntax error", "s.yml", "a: b\n  c: d\n", "s.yml:2: mapping values are not allowed in this context"},
		{"unnamed input", "", "global: {intervl: 1s}\n", "<input>:1: field \"intervl\" not found in global"},
		{"top-level unknown field", "t.yml", "globl: {}\n", "t.yml:1: field \"globl\" not found in the top level (valid fields: global, host_sets)"},
		{"set twice", "t.yml", "host_sets:\n- name: a\n  name: b\n", "t.yml:3: host_sets[0] (\"a\"): key \"name\" is set twice (first at line 2)"},
		{"list for mapping", "t.yml", "global: [1]\n", "t.yml:1: global: want a mapping, got a list"},
		{"string for list", "t.yml", "host_sets:\n- name: a\n  hosts: a.example.com\n", "t.yml:3: host_sets[0] (\"a\").hosts: want a list of strings, got a string \"a.example.com\""},
		{"bad duration in a set", "t.yml", "host_sets:\n- name: a\n  interval: 1 m\n", "t.yml:3: host_sets[0] (\"a\").interval: invalid duration \"1 m\""},
		{"same bad duration twice", "t.yml", "global:\n  interval: 5x\nhost_sets:\n- name: a\n  timeout: 5x\n", "t.yml:5: host_sets[0] (\"a\").timeout: invalid duration \"5x\""},
		{"every error reported", "t.yml", "global: {concurrency: 0}\nhost_sets:\n- name: a\n  hosts: []\n  probes: {}\n", "t.yml:4: host_sets[0] (\"a\").hosts: at least one host is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), tc.filename)
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not contain %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestMisspeltKeyEveryLevel proves that strict decoding survives every
// custom UnmarshalYAML: a misspelt key is refused at each nesting level.
func TestMisspeltKeyEveryLevel(t *testing.T) {
	const sshOK = "      user: u\n      agent: true\n      insecure_skip_host_key_verification: true\n"
	set := func(extra string) string {
		return "host_sets:\n- name: s\n  hosts: [a.example.com]\n" + extra
	}
	tests := []struct {
		level string
		yaml  string
		want  string // "field ... not found in <path>"
		line  int
	}{
		{"top level", "globall: {}\n" + set("  probes: {icmp: {}}\n"), `field "globall" not found in the top level`, 1},
		{"global", "global:\n  intervall: 5s\n" + set("  probes: {icmp: {}}\n"), `field "intervall" not found in global (`, 2},
		{"limits", "global:\n  limits:\n    icpm: {}\n" + set("  probes: {icmp: {}}\n"), `field "icpm" not found in global.limits (`, 3},
		{"limits.icmp", "global:\n  limits:\n    icmp: {concurency: 1}\n" + set("  probes: {icmp: {}}\n"), `field "concurency" not found in global.limits.icmp (`, 3},
		{"limits.tcp", "global:\n  limits:\n    tcp:\n      rates: 1\n" + set("  probes: {icmp: {}}\n"), `field "rates" not found in global.limits.tcp (`, 4},
		{"limits.ssh", "global:\n  limits:\n    ssh:\n      brust: 1\n" + set("  probes: {icmp: {}}\n"), `field "brust" not found in global.limits.ssh (`, 4},
		{"host set", set("  lables: {a: b}\n  probes: {icmp: {}}\n"), `field "lables" not found in host_sets[0] ("s") (`, 4},
		{"probes", set("  probes:\n    icmp: {}\n    htp: {}\n"), `field "htp" not found in host_sets[0] ("s").probes (`, 6},
		{"icmp", set("  probes:\n    icmp:\n      count: 1\n      sise: 10\n"), `field "sise" not found in host_sets[0] ("s").probes.icmp (`, 7},
		{"tcp", set("  probes:\n    tcp:\n      prot: 22\n"), `field "prot" not found in host_sets[0] ("s").probes.tcp (`, 6},
		{"ssh", set("  probes:\n    ssh:\n" + sshOK + "      known_host_file: x\n"), `field "known_host_file" not found in host_sets[0] ("s").probes.ssh (`, 9},
		{"commands[]", set("  probes:\n    ssh:\n" + sshOK + "      commands:\n      - name: c\n        command: uptime\n"), `field "command" not found in host_sets[0] ("s").probes.ssh.commands[0] (`, 11},
		{"limits.bastion", "global:\n  limits:\n    bastion:\n      rat: 1\n" + set("  probes: {icmp: {}}\n"), `field "rat" not found in global.limits.bastion (`, 4},
		{"proxy_jump[]", set("  probes:\n    ssh:\n" + sshOK + "      proxy_jump:\n      - host: b\n        hostname: b\n"), `field "hostname" not found in host_sets[0] ("s").probes.ssh.proxy_jump[0] (`, 11},
	}
	for _, tc := range tests {
		t.Run(tc.level, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "level.yml")
			if err == nil {
				t.Fatalf("misspelt key accepted:\n%s", tc.yaml)
			}
			l, line := errorLine(t, err, "level.yml", tc.want)
			if line != tc.line {
				t.Errorf("error names line %d, want %d:\n%s", line, tc.line, l)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
		str     string
	}{
		{in: "90s", want: 90 * time.Second, str: "1m30s"},
		{in: "5m", want: 5 * time.Minute, str: "5m"},
		{in: "1h30m", want: 90 * time.Minute, str: "1h30m"},
		{in: "1d", want: 24 * time.Hour, str: "1d"},
		{in: "250ms", want: 250 * time.Millisecond, str: "250ms"},
		{in: "0", want: 0, str: "0s"},
		{in: "90", wantErr: true},
		{in: "-5s", wantErr: true},
		{in: "5 s", wantErr: true},
		{in: "[5s]", wantErr: true},
		{in: "1.5h", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			var got struct {
				D Duration `yaml:"d"`
			}
			err := yaml.Unmarshal([]byte("d: "+tc.in), &got)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("%q parsed as %v, want error", tc.in, got.D.D())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.D.D() != tc.want {
				t.Errorf("got %v, want %v", got.D.D(), tc.want)
			}
			if s := got.D.String(); s != tc.str {
				t.Errorf("String() = %q, want %q", s, tc.str)
			}
			out, err := yaml.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if want := "d: " + tc.str + "\n"; string(out) != want {
				t.Errorf("Marshal = %q, want %q", out, want)
			}
		})
	}
}

func TestLoadSizeLimit(t *testing.T) {
	base := "host_sets:\n- name: a\n  hosts: [a.example.com]\n  probes: {icmp: {}}\n"
	pad := func(n int) []byte {
		b := append([]byte(base), '#')
		return append(b, bytes.Repeat([]byte{'x'}, n-len(b))...)
	}
	tests := []struct {
		name    string
		size    int
		wantErr string
	}{
		{"small", len(base) + 10, ""},
		{"exactly the limit", MaxConfigSize, ""},
		{"one byte over", MaxConfigSize + 1, "larger than 4194304 bytes"},
		{"far over", 3 * MaxConfigSize, "larger than 4194304 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := pad(tc.size)
			path := filepath.Join(t.TempDir(), "big.yml")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadFile(path)
			if tc.wantErr == "" {
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("ReadFile: %d bytes, %v; want all %d bytes", len(got), err, len(data))
				}
				if tc.size > 1<<16 {
					return // parsing 4 MiB of comment is slow under -race and proves nothing more
				}
			}
			for name, load := range map[string]func() (*Config, error){
				"ReadFile": func() (*Config, error) { _, err := ReadFile(path); return nil, err },
				"Load":     func() (*Config, error) { return Load(path) },
				"Parse":    func() (*Config, error) { return Parse(data, path) },
			} {
				_, err := load()
				switch {
				case tc.wantErr == "" && err != nil:
					t.Errorf("%s: %v", name, err)
				case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path)):
					t.Errorf("%s: error %v, want one naming the file and containing %q", name, err, tc.wantErr)
				}
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yml")); err == nil || !strings.Contains(err.Error(), "missing.yml") {
		t.Errorf("Load of a missing file: error %v, want one naming the file", err)
	}
}

// TestDeeplyNested checks that absurdly nested input fails fast instead of
// exhausting the stack or the CPU.
func TestDeeplyNested(t *testing.T) {
	nestedMaps := func(depth int) string {
		var b strings.Builder
		for i := range depth {
			b.WriteString(strings.Repeat(" ", i))
			b.WriteString("k:\n")
		}
		return b.String()
	}
	tests := []struct {
		name string
		data string
		want string
	}{
		{"flow sequences beyond the parser limit", "global: " + strings.Repeat("[", 1<<20), "exceeded max depth"},
		{"flow mappings beyond the parser limit", "x: " + strings.Repeat("{", 1<<20), "exceeded max depth"},
		{"block sequences beyond the parser limit", strings.Repeat("- ", 1<<20), "exceeded max depth"},
		{"flow sequences within the parser limit", "global: " + strings.Repeat("[", 9000) + strings.Repeat("]", 9000), "nested deeper than 32 levels"},
		{"block mappings", nestedMaps(2000), "nested deeper than 32 levels"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := Parse([]byte(tc.data), "deep.yml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "deep.yml:") {
				t.Errorf("error %q does not name the file", err)
			}
			// A parser without depth limits takes minutes here; the bound
			// only has to catch that, also on a loaded machine.
			if d, bound := time.Since(start), timeBound(3*time.Second); d > bound {
				t.Errorf("took %v, want under %v", d, bound)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	cfg := Default()
	if cfg.Filename != "<embedded>" {
		t.Errorf("Filename = %q, want <embedded>", cfg.Filename)
	}
	if len(cfg.Hash) != 64 {
		t.Errorf("Hash = %q", cfg.Hash)
	}
	if len(cfg.HostSets) != 1 {
		t.Fatalf("got %d host sets, want 1", len(cfg.HostSets))
	}
	hs := cfg.HostSets[0]
	if hs.Name != "localhost" || !reflect.DeepEqual(hs.Hosts, []string{"127.0.0.1"}) || hs.Interval.D() != 10*time.Second {
		t.Errorf("set = %q %v every %v, want localhost [127.0.0.1] every 10s", hs.Name, hs.Hosts, hs.Interval)
	}
	if hs.Probes.ICMP == nil || hs.Probes.TCP == nil || hs.Probes.TCP.Port != 22 || hs.Probes.SSH != nil {
		t.Errorf("probes = %+v, want icmp and tcp on port 22", hs.Probes)
	}
	targets, warnings, err := cfg.Targets()
	if err != nil || len(warnings) != 0 {
		t.Fatalf("Targets: %v %v", err, warnings)
	}
	var got []Key
	for _, tg := range targets {
		got = append(got, tg.Key())
	}
	want := []Key{{Set: "localhost", Host: "127.0.0.1", Probe: ProbeICMP}, {Set: "localhost", Host: "127.0.0.1", Probe: ProbeTCP, Port: 22}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	// Each call is a fresh copy: changing one must not change the next.
	cfg.HostSets[0].Name = "changed"
	if again := Default(); again.HostSets[0].Name != "localhost" {
		t.Errorf("Default() shares state between calls")
	}
}

// TestExampleConfig loads the documented example and checks that it
// mentions every option of the schema.
func TestExampleConfig(t *testing.T) {
	const path = "../config.example.yml"
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	targets, warnings, err := cfg.Targets()
	if err != nil || len(warnings) > 0 {
		t.Fatalf("Targets: %v %v", err, warnings)
	}
	var got []Key
	for _, tg := range targets {
		got = append(got, tg.Key())
	}
	want := []Key{
		{Set: "local", Host: "127.0.0.1", Probe: ProbeICMP},
		{Set: "local", Host: "127.0.0.1", Probe: ProbeTCP, Port: 22},
		{Set: "local", Host: "::1", Probe: ProbeICMP},
		{Set: "local", Host: "::1", Probe: ProbeTCP, Port: 22},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	// The example's explicit values are the defaults.
	if diff := cmp.Diff(defaultGlobalForTest(), cfg.Global); diff != "" {
		t.Errorf("example global differs from the defaults (-default +example):\n%s", diff)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range allYAMLFields(reflect.TypeFor[Config]()) {
		if !regexp.MustCompile(`(?m)^[\s#-]*` + regexp.QuoteMeta(field) + `:`).Match(data) {
			t.Errorf("%s does not document %q", path, field)
		}
	}
}

func defaultGlobalForTest() Global {
	g := defaultGlobal()
	g.Timeout = Duration(DefaultTimeout)
	return g
}

// allYAMLFields lists every YAML key of t and the types it contains.
func allYAMLFields(t reflect.Type) []string {
	seen := map[reflect.Type]bool{}
	var out []string
	var visit func(reflect.Type)
	visit = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for i := range t.NumField() {
			if name := yamlTag(t.Field(i)); name != "" {
				out = append(out, name)
				visit(t.Field(i).Type)
			}
		}
	}
	visit(t)
	return out
}

// TestWhere checks that file-naming ssh keys are located by line.
func TestWhere(t *testing.T) {
	text := "host_sets:\n  - name: a\n    hosts: [127.0.0.1]\n    probes:\n      ssh:\n        user: u\n" +
		"        password_file: /p\n        known_hosts_file: /k\n        commands: [{name: x, run: x}]\n"
	cfg, err := Parse([]byte(text), "/etc/fleet.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ set, key, want string }{
		{"a", "password_file", "/etc/fleet.yml:7"},
		{"a", "known_hosts_file", "/etc/fleet.yml:8"},
		{"a", "private_key_file", "/etc/fleet.yml"},
		{"b", "password_file", "/etc/fleet.yml"},
	} {
		if got := cfg.Where(tc.set, tc.key); got != tc.want {
			t.Errorf("Where(%q, %q) = %q, want %q", tc.set, tc.key, got, tc.want)
		}
	}
}

func TestHostSetIPPolicy(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want IPPolicy
	}{
		{name: "default prefers ip4 with fallback", yaml: "", want: IPPolicy{Preferred: IP4, Fallback: true}},
		{name: "preferred ip6", yaml: "  preferred_ip_protocol: ip6\n", want: IPPolicy{Preferred: IP6, Fallback: true}},
		{name: "fallback off", yaml: "  preferred_ip_protocol: ip6\n  ip_protocol_fallback: false\n", want: IPPolicy{Preferred: IP6}},
		{name: "ip_protocol pins the family", yaml: "  ip_protocol: ip6\n", want: IPPolicy{Preferred: IP6}},
		{name: "ip_protocol ip4", yaml: "  ip_protocol: ip4\n", want: IPPolicy{Preferred: IP4}},
		{name: "an IPv6 source address pins ip6 over the default", yaml: "  source_address: \"::1\"\n", want: IPPolicy{Preferred: IP6}},
		{name: "an IPv4 source address pins ip4 without fallback", yaml: "  source_address: 127.0.0.1\n  preferred_ip_protocol: ip4\n", want: IPPolicy{Preferred: IP4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte("host_sets:\n- name: a\n  hosts: [a.example.com]\n  probes: {tcp: {port: 22}}\n"+tc.yaml), "test.yml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := cfg.HostSets[0].IPPolicy(); got != tc.want {
				t.Errorf("IPPolicy() = %+v, want %+v", got, tc.want)
			}
			targets, _, err := cfg.Targets()
			if err != nil {
				t.Fatalf("Targets: %v", err)
			}
			if got := targets[0].IP; got != tc.want {
				t.Errorf("Target.IP = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestProxyJumpDefaults checks what a proxy_jump entry takes from its ssh
// block, the port default, path resolution and the bastion limit default.
func TestProxyJumpDefaults(t *testing.T) {
	const doc = `
host_sets:
  - name: behind
    hosts: [a.example.com]
    probes:
      ssh:
        user: prober
        private_key_file: keys/id
        known_hosts_file: kh
        host_key_policy: tofu
        proxy_jump:
          - host: bastion1
            connections: 3
          - host: "[::1]:2222"
            user: ops
            password_file: pw
            known_hosts_file: /etc/jump_kh
            host_key_policy: strict
`
	cfg, err := Parse([]byte(doc), "/etc/fleet/fleet.yml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Global.Limits.Bastion; got.Concurrency != DefaultBastionConcurrency || got.Rate != 0 {
		t.Errorf("limits.bastion = %+v, want concurrency %d and no rate", got, DefaultBastionConcurrency)
	}
	hops := cfg.HostSets[0].Probes.SSH.ProxyJump
	if len(hops) != 2 {
		t.Fatalf("%d hops, want 2", len(hops))
	}
	first, second := hops[0], hops[1]
	if first.HostPort() != "bastion1:22" || first.User != "prober" || first.PrivateKeyFile != "/etc/fleet/keys/id" ||
		first.KnownHostsFile != "/etc/fleet/kh" || first.HostKeyPolicy != HostKeyPolicyTOFU || first.Connections != 3 {
		t.Errorf("first hop did not inherit the ssh block: %+v", first)
	}
	if second.HostPort() != "[::1]:2222" || second.User != "ops" || second.PrivateKeyFile != "" ||
		second.PasswordFile != "/etc/fleet/pw" || second.KnownHostsFile != "/etc/jump_kh" || second.HostKeyPolicy != HostKeyPolicyStrict {
		t.Errorf("second hop's own settings were overridden: %+v", second)
	}
	if p := cfg.HostSets[0].Probes.SSH.HostKeyPolicy; p != HostKeyPolicyTOFU {
		t.Errorf("ssh host_key_policy = %q", p)
	}
}
