package collector

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	dto "github.com/prometheus/client_model/go"

	"github.com/fleet-exporter/fleet_exporter/config"
	kit "github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// t0 is the start of the first probe in every test.
var t0 = time.Unix(1_700_000_000, 0)

// probeDuration is the wall time of every fake probe; results end 0.25 s
// after their start.
const probeDuration = 250 * time.Millisecond

func icmpTarget(set, host string, labels map[string]string) *config.Target {
	return kit.ICMPTarget(set, host, kit.WithLabels(labels), kit.WithICMP(3, time.Second), kit.WithFingerprint("icmp"))
}

func tcpTarget(set, host string, labels map[string]string) *config.Target {
	return kit.TCPTarget(set, host, kit.WithLabels(labels), kit.WithTCPPort(80), kit.WithFingerprint("tcp"))
}

func sshTarget(set, host string, labels map[string]string, commands ...string) *config.Target {
	return kit.SSHTarget(set, host, kit.WithLabels(labels), kit.WithCommands(commands...), kit.WithFingerprint("ssh"))
}

// result returns the n-th result of t (starting at t0 + n minutes).
func result(t *config.Target, n int, success bool, reason probe.Reason) probe.Result {
	start := t0.Add(time.Duration(n) * time.Minute)
	return probe.Result{
		Key: t.Key(), Due: start, Start: start, Duration: probeDuration,
		Success: success, Reason: reason,
	}
}

// withAddr returns r with the probed address a.
func withAddr(r probe.Result, a string) probe.Result {
	r.Addr = netip.MustParseAddr(a)
	return r
}

func icmpResult(t *config.Target, n, sent, received int, rtt time.Duration) probe.Result {
	r := result(t, n, received > 0, probe.ReasonNone)
	if received == 0 {
		r.Reason = probe.ReasonTimeout
	}
	r.ICMP = &probe.ICMPResult{Sent: sent, Received: received, RTT: rtt}
	return r
}

func sshResult(t *config.Target, n int, success bool, reason probe.Reason, s *probe.SSHResult) probe.Result {
	r := result(t, n, success, reason)
	r.SSH = s
	return r
}

// families maps every family the collector emits to its HELP and TYPE lines,
// in the order of the text exposition.
var families = map[string]string{
	"fleet_host_up": "# HELP fleet_host_up Whether the last result of any enabled probe of the host succeeded (1) or not (0).\n" +
		"# TYPE fleet_host_up gauge\n",
	"fleet_probe_success": "# HELP fleet_probe_success Whether the last probe succeeded (1) or failed (0).\n" +
		"# TYPE fleet_probe_success gauge\n",
	"fleet_probe_duration_seconds": "# HELP fleet_probe_duration_seconds Wall time of the last probe in seconds.\n" +
		"# TYPE fleet_probe_duration_seconds gauge\n",
	"fleet_probe_last_run_timestamp_seconds": "# HELP fleet_probe_last_run_timestamp_seconds Unix time at which the last probe ended.\n" +
		"# TYPE fleet_probe_last_run_timestamp_seconds gauge\n",
	"fleet_probe_last_success_timestamp_seconds": "# HELP fleet_probe_last_success_timestamp_seconds Unix time at which the last successful probe ended; absent before the first success.\n" +
		"# TYPE fleet_probe_last_success_timestamp_seconds gauge\n",
	"fleet_probe_consecutive_failures": "# HELP fleet_probe_consecutive_failures Number of failed probes since the last successful one.\n" +
		"# TYPE fleet_probe_consecutive_failures gauge\n",
	"fleet_probe_failure_info": "# HELP fleet_probe_failure_info Reason of the last probe's failure; present with value 1 only while the last probe failed.\n" +
		"# TYPE fleet_probe_failure_info gauge\n",
	"fleet_probe_ip_addr_hash": "# HELP fleet_probe_ip_addr_hash FNV-1a 32-bit hash of the address the last probe went to, so that a change of address shows; absent when the name did not resolve.\n" +
		"# TYPE fleet_probe_ip_addr_hash gauge\n",
	"fleet_probe_ip_protocol": "# HELP fleet_probe_ip_protocol IP version (4 or 6) of the address the last probe went to; absent when the name did not resolve.\n" +
		"# TYPE fleet_probe_ip_protocol gauge\n",
	"fleet_icmp_rtt_seconds": "# HELP fleet_icmp_rtt_seconds Mean round-trip time of the replies to the last ICMP probe in seconds; absent when no reply came.\n" +
		"# TYPE fleet_icmp_rtt_seconds gauge\n",
	"fleet_icmp_packets_sent_total": "# HELP fleet_icmp_packets_sent_total Number of ICMP echo requests sent.\n" +
		"# TYPE fleet_icmp_packets_sent_total counter\n",
	"fleet_icmp_packets_received_total": "# HELP fleet_icmp_packets_received_total Number of ICMP echo replies received.\n" +
		"# TYPE fleet_icmp_packets_received_total counter\n",
	"fleet_ssh_phase_seconds": "# HELP fleet_ssh_phase_seconds Duration of each phase reached by the last SSH probe that established a connection, in seconds.\n" +
		"# TYPE fleet_ssh_phase_seconds gauge\n",
	"fleet_ssh_command_duration_seconds": "# HELP fleet_ssh_command_duration_seconds Wall time of the last run of the command in seconds.\n" +
		"# TYPE fleet_ssh_command_duration_seconds gauge\n",
	"fleet_ssh_command_exit_status": "# HELP fleet_ssh_command_exit_status Exit status of the last run of the command; -1 when it had none (signal, timeout, dropped connection, no exit status, shell mode).\n" +
		"# TYPE fleet_ssh_command_exit_status gauge\n",
	"fleet_ssh_command_output_hash": "# HELP fleet_ssh_command_output_hash The first 52 bits of the SHA-256 of the command's output in its last run that read the output completely.\n" +
		"# TYPE fleet_ssh_command_output_hash gauge\n",
	"fleet_ssh_command_output_bytes": "# HELP fleet_ssh_command_output_bytes Size of the hashed output of the command in its last run that read the output completely, in bytes.\n" +
		"# TYPE fleet_ssh_command_output_bytes gauge\n",
	"fleet_ssh_command_output_changed_timestamp_seconds": "# HELP fleet_ssh_command_output_changed_timestamp_seconds Unix time of the end of the probe that first saw the current output hash of the command.\n" +
		"# TYPE fleet_ssh_command_output_changed_timestamp_seconds gauge\n",
	"fleet_ssh_command_output_info": "# HELP fleet_ssh_command_output_info The full hex SHA-256 of the command's last completely read output, and with output_label its first line as value; always 1.\n" +
		"# TYPE fleet_ssh_command_output_info gauge\n",
	"fleet_ssh_connection_info": "# HELP fleet_ssh_connection_info Server version and the algorithms negotiated by the last successful SSH handshake with the host (cipher and mac client to server); always 1.\n" +
		"# TYPE fleet_ssh_connection_info gauge\n",
	"fleet_targets": "# HELP fleet_targets Number of configured targets.\n" +
		"# TYPE fleet_targets gauge\n",
	"fleet_probes_total": "# HELP fleet_probes_total Number of probe results received, by result.\n" +
		"# TYPE fleet_probes_total counter\n",
	"fleet_probe_failing_since_timestamp_seconds": "# HELP fleet_probe_failing_since_timestamp_seconds Unix time at which the first failed probe of the current failure streak ended; absent while the last probe succeeded.\n" +
		"# TYPE fleet_probe_failing_since_timestamp_seconds gauge\n",
	"fleet_ssh_command_output_distinct_hashes": "# HELP fleet_ssh_command_output_distinct_hashes Number of distinct values of fleet_ssh_command_output_hash among the hosts of the set that export one for the command; 1 means every such host agrees.\n" +
		"# TYPE fleet_ssh_command_output_distinct_hashes gauge\n",
	"fleet_ssh_host_key_info": "# HELP fleet_ssh_host_key_info Type and SHA-256 fingerprint (OpenSSH form) of the host key the last SSH handshake with the host presented, also when it was rejected; kept through probes without a handshake; always 1.\n" +
		"# TYPE fleet_ssh_host_key_info gauge\n",
	"fleet_ssh_host_key_changed_timestamp_seconds": "# HELP fleet_ssh_host_key_changed_timestamp_seconds Unix time of the end of the probe that first saw the host's current host key fingerprint after a different one; 0 while no change was seen.\n" +
		"# TYPE fleet_ssh_host_key_changed_timestamp_seconds gauge\n",
	"fleet_ssh_host_key_shared_hosts": "# HELP fleet_ssh_host_key_shared_hosts Number of configured hosts (distinct names, over every set and port) whose last observed SSH host key has this host's fingerprint; 1 means the key is unique.\n" +
		"# TYPE fleet_ssh_host_key_shared_hosts gauge\n",
	"fleet_ssh_host_certificate_expiry_timestamp_seconds": "# HELP fleet_ssh_host_certificate_expiry_timestamp_seconds Unix time at which the host certificate the host last presented expires; absent for plain keys and certificates valid forever.\n" +
		"# TYPE fleet_ssh_host_certificate_expiry_timestamp_seconds gauge\n",
}

// familyNames returns every family name, so comparisons also catch series
// that should be absent.
func familyNames() []string {
	names := make([]string, 0, len(families))
	for n := range families {
		names = append(names, n)
	}
	return names
}

// expo builds expected exposition text: each argument is one series line
// (`name{labels} value`); HELP and TYPE lines are added per family.
func expo(t *testing.T, lines ...string) string {
	t.Helper()
	byFamily := map[string][]string{}
	var order []string
	for _, l := range lines {
		name, _, _ := strings.Cut(l, "{")
		name, _, _ = strings.Cut(name, " ")
		if _, ok := families[name]; !ok {
			t.Fatalf("unknown family %q in expected line %q", name, l)
		}
		if _, seen := byFamily[name]; !seen {
			order = append(order, name)
		}
		byFamily[name] = append(byFamily[name], l)
	}
	var b strings.Builder
	for _, name := range order {
		b.WriteString(families[name])
		for _, l := range byFamily[name] {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestCollect(t *testing.T) {
	dc := map[string]string{"dc": "fra"}
	icmpA := icmpTarget("edge", "h1", dc)
	tcpA := tcpTarget("edge", "h1", dc)
	icmpB := icmpTarget("edge", "h2", dc)
	sshC := sshTarget("db", "db1", nil, "uname", "df")
	// Two ports of one host, as config expands tcp.ports.
	tcpPort := func(port int) *config.Target {
		t := kit.TCPTarget("edge", "h3", kit.WithLabels(dc), kit.WithFingerprint("tcp"))
		t.Port = port
		return t
	}
	tcp22, tcp443 := tcpPort(22), tcpPort(443)

	const (
		icmpL = `dc="fra",host="h1",port="",probe="icmp",set="edge"`
		tcpL  = `dc="fra",host="h1",port="",probe="tcp",set="edge"`
		hostL = `dc="fra",host="h1",set="edge"`
	)

	tests := []struct {
		name    string
		targets []*config.Target
		results []probe.Result
		want    []string
		// only restricts the comparison to these families; nil means all.
		only []string
	}{
		{
			name:    "before first result only health series",
			targets: []*config.Target{icmpA},
			want: []string{
				`fleet_targets{probe="icmp",set="edge"} 1`,
				`fleet_probes_total{probe="icmp",result="failure",set="edge"} 0`,
				`fleet_probes_total{probe="icmp",result="success",set="edge"} 0`,
			},
		},
		{
			name:    "icmp success",
			targets: []*config.Target{icmpA},
			results: []probe.Result{icmpResult(icmpA, 0, 3, 3, 2*time.Millisecond)},
			want: []string{
				`fleet_host_up{` + hostL + `} 1`,
				`fleet_probe_success{` + icmpL + `} 1`,
				`fleet_probe_duration_seconds{` + icmpL + `} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{` + icmpL + `} 1700000000.25`,
				`fleet_probe_last_success_timestamp_seconds{` + icmpL + `} 1700000000.25`,
				`fleet_probe_consecutive_failures{` + icmpL + `} 0`,
				`fleet_icmp_rtt_seconds{` + hostL + `} 0.002`,
				`fleet_icmp_packets_sent_total{` + hostL + `} 3`,
				`fleet_icmp_packets_received_total{` + hostL + `} 3`,
				`fleet_targets{probe="icmp",set="edge"} 1`,
				`fleet_probes_total{probe="icmp",result="failure",set="edge"} 0`,
				`fleet_probes_total{probe="icmp",result="success",set="edge"} 1`,
			},
		},
		{
			name:    "probed address as hash and protocol",
			targets: []*config.Target{tcpA},
			results: []probe.Result{withAddr(result(tcpA, 0, true, ""), "2001:db8::1")},
			want: []string{
				`fleet_host_up{` + hostL + `} 1`,
				`fleet_probe_success{` + tcpL + `} 1`,
				`fleet_probe_duration_seconds{` + tcpL + `} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{` + tcpL + `} 1700000000.25`,
				`fleet_probe_last_success_timestamp_seconds{` + tcpL + `} 1700000000.25`,
				`fleet_probe_consecutive_failures{` + tcpL + `} 0`,
				// FNV-1a 32 of "2001:db8::1", as blackbox_exporter hashes it.
				`fleet_probe_ip_addr_hash{` + tcpL + `} 988793287`,
				`fleet_probe_ip_protocol{` + tcpL + `} 6`,
				`fleet_targets{probe="tcp",set="edge"} 1`,
				`fleet_probes_total{probe="tcp",result="failure",set="edge"} 0`,
				`fleet_probes_total{probe="tcp",result="success",set="edge"} 1`,
			},
		},
		{
			name:    "failure with reason and no success yet",
			targets: []*config.Target{tcpA},
			results: []probe.Result{result(tcpA, 0, false, probe.ReasonRefused)},
			want: []string{
				`fleet_host_up{` + hostL + `} 0`,
				`fleet_probe_success{` + tcpL + `} 0`,
				`fleet_probe_duration_seconds{` + tcpL + `} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{` + tcpL + `} 1700000000.25`,
				`fleet_probe_consecutive_failures{` + tcpL + `} 1`,
				`fleet_probe_failure_info{dc="fra",host="h1",port="",probe="tcp",reason="refused",set="edge"} 1`,
				`fleet_targets{probe="tcp",set="edge"} 1`,
				`fleet_probes_total{probe="tcp",result="failure",set="edge"} 1`,
				`fleet_probes_total{probe="tcp",result="success",set="edge"} 0`,
				`fleet_probe_failing_since_timestamp_seconds{dc="fra",host="h1",port="",probe="tcp",set="edge"} 1700000000.25`,
			},
		},
		{
			name:    "failure without reason is reported as error",
			targets: []*config.Target{tcpA},
			results: []probe.Result{result(tcpA, 0, false, probe.ReasonNone)},
			want: []string{
				`fleet_host_up{` + hostL + `} 0`,
				`fleet_probe_success{` + tcpL + `} 0`,
				`fleet_probe_duration_seconds{` + tcpL + `} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{` + tcpL + `} 1700000000.25`,
				`fleet_probe_consecutive_failures{` + tcpL + `} 1`,
				`fleet_probe_failure_info{dc="fra",host="h1",port="",probe="tcp",reason="error",set="edge"} 1`,
				`fleet_targets{probe="tcp",set="edge"} 1`,
				`fleet_probes_total{probe="tcp",result="failure",set="edge"} 1`,
				`fleet_probes_total{probe="tcp",result="success",set="edge"} 0`,
				`fleet_probe_failing_since_timestamp_seconds{dc="fra",host="h1",port="",probe="tcp",set="edge"} 1700000000.25`,
			},
		},
		{
			name:    "consecutive failures count and keep the last success",
			targets: []*config.Target{tcpA},
			results: []probe.Result{
				result(tcpA, 0, true, probe.ReasonNone),
				result(tcpA, 1, false, probe.ReasonTimeout),
				result(tcpA, 2, false, probe.ReasonRefused),
			},
			want: []string{
				`fleet_host_up{` + hostL + `} 0`,
				`fleet_probe_success{` + tcpL + `} 0`,
				`fleet_probe_duration_seconds{` + tcpL + `} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{` + tcpL + `} 1700000120.25`,
				`fleet_probe_last_success_timestamp_seconds{` + tcpL + `} 1700000000.25`,
				`fleet_probe_consecutive_failures{` + tcpL + `} 2`,
				`fleet_probe_failure_info{dc="fra",host="h1",port="",probe="tcp",reason="refused",set="edge"} 1`,
				`fleet_targets{probe="tcp",set="edge"} 1`,
				`fleet_probes_total{probe="tcp",result="failure",set="edge"} 2`,
				`fleet_probes_total{probe="tcp",result="success",set="edge"} 1`,
				`fleet_probe_failing_since_timestamp_seconds{dc="fra",host="h1",port="",probe="tcp",set="edge"} 1700000060.25`,
			},
		},
		{
			name:    "success resets consecutive failures and clears failure info; icmp counters accumulate",
			targets: []*config.Target{icmpA},
			results: []probe.Result{
				icmpResult(icmpA, 0, 3, 0, 0),
				icmpResult(icmpA, 1, 3, 0, 0),
				icmpResult(icmpA, 2, 3, 2, 4*time.Millisecond),
			},
			want: []string{
				`fleet_host_up{` + hostL + `} 1`,
				`fleet_probe_success{` + icmpL + `} 1`,
				`fleet_probe_duration_seconds{` + icmpL + `} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{` + icmpL + `} 1700000120.25`,
				`fleet_probe_last_success_timestamp_seconds{` + icmpL + `} 1700000120.25`,
				`fleet_probe_consecutive_failures{` + icmpL + `} 0`,
				`fleet_icmp_rtt_seconds{` + hostL + `} 0.004`,
				`fleet_icmp_packets_sent_total{` + hostL + `} 9`,
				`fleet_icmp_packets_received_total{` + hostL + `} 2`,
				`fleet_targets{probe="icmp",set="edge"} 1`,
				`fleet_probes_total{probe="icmp",result="failure",set="edge"} 2`,
				`fleet_probes_total{probe="icmp",result="success",set="edge"} 1`,
			},
		},
		{
			name:    "rtt absent when the last icmp probe got no reply",
			targets: []*config.Target{icmpA},
			results: []probe.Result{
				icmpResult(icmpA, 0, 3, 3, 2*time.Millisecond),
				icmpResult(icmpA, 1, 3, 0, 0),
			},
			want: []string{
				`fleet_host_up{` + hostL + `} 0`,
				`fleet_probe_success{` + icmpL + `} 0`,
				`fleet_probe_duration_seconds{` + icmpL + `} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{` + icmpL + `} 1700000060.25`,
				`fleet_probe_last_success_timestamp_seconds{` + icmpL + `} 1700000000.25`,
				`fleet_probe_consecutive_failures{` + icmpL + `} 1`,
				`fleet_probe_failure_info{dc="fra",host="h1",port="",probe="icmp",reason="timeout",set="edge"} 1`,
				`fleet_icmp_packets_sent_total{` + hostL + `} 6`,
				`fleet_icmp_packets_received_total{` + hostL + `} 3`,
				`fleet_targets{probe="icmp",set="edge"} 1`,
				`fleet_probes_total{probe="icmp",result="failure",set="edge"} 1`,
				`fleet_probes_total{probe="icmp",result="success",set="edge"} 1`,
				`fleet_probe_failing_since_timestamp_seconds{dc="fra",host="h1",port="",probe="icmp",set="edge"} 1700000060.25`,
			},
		},
		{
			// The successful probe sorts first within the host, so a collector
			// that only looked at the last probe would report the host down.
			name:    "host up when any probe of the host succeeded; hosts without results absent",
			targets: []*config.Target{icmpA, tcpA, icmpB},
			results: []probe.Result{
				icmpResult(icmpA, 0, 3, 3, time.Millisecond),
				result(tcpA, 0, false, probe.ReasonRefused),
			},
			want: []string{
				`fleet_host_up{` + hostL + `} 1`,
				`fleet_probe_success{` + icmpL + `} 1`,
				`fleet_probe_success{` + tcpL + `} 0`,
				`fleet_probe_duration_seconds{` + icmpL + `} 0.25`,
				`fleet_probe_duration_seconds{` + tcpL + `} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{` + icmpL + `} 1700000000.25`,
				`fleet_probe_last_run_timestamp_seconds{` + tcpL + `} 1700000000.25`,
				`fleet_probe_last_success_timestamp_seconds{` + icmpL + `} 1700000000.25`,
				`fleet_probe_consecutive_failures{` + icmpL + `} 0`,
				`fleet_probe_consecutive_failures{` + tcpL + `} 1`,
				`fleet_probe_failure_info{dc="fra",host="h1",port="",probe="tcp",reason="refused",set="edge"} 1`,
				`fleet_icmp_rtt_seconds{` + hostL + `} 0.001`,
				`fleet_icmp_packets_sent_total{` + hostL + `} 3`,
				`fleet_icmp_packets_received_total{` + hostL + `} 3`,
				`fleet_targets{probe="icmp",set="edge"} 2`,
				`fleet_targets{probe="tcp",set="edge"} 1`,
				`fleet_probes_total{probe="icmp",result="failure",set="edge"} 0`,
				`fleet_probes_total{probe="icmp",result="success",set="edge"} 1`,
				`fleet_probes_total{probe="tcp",result="failure",set="edge"} 1`,
				`fleet_probes_total{probe="tcp",result="success",set="edge"} 0`,
				`fleet_probe_failing_since_timestamp_seconds{dc="fra",host="h1",port="",probe="tcp",set="edge"} 1700000000.25`,
			},
		},
		{
			name:    "one series per tcp port with a port label; the host is up while any port is",
			targets: []*config.Target{tcp22, tcp443},
			results: []probe.Result{result(tcp22, 0, true, ""), result(tcp443, 0, false, probe.ReasonRefused)},
			want: []string{
				`fleet_host_up{dc="fra",host="h3",set="edge"} 1`,
				`fleet_probe_success{dc="fra",host="h3",port="22",probe="tcp",set="edge"} 1`,
				`fleet_probe_success{dc="fra",host="h3",port="443",probe="tcp",set="edge"} 0`,
				`fleet_probe_duration_seconds{dc="fra",host="h3",port="22",probe="tcp",set="edge"} 0.25`,
				`fleet_probe_duration_seconds{dc="fra",host="h3",port="443",probe="tcp",set="edge"} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{dc="fra",host="h3",port="22",probe="tcp",set="edge"} 1700000000.25`,
				`fleet_probe_last_run_timestamp_seconds{dc="fra",host="h3",port="443",probe="tcp",set="edge"} 1700000000.25`,
				`fleet_probe_last_success_timestamp_seconds{dc="fra",host="h3",port="22",probe="tcp",set="edge"} 1700000000.25`,
				`fleet_probe_consecutive_failures{dc="fra",host="h3",port="22",probe="tcp",set="edge"} 0`,
				`fleet_probe_consecutive_failures{dc="fra",host="h3",port="443",probe="tcp",set="edge"} 1`,
				`fleet_probe_failure_info{dc="fra",host="h3",port="443",probe="tcp",reason="refused",set="edge"} 1`,
				`fleet_probe_failing_since_timestamp_seconds{dc="fra",host="h3",port="443",probe="tcp",set="edge"} 1700000000.25`,
				`fleet_targets{probe="tcp",set="edge"} 2`,
				`fleet_probes_total{probe="tcp",result="failure",set="edge"} 1`,
				`fleet_probes_total{probe="tcp",result="success",set="edge"} 1`,
			},
		},
		{
			name:    "host down when every probe with a result failed",
			targets: []*config.Target{icmpA, tcpA},
			results: []probe.Result{
				icmpResult(icmpA, 0, 3, 0, 0),
				result(tcpA, 0, false, probe.ReasonRefused),
			},
			want: []string{
				`fleet_host_up{` + hostL + `} 0`,
				`fleet_probe_success{` + icmpL + `} 0`,
				`fleet_probe_success{` + tcpL + `} 0`,
				`fleet_probe_duration_seconds{` + icmpL + `} 0.25`,
				`fleet_probe_duration_seconds{` + tcpL + `} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{` + icmpL + `} 1700000000.25`,
				`fleet_probe_last_run_timestamp_seconds{` + tcpL + `} 1700000000.25`,
				`fleet_probe_consecutive_failures{` + icmpL + `} 1`,
				`fleet_probe_consecutive_failures{` + tcpL + `} 1`,
				`fleet_probe_failure_info{dc="fra",host="h1",port="",probe="icmp",reason="timeout",set="edge"} 1`,
				`fleet_probe_failure_info{dc="fra",host="h1",port="",probe="tcp",reason="refused",set="edge"} 1`,
				`fleet_icmp_packets_sent_total{` + hostL + `} 3`,
				`fleet_icmp_packets_received_total{` + hostL + `} 0`,
				`fleet_targets{probe="icmp",set="edge"} 1`,
				`fleet_targets{probe="tcp",set="edge"} 1`,
				`fleet_probes_total{probe="icmp",result="failure",set="edge"} 1`,
				`fleet_probes_total{probe="icmp",result="success",set="edge"} 0`,
				`fleet_probes_total{probe="tcp",result="failure",set="edge"} 1`,
				`fleet_probes_total{probe="tcp",result="success",set="edge"} 0`,
				`fleet_probe_failing_since_timestamp_seconds{dc="fra",host="h1",port="",probe="icmp",set="edge"} 1700000000.25`,
				`fleet_probe_failing_since_timestamp_seconds{dc="fra",host="h1",port="",probe="tcp",set="edge"} 1700000000.25`,
			},
		},
		{
			name: "static labels form a union with empty values",
			targets: []*config.Target{
				tcpTarget("a", "x", map[string]string{"dc": "fra"}),
				tcpTarget("b", "y", map[string]string{"zone": "z1"}),
				tcpTarget("c", "z", nil),
			},
			results: []probe.Result{
				result(tcpTarget("a", "x", nil), 0, true, probe.ReasonNone),
				result(tcpTarget("b", "y", nil), 0, true, probe.ReasonNone),
				result(tcpTarget("c", "z", nil), 0, true, probe.ReasonNone),
			},
			want: []string{
				`fleet_host_up{dc="fra",host="x",set="a",zone=""} 1`,
				`fleet_host_up{dc="",host="y",set="b",zone="z1"} 1`,
				`fleet_host_up{dc="",host="z",set="c",zone=""} 1`,
				`fleet_probe_success{dc="fra",host="x",port="",probe="tcp",set="a",zone=""} 1`,
				`fleet_probe_success{dc="",host="y",port="",probe="tcp",set="b",zone="z1"} 1`,
				`fleet_probe_success{dc="",host="z",port="",probe="tcp",set="c",zone=""} 1`,
				`fleet_probe_duration_seconds{dc="fra",host="x",port="",probe="tcp",set="a",zone=""} 0.25`,
				`fleet_probe_duration_seconds{dc="",host="y",port="",probe="tcp",set="b",zone="z1"} 0.25`,
				`fleet_probe_duration_seconds{dc="",host="z",port="",probe="tcp",set="c",zone=""} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{dc="fra",host="x",port="",probe="tcp",set="a",zone=""} 1700000000.25`,
				`fleet_probe_last_run_timestamp_seconds{dc="",host="y",port="",probe="tcp",set="b",zone="z1"} 1700000000.25`,
				`fleet_probe_last_run_timestamp_seconds{dc="",host="z",port="",probe="tcp",set="c",zone=""} 1700000000.25`,
				`fleet_probe_last_success_timestamp_seconds{dc="fra",host="x",port="",probe="tcp",set="a",zone=""} 1700000000.25`,
				`fleet_probe_last_success_timestamp_seconds{dc="",host="y",port="",probe="tcp",set="b",zone="z1"} 1700000000.25`,
				`fleet_probe_last_success_timestamp_seconds{dc="",host="z",port="",probe="tcp",set="c",zone=""} 1700000000.25`,
				`fleet_probe_consecutive_failures{dc="fra",host="x",port="",probe="tcp",set="a",zone=""} 0`,
				`fleet_probe_consecutive_failures{dc="",host="y",port="",probe="tcp",set="b",zone="z1"} 0`,
				`fleet_probe_consecutive_failures{dc="",host="z",port="",probe="tcp",set="c",zone=""} 0`,
				`fleet_targets{probe="tcp",set="a"} 1`,
				`fleet_targets{probe="tcp",set="b"} 1`,
				`fleet_targets{probe="tcp",set="c"} 1`,
				`fleet_probes_total{probe="tcp",result="failure",set="a"} 0`,
				`fleet_probes_total{probe="tcp",result="success",set="a"} 1`,
				`fleet_probes_total{probe="tcp",result="failure",set="b"} 0`,
				`fleet_probes_total{probe="tcp",result="success",set="b"} 1`,
				`fleet_probes_total{probe="tcp",result="failure",set="c"} 0`,
				`fleet_probes_total{probe="tcp",result="success",set="c"} 1`,
			},
		},
		{
			name:    "ssh phases of the last new connection and output hash change timestamps",
			targets: []*config.Target{sshC},
			results: []probe.Result{
				sshResult(sshC, 0, true, probe.ReasonNone, &probe.SSHResult{
					Connect: 10 * time.Millisecond, Handshake: 20 * time.Millisecond, Auth: 30 * time.Millisecond,
					NewConnection: true,
					Commands: []probe.CommandResult{
						{Name: "uname", Ran: true, Duration: 100 * time.Millisecond, Hash: 0xabcdef0123456, Bytes: 6},
						{Name: "df", Ran: true, Duration: 200 * time.Millisecond, Hash: 0x1111111111111, Bytes: 120},
					},
				}),
				// A reused connection: no phases; uname's output is unchanged,
				// df's changed.
				sshResult(sshC, 1, true, probe.ReasonNone, &probe.SSHResult{
					Commands: []probe.CommandResult{
						{Name: "uname", Ran: true, Duration: 150 * time.Millisecond, Hash: 0xabcdef0123456, Bytes: 6},
						{Name: "df", Ran: true, Duration: 250 * time.Millisecond, Hash: 0x2222222222222, Bytes: 130},
					},
				}),
			},
			want: []string{
				`fleet_host_up{host="db1",set="db"} 1`,
				`fleet_probe_success{host="db1",port="",probe="ssh",set="db"} 1`,
				`fleet_probe_duration_seconds{host="db1",port="",probe="ssh",set="db"} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000060.25`,
				`fleet_probe_last_success_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000060.25`,
				`fleet_probe_consecutive_failures{host="db1",port="",probe="ssh",set="db"} 0`,
				`fleet_ssh_phase_seconds{host="db1",phase="auth",set="db"} 0.03`,
				`fleet_ssh_phase_seconds{host="db1",phase="connect",set="db"} 0.01`,
				`fleet_ssh_phase_seconds{host="db1",phase="handshake",set="db"} 0.02`,
				`fleet_ssh_command_duration_seconds{command="df",host="db1",set="db"} 0.25`,
				`fleet_ssh_command_duration_seconds{command="uname",host="db1",set="db"} 0.15`,
				`fleet_ssh_command_exit_status{command="df",host="db1",set="db"} 0`,
				`fleet_ssh_command_exit_status{command="uname",host="db1",set="db"} 0`,
				`fleet_ssh_command_output_hash{command="df",host="db1",set="db"} 600479950316066`,
				`fleet_ssh_command_output_hash{command="uname",host="db1",set="db"} 3022415463593046`,
				`fleet_ssh_command_output_bytes{command="df",host="db1",set="db"} 130`,
				`fleet_ssh_command_output_bytes{command="uname",host="db1",set="db"} 6`,
				`fleet_ssh_command_output_changed_timestamp_seconds{command="df",host="db1",set="db"} 1700000060.25`,
				`fleet_ssh_command_output_changed_timestamp_seconds{command="uname",host="db1",set="db"} 1700000000.25`,
				`fleet_targets{probe="ssh",set="db"} 1`,
				`fleet_probes_total{probe="ssh",result="failure",set="db"} 0`,
				`fleet_probes_total{probe="ssh",result="success",set="db"} 2`,
				`fleet_ssh_command_output_distinct_hashes{command="df",set="db"} 1`,
				`fleet_ssh_command_output_distinct_hashes{command="uname",set="db"} 1`,
			},
		},
		{
			name:    "ssh phases reached only, commands that did not run keep their last run, last good hash kept",
			targets: []*config.Target{sshC},
			results: []probe.Result{
				sshResult(sshC, 0, true, probe.ReasonNone, &probe.SSHResult{
					Connect: 10 * time.Millisecond, Handshake: 20 * time.Millisecond, Auth: 30 * time.Millisecond,
					NewConnection: true,
					Commands: []probe.CommandResult{
						{Name: "uname", Ran: true, Duration: 100 * time.Millisecond, Hash: 0xabcdef0123456, Bytes: 6},
						{Name: "df", Ran: true, Duration: 200 * time.Millisecond, Hash: 0x1111111111111, Bytes: 120},
					},
				}),
				// uname timed out without output; df never started.
				sshResult(sshC, 1, false, probe.ReasonTimeout, &probe.SSHResult{
					Connect: 15 * time.Millisecond, Handshake: 25 * time.Millisecond,
					NewConnection: true,
					Commands: []probe.CommandResult{
						{Name: "uname", Ran: true, Duration: 200 * time.Millisecond, ExitStatus: -1, Reason: probe.ReasonTimeout},
						{Name: "df"},
					},
				}),
			},
			want: []string{
				`fleet_host_up{host="db1",set="db"} 0`,
				`fleet_probe_success{host="db1",port="",probe="ssh",set="db"} 0`,
				`fleet_probe_duration_seconds{host="db1",port="",probe="ssh",set="db"} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000060.25`,
				`fleet_probe_last_success_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000000.25`,
				`fleet_probe_consecutive_failures{host="db1",port="",probe="ssh",set="db"} 1`,
				`fleet_probe_failure_info{host="db1",port="",probe="ssh",reason="timeout",set="db"} 1`,
				`fleet_ssh_phase_seconds{host="db1",phase="connect",set="db"} 0.015`,
				`fleet_ssh_phase_seconds{host="db1",phase="handshake",set="db"} 0.025`,
				`fleet_ssh_command_duration_seconds{command="df",host="db1",set="db"} 0.2`,
				`fleet_ssh_command_duration_seconds{command="uname",host="db1",set="db"} 0.2`,
				`fleet_ssh_command_exit_status{command="df",host="db1",set="db"} 0`,
				`fleet_ssh_command_exit_status{command="uname",host="db1",set="db"} -1`,
				`fleet_ssh_command_output_hash{command="df",host="db1",set="db"} 300239975158033`,
				`fleet_ssh_command_output_distinct_hashes{command="df",set="db"} 1`,
				`fleet_ssh_command_output_hash{command="uname",host="db1",set="db"} 3022415463593046`,
				`fleet_ssh_command_output_distinct_hashes{command="uname",set="db"} 1`,
				`fleet_ssh_command_output_bytes{command="df",host="db1",set="db"} 120`,
				`fleet_ssh_command_output_bytes{command="uname",host="db1",set="db"} 6`,
				`fleet_ssh_command_output_changed_timestamp_seconds{command="df",host="db1",set="db"} 1700000000.25`,
				`fleet_ssh_command_output_changed_timestamp_seconds{command="uname",host="db1",set="db"} 1700000000.25`,
				`fleet_targets{probe="ssh",set="db"} 1`,
				`fleet_probes_total{probe="ssh",result="failure",set="db"} 1`,
				`fleet_probes_total{probe="ssh",result="success",set="db"} 1`,
				`fleet_probe_failing_since_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000060.25`,
			},
		},
		{
			name:    "ssh failure before any result part keeps command series and connection info",
			targets: []*config.Target{sshC},
			results: []probe.Result{
				sshResult(sshC, 0, true, probe.ReasonNone, &probe.SSHResult{
					Connect: 10 * time.Millisecond, Handshake: 20 * time.Millisecond, Auth: 30 * time.Millisecond,
					NewConnection: true,
					Conn: &probe.ConnInfo{
						ServerVersion: `SSH-2.0-Cisco-1.25 "x"`, KEX: "diffie-hellman-group14-sha1",
						Cipher: "aes128-cbc", MAC: "hmac-sha1", HostKeyAlgorithm: "ssh-rsa",
					},
					Commands: []probe.CommandResult{
						{
							Name: "uname", Ran: true, Duration: 100 * time.Millisecond, Hash: 0xabcdef0123456, Bytes: 6,
							SHA256: "abcdef0123456" + strings.Repeat("0", 51), Value: `6.1.0 "lts"`,
						},
					},
				}),
				sshResult(sshC, 1, false, probe.ReasonDNS, nil),
			},
			want: []string{
				`fleet_host_up{host="db1",set="db"} 0`,
				`fleet_probe_success{host="db1",port="",probe="ssh",set="db"} 0`,
				`fleet_probe_duration_seconds{host="db1",port="",probe="ssh",set="db"} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000060.25`,
				`fleet_probe_last_success_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000000.25`,
				`fleet_probe_consecutive_failures{host="db1",port="",probe="ssh",set="db"} 1`,
				`fleet_probe_failure_info{host="db1",port="",probe="ssh",reason="dns",set="db"} 1`,
				`fleet_ssh_phase_seconds{host="db1",phase="auth",set="db"} 0.03`,
				`fleet_ssh_phase_seconds{host="db1",phase="connect",set="db"} 0.01`,
				`fleet_ssh_phase_seconds{host="db1",phase="handshake",set="db"} 0.02`,
				`fleet_ssh_connection_info{cipher="aes128-cbc",host="db1",host_key_algorithm="ssh-rsa",kex="diffie-hellman-group14-sha1",mac="hmac-sha1",server_version="SSH-2.0-Cisco-1.25 \"x\"",set="db"} 1`,
				`fleet_ssh_command_duration_seconds{command="uname",host="db1",set="db"} 0.1`,
				`fleet_ssh_command_exit_status{command="uname",host="db1",set="db"} 0`,
				`fleet_ssh_command_output_hash{command="uname",host="db1",set="db"} 3022415463593046`,
				`fleet_ssh_command_output_distinct_hashes{command="uname",set="db"} 1`,
				`fleet_ssh_command_output_bytes{command="uname",host="db1",set="db"} 6`,
				`fleet_ssh_command_output_changed_timestamp_seconds{command="uname",host="db1",set="db"} 1700000000.25`,
				`fleet_ssh_command_output_info{command="uname",host="db1",set="db",sha256="abcdef0123456000000000000000000000000000000000000000000000000000",value="6.1.0 \"lts\""} 1`,
				`fleet_targets{probe="ssh",set="db"} 1`,
				`fleet_probes_total{probe="ssh",result="failure",set="db"} 1`,
				`fleet_probes_total{probe="ssh",result="success",set="db"} 1`,
				`fleet_probe_failing_since_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000060.25`,
			},
		},
		{
			// The prober times a failed dial in Connect but leaves
			// NewConnection false: no connection was established, so the
			// phases of the last one stay (a blackholed host must not show
			// its timeout as the connect phase).
			name:    "ssh failed connect keeps the phases of the last connection",
			targets: []*config.Target{sshC},
			results: []probe.Result{
				sshResult(sshC, 0, true, probe.ReasonNone, &probe.SSHResult{
					Connect: 10 * time.Millisecond, Handshake: 20 * time.Millisecond, Auth: 30 * time.Millisecond,
					NewConnection: true,
				}),
				sshResult(sshC, 1, false, probe.ReasonTimeout, &probe.SSHResult{
					Connect: 10 * time.Second,
					Commands: []probe.CommandResult{
						{Name: "uname"},
						{Name: "df"},
					},
				}),
			},
			want: []string{
				`fleet_host_up{host="db1",set="db"} 0`,
				`fleet_probe_success{host="db1",port="",probe="ssh",set="db"} 0`,
				`fleet_probe_duration_seconds{host="db1",port="",probe="ssh",set="db"} 0.25`,
				`fleet_probe_last_run_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000060.25`,
				`fleet_probe_last_success_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000000.25`,
				`fleet_probe_consecutive_failures{host="db1",port="",probe="ssh",set="db"} 1`,
				`fleet_probe_failure_info{host="db1",port="",probe="ssh",reason="timeout",set="db"} 1`,
				`fleet_ssh_phase_seconds{host="db1",phase="auth",set="db"} 0.03`,
				`fleet_ssh_phase_seconds{host="db1",phase="connect",set="db"} 0.01`,
				`fleet_ssh_phase_seconds{host="db1",phase="handshake",set="db"} 0.02`,
				`fleet_targets{probe="ssh",set="db"} 1`,
				`fleet_probes_total{probe="ssh",result="failure",set="db"} 1`,
				`fleet_probes_total{probe="ssh",result="success",set="db"} 1`,
				`fleet_probe_failing_since_timestamp_seconds{host="db1",port="",probe="ssh",set="db"} 1700000060.25`,
			},
		},
		{
			name: "distinct hashes count the exported hashes of each set and command",
			targets: []*config.Target{
				sshTarget("db", "d1", nil, "uname"), sshTarget("db", "d2", nil, "uname"),
				sshTarget("db", "d3", nil, "uname"), sshTarget("db", "d4", nil, "uname"),
				sshTarget("web", "w1", nil, "uname"),
			},
			results: []probe.Result{
				sshResult(sshTarget("db", "d1", nil, "uname"), 0, true, "", &probe.SSHResult{Commands: []probe.CommandResult{{Name: "uname", Ran: true, Hash: 7}}}),
				sshResult(sshTarget("db", "d2", nil, "uname"), 0, true, "", &probe.SSHResult{Commands: []probe.CommandResult{{Name: "uname", Ran: true, Hash: 7}}}),
				sshResult(sshTarget("db", "d3", nil, "uname"), 0, true, "", &probe.SSHResult{Commands: []probe.CommandResult{{Name: "uname", Ran: true, Hash: 9}}}),
				// Ran without reading output: no hash series, not counted.
				sshResult(sshTarget("db", "d4", nil, "uname"), 0, false, probe.ReasonTimeout, &probe.SSHResult{Commands: []probe.CommandResult{{Name: "uname", Ran: true, ExitStatus: -1}}}),
				// Same hash in another set: counted there only.
				sshResult(sshTarget("web", "w1", nil, "uname"), 0, true, "", &probe.SSHResult{Commands: []probe.CommandResult{{Name: "uname", Ran: true, Hash: 9}}}),
			},
			want: []string{
				`fleet_ssh_command_output_distinct_hashes{command="uname",set="db"} 2`,
				`fleet_ssh_command_output_distinct_hashes{command="uname",set="web"} 1`,
			},
			only: []string{"fleet_ssh_command_output_distinct_hashes"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			s.Reconcile(tc.targets)
			for _, r := range tc.results {
				s.Update(r)
			}
			want := expo(t, tc.want...)
			names := familyNames()
			if tc.only != nil {
				names = tc.only
			}
			if err := testutil.CollectAndCompare(NewCollector(s), strings.NewReader(want), names...); err != nil {
				t.Errorf("unexpected exposition:\n%v", err)
			}
		})
	}
}

// fullStore returns a store whose collector emits every family.
func fullStore() *Store {
	icmp := icmpTarget("edge", "h1", map[string]string{"dc": "fra"})
	tcp := tcpTarget("edge", "h1", map[string]string{"dc": "fra"})
	// A host with several tcp ports, 1000 before 22 in label order.
	tcp22 := tcpTarget("edge", "h1", map[string]string{"dc": "fra"})
	tcp22.Port = 22
	tcp1000 := tcpTarget("edge", "h1", map[string]string{"dc": "fra"})
	tcp1000.Port = 1000
	ssh := sshTarget("db", "db1", map[string]string{"zone": "z1"}, "uname")
	s := NewStore()
	s.Reconcile([]*config.Target{icmp, tcp, tcp22, tcp1000, ssh})
	s.Update(result(tcp22, 0, true, probe.ReasonNone))
	s.Update(result(tcp1000, 0, false, probe.ReasonTimeout))
	s.Update(withAddr(icmpResult(icmp, 0, 3, 3, time.Millisecond), "192.0.2.1"))
	s.Update(result(tcp, 0, true, probe.ReasonNone))
	s.Update(result(tcp, 1, false, probe.ReasonRefused))
	s.Update(sshResult(ssh, 0, true, probe.ReasonNone, &probe.SSHResult{
		Connect: time.Millisecond, Handshake: time.Millisecond, Auth: time.Millisecond, NewConnection: true,
		Conn: benchConn,
		HostKey: &probe.HostKey{
			Type: "ssh-ed25519", FingerprintSHA256: "SHA256:" + strings.Repeat("A", 43),
			Certificate: true, CertificateExpiry: t0.Add(30 * 24 * time.Hour),
		},
		Commands: []probe.CommandResult{{Name: "uname", Ran: true, Duration: time.Millisecond, Hash: 42, Bytes: 6, SHA256: benchSHA256[0], Value: "6.1.0"}},
	}))
	return s
}

func TestCollectLint(t *testing.T) {
	c := NewCollector(fullStore())
	if n, want := testutil.CollectAndCount(c), 0; n == want {
		t.Fatalf("collected %d metrics, want some", n)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatalf("CollectAndLint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// Every family of the contract must have been linted.
	got := map[string]bool{}
	mfs, err := gatherOnce(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range familyNames() {
		if !got[name] {
			t.Errorf("family %s not emitted by the full store", name)
		}
	}
}

func TestReconcile(t *testing.T) {
	a1 := tcpTarget("a", "h1", nil)
	a2 := tcpTarget("a", "h2", nil)
	b1 := tcpTarget("b", "h1", nil)

	tests := []struct {
		name string
		// after is the second configuration; results go to every target of
		// the first one, then late results to every target again.
		before, after []*config.Target
		want          []string
	}{
		{
			name:   "removed target disappears",
			before: []*config.Target{a1, a2},
			after:  []*config.Target{a1},
			want: []string{
				`fleet_probe_success{host="h1",port="",probe="tcp",set="a"} 1`,
				`fleet_targets{probe="tcp",set="a"} 1`,
				`fleet_probes_total{probe="tcp",result="failure",set="a"} 0`,
				`fleet_probes_total{probe="tcp",result="success",set="a"} 3`,
			},
		},
		{
			name:   "removed set loses its counters",
			before: []*config.Target{a1, b1},
			after:  []*config.Target{b1},
			want: []string{
				`fleet_probe_success{host="h1",port="",probe="tcp",set="b"} 1`,
				`fleet_targets{probe="tcp",set="b"} 1`,
				`fleet_probes_total{probe="tcp",result="failure",set="b"} 0`,
				`fleet_probes_total{probe="tcp",result="success",set="b"} 2`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			s.Reconcile(tc.before)
			for _, tg := range tc.before {
				s.Update(result(tg, 0, true, probe.ReasonNone))
			}
			s.Reconcile(tc.after)
			// Late results of removed targets must be ignored.
			for _, tg := range tc.before {
				s.Update(result(tg, 1, true, probe.ReasonNone))
			}
			want := expo(t, tc.want...)
			if err := testutil.CollectAndCompare(NewCollector(s), strings.NewReader(want),
				"fleet_probe_success", "fleet_targets", "fleet_probes_total"); err != nil {
				t.Errorf("unexpected exposition:\n%v", err)
			}
		})
	}
}

func TestReconcileReaddedSetStartsFromZero(t *testing.T) {
	a1 := tcpTarget("a", "h1", nil)
	s := NewStore()
	s.Reconcile([]*config.Target{a1})
	s.Update(result(a1, 0, true, probe.ReasonNone))
	s.Reconcile(nil)
	if err := testutil.CollectAndCompare(NewCollector(s), strings.NewReader("")); err != nil {
		t.Errorf("unexpected exposition with no targets:\n%v", err)
	}
	s.Reconcile([]*config.Target{a1})
	want := expo(t,
		`fleet_targets{probe="tcp",set="a"} 1`,
		`fleet_probes_total{probe="tcp",result="failure",set="a"} 0`,
		`fleet_probes_total{probe="tcp",result="success",set="a"} 0`,
	)
	if err := testutil.CollectAndCompare(NewCollector(s), strings.NewReader(want)); err != nil {
		t.Errorf("unexpected exposition after re-adding:\n%v", err)
	}
}

func TestReconcileKeepsStateOnLabelChange(t *testing.T) {
	old := tcpTarget("a", "h1", map[string]string{"dc": "fra"})
	s := NewStore()
	s.Reconcile([]*config.Target{old})
	s.Update(result(old, 0, false, probe.ReasonRefused))
	s.Update(result(old, 1, false, probe.ReasonRefused))

	changed := tcpTarget("a", "h1", map[string]string{"dc": "ams", "rack": "r1"})
	changed.Fingerprint = "changed"
	s.Reconcile([]*config.Target{changed})

	want := expo(t,
		`fleet_probe_consecutive_failures{dc="ams",host="h1",port="",probe="tcp",rack="r1",set="a"} 2`,
		`fleet_probes_total{probe="tcp",result="failure",set="a"} 2`,
		`fleet_probes_total{probe="tcp",result="success",set="a"} 0`,
	)
	if err := testutil.CollectAndCompare(NewCollector(s), strings.NewReader(want),
		"fleet_probe_consecutive_failures", "fleet_probes_total"); err != nil {
		t.Errorf("unexpected exposition:\n%v", err)
	}
}

// TestDescCacheFollowsLabelUnion checks that a collector reused across
// reloads picks up a new label union.
func TestDescCacheFollowsLabelUnion(t *testing.T) {
	tg := tcpTarget("a", "h1", map[string]string{"dc": "fra"})
	s := NewStore()
	c := NewCollector(s)
	s.Reconcile([]*config.Target{tg})
	s.Update(result(tg, 0, true, probe.ReasonNone))

	steps := []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"initial", map[string]string{"dc": "fra"}, `fleet_host_up{dc="fra",host="h1",set="a"} 1`},
		{"label added", map[string]string{"dc": "fra", "zone": "z"}, `fleet_host_up{dc="fra",host="h1",set="a",zone="z"} 1`},
		{"labels removed", nil, `fleet_host_up{host="h1",set="a"} 1`},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			s.Reconcile([]*config.Target{tcpTarget("a", "h1", st.labels)})
			if err := testutil.CollectAndCompare(c, strings.NewReader(expo(t, st.want)), "fleet_host_up"); err != nil {
				t.Errorf("unexpected exposition:\n%v", err)
			}
		})
	}
}

// TestConcurrentUpdateCollect runs updates, reloads and scrapes at the same
// time; run it with -race.
func TestConcurrentUpdateCollect(t *testing.T) {
	var targets []*config.Target
	for _, h := range []string{"h1", "h2", "h3", "h4"} {
		targets = append(targets, icmpTarget("edge", h, nil), sshTarget("edge", h, nil, "uname"))
	}
	s := NewStore()
	s.Reconcile(targets)
	c := NewCollector(s)

	const rounds = 200
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for n := range rounds {
				for _, tg := range targets {
					if tg.Probe == config.ProbeICMP {
						s.Update(icmpResult(tg, n, 3, (n+w)%4, time.Millisecond))
						continue
					}
					s.Update(sshResult(tg, n, true, probe.ReasonNone, &probe.SSHResult{
						Connect: time.Millisecond, NewConnection: true,
						Commands: []probe.CommandResult{{Name: "uname", Ran: true, Hash: uint64(n%3 + 1), Bytes: 1}},
					}))
				}
			}
		})
	}
	wg.Go(func() {
		for n := range rounds / 4 {
			s.Reconcile(targets[:len(targets)-n%2])
		}
	})
	errs := make(chan error, 1)
	wg.Go(func() {
		for range rounds / 4 {
			if _, err := gatherOnce(c); err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("gather during updates: %v", err)
	}
	s.Reconcile(targets)
	snap := s.Snapshot()
	var total uint64
	for _, sp := range snap.SetProbes {
		total += sp.Successes + sp.Failures
	}
	if want := uint64(2 * rounds * len(targets)); total > want || total == 0 {
		t.Errorf("counted %d results, want between 1 and %d", total, want)
	}
}

// gatherOnce gathers c through its own registry.
func gatherOnce(c prometheus.Collector) ([]*dto.MetricFamily, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return reg.Gather()
}
