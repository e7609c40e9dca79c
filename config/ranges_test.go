package config

import (
	"fmt"
	"strings"
	"testing"
)

// TestNumericRanges walks both ends of every numeric field's range: the
// bound itself is accepted, one step beyond it is refused with a message
// naming the field.
func TestNumericRanges(t *testing.T) {
	const ssh = "ssh: {user: u, agent: true, insecure_skip_host_key_verification: true, %s}"
	// config places one field: global holds global fields, set holds the
	// set's fields (with its hosts and probes).
	config := func(global, set, probes string) string {
		if probes == "" {
			probes = "icmp: {}"
		}
		return "global: {" + global + "}\nhost_sets:\n- {name: s, hosts: ['a:1'], " + set + " probes: {" + probes + "}}\n"
	}
	g := func(f string) string { return config(f, "", "") }
	s := func(f string) string { return config("", f+",", "") }
	p := func(f string) string { return config("interval: 1d, timeout: 1d", "", f) }
	tests := []struct {
		name string
		yaml string
		want string // "" for accepted
	}{
		{"global.interval at 1s", g("interval: 1s, timeout: 1s"), ""},
		{"global.interval below 1s", g("interval: 999ms, timeout: 500ms"), "global.interval: interval must be at least 1s, got 999ms"},
		{"global.interval at 1d", g("interval: 1d"), ""},
		{"global.interval above 1d", g("interval: 86400001ms"), "global.interval: interval must be at most 1d, got 1d1ms"},
		{"global.timeout at 1ms", g("timeout: 1ms"), ""},
		{"global.timeout zero", g("timeout: 0s"), "global.timeout: timeout must be positive: leave the key out"},
		{"global.timeout at the interval", g("interval: 5s, timeout: 5s"), ""},
		{"global.timeout above the interval", g("interval: 5s, timeout: 5001ms"), "timeout 5s1ms exceeds the interval 5s"},
		{"global.concurrency at 1", g("concurrency: 1"), ""},
		{"global.concurrency at 0", g("concurrency: 0"), "global.concurrency: concurrency must be at least 1, got 0"},
		{"global.concurrency at the max", g(fmt.Sprintf("concurrency: %d", MaxConcurrency)), ""},
		{"global.concurrency above the max", g(fmt.Sprintf("concurrency: %d", MaxConcurrency+1)), "concurrency must be at most 1048576, got 1048577"},
		{"global.max_targets at 1", g("max_targets: 1"), ""},
		{"global.max_targets at 0", g("max_targets: 0"), "global.max_targets: max_targets must be between 1 and 4194304, got 0"},
		{"global.max_targets at the ceiling", g(fmt.Sprintf("max_targets: %d", MaxTargetsCeiling)), ""},
		{"global.max_targets above the ceiling", g(fmt.Sprintf("max_targets: %d", MaxTargetsCeiling+1)), "max_targets must be between 1 and 4194304, got 4194305"},
		{"global.max_targets_per_set at 1", g("max_targets_per_set: 1"), ""},
		{"global.max_targets_per_set at 0", g("max_targets_per_set: 0"), "max_targets_per_set must be between 1 and 1048576, got 0"},
		{"global.max_targets_per_set at the ceiling", g(fmt.Sprintf("max_targets_per_set: %d", MaxTargetsPerSetCeiling)), ""},
		{"global.max_targets_per_set above the ceiling", g(fmt.Sprintf("max_targets_per_set: %d", MaxTargetsPerSetCeiling+1)), "max_targets_per_set must be between 1 and 1048576, got 1048577"},
		{"limits.concurrency at 1", g("limits: {tcp: {concurrency: 1}}"), ""},
		{"limits.concurrency at 0", g("limits: {tcp: {concurrency: 0}}"), "global.limits.tcp.concurrency: concurrency must be at least 1, got 0"},
		{"limits.concurrency at the max", g(fmt.Sprintf("limits: {ssh: {concurrency: %d}}", MaxConcurrency)), ""},
		{"limits.concurrency above the max", g(fmt.Sprintf("limits: {ssh: {concurrency: %d}}", MaxConcurrency+1)), "global.limits.ssh.concurrency: concurrency must be at most 1048576"},
		{"limits.rate at 0", g("limits: {icmp: {rate: 0}}"), ""},
		{"limits.rate below 0", g("limits: {icmp: {rate: -0.001}}"), "global.limits.icmp.rate: rate must be a finite number >= 0"},
		{"limits.rate infinite", g("limits: {icmp: {rate: .inf}}"), "global.limits.icmp.rate: rate must be a finite number >= 0"},
		{"limits.rate at the max", g("limits: {icmp: {rate: 1000000}}"), ""},
		{"limits.rate above the max", g("limits: {icmp: {rate: 1000000.5}}"), "global.limits.icmp.rate: rate must be at most 1e+06, got 1.0000005e+06"},
		{"limits.burst at 0", g("limits: {icmp: {rate: 1, burst: 0}}"), ""},
		{"limits.burst below 0", g("limits: {icmp: {burst: -1}}"), "global.limits.icmp.burst: burst must be >= 0, got -1"},
		{"limits.burst at the max", g(fmt.Sprintf("limits: {icmp: {burst: %d}}", MaxBurst)), ""},
		{"limits.burst above the max", g(fmt.Sprintf("limits: {icmp: {burst: %d}}", MaxBurst+1)), "global.limits.icmp.burst: burst must be at most 1048576, got 1048577"},
		{"set interval at 1s", s("interval: 1s"), ""},
		{"set interval below 1s", s("interval: 999ms"), `host_sets[0] ("s").interval: interval must be at least 1s, got 999ms`},
		{"set interval at 1d", s("interval: 1d, timeout: 1d"), ""},
		{"set interval above 1d", s("interval: 86400001ms"), `host_sets[0] ("s").interval: interval must be at most 1d, got 1d1ms`},
		{"set interval zero", s("interval: 0"), `host_sets[0] ("s").interval: interval must be positive: leave the key out`},
		{"set timeout at 1ms", s("timeout: 1ms"), ""},
		{"set timeout zero", s("timeout: 0ms"), `host_sets[0] ("s").timeout: timeout must be positive`},
		{"set timeout above its interval", s("interval: 2s, timeout: 2001ms"), "timeout 2s1ms exceeds the interval 2s"},
		{"labels at the max", s("labels: {" + labels(MaxLabelsPerSet) + "}"), ""},
		{"labels above the max", s("labels: {" + labels(MaxLabelsPerSet+1) + "}"), `host_sets[0] ("s").labels: 65 labels, more than the 64 a set may have`},
		{"icmp.count at 1", p("icmp: {count: 1}"), ""},
		{"icmp.count at 0", p("icmp: {count: 0}"), "count must be between 1 and 65535, got 0"},
		{"icmp.count at the max", p("icmp: {count: 65535, packet_interval: 1ms, timeout: 1m6s}"), ""},
		{"icmp.count above the max", p("icmp: {count: 65536, packet_interval: 1ms}"), "count must be between 1 and 65535, got 65536"},
		{"icmp.size at 0", p("icmp: {size: 0}"), ""},
		{"icmp.size below 0", p("icmp: {size: -1}"), "size must be between 0 and 65500, got -1"},
		{"icmp.size at the max", p("icmp: {size: 65500}"), ""},
		{"icmp.size above the max", p("icmp: {size: 65501}"), "size must be between 0 and 65500, got 65501"},
		{"icmp.packet_interval at 1ms", p("icmp: {packet_interval: 1ms}"), ""},
		{"icmp.packet_interval zero", p("icmp: {packet_interval: 0s}"), "probes.icmp.packet_interval: packet_interval must be positive"},
		{"icmp.packet_interval at 1m", p("icmp: {packet_interval: 1m}"), ""},
		{"icmp.packet_interval above 1m", p("icmp: {packet_interval: 60001ms}"), "packet_interval must be at most 1m, got 1m1ms"},
		{"icmp.timeout at 1ms", p("icmp: {timeout: 1ms}"), ""},
		{"icmp.timeout zero", p("icmp: {timeout: 0s}"), "probes.icmp.timeout: timeout must be positive"},
		{"icmp.timeout at the interval", p("icmp: {timeout: 1d}"), ""},
		{"icmp.timeout above the interval", p("icmp: {timeout: 86400001ms}"), "timeout must be at most 1d"},
		{"tcp.port at 1", p("tcp: {port: 1}"), ""},
		{"tcp.port unset", p("tcp: {port: 0}"), ""},
		{"tcp.port below 0", p("tcp: {port: -1}"), "probes.tcp.port: port must be between 1 and 65535, got -1"},
		{"tcp.port at the max", p("tcp: {port: 65535}"), ""},
		{"tcp.port above the max", p("tcp: {port: 65536}"), "probes.tcp.port: port must be between 1 and 65535, got 65536"},
		{"tcp.timeout zero", p("tcp: {timeout: 0s}"), "probes.tcp.timeout: timeout must be positive"},
		{"ssh.port at 1", p(fmt.Sprintf(ssh, "port: 1")), ""},
		{"ssh.port at 0", p(fmt.Sprintf(ssh, "port: 0")), "probes.ssh.port: port must be between 1 and 65535, got 0"},
		{"ssh.port at the max", p(fmt.Sprintf(ssh, "port: 65535")), ""},
		{"ssh.port above the max", p(fmt.Sprintf(ssh, "port: 65536")), "probes.ssh.port: port must be between 1 and 65535, got 65536"},
		{"ssh.max_output_bytes at 1", p(fmt.Sprintf(ssh, "max_output_bytes: 1")), ""},
		{"ssh.max_output_bytes at 0", p(fmt.Sprintf(ssh, "max_output_bytes: 0")), "max_output_bytes must be at least 1, got 0"},
		{"ssh.max_output_bytes at the max", p(fmt.Sprintf(ssh, fmt.Sprintf("max_output_bytes: %d", MaxOutputBytesCeiling))), ""},
		{"ssh.max_output_bytes above the max", p(fmt.Sprintf(ssh, fmt.Sprintf("max_output_bytes: %d", MaxOutputBytesCeiling+1))), "max_output_bytes must be at most 1073741824, got 1073741825"},
		{"ssh.max_output_bytes at MaxInt64", p(fmt.Sprintf(ssh, "max_output_bytes: 9223372036854775807")), "max_output_bytes must be at most 1073741824, got 9223372036854775807"},
		{"ssh.timeout zero", p(fmt.Sprintf(ssh, "timeout: 0s")), "probes.ssh.timeout: timeout must be positive"},
		{"ssh.commands at the max", p(fmt.Sprintf(ssh, "commands: ["+commands(MaxCommandsPerProbe, "")+"]")), ""},
		{"ssh.commands above the max", p(fmt.Sprintf(ssh, "commands: ["+commands(MaxCommandsPerProbe+1, "")+"]")), "probes.ssh.commands: 65 commands, more than the 64 one probe may run"},
		{"command timeout at 1ms", p(fmt.Sprintf(ssh, "commands: ["+commands(1, "1ms")+"]")), ""},
		{"command timeout zero", p(fmt.Sprintf(ssh, "commands: ["+commands(1, "0s")+"]")), "probes.ssh.commands[0].timeout: timeout must be positive"},
		{"command timeout at the probe's", p(fmt.Sprintf(ssh, "timeout: 5s, commands: ["+commands(1, "5s")+"]")), ""},
		{"command timeout above the probe's", p(fmt.Sprintf(ssh, "timeout: 5s, commands: ["+commands(1, "5001ms")+"]")), "timeout 5s1ms exceeds the ssh probe's timeout 5s"},
		{"dns.min_ttl at 1ms", g("dns: {min_ttl: 1ms}"), ""},
		{"dns.min_ttl at 1d", g("dns: {min_ttl: 1d, max_ttl: 1d}"), ""},
		{"dns.min_ttl above 1d", g("dns: {min_ttl: 86400001ms, max_ttl: 1d}"), "global.dns.min_ttl: min_ttl must be at most 1d, got 1d1ms"},
		{"dns.max_ttl at 1d", g("dns: {max_ttl: 1d}"), ""},
		{"dns.max_ttl above 1d", g("dns: {max_ttl: 86400001ms}"), "global.dns.max_ttl: max_ttl must be at most 1d, got 1d1ms"},
		{"dns.max_ttl zero", g("dns: {max_ttl: 0s}"), "global.dns.max_ttl: max_ttl must be positive"},
		{"dns.negative_ttl at 1ms", g("dns: {negative_ttl: 1ms}"), ""},
		{"dns.negative_ttl at 1d", g("dns: {negative_ttl: 1d}"), ""},
		{"dns.negative_ttl above 1d", g("dns: {negative_ttl: 86400001ms}"), "global.dns.negative_ttl: negative_ttl must be at most 1d, got 1d1ms"},
		{"dns.max_stale at 1ms", g("dns: {max_stale: 1ms}"), ""},
		{"dns.max_stale at 1d", g("dns: {max_stale: 1d}"), ""},
		{"dns.max_stale above 1d", g("dns: {max_stale: 86400001ms}"), "global.dns.max_stale: max_stale must be at most 1d, got 1d1ms"},
		{"limits.bastion.concurrency at 0", g("limits: {bastion: {concurrency: 0}}"), "global.limits.bastion.concurrency: concurrency must be at least 1, got 0"},
		{"limits.bastion.concurrency at the max", g(fmt.Sprintf("limits: {bastion: {concurrency: %d}}", MaxConcurrency)), ""},
		{"limits.bastion.concurrency above the max", g(fmt.Sprintf("limits: {bastion: {concurrency: %d}}", MaxConcurrency+1)), "global.limits.bastion.concurrency: concurrency must be at most 1048576"},
		{"limits.bastion.rate above the max", g("limits: {bastion: {rate: 1000000.5}}"), "global.limits.bastion.rate: rate must be at most 1e+06"},
		{"limits.bastion.burst above the max", g(fmt.Sprintf("limits: {bastion: {burst: %d}}", MaxBurst+1)), "global.limits.bastion.burst: burst must be at most 1048576"},
		{"set retry_interval at 1s", s("retry_interval: 1s"), ""},
		{"set retry_interval below 1s", s("retry_interval: 999ms"), `host_sets[0] ("s").retry_interval: retry_interval must be at least 1s, got 999ms`},
		{"set retry_interval at the interval", s("interval: 1d, timeout: 1d, retry_interval: 1d"), ""},
		{"set retry_interval above the interval", s("interval: 1h, retry_interval: 3600001ms"), "retry_interval 1h1ms exceeds the interval 1h"},
		{"file_sd_refresh_interval at 1s", s("file_sd: [sd.json], file_sd_refresh_interval: 1s"), ""},
		{"file_sd_refresh_interval below 1s", s("file_sd: [sd.json], file_sd_refresh_interval: 999ms"), "file_sd_refresh_interval must be at least 1s, got 999ms"},
		{"file_sd_refresh_interval at 1d", s("file_sd: [sd.json], file_sd_refresh_interval: 1d"), ""},
		{"file_sd_refresh_interval above 1d", s("file_sd: [sd.json], file_sd_refresh_interval: 86400001ms"), "file_sd_refresh_interval must be at most 1d, got 1d1ms"},
		{"http_sd.refresh_interval at 1s", s("http_sd: [{url: 'http://127.0.0.1/sd', refresh_interval: 1s, timeout: 1s}]"), ""},
		{"http_sd.refresh_interval below 1s", s("http_sd: [{url: 'http://127.0.0.1/sd', refresh_interval: 999ms, timeout: 1ms}]"), "http_sd[0].refresh_interval: refresh_interval must be at least 1s, got 999ms"},
		{"http_sd.refresh_interval at 1d", s("http_sd: [{url: 'http://127.0.0.1/sd', refresh_interval: 1d}]"), ""},
		{"http_sd.refresh_interval above 1d", s("http_sd: [{url: 'http://127.0.0.1/sd', refresh_interval: 86400001ms}]"), "refresh_interval must be at most 1d, got 1d1ms"},
		{"http_sd.timeout at 1ms", s("http_sd: [{url: 'http://127.0.0.1/sd', timeout: 1ms}]"), ""},
		{"http_sd.timeout zero", s("http_sd: [{url: 'http://127.0.0.1/sd', timeout: 0s}]"), "http_sd[0].timeout: timeout must be positive"},
		{"http_sd.timeout at its refresh_interval", s("http_sd: [{url: 'http://127.0.0.1/sd', refresh_interval: 5s, timeout: 5s}]"), ""},
		{"http_sd.timeout above its refresh_interval", s("http_sd: [{url: 'http://127.0.0.1/sd', refresh_interval: 5s, timeout: 5001ms}]"), "timeout 5s1ms exceeds the refresh_interval 5s"},
		{"tcp.ports at the max", p("tcp: {ports: [" + ports(MaxTCPPorts) + "]}"), ""},
		{"tcp.ports above the max", p("tcp: {ports: [" + ports(MaxTCPPorts+1) + "]}"), "probes.tcp.ports: 65 ports, more than the 64 a tcp probe may list"},
		{"tcp.ports entry at 65535", p("tcp: {ports: [65535]}"), ""},
		{"tcp.ports entry above the max", p("tcp: {ports: [65536]}"), "probes.tcp.ports[0]: port must be between 1 and 65535, got 65536"},
		{"tcp.ports entry at 0", p("tcp: {ports: [0]}"), "probes.tcp.ports[0]: port must be between 1 and 65535, got 0"},
		{"ignore_lines at the max", p(fmt.Sprintf(ssh, "commands: [{name: c, run: x, ignore_lines: ["+patterns(MaxShellLines)+"]}]")), ""},
		{"ignore_lines above the max", p(fmt.Sprintf(ssh, "commands: [{name: c, run: x, ignore_lines: ["+patterns(MaxShellLines+1)+"]}]")), "65 ignore_lines patterns, more than 64"},
		{"keyboard_interactive at the max", p(fmt.Sprintf(ssh, "keyboard_interactive: ["+answers(MaxKeyboardInteractiveAnswers)+"]")), ""},
		{"keyboard_interactive above the max", p(fmt.Sprintf(ssh, "keyboard_interactive: ["+answers(MaxKeyboardInteractiveAnswers+1)+"]")), "17 keyboard_interactive answers, more than 16"},
		{"shell.width at 0", p(fmt.Sprintf(ssh, "mode: shell, shell: {width: 0}")), ""},
		{"shell.width below 0", p(fmt.Sprintf(ssh, "mode: shell, shell: {width: -1}")), "probes.ssh.shell.width: width must be at least 0, got -1"},
		{"shell.width at the max", p(fmt.Sprintf(ssh, "mode: shell, shell: {width: 65535}")), ""},
		{"shell.width above the max", p(fmt.Sprintf(ssh, "mode: shell, shell: {width: 65536}")), "probes.ssh.shell.width: width must be at most 65535, got 65536"},
		{"shell.height below 0", p(fmt.Sprintf(ssh, "mode: shell, shell: {height: -1}")), "probes.ssh.shell.height: height must be at least 0, got -1"},
		{"shell.height at the max", p(fmt.Sprintf(ssh, "mode: shell, shell: {height: 65535}")), ""},
		{"shell.height above the max", p(fmt.Sprintf(ssh, "mode: shell, shell: {height: 65536}")), "probes.ssh.shell.height: height must be at most 65535, got 65536"},
		{"shell.setup at the max", p(fmt.Sprintf(ssh, "mode: shell, shell: {setup: ["+lines(MaxShellLines)+"]}")), ""},
		{"shell.setup above the max", p(fmt.Sprintf(ssh, "mode: shell, shell: {setup: ["+lines(MaxShellLines+1)+"]}")), "probes.ssh.shell.setup: 65 setup lines, more than 64"},
		{"proxy_jump connections at 1", p(fmt.Sprintf(ssh, "proxy_jump: [{host: b, connections: 1}]")), ""},
		{"proxy_jump connections at the max", p(fmt.Sprintf(ssh, fmt.Sprintf("proxy_jump: [{host: b, connections: %d}]", MaxBastionConnections))), ""},
		{"proxy_jump connections above the max", p(fmt.Sprintf(ssh, fmt.Sprintf("proxy_jump: [{host: b, connections: %d}]", MaxBastionConnections+1))), "probes.ssh.proxy_jump[0].connections: connections must be at most 64, got 65"},
		{"proxy_jump connections below 0", p(fmt.Sprintf(ssh, "proxy_jump: [{host: b, connections: -1}]")), "probes.ssh.proxy_jump[0].connections: connections must be at least 1, got -1"},
		{"proxy_jump hops at the max", p(fmt.Sprintf(ssh, "proxy_jump: ["+hops(MaxProxyJumpHops)+"]")), ""},
		{"proxy_jump hops above the max", p(fmt.Sprintf(ssh, "proxy_jump: ["+hops(MaxProxyJumpHops+1)+"]")), "probes.ssh.proxy_jump: 9 proxy_jump entries, more than 8"},
		{"proxy_jump host port at the max", p(fmt.Sprintf(ssh, "proxy_jump: [{host: 'b:65535'}]")), ""},
		{"proxy_jump host port above the max", p(fmt.Sprintf(ssh, "proxy_jump: [{host: 'b:65536'}]")), `proxy_jump[0].host: host "b:65536": port must be between 1 and 65535`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "r.yml")
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused:\n%s\n%v", tc.yaml, err)
			case tc.want != "" && err == nil:
				t.Errorf("accepted, want error containing %q:\n%s", tc.want, tc.yaml)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error does not contain %q:\n%v", tc.want, err)
			}
		})
	}
}

// labels returns n distinct labels in flow style.
func labels(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "l%d: v, ", i)
	}
	return b.String()
}

// commands returns n distinct commands in flow style, each with the given
// timeout unless it is empty.
func commands(n int, timeout string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "{name: c%d, run: x", i)
		if timeout != "" {
			b.WriteString(", timeout: " + timeout)
		}
		b.WriteString("}, ")
	}
	return b.String()
}

// ports returns n distinct TCP ports in flow style.
func ports(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%d, ", 1000+i)
	}
	return b.String()
}

// patterns returns n regular expressions in flow style.
func patterns(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "'^p%d$', ", i)
	}
	return b.String()
}

// answers returns n keyboard_interactive answers in flow style.
func answers(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "{prompt: 'q%d', answer_file: a%d}, ", i, i)
	}
	return b.String()
}

// lines returns n shell setup lines in flow style.
func lines(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "'line %d', ", i)
	}
	return b.String()
}

// hops returns n proxy_jump entries in flow style.
func hops(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "{host: b%d}, ", i)
	}
	return b.String()
}
