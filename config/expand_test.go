package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// addr is hostAddr with exported fields, for cmp.
type addr struct {
	Host, Name string
	Port       int
}

func addrs(in []hostAddr) []addr {
	out := make([]addr, len(in))
	for i, a := range in {
		out[i] = addr{a.host, a.name, a.port}
	}
	return out
}

// same returns addresses whose label and name are both s.
func same(ss ...string) []addr {
	out := make([]addr, len(ss))
	for i, s := range ss {
		out[i] = addr{s, s, 0}
	}
	return out
}

func TestExpandEntry(t *testing.T) {
	tests := []struct {
		name  string
		entry string
		want  []addr
	}{
		{"dns name", "db1.example.com", same("db1.example.com")},
		{"dns name with trailing dot", "db1.example.com.", same("db1.example.com.")},
		{"single label", "localhost", same("localhost")},
		{"underscore and digits", "_svc.1host.example", same("_svc.1host.example")},
		{"ipv4", "192.0.2.10", same("192.0.2.10")},
		{"ipv6 canonical", "2001:DB8:0:0::0:1", same("2001:db8::1")},
		{"ipv6 loopback", "::1", same("::1")},
		{"ipv6 with zone", "fe80::1%eth0", same("fe80::1%eth0")},
		{"ipv4-mapped ipv6", "::ffff:192.0.2.1", same("::ffff:192.0.2.1")},
		{"bracketed ipv6 without port", "[2001:db8::1]", same("2001:db8::1")},
		{"host:port", "db1.example.com:2222", []addr{{"db1.example.com:2222", "db1.example.com", 2222}}},
		{"ipv4:port", "192.0.2.10:22", []addr{{"192.0.2.10:22", "192.0.2.10", 22}}},
		{"port leading zeros canonical", "db1:022", []addr{{"db1:22", "db1", 22}}},
		{"[v6]:port", "[2001:0db8::0001]:8022", []addr{{"[2001:db8::1]:8022", "2001:db8::1", 8022}}},
		{"range with padding", "web[001-003].dc1", same("web001.dc1", "web002.dc1", "web003.dc1")},
		{"padding kept past the width", "w[08-11]", same("w08", "w09", "w10", "w11")},
		{"padding wider than needed", "w[0098-0100]", same("w0098", "w0099", "w0100")},
		{"range without padding", "web[8-11]", same("web8", "web9", "web10", "web11")},
		{"range starting at zero", "n[0-2]", same("n0", "n1", "n2")},
		{"single-value range", "n[5-5]", same("n5")},
		{"several ranges multiply", "r[1-2]-[01-03]", same("r1-01", "r1-02", "r1-03", "r2-01", "r2-02", "r2-03")},
		{"range at the start", "[1-2].example.com", same("1.example.com", "2.example.com")},
		{"range with port", "web[1-2]:8080", []addr{{"web1:8080", "web1", 8080}, {"web2:8080", "web2", 8080}}},
		{"range in the port", "db:[8080-8081]", []addr{{"db:8080", "db", 8080}, {"db:8081", "db", 8081}}},
		{"range in an ipv4 address", "10.0.0.[1-3]", same("10.0.0.1", "10.0.0.2", "10.0.0.3")},
		{"range in a bracketed ipv6 port", "[::1]:[22-23]", []addr{{"[::1]:22", "::1", 22}, {"[::1]:23", "::1", 23}}},
		{"cidr /30 excludes network and broadcast", "10.0.0.0/30", same("10.0.0.1", "10.0.0.2")},
		{"cidr /29", "192.0.2.8/29", same("192.0.2.9", "192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14")},
		{"cidr /31 keeps both", "10.0.0.0/31", same("10.0.0.0", "10.0.0.1")},
		{"cidr /32", "10.0.0.7/32", same("10.0.0.7")},
		{"cidr ipv6 /126 keeps all", "2001:db8::/126", same("2001:db8::", "2001:db8::1", "2001:db8::2", "2001:db8::3")},
		{"cidr ipv6 /128", "2001:db8::5/128", same("2001:db8::5")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := expandEntry(tc.entry, 1000)
			if err != nil {
				t.Fatalf("expandEntry(%q): %v", tc.entry, err)
			}
			if diff := cmp.Diff(tc.want, addrs(got)); diff != "" {
				t.Errorf("expandEntry(%q) (-want +got):\n%s", tc.entry, diff)
			}
			e, err := parseEntry(tc.entry)
			if err != nil {
				t.Fatal(err)
			}
			if e.count != uint64(len(tc.want)) {
				t.Errorf("count = %d, want %d", e.count, len(tc.want))
			}
		})
	}
}

func TestExpandEntryErrors(t *testing.T) {
	tests := []struct {
		name  string
		entry string
		limit int
		want  string
	}{
		{"empty", "", 10, "empty host entry"},
		{"space", "web 1", 10, `invalid host name "web 1"`},
		{"bad character", "web!.example.com", 10, "character '!' is not allowed"},
		{"label starts with hyphen", "-web.example.com", 10, "starts or ends with '-'"},
		{"empty label", "web..example.com", 10, "labels must be 1 to 63 characters"},
		{"label too long", strings.Repeat("a", 64) + ".example.com", 10, "labels must be 1 to 63 characters"},
		{"name too long", strings.Repeat("abcdefghi.", 26), 10, "want 1 to 253 characters"},
		{"bad ipv4", "300.1.1.1", 10, `invalid IPv4 address or host name "300.1.1.1"`},
		{"ipv4 with leading zero", "10.0.0.01", 10, `invalid IPv4 address or host name "10.0.0.01"`},
		{"bad ipv6", "2001:db8::g", 10, `invalid IPv6 address "2001:db8::g" (write [address]:port to give a port)`},
		{"ipv4 in brackets", "[10.0.0.1]:22", 10, `invalid IPv6 address "10.0.0.1"`},
		{"junk after bracket", "[::1]x", 10, `unexpected "x" after ']'`},
		{"unclosed bracket", "[::1", 10, "unclosed '['"},
		{"port zero", "db:0", 10, "port 0 is out of range"},
		{"port too big", "db:65536", 10, "port 65536 is out of range"},
		{"port not a number", "db:ssh", 10, `invalid port "ssh"`},
		{"empty port", "db:", 10, `invalid port ""`},
		{"range end before start", "w[5-1]", 10, "end 1 is less than start 5"},
		{"range not numeric", "w[a-c]", 10, "invalid range [a-c]"},
		{"range bound too long", "w[1-1234567890123456789]", 10, "more than 18 digits"},
		{"range expanding to a bad host", "10.0.0.[254-256]", 10, `expands to "10.0.0.256"`},
		{"range expanding to a bad port", "db:[65535-65536]", 10, `expands to "db:65536": port 65536 is out of range`},
		{"padded range expanding to a bad ipv4", "10.0.0.[01-02]", 10, `expands to "10.0.0.01"`},
		{"cidr with host bits", "10.0.0.1/24", 10, `did you mean "10.0.0.0/24"?`},
		{"cidr bad prefix", "10.0.0.0/33", 10, "not a valid CIDR block"},
		{"cidr with a range", "10.0.[0-1].0/24", 10, "not a valid CIDR block"},
		{"cidr over the cap", "10.0.0.0/24", 253, `expands to 254 hosts, taking the set past max_targets_per_set (253)`},
		{"range over the cap", "w[1-11]", 10, "expands to 11 hosts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := expandEntry(tc.entry, tc.limit)
			if err == nil {
				t.Fatalf("expandEntry(%q) = %v, want error containing %q", tc.entry, addrs(got), tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("expandEntry(%q): error %q, want it to contain %q", tc.entry, err, tc.want)
			}
		})
	}
}

// TestExpandCapBeforeAllocation checks that huge expansions are refused by
// counting, without enumerating or allocating them.
func TestExpandCapBeforeAllocation(t *testing.T) {
	tests := []struct {
		entry string
		want  string
	}{
		{"10.0.0.0/8", "expands to 16777214 hosts"},
		{"0.0.0.0/0", "expands to 4294967294 hosts"},
		{"::/0", "expands to 2^64 or more hosts"},
		{"2001:db8::/64", "expands to 2^64 or more hosts"},
		{"2001:db8::/65", "expands to 9223372036854775808 hosts"},
		{"web[1-1000000000]", "expands to 1000000000 hosts"},
		{"w[0-999999999999999999]x[0-999999999999999999]", "expands to 2^64 or more hosts"},
	}
	for _, tc := range tests {
		t.Run(tc.entry, func(t *testing.T) {
			var err error
			allocs := testing.AllocsPerRun(5, func() {
				_, err = expandEntry(tc.entry, DefaultMaxTargetsPerSet)
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if allocs > 20 {
				t.Errorf("refusing %q took %v allocations, want a handful", tc.entry, allocs)
			}
		})
	}
}

func TestSetCapCountsAllEntries(t *testing.T) {
	tests := []struct {
		name    string
		hosts   []string
		limit   int
		wantErr int // index of the entry named, -1 for none
	}{
		{"exactly at the cap", []string{"10.0.0.0/30", "a", "b"}, 4, -1},
		{"one over with a later entry", []string{"10.0.0.0/30", "a", "b", "c"}, 4, 3},
		{"duplicates still count", []string{"a", "a", "a"}, 2, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := parseSetEntries(tc.hosts, tc.limit)
			switch {
			case tc.wantErr < 0 && len(errs) > 0:
				t.Fatalf("unexpected error: %v", errs[0].err)
			case tc.wantErr >= 0 && len(errs) == 0:
				t.Fatalf("no error, want one for hosts[%d]", tc.wantErr)
			case tc.wantErr >= 0 && errs[0].index != tc.wantErr:
				t.Errorf("error names hosts[%d], want hosts[%d]: %v", errs[0].index, tc.wantErr, errs[0].err)
			}
		})
	}
}

func TestTargetsTCPPorts(t *testing.T) {
	cfg := mustParse(t, `
host_sets:
  - name: web
    hosts: ["web1", "web2:8080"]
    probes:
      icmp:
      tcp: {ports: [22, 443, 23]}
`)
	targets, warnings, err := cfg.Targets()
	if err != nil || len(warnings) > 0 {
		t.Fatalf("Targets: %v %v", err, warnings)
	}
	var got []Key
	for _, tg := range targets {
		got = append(got, tg.Key())
		if tg.Probe == ProbeTCP && tg.Port != tg.Key().Port {
			t.Errorf("%v: Port %d, want the key's", tg.Key(), tg.Port)
		}
	}
	// One tcp target per listed port, in the listed order; a host with
	// its own port keeps that one.
	want := []Key{
		{Set: "web", Host: "web1", Probe: ProbeICMP},
		{Set: "web", Host: "web1", Probe: ProbeTCP, Port: 22},
		{Set: "web", Host: "web1", Probe: ProbeTCP, Port: 443},
		{Set: "web", Host: "web1", Probe: ProbeTCP, Port: 23},
		{Set: "web", Host: "web2:8080", Probe: ProbeICMP},
		{Set: "web", Host: "web2:8080", Probe: ProbeTCP, Port: 8080},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	fps := map[string]bool{}
	for _, tg := range targets {
		if fps[tg.Fingerprint] {
			t.Errorf("%v: fingerprint shared with another target", tg.Key())
		}
		fps[tg.Fingerprint] = true
	}
}

func TestICMPDefaultTimeout(t *testing.T) {
	tests := []struct {
		name string
		yml  string
		want time.Duration
	}{
		{"default", "probes: {icmp: {}}", DefaultICMPTimeout},
		{"several packets", "probes: {icmp: {count: 3, packet_interval: 500ms}}", DefaultICMPTimeout + time.Second},
		{"shorter set timeout", "timeout: 1s\n    probes: {icmp: {}}", time.Second},
		{"longer set timeout", "timeout: 20s\n    probes: {icmp: {}}", DefaultICMPTimeout},
		{"explicit", "timeout: 20s\n    probes: {icmp: {timeout: 15s}}", 15 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, "host_sets:\n  - name: s\n    hosts: [h]\n    "+tc.yml+"\n")
			if got := cfg.HostSets[0].Probes.ICMP.Timeout.D(); got != tc.want {
				t.Errorf("icmp timeout = %v, want %v", got, tc.want)
			}
		})
	}
}

func mustParse(t *testing.T, yml string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(yml), "t.yml")
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, yml)
	}
	return cfg
}

func TestTargets(t *testing.T) {
	cfg := mustParse(t, `
global:
  interval: 30s
host_sets:
  - name: web
    hosts: ["web[1-2].example.com", "[::1]:2222"]
    labels: {team: a}
    probes:
      ssh:
        user: u
        agent: true
        insecure_skip_host_key_verification: true
      icmp: {timeout: 3s}
      tcp: {port: 443}
  - name: db
    interval: 10s
    hosts: [10.0.0.0/31]
    probes:
      tcp: {port: 5432}
`)
	targets, warnings, err := cfg.Targets()
	if err != nil || len(warnings) > 0 {
		t.Fatalf("Targets: %v %v", err, warnings)
	}
	type row struct {
		Key               Key
		Name              string
		Port              int
		Interval, Timeout time.Duration
	}
	want := []row{
		{Key{Set: "web", Host: "web1.example.com", Probe: "icmp"}, "web1.example.com", 0, 30 * time.Second, 3 * time.Second},
		{Key{Set: "web", Host: "web1.example.com", Probe: "tcp", Port: 443}, "web1.example.com", 443, 30 * time.Second, 10 * time.Second},
		{Key{Set: "web", Host: "web1.example.com", Probe: "ssh"}, "web1.example.com", 0, 30 * time.Second, 10 * time.Second},
		{Key{Set: "web", Host: "web2.example.com", Probe: "icmp"}, "web2.example.com", 0, 30 * time.Second, 3 * time.Second},
		{Key{Set: "web", Host: "web2.example.com", Probe: "tcp", Port: 443}, "web2.example.com", 443, 30 * time.Second, 10 * time.Second},
		{Key{Set: "web", Host: "web2.example.com", Probe: "ssh"}, "web2.example.com", 0, 30 * time.Second, 10 * time.Second},
		{Key{Set: "web", Host: "[::1]:2222", Probe: "icmp"}, "::1", 2222, 30 * time.Second, 3 * time.Second},
		{Key{Set: "web", Host: "[::1]:2222", Probe: "tcp", Port: 2222}, "::1", 2222, 30 * time.Second, 10 * time.Second},
		{Key{Set: "web", Host: "[::1]:2222", Probe: "ssh"}, "::1", 2222, 30 * time.Second, 10 * time.Second},
		{Key{Set: "db", Host: "10.0.0.0", Probe: "tcp", Port: 5432}, "10.0.0.0", 5432, 10 * time.Second, 10 * time.Second},
		{Key{Set: "db", Host: "10.0.0.1", Probe: "tcp", Port: 5432}, "10.0.0.1", 5432, 10 * time.Second, 10 * time.Second},
	}
	var got []row
	for _, tg := range targets {
		got = append(got, row{tg.Key(), tg.Name, tg.Port, tg.Interval, tg.Timeout})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("targets (-want +got):\n%s", diff)
	}

	web, db := &cfg.HostSets[0], &cfg.HostSets[1]
	fps := map[string]bool{}
	for _, tg := range targets {
		hs := web
		if tg.Set == "db" {
			hs = db
		}
		// Exactly the matching probe pointer is set, and it is the set's.
		if tg.ICMP != nil != (tg.Probe == ProbeICMP) || tg.TCP != nil != (tg.Probe == ProbeTCP) || tg.SSH != nil != (tg.Probe == ProbeSSH) {
			t.Errorf("%v: probe pointers %p %p %p", tg.Key(), tg.ICMP, tg.TCP, tg.SSH)
		}
		if (tg.ICMP != nil && tg.ICMP != hs.Probes.ICMP) || (tg.TCP != nil && tg.TCP != hs.Probes.TCP) || (tg.SSH != nil && tg.SSH != hs.Probes.SSH) {
			t.Errorf("%v: probe config is not the set's", tg.Key())
		}
		hs.Labels["probe_check"] = tg.Key().Host
		if tg.Labels["probe_check"] != tg.Key().Host {
			t.Errorf("%v: labels map is not the set's own", tg.Key())
		}
		delete(hs.Labels, "probe_check")
		if fps[tg.Fingerprint] {
			t.Errorf("%v: fingerprint %x is not unique", tg.Key(), tg.Fingerprint)
		}
		fps[tg.Fingerprint] = true
	}
}

func TestTargetsDuplicates(t *testing.T) {
	cfg := mustParse(t, `
host_sets:
  - name: a
    hosts: [10.0.0.2, 10.0.0.0/30, WEB1, web1, "2001:db8::1", "2001:DB8::0:1", db:22, db:022]
    probes: {icmp: {}}
  - name: b
    hosts: [10.0.0.2]
    probes: {icmp: {}}
`)
	targets, warnings, err := cfg.Targets()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tg := range targets {
		got = append(got, tg.Set+"/"+tg.Host)
	}
	want := []string{"a/10.0.0.2", "a/10.0.0.1", "a/WEB1", "a/2001:db8::1", "a/db:22", "b/10.0.0.2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	wantWarnings := []string{
		`host set "a": entry "10.0.0.0/30": 1 duplicate host(s) dropped, first "10.0.0.2"`,
		`host set "a": entry "web1": 1 duplicate host(s) dropped, first "web1"`,
		`host set "a": entry "2001:DB8::0:1": 1 duplicate host(s) dropped, first "2001:db8::1"`,
		`host set "a": entry "db:022": 1 duplicate host(s) dropped, first "db:22"`,
	}
	if diff := cmp.Diff(wantWarnings, warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

func TestTargetsInvalidHandBuiltConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad entry", Config{HostSets: []HostSet{{Name: "x", Hosts: []string{"a b"}, Probes: Probes{TCP: &TCPProbe{Port: 1}}}}}, `host set "x": hosts[0]: entry "a b"`},
		{"over the cap", Config{Global: Global{MaxTargetsPerSet: 3}, HostSets: []HostSet{{Name: "x", Hosts: []string{"10.0.0.0/29"}, Probes: Probes{TCP: &TCPProbe{Port: 1}}}}}, "past max_targets_per_set (3)"},
		{"over the total", Config{Global: Global{MaxTargetsPerSet: 1 << 30}, HostSets: []HostSet{{Name: "x", Hosts: []string{"10.0.0.0/9"}, Probes: Probes{TCP: &TCPProbe{Port: 1}}}}}, "more than max_targets (1000000) targets"},
		{"bad expansion", Config{HostSets: []HostSet{{Name: "x", Hosts: []string{"10.0.0.[255-256]"}, Probes: Probes{TCP: &TCPProbe{Port: 1}}}}}, `expands to "10.0.0.256"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.cfg.Targets()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestFingerprint checks that a target's fingerprint changes iff something
// that affects how it is probed or labelled changes.
func TestFingerprint(t *testing.T) {
	const base = `
global:
  interval: 30s
host_sets:
  - name: web
    hosts: [web1.example.com]
    labels: {team: a}
    probes:
      icmp: {count: 2, packet_interval: 1s, size: 56}
      tcp: {port: 443}
      ssh:
        user: u
        private_key_file: /k
        known_hosts_file: /kh
        commands: [{name: up, run: uptime}]
  - name: other
    hosts: [other.example.com]
    probes: {icmp: {}}
`
	fingerprints := func(t *testing.T, yml string) map[Key]string {
		t.Helper()
		targets, _, err := mustParse(t, yml).Targets()
		if err != nil {
			t.Fatal(err)
		}
		m := map[Key]string{}
		for _, tg := range targets {
			m[tg.Key()] = tg.Fingerprint
		}
		return m
	}
	key := func(p string) Key {
		k := Key{Set: "web", Host: "web1.example.com", Probe: p}
		if p == ProbeTCP {
			k.Port = 443
		}
		return k
	}
	tests := []struct {
		name    string
		from    string
		to      string
		changed []string // probes of web1 whose fingerprint must change
	}{
		{"comment and formatting", "global:\n  interval: 30s", "# note\nglobal:\n    interval:   30s", nil},
		{"other set changes", "other.example.com]\n    probes: {icmp: {}}", "other.example.com]\n    probes: {icmp: {count: 3}}", nil},
		{"global limits", "global:\n  interval: 30s", "global:\n  interval: 30s\n  limits: {icmp: {rate: 5}}", nil},
		{"interval", "interval: 30s", "interval: 40s", []string{"icmp", "tcp", "ssh"}},
		// ICMP keeps its own 2s default below a longer set timeout.
		{"global timeout", "interval: 30s", "interval: 30s\n  timeout: 5s", []string{"tcp", "ssh"}},
		{"set timeout below the icmp default", "labels: {team: a}", "labels: {team: a}\n    timeout: 1500ms", []string{"icmp", "tcp", "ssh"}},
		{"label value", "team: a", "team: b", []string{"icmp", "tcp", "ssh"}},
		{"label added", "team: a", "team: a, zone: z", []string{"icmp", "tcp", "ssh"}},
		{"retry interval", "labels: {team: a}", "labels: {team: a}\n    retry_interval: 10s", []string{"icmp", "tcp", "ssh"}},
		{"source address", "labels: {team: a}", "labels: {team: a}\n    source_address: 127.0.0.1", []string{"icmp", "tcp", "ssh"}},
		{"icmp count", "count: 2", "count: 3", []string{"icmp"}},
		{"icmp size", "size: 56", "size: 64", []string{"icmp"}},
		{"icmp packet interval", "packet_interval: 1s", "packet_interval: 2s", []string{"icmp"}},
		{"tcp ports", "port: 443", "ports: [443, 444]", []string{"tcp"}},
		{"ssh command", "run: uptime", "run: uptime -p", []string{"ssh"}},
		{"ssh key path", "private_key_file: /k", "private_key_file: /k2", []string{"ssh"}},
		{"host port", "[web1.example.com]", "[web1.example.com:443]", nil}, // a different target: checked below
	}
	before := fingerprints(t, base)
	if again := fingerprints(t, base); !cmp.Equal(before, again) {
		t.Fatal("fingerprints differ between two parses of the same config")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(base, tc.from) {
				t.Fatalf("base config lacks %q", tc.from)
			}
			after := fingerprints(t, strings.Replace(base, tc.from, tc.to, 1))
			for _, p := range []string{ProbeICMP, ProbeTCP, ProbeSSH} {
				fp, ok := after[key(p)]
				if !ok {
					continue
				}
				wantChange := false
				for _, c := range tc.changed {
					wantChange = wantChange || c == p
				}
				if changed := fp != before[key(p)]; changed != wantChange {
					t.Errorf("%s fingerprint changed = %v, want %v", p, changed, wantChange)
				}
			}
		})
	}
	// Same host, another port: another target with another fingerprint.
	withPort := fingerprints(t, strings.Replace(base, "[web1.example.com]", "[web1.example.com:443]", 1))
	fp := withPort[Key{Set: "web", Host: "web1.example.com:443", Probe: ProbeICMP}]
	if fp == "" || fp == before[key(ProbeICMP)] {
		t.Errorf("fingerprint with a port = %q, want a new one", fp)
	}
}

// TestTargetsCarryRetryAndSource checks that every target of a set carries
// its retry interval (the interval when none is given) and source address.
func TestTargetsCarryRetryAndSource(t *testing.T) {
	cfg := mustParse(t, `
host_sets:
  - name: uplink1
    interval: 5m
    retry_interval: 30s
    source_address: 127.0.0.1
    hosts: [a.example.com, b.example.com]
    probes: {icmp: {}, tcp: {port: 22}}
  - name: plain
    interval: 2m
    hosts: [c.example.com]
    probes: {icmp: {}}
`)
	targets, _, err := cfg.Targets()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		retry time.Duration
		src   netip.Addr
	}{
		"uplink1": {30 * time.Second, netip.MustParseAddr("127.0.0.1")},
		"plain":   {2 * time.Minute, netip.Addr{}},
	}
	if len(targets) != 5 {
		t.Fatalf("got %d targets, want 5", len(targets))
	}
	for _, tg := range targets {
		w := want[tg.Set]
		if tg.RetryInterval != w.retry || tg.SourceAddress != w.src {
			t.Errorf("%v: retry %v source %v, want %v and %v", tg.Key(), tg.RetryInterval, tg.SourceAddress, w.retry, w.src)
		}
	}
}

// TestTargetsAtCap expands a set of exactly max_targets_per_set hosts.
func TestTargetsAtCap(t *testing.T) {
	cfg := mustParse(t, "host_sets:\n- name: big\n  hosts: [10.0.0.0/16, 10.1.0.1, 10.1.0.2]\n  probes: {icmp: {}, tcp: {port: 22}}\n")
	targets, warnings, err := cfg.Targets()
	if err != nil || len(warnings) > 0 {
		t.Fatalf("Targets: %v %v", err, warnings)
	}
	if got, want := len(targets), 2*DefaultMaxTargetsPerSet; got != want {
		t.Fatalf("got %d targets, want %d", got, want)
	}
	if first, last := targets[0].Host, targets[len(targets)-1].Host; first != "10.0.0.1" || last != "10.1.0.2" {
		t.Errorf("first %s last %s", first, last)
	}
	_, err = Parse([]byte("host_sets:\n- name: big\n  hosts: [10.0.0.0/16, 10.1.0.1, 10.1.0.2, 10.1.0.3]\n  probes: {icmp: {}}\n"), "t.yml")
	if err == nil || !strings.Contains(err.Error(), `t.yml:3: host_sets[0] ("big").hosts[3]: entry "10.1.0.3" expands to 1 hosts, taking the set past max_targets_per_set (65536)`) {
		t.Errorf("one host over the cap: error %v", err)
	}
}
