package deploy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/fleet-exporter/fleet_exporter/deploy"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m)
}

// Paths of the artefacts, relative to this package's directory (where go test
// runs).
const (
	alertsFile       = "prometheus/alerts.yml"
	rulesFile        = "prometheus/rules.yml"
	rulesTestFile    = "prometheus/alerts_test.yml"
	longTestFile     = "prometheus/alerts_long_test.yml"
	cryptoFile       = "prometheus/alerts_crypto.yml"
	cryptoTestFile   = "prometheus/alerts_crypto_test.yml"
	prometheusFile   = "prometheus/prometheus.yml"
	alertmanagerFile = "alertmanager/alertmanager.yml"
	dashboardFile    = "grafana/fleet_exporter.json"
	unitFile         = "systemd/fleet_exporter.service"
)

const (
	promtoolHint = "install the Debian package prometheus (apt-get install -y prometheus)"
	amtoolHint   = "install the Debian package prometheus-alertmanager (apt-get install -y prometheus-alertmanager)"
)

// contractMetrics lists every metric name fleet_exporter exposes (the public
// contract), with the series names of histograms.
func contractMetrics() []string {
	return []string{
		"fleet_host_up",
		"fleet_probe_success",
		"fleet_probe_duration_seconds",
		"fleet_probe_last_run_timestamp_seconds",
		"fleet_probe_last_success_timestamp_seconds",
		"fleet_probe_consecutive_failures",
		"fleet_probe_failure_info",
		"fleet_icmp_rtt_seconds",
		"fleet_icmp_packets_sent_total",
		"fleet_icmp_packets_received_total",
		"fleet_ssh_phase_seconds",
		"fleet_ssh_command_duration_seconds",
		"fleet_ssh_command_exit_status",
		"fleet_ssh_command_output_hash",
		"fleet_ssh_command_output_bytes",
		"fleet_ssh_command_output_changed_timestamp_seconds",
		"fleet_ssh_command_output_info",
		"fleet_ssh_connection_info",
		"fleet_targets",
		"fleet_probes_total",
		"fleet_probes_skipped_total",
		"fleet_pool_in_flight",
		"fleet_pool_waiting",
		"fleet_scheduler_lag_seconds_bucket",
		"fleet_scheduler_lag_seconds_sum",
		"fleet_scheduler_lag_seconds_count",
		"fleet_config_last_reload_successful",
		"fleet_config_last_reload_success_timestamp_seconds",
		"fleet_exporter_build_info",
		"fleet_ssh_connections_opened_total",
		"fleet_cluster_members",
		"fleet_cluster_member_info",
		"fleet_cluster_owned_targets",
		"fleet_cluster_ownership_changes_total",
		"fleet_cluster_isolated",
		"fleet_cluster_replication_factor",
		"fleet_probe_failing_since_timestamp_seconds",
		"fleet_ssh_command_output_distinct_hashes",
		"fleet_set_probe_duration_seconds_bucket",
		"fleet_set_probe_duration_seconds_sum",
		"fleet_set_probe_duration_seconds_count",
		"fleet_set_ssh_phase_seconds_bucket",
		"fleet_set_ssh_phase_seconds_sum",
		"fleet_set_ssh_phase_seconds_count",
		"fleet_set_icmp_rtt_seconds_bucket",
		"fleet_set_icmp_rtt_seconds_sum",
		"fleet_set_icmp_rtt_seconds_count",
		"fleet_ssh_bastion_up",
		"fleet_ssh_bastion_connections",
		"fleet_ssh_bastion_channels",
		"fleet_ssh_bastion_connects_total",
		"fleet_ssh_bastion_targets",
		"fleet_ssh_host_key_info",
		"fleet_ssh_host_key_changed_timestamp_seconds",
		"fleet_ssh_host_key_shared_hosts",
		"fleet_ssh_host_certificate_expiry_timestamp_seconds",
	}
}

// grafanaTestVars are concrete values for the dashboard's variables, good
// enough for the expressions to parse.
func grafanaTestVars() map[string]string {
	return map[string]string{
		"set":             ".+",
		"host":            ".+",
		"__rate_interval": "1m",
		"__interval":      "30s",
		"__range":         "1h",
	}
}

// lookTool returns the path of an external tool or skips the test.
func lookTool(t *testing.T, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found: %s", name, hint)
	}
	return p
}

// runTool runs a tool in dir and returns its combined output and error.
func runTool(t *testing.T, dir, tool string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), tool, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// copyFiles copies files (paths relative to this package) into a fresh temp
// directory, flat, and returns it.
func copyFiles(t *testing.T, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// replaceOnce replaces from by to in the file, failing unless from occurs
// exactly once, so that a mutation cannot silently stop applying.
func replaceOnce(t *testing.T, path, from, to string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), from); n != 1 {
		t.Fatalf("%s: %q occurs %d times, want 1", filepath.Base(path), from, n)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), from, to, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool := lookTool(t, "promtool", promtoolHint)
	for _, f := range []string{alertsFile, rulesFile, cryptoFile} {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := runTool(t, ".", promtool, "check", "rules", f)
			if err != nil {
				t.Fatalf("promtool check rules %s: %v\n%s", f, err, out)
			}
		})
	}
}

func TestPromtoolTestRules(t *testing.T) {
	promtool := lookTool(t, "promtool", promtoolHint)
	for _, f := range []string{rulesTestFile, longTestFile, cryptoTestFile} {
		out, err := runTool(t, "prometheus", promtool, "test", "rules", filepath.Base(f))
		if err != nil {
			t.Fatalf("promtool test rules %s: %v\n%s", f, err, out)
		}
	}
}

// TestCryptoAlertOptIn checks the opt-in alerts (weak crypto, shared host
// keys): in their own file, not loaded by the example prometheus.yml (off by
// default), severity info with a for:, on raw series, and tested firing and
// silent.
func TestCryptoAlertOptIn(t *testing.T) {
	f, err := deploy.LoadRules(cryptoFile)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"FleetSSHWeakCrypto":    {"sha1", "cbc", "ssh-rsa"},
		"FleetSSHHostKeyShared": {"fleet_ssh_host_key_shared_hosts > 1"},
	}
	got := map[string]deploy.Rule{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			got[r.Alert] = r
		}
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(want)), slices.Sorted(maps.Keys(got))); diff != "" {
		t.Fatalf("%s: alerts (-want +got):\n%s", cryptoFile, diff)
	}
	tb, err := os.ReadFile(cryptoTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var rt rulesTest
	if err := yaml.Unmarshal(tb, &rt); err != nil {
		t.Fatal(err)
	}
	for name, matches := range want {
		t.Run(name, func(t *testing.T) {
			r := got[name]
			if r.Labels["severity"] != "info" || r.For == "" || strings.Contains(r.Expr, "fleet:") {
				t.Errorf("severity %q, for %q, expr %q", r.Labels["severity"], r.For, r.Expr)
			}
			for _, m := range matches {
				if !strings.Contains(r.Expr, m) {
					t.Errorf("expr %q does not contain %s", r.Expr, m)
				}
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("annotation %q missing", a)
				}
			}
			fires, silent := false, false
			for _, tc := range rt.Tests {
				for _, a := range tc.AlertRuleTest {
					if a.Alertname == name {
						fires, silent = fires || len(a.ExpAlerts) > 0, silent || len(a.ExpAlerts) == 0
					}
				}
			}
			if !fires || !silent {
				t.Errorf("%s: want a case where %s fires and one where it stays silent", cryptoTestFile, name)
			}
		})
	}
	b, err := os.ReadFile(prometheusFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), filepath.Base(cryptoFile)) {
		t.Errorf("%s loads %s: its alerts must be off by default", prometheusFile, cryptoFile)
	}
}

// TestPromtoolTestRulesCatchMutations checks that the unit tests are sharp:
// each plausible mistake in the rules must make `promtool test rules` fail.
func TestPromtoolTestRulesCatchMutations(t *testing.T) {
	if testing.Short() {
		t.Skip("mutation runs take a few seconds; skipped with -short")
	}
	promtool := lookTool(t, "promtool", promtoolHint)
	tests := []struct {
		name, file, old, new string
	}{
		{"host unreachable waits longer", "alerts.yml", "for: 1m\n        labels:\n          severity: critical\n        annotations:\n          summary: \"Host", "for: 3m\n        labels:\n          severity: critical\n        annotations:\n          summary: \"Host"},
		{"host unreachable behind a down bastion", "alerts.yml", "        expr: |\n          (fleet_host_up == 0)\n            unless on (job, instance, set)\n          ((fleet_ssh_bastion_targets > 0)", "        expr: |\n          (fleet_host_up == 0)\n            unless on (job, instance, set)\n          ((fleet_ssh_bastion_targets < 0)"},
		{"host unreachable spares direct failures behind a down bastion", "alerts.yml", "          or\n          (fleet_host_up == 0)\n            and on (job, instance, set, host)\n          (fleet_probe_failure_info{probe!=\"ssh\"} == 1)\n        for: 1m", "        for: 1m"},
		{"set mostly down counts hosts behind a down bastion", "alerts.yml", "                  unless on (job, instance, set)\n                ((fleet_ssh_bastion_targets > 0)", "                  unless on (job, instance, set)\n                ((fleet_ssh_bastion_targets < 0)"},
		{"bastion down waits longer", "alerts.yml", "(fleet_ssh_bastion_up == 0)\n        for: 3m", "(fleet_ssh_bastion_up == 0)\n        for: 4m"},
		{"bastion down while up", "alerts.yml", "(fleet_ssh_bastion_up == 0)\n        for: 3m", "(fleet_ssh_bastion_up >= 0)\n        for: 3m"},
		{"bastion down for sets without targets", "alerts.yml", "          (fleet_ssh_bastion_targets > 0)\n            and on (job, instance, bastion)", "          (fleet_ssh_bastion_targets >= 0)\n            and on (job, instance, bastion)"},
		{"bastion down across exporters", "alerts.yml", "            and on (job, instance, bastion)\n          (fleet_ssh_bastion_up == 0)\n        for: 3m", "            and on (bastion)\n          (fleet_ssh_bastion_up == 0)\n        for: 3m"},
		{"host key changed at 0", "alerts.yml", "(fleet_ssh_host_key_changed_timestamp_seconds > 0)", "(fleet_ssh_host_key_changed_timestamp_seconds >= 0)"},
		{"host key changed window too long", "alerts.yml", "fleet_ssh_host_key_changed_timestamp_seconds < 86400", "fleet_ssh_host_key_changed_timestamp_seconds < 172800"},
		{"certificate expiry threshold too far", "alerts.yml", "- time() < 7 * 86400", "- time() < 30 * 86400"},
		{"shared key on unique keys", "alerts_crypto.yml", "fleet_ssh_host_key_shared_hosts > 1", "fleet_ssh_host_key_shared_hosts >= 1"},
		{"ssh down ignores icmp", "alerts.yml", "            and on (set, host)\n          (fleet_probe_success{probe=\"icmp\"} == 1)", "            and on (set, host)\n          (fleet_probe_success{probe=\"icmp\"} >= 0)"},
		{"login slow counts command phase", "alerts.yml", `phase=~"connect|handshake|auth"}) > 5`, `}) > 5`},
		{"command failing misses -1", "alerts.yml", "fleet_ssh_command_exit_status != 0", "fleet_ssh_command_exit_status > 0"},
		{"output changed window too short", "alerts.yml", "changes(fleet_ssh_command_output_hash[15m])", "changes(fleet_ssh_command_output_hash[2m])"},
		{"drift without majority guard", "alerts.yml", "          and on (set, command)\n", "          or on (set, command)\n"},
		{"set mostly down on small sets", "alerts.yml", "count by (set) (fleet_host_up) >= 3", "count by (set) (fleet_host_up) >= 2"},
		{"set mostly down at half", "alerts.yml", "          ) > 0.5\n          and on (set)\n          count by (set) (fleet_host_up) >= 3", "          ) >= 0.5\n          and on (set)\n          count by (set) (fleet_host_up) >= 3"},
		{"tcp port down ignores host up", "alerts.yml", "          (fleet_probe_success{probe=\"tcp\"} == 0)\n            and on (set, host)\n          (fleet_host_up == 1)", "          (fleet_probe_success{probe=\"tcp\"} == 0)"},
		{"set ssh failing at half", "alerts.yml", "          ) > 0.5\n          and on (set)\n          count by (set) (fleet_probe_success{probe=\"ssh\"}", "          ) >= 0.5\n          and on (set)\n          count by (set) (fleet_probe_success{probe=\"ssh\"}"},
		{"set ssh failing counts icmp-down hosts", "alerts.yml", "          count by (set) (fleet_probe_success{probe=\"ssh\"} and on (set, host) (fleet_probe_success{probe=\"icmp\"} == 1)) >= 3", "          count by (set) (fleet_probe_success{probe=\"ssh\"}) >= 3"},
		{"behind schedule ignores lag", "alerts.yml", ")\n          ) > 10", ")\n          ) > 100"},
		{"reload failed on success", "alerts.yml", "fleet_config_last_reload_successful == 0", "fleet_config_last_reload_successful == 1"},
		{"exporter down without absent", "alerts.yml", ` or absent(up{job="fleet"})`, ""},
		{"hosts up counts hosts", "rules.yml", "expr: sum by (set) (max by (set, host) (fleet_host_up))\n", "expr: count by (set) (max by (set, host) (fleet_host_up))\n"},
		{"hosts up counts replicas twice", "rules.yml", "expr: sum by (set) (max by (set, host) (fleet_host_up))\n", "expr: sum by (set) (fleet_host_up)\n"},
		{"dedup keeps instances", "rules.yml", "expr: max by (set, host, probe) (fleet_probe_success)", "expr: max without () (fleet_probe_success)"},
		{"cluster degraded ignores disagreement", "alerts.yml", "(max by (job) (fleet_cluster_members) != min by (job) (fleet_cluster_members))", "(max by (job) (fleet_cluster_members) < 0)"},
		{"cluster degraded ignores dead members", "alerts.yml", "< on (job) count by (job) (up)", "< 0"},
		{"icmp loss inverted", "rules.yml", "          1 - (\n", "          0 + (\n"},
		{"probes rate drops result", "rules.yml", "sum by (set, probe, result) (rate(fleet_probes_total[5m]))", "sum by (set, probe) (rate(fleet_probes_total[5m]))"},
		{"lag p90", "rules.yml", "histogram_quantile(0.99,", "histogram_quantile(0.9,"},
	}
	// The unit test files that load each rule file, run in this order until
	// one fails.
	testsOf := map[string][]string{
		filepath.Base(alertsFile): {rulesTestFile, longTestFile},
		filepath.Base(rulesFile):  {rulesTestFile},
		filepath.Base(cryptoFile): {cryptoTestFile},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := copyFiles(t, alertsFile, rulesFile, cryptoFile, rulesTestFile, longTestFile, cryptoTestFile)
			replaceOnce(t, filepath.Join(dir, tc.file), tc.old, tc.new)
			testFiles := testsOf[tc.file]
			if len(testFiles) == 0 {
				t.Fatalf("no unit tests for %s", tc.file)
			}
			var outs []string
			for _, f := range testFiles {
				out, err := runTool(t, dir, promtool, "test", "rules", filepath.Base(f))
				if err == nil {
					outs = append(outs, out)
					continue
				}
				if !strings.Contains(out, "FAILED") {
					t.Fatalf("promtool test rules %s failed for another reason than a failing test:\n%s", filepath.Base(f), out)
				}
				return
			}
			t.Fatalf("promtool test rules passed with the mutation %q -> %q in %s; the unit tests do not cover it\n%s",
				tc.old, tc.new, tc.file, strings.Join(outs, "\n"))
		})
	}
}

func TestPromtoolCheckConfig(t *testing.T) {
	promtool := lookTool(t, "promtool", promtoolHint)
	tests := []struct {
		name    string
		files   []string
		wantErr bool
	}{
		{"with its rule files", []string{prometheusFile, alertsFile, rulesFile}, false},
		// Proves that the config really loads the rule files next to it.
		{"without rule files", []string{prometheusFile}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyFiles(t, tc.files...)
			out, err := runTool(t, dir, promtool, "check", "config", filepath.Base(prometheusFile))
			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Fatalf("promtool check config: err = %v, want error %v\n%s", err, tc.wantErr, out)
			}
			if !tc.wantErr && !strings.Contains(out, "2 rule files found") {
				t.Errorf("promtool check config did not load both rule files:\n%s", out)
			}
		})
	}
}

func TestAlertRules(t *testing.T) {
	f, err := deploy.LoadRules(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]deploy.Rule{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				t.Errorf("recording rule %q belongs in %s", r.Record, rulesFile)
				continue
			}
			if _, dup := got[r.Alert]; dup {
				t.Errorf("alert %q defined twice", r.Alert)
			}
			got[r.Alert] = r
		}
	}
	want := []struct {
		alert, severity, expr string
	}{
		{"FleetHostUnreachable", "critical", "fleet_host_up == 0"},
		{"FleetSSHDownICMPUp", "warning", `probe="ssh"`},
		{"FleetSSHLoginSlow", "warning", "fleet_ssh_phase_seconds"},
		{"FleetCommandFailing", "warning", "fleet_ssh_command_exit_status != 0"},
		{"FleetCommandOutputChanged", "info", "changes(fleet_ssh_command_output_hash[15m]) > 0"},
		{"FleetCommandOutputDrift", "warning", "count_values"},
		{"FleetSetMostlyDown", "critical", "> 0.5"},
		{"FleetTCPPortDown", "warning", `fleet_probe_success{probe="tcp"} == 0`},
		{"FleetSetSSHFailing", "warning", `fleet_probe_success{probe="icmp"} == 1`},
		{"FleetExporterBehindSchedule", "warning", "fleet_probes_skipped_total"},
		{"FleetConfigReloadFailed", "warning", "fleet_config_last_reload_successful == 0"},
		{"FleetExporterDown", "critical", `absent(up{job="fleet"})`},
		{"FleetClusterDegraded", "warning", "fleet_cluster_members"},
		{"FleetBastionDown", "critical", "(fleet_ssh_bastion_targets > 0)\n  and on (job, instance, bastion)\n(fleet_ssh_bastion_up == 0)"},
		{"FleetSSHHostKeyChanged", "warning", "time() - fleet_ssh_host_key_changed_timestamp_seconds"},
		{"FleetSSHHostCertificateExpiring", "info", "fleet_ssh_host_certificate_expiry_timestamp_seconds - time()"},
	}
	var wantNames []string
	for _, w := range want {
		wantNames = append(wantNames, w.alert)
		t.Run(w.alert, func(t *testing.T) {
			r, ok := got[w.alert]
			if !ok {
				t.Fatalf("alert %s missing from %s", w.alert, alertsFile)
			}
			if r.For == "" {
				t.Errorf("no for: duration")
			}
			if r.Labels["severity"] != w.severity {
				t.Errorf("severity = %q, want %q", r.Labels["severity"], w.severity)
			}
			if !strings.Contains(r.Expr, w.expr) {
				t.Errorf("expr %q does not contain %q", r.Expr, w.expr)
			}
			// Alerts must not depend on rules.yml being loaded.
			if strings.Contains(r.Expr, "fleet:") {
				t.Errorf("expr uses a recording rule: %q", r.Expr)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("annotation %q missing", a)
				}
			}
		})
	}
	var gotNames []string
	for name := range got {
		gotNames = append(gotNames, name)
	}
	sort.Strings(gotNames)
	sort.Strings(wantNames)
	if diff := cmp.Diff(wantNames, gotNames); diff != "" {
		t.Errorf("alert names (-want +got):\n%s", diff)
	}
}

func TestRecordingRules(t *testing.T) {
	f, err := deploy.LoadRules(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	nameRE := regexp.MustCompile(`^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$`)
	got := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				t.Errorf("alert %q belongs in %s", r.Alert, alertsFile)
				continue
			}
			if !nameRE.MatchString(r.Record) {
				t.Errorf("record %q is not level:metric:operations", r.Record)
			}
			got[r.Record] = true
		}
	}
	for _, want := range []string{
		"fleet:hosts_up:sum",
		"fleet:hosts:count",
		"fleet:icmp_loss:ratio_rate5m",
		"fleet:probes:rate5m",
	} {
		t.Run(want, func(t *testing.T) {
			if !got[want] {
				t.Errorf("recording rule %s missing from %s", want, rulesFile)
			}
		})
	}
}

// rulesTest is the part of a promtool unit test file this package checks.
type rulesTest struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		PromQLExprTest []struct {
			Expr string `yaml:"expr"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

// TestRulesTestCoverage checks that alerts_test.yml and alerts_long_test.yml
// together have a firing and a silent case for every alert and an
// expression test for every recording rule.
func TestRulesTestCoverage(t *testing.T) {
	var tests []rulesTest
	for _, c := range []struct {
		file  string
		loads []string
	}{
		{rulesTestFile, []string{alertsFile, rulesFile}},
		{longTestFile, []string{alertsFile}},
	} {
		b, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		var rt rulesTest
		if err := yaml.Unmarshal(b, &rt); err != nil {
			t.Fatal(err)
		}
		for _, f := range c.loads {
			if !slices.Contains(rt.RuleFiles, filepath.Base(f)) {
				t.Errorf("%s: rule_files %v does not load %s", c.file, rt.RuleFiles, filepath.Base(f))
			}
		}
		tests = append(tests, rt)
	}
	fires, silent, tested := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, tc := range slices.Concat(tests[0].Tests, tests[1].Tests) {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
		for _, e := range tc.PromQLExprTest {
			tested[strings.TrimSpace(e.Expr)] = true
		}
	}
	alerts, err := deploy.LoadRules(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	records, err := deploy.LoadRules(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range append(alerts.Groups, records.Groups...) {
		for _, r := range g.Rules {
			switch {
			case r.Alert != "":
				t.Run(r.Alert, func(t *testing.T) {
					if !fires[r.Alert] {
						t.Errorf("no test case where %s fires", r.Alert)
					}
					if !silent[r.Alert] {
						t.Errorf("no test case where %s stays silent", r.Alert)
					}
				})
			default:
				t.Run(r.Record, func(t *testing.T) {
					if !tested[r.Record] {
						t.Errorf("no promql_expr_test for %s", r.Record)
					}
				})
			}
		}
	}
}

// allExprs returns every expression of the artefacts by source, with the
// Grafana variables of the dashboard expanded.
func allExprs(t *testing.T) map[string][]string {
	t.Helper()
	dash, err := deploy.DashboardExprs(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range dash {
		if dash[i], err = deploy.ExpandGrafanaVars(e, grafanaTestVars()); err != nil {
			t.Fatal(err)
		}
	}
	alerts, err := deploy.RuleExprs(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	records, err := deploy.RuleExprs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	crypto, err := deploy.RuleExprs(cryptoFile)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]string{"dashboard": dash, "alerts": append(alerts, crypto...), "rules": records}
}

// TestExpressionsParse runs every expression of the dashboard and the rule
// files through `promtool check rules` as recording rules, which parses the
// PromQL.
func TestExpressionsParse(t *testing.T) {
	promtool := lookTool(t, "promtool", promtoolHint)
	for source, exprs := range allExprs(t) {
		t.Run(source, func(t *testing.T) {
			if len(exprs) == 0 {
				t.Fatal("no expressions found")
			}
			type rule struct {
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			}
			var rules []rule
			for i, e := range exprs {
				rules = append(rules, rule{Record: fmt.Sprintf("check:%s:expr%d", source, i), Expr: e})
			}
			b, err := yaml.Marshal(map[string]any{
				"groups": []any{map[string]any{"name": "check_" + source, "rules": rules}},
			})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), source+".yml")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := runTool(t, ".", promtool, "check", "rules", path)
			if err != nil {
				t.Fatalf("promtool check rules on the %s expressions: %v\n%s\n%s", source, err, out, b)
			}
			if want := fmt.Sprintf("%d rules found", len(exprs)); !strings.Contains(out, want) {
				t.Fatalf("promtool output lacks %q:\n%s", want, out)
			}
		})
	}
}

// TestExpressionsUseContractMetrics catches misspelt metric names, which
// parse fine but silently match nothing.
func TestExpressionsUseContractMetrics(t *testing.T) {
	records, err := deploy.LoadRules(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for _, g := range records.Groups {
		for _, r := range g.Rules {
			recorded[r.Record] = true
		}
	}
	// A recording rule's name (fleet:…, fleet_host:…) is not a metric.
	metricRE := regexp.MustCompile(`\bfleet_[a-z0-9_]+\b:?`)
	recordRE := regexp.MustCompile(`\bfleet(_[a-z]+)?:[a-z0-9_:]+`)
	for source, exprs := range allExprs(t) {
		t.Run(source, func(t *testing.T) {
			for _, e := range exprs {
				for _, m := range metricRE.FindAllString(e, -1) {
					if strings.HasSuffix(m, ":") {
						continue
					}
					if !slices.Contains(contractMetrics(), m) {
						t.Errorf("unknown metric %s in %q", m, e)
					}
				}
				for _, m := range recordRE.FindAllString(e, -1) {
					if !recorded[m] {
						t.Errorf("recording rule %s used in %q is not defined in %s", m, e, rulesFile)
					}
				}
			}
		})
	}
}

// dashboard is the part of the Grafana dashboard JSON the tests check.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Inputs        []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Multi      bool            `json:"multi"`
			IncludeAll bool            `json:"includeAll"`
			Datasource *datasource     `json:"datasource"`
			Current    struct {
				Value any `json:"value"`
			} `json:"current"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Panels     []panel     `json:"panels"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// flatPanels returns the panels with row children inlined.
func flatPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flatPanels(p.Panels)...)
	}
	return out
}

func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both must be set", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion = %d, want 36..41", d.SchemaVersion)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want one DS_PROMETHEUS prometheus input", d.Inputs)
	}

	t.Run("variables", func(t *testing.T) {
		vars := map[string]int{}
		for i, v := range d.Templating.List {
			vars[v.Name] = i
		}
		i, ok := vars["datasource"]
		if !ok {
			t.Fatal("no datasource variable")
		}
		ds := d.Templating.List[i]
		if ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
			t.Errorf("datasource variable: type %q query %s, want datasource/prometheus", ds.Type, ds.Query)
		}
		if ds.Current.Value != "${DS_PROMETHEUS}" {
			t.Errorf("datasource variable defaults to %v, want ${DS_PROMETHEUS}", ds.Current.Value)
		}
		i, ok = vars["set"]
		if !ok {
			t.Fatal("no set variable")
		}
		set := d.Templating.List[i]
		if set.Type != "query" || !set.Multi || !set.IncludeAll {
			t.Errorf("set variable: type %q multi %v includeAll %v, want query/true/true", set.Type, set.Multi, set.IncludeAll)
		}
		const want = "label_values(fleet_targets, set)"
		if set.Definition != want || !strings.Contains(string(set.Query), want) {
			t.Errorf("set variable: definition %q query %s, want %s", set.Definition, set.Query, want)
		}
		if set.Datasource == nil || set.Datasource.UID != "${datasource}" {
			t.Errorf("set variable datasource = %+v, want uid ${datasource}", set.Datasource)
		}
	})

	t.Run("panels", func(t *testing.T) {
		ids := map[int]string{}
		for _, p := range flatPanels(d.Panels) {
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
			}
			ids[p.ID] = p.Title
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q datasource = %+v, want uid ${datasource}", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("panel %q: empty or duplicate refId %q", p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q target %s datasource = %+v, want uid ${datasource}", p.Title, tg.RefID, tg.Datasource)
				}
			}
		}
	})

	t.Run("coverage", func(t *testing.T) {
		exprs, err := deploy.DashboardExprs(dashboardFile)
		if err != nil {
			t.Fatal(err)
		}
		all := strings.Join(exprs, "\n")
		for _, want := range []string{
			"fleet_host_up",
			"fleet_probe_failure_info",
			"fleet_probe_failing_since_timestamp_seconds",
			"fleet_icmp_rtt_seconds",
			"fleet_ssh_command_output_distinct_hashes",
			"fleet_set_icmp_rtt_seconds_bucket",
			"fleet_set_probe_duration_seconds_bucket",
			"fleet_set_ssh_phase_seconds_bucket",
			`host=~"$host"`,
			"fleet_icmp_packets_sent_total",
			"fleet_icmp_packets_received_total",
			"fleet_ssh_phase_seconds",
			"fleet_ssh_command_duration_seconds",
			"fleet_ssh_connection_info",
			"count_values",
			"fleet_pool_in_flight",
			"fleet_pool_waiting",
			"fleet_scheduler_lag_seconds_bucket",
			"fleet_probes_total",
			"fleet_probes_skipped_total",
			"fleet_ssh_bastion_up",
			"fleet_ssh_bastion_connections",
			"fleet_ssh_bastion_channels",
			"fleet_ssh_bastion_connects_total",
			"fleet_ssh_bastion_targets",
			"fleet_ssh_host_key_info",
			"fleet_ssh_host_key_changed_timestamp_seconds",
			"fleet_ssh_host_certificate_expiry_timestamp_seconds",
			`set=~"$set"`,
		} {
			if !strings.Contains(all, want) {
				t.Errorf("no dashboard query uses %s", want)
			}
		}
	})
}

// TestDashboardQueries evaluates the trickier dashboard queries on sample
// data with `promtool test rules`, with $set restricted to web|app.
func TestDashboardQueries(t *testing.T) {
	promtool := lookTool(t, "promtool", promtoolHint)
	d := loadDashboard(t)
	expr := func(title, ref string) string {
		t.Helper()
		for _, p := range flatPanels(d.Panels) {
			if p.Title != title {
				continue
			}
			for _, tg := range p.Targets {
				if tg.RefID == ref {
					vars := grafanaTestVars()
					vars["set"] = "web|app"
					vars["__rate_interval"] = "5m"
					e, err := deploy.ExpandGrafanaVars(tg.Expr, vars)
					if err != nil {
						t.Fatal(err)
					}
					return e
				}
			}
		}
		t.Fatalf("no panel %q with query %s", title, ref)
		return ""
	}
	const (
		base = `job="fleet",instance="exp1:9922",env="prod"`
		// 52-bit hashes as the exporter produces them.
		hashA = "4503599627370495"
		hashB = "3512345678901234"
		keyA  = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
		keyC  = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
		keyD  = "SHA256:Xx0l9fH4Wl5bZbZ7l1O5LrCkq0q2C4Gq4m0nF1mD9ZQ"
		keyE  = "SHA256:q1sY0gYVQ2o0m5YV4C0a3S6kqVd6v4rX3Rk5m0lq8yA"
		keyF  = "SHA256:3bZkq7m2m0oO1ZyHc4w5k2Qm9v8sT6dJ1nP0rL5eF2g"
	)
	series := func(name, labels, values string) map[string]string {
		return map[string]string{"series": name + "{" + base + "," + labels + "}", "values": values}
	}
	input := []map[string]string{
		series("fleet_host_up", `set="web",host="a"`, "1x10"),
		series("fleet_host_up", `set="web",host="b"`, "0x10"),
		series("fleet_host_up", `set="web",host="c"`, "0x10"),
		series("fleet_host_up", `set="app",host="f"`, "1x10"),
		series("fleet_host_up", `set="other",host="z"`, "0x10"),
		// A second cluster member probes web/b and app/f too (replication
		// factor 2): the host panels count each host once.
		{"series": `fleet_host_up{job="fleet",instance="exp2:9922",env="prod",set="web",host="b"}`, "values": "0x10"},
		{"series": `fleet_host_up{job="fleet",instance="exp2:9922",env="prod",set="app",host="f"}`, "values": "1x10"},
		// b's icmp fails since 120s (timeout); its tcp works; c never
		// answered (dns), so its last success is 0.
		series("fleet_probe_failure_info", `set="web",host="b",probe="icmp",reason="timeout"`, "1x10"),
		series("fleet_probe_failure_info", `set="web",host="b",probe="tcp",reason="refused"`, "0x10"),
		series("fleet_probe_failure_info", `set="web",host="c",probe="icmp",reason="dns"`, "1x10"),
		series("fleet_probe_failure_info", `set="other",host="z",probe="icmp",reason="timeout"`, "1x10"),
		// Failing since: b's icmp since 120s; c never succeeded, failing
		// since its first probe at 0s (it has no last success at all).
		series("fleet_probe_last_success_timestamp_seconds", `set="web",host="b",probe="icmp"`, "110x10"),
		series("fleet_probe_last_success_timestamp_seconds", `set="web",host="b",probe="tcp"`, "590x10"),
		series("fleet_probe_failing_since_timestamp_seconds", `set="web",host="b",probe="icmp"`, "120x10"),
		series("fleet_probe_failing_since_timestamp_seconds", `set="web",host="c",probe="icmp"`, "0x10"),
		series("fleet_probe_failing_since_timestamp_seconds", `set="other",host="z",probe="icmp"`, "0x10"),
		series("fleet_probe_consecutive_failures", `set="web",host="b",probe="icmp"`, "5x10"),
		series("fleet_probe_consecutive_failures", `set="web",host="b",probe="tcp"`, "0x10"),
		series("fleet_probe_consecutive_failures", `set="web",host="c",probe="icmp"`, "9x10"),
		series("fleet_probe_consecutive_failures", `set="other",host="z",probe="icmp"`, "9x10"),
		// web/a loses half its packets, web/d none.
		series("fleet_icmp_packets_sent_total", `set="web",host="a"`, "0+8x10"),
		series("fleet_icmp_packets_received_total", `set="web",host="a"`, "0+4x10"),
		series("fleet_icmp_packets_sent_total", `set="web",host="d"`, "0+8x10"),
		series("fleet_icmp_packets_received_total", `set="web",host="d"`, "0+8x10"),
		// web/c drifted from the 2:1 majority; app agrees; other drifts but
		// is not selected.
		series("fleet_ssh_command_output_hash", `set="web",host="a",command="release"`, hashA+"x10"),
		series("fleet_ssh_command_output_hash", `set="web",host="b",command="release"`, hashA+"x10"),
		series("fleet_ssh_command_output_hash", `set="web",host="c",command="release"`, hashB+"x10"),
		series("fleet_ssh_command_output_hash", `set="app",host="f",command="release"`, "9x10"),
		series("fleet_ssh_command_output_hash", `set="app",host="g",command="release"`, "9x10"),
		series("fleet_ssh_command_output_hash", `set="other",host="y",command="release"`, "1x10"),
		series("fleet_ssh_command_output_hash", `set="other",host="x",command="release"`, "1x10"),
		series("fleet_ssh_command_output_hash", `set="other",host="z",command="release"`, "2x10"),
		// exp1 has no connection through jump@b1:22, exp2 has two; both
		// reach web through it. jump@b9:22 serves only "other", which is
		// not selected.
		series("fleet_ssh_bastion_up", `bastion="jump@b1:22"`, "0x10"),
		series("fleet_ssh_bastion_connections", `bastion="jump@b1:22"`, "0x10"),
		series("fleet_ssh_bastion_targets", `bastion="jump@b1:22",set="web"`, "3x10"),
		{"series": `fleet_ssh_bastion_up{job="fleet",instance="exp2:9922",bastion="jump@b1:22"}`, "values": "1x10"},
		{"series": `fleet_ssh_bastion_connections{job="fleet",instance="exp2:9922",bastion="jump@b1:22"}`, "values": "2x10"},
		{"series": `fleet_ssh_bastion_targets{job="fleet",instance="exp2:9922",bastion="jump@b1:22",set="web"}`, "values": "2x10"},
		series("fleet_ssh_bastion_up", `bastion="jump@b9:22"`, "1x10"),
		series("fleet_ssh_bastion_connections", `bastion="jump@b9:22"`, "1x10"),
		series("fleet_ssh_bastion_targets", `bastion="jump@b9:22",set="other"`, "5x10"),
		// web/a, web/b and app/f share one host key (web/b reported by two
		// exporters, counted once); other/z shares it too but is not
		// selected. web/c and app/c:2222 are one machine on two ports: not
		// shared. Two IPv6 hosts share keyD; an IPv6 host with and without
		// a port has keyF (one host). web/a's key changed at 300s, web/d's
		// before the range (flat), web/c's never.
		series("fleet_ssh_host_key_info", `set="web",host="a",type="ssh-ed25519",fingerprint_sha256="`+keyA+`"`, "1x10"),
		series("fleet_ssh_host_key_info", `set="web",host="b",type="ssh-ed25519",fingerprint_sha256="`+keyA+`"`, "1x10"),
		{"series": `fleet_ssh_host_key_info{job="fleet",instance="exp2:9922",env="prod",set="web",host="b",type="ssh-ed25519",fingerprint_sha256="` + keyA + `"}`, "values": "1x10"},
		series("fleet_ssh_host_key_info", `set="app",host="f",type="ssh-ed25519",fingerprint_sha256="`+keyA+`"`, "1x10"),
		series("fleet_ssh_host_key_info", `set="web",host="c",type="ecdsa-sha2-nistp256",fingerprint_sha256="`+keyC+`"`, "1x10"),
		series("fleet_ssh_host_key_info", `set="other",host="z",type="ssh-ed25519",fingerprint_sha256="`+keyA+`"`, "1x10"),
		series("fleet_ssh_host_key_info", `set="app",host="c:2222",type="ecdsa-sha2-nistp256",fingerprint_sha256="`+keyC+`"`, "1x10"),
		series("fleet_ssh_host_key_info", `set="web",host="2001:db8::1",type="ssh-ed25519",fingerprint_sha256="`+keyD+`"`, "1x10"),
		series("fleet_ssh_host_key_info", `set="app",host="2001:db8::2",type="ssh-ed25519",fingerprint_sha256="`+keyD+`"`, "1x10"),
		series("fleet_ssh_host_key_info", `set="web",host="2001:db8::5",type="ssh-ed25519",fingerprint_sha256="`+keyF+`"`, "1x10"),
		series("fleet_ssh_host_key_info", `set="app",host="[2001:db8::5]:2222",type="ssh-ed25519",fingerprint_sha256="`+keyF+`"`, "1x10"),
		series("fleet_ssh_host_key_changed_timestamp_seconds", `set="web",host="a"`, "0x4 300x5"),
		series("fleet_ssh_host_key_changed_timestamp_seconds", `set="web",host="d"`, "100x10"),
		series("fleet_ssh_host_key_info", `set="web",host="d",type="ssh-ed25519",fingerprint_sha256="`+keyE+`"`, "1x10"),
		series("fleet_ssh_host_key_changed_timestamp_seconds", `set="web",host="c"`, "0x10"),
		// Host certificates: web/a's expires 10 days after the evaluation
		// at 10m, web/c's in 40 days.
		series("fleet_ssh_host_certificate_expiry_timestamp_seconds", `set="web",host="a"`, "864600x10"),
		series("fleet_ssh_host_certificate_expiry_timestamp_seconds", `set="web",host="c"`, "3456600x10"),
	}
	type sample struct {
		Labels string  `yaml:"labels"`
		Value  float64 `yaml:"value"`
	}
	lbl := func(name, labels string) string {
		return name + "{" + base + "," + labels + "}"
	}
	tests := []struct {
		title, ref string
		want       []sample
	}{
		{"Hosts down", "A", []sample{{"{}", 2}}},
		{"Hosts down per set", "A", []sample{{`{set="web"}`, 2}, {`{set="app"}`, 0}}},
		{"Hosts up", "A", []sample{{"{}", 2}}},
		{"Hosts up per set", "A", []sample{{`{set="web"}`, 1}, {`{set="app"}`, 1}}},
		{"Unreachable hosts", "A", []sample{
			{lbl("", `set="web",host="b",probe="icmp",reason="timeout"`), 480},
			{lbl("", `set="web",host="c",probe="icmp",reason="dns"`), 600},
		}},
		{"Unreachable hosts", "B", []sample{
			{lbl("", `set="web",host="b",probe="icmp",reason="timeout"`), 5},
			{lbl("", `set="web",host="c",probe="icmp",reason="dns"`), 9},
		}},
		{"ICMP loss per set", "A", []sample{{`{set="web"}`, 0.25}}}, // (4+0)/(8+8)
		{"Top 10 hosts by ICMP loss", "A", []sample{{lbl("", `set="web",host="a"`), 0.5}}},
		{"Command output drift", "A", []sample{
			{lbl("", `set="web",host="c",command="release",hash="`+hashB+`"`), 1},
		}},
		{"Majority output per command", "A", []sample{
			{`{set="web",command="release",hash="` + hashA + `"}`, 2},
			{`{set="app",command="release",hash="9"}`, 2},
		}},
		{"Majority output per command", "B", []sample{
			{`{set="web",command="release"}`, 3},
			{`{set="app",command="release"}`, 2},
		}},
		{"Distinct outputs per command", "A", []sample{
			{`{set="web",command="release"}`, 2},
			{`{set="app",command="release"}`, 1},
		}},
		{"Bastion up", "A", []sample{{`{bastion="jump@b1:22"}`, 0}}},
		{"Bastion connections", "A", []sample{{`{bastion="jump@b1:22"}`, 2}}},
		{"SSH targets per bastion", "A", []sample{{`{bastion="jump@b1:22",set="web"}`, 5}}},
		{"Host key changes in the time range", "A", []sample{
			{lbl("", `set="web",host="a",type="ssh-ed25519",fingerprint_sha256="`+keyA+`"`), 300},
		}},
		{"Shared host keys", "A", []sample{
			{`{set="web",host="a",type="ssh-ed25519",fingerprint_sha256="` + keyA + `"}`, 3},
			{`{set="web",host="b",type="ssh-ed25519",fingerprint_sha256="` + keyA + `"}`, 3},
			{`{set="app",host="f",type="ssh-ed25519",fingerprint_sha256="` + keyA + `"}`, 3},
			{`{set="web",host="2001:db8::1",type="ssh-ed25519",fingerprint_sha256="` + keyD + `"}`, 2},
			{`{set="app",host="2001:db8::2",type="ssh-ed25519",fingerprint_sha256="` + keyD + `"}`, 2},
		}},
		{"Host certificates expiring within 30 days", "A", []sample{{lbl("", `set="web",host="a"`), 864000}}},
	}
	type exprTest struct {
		Expr       string   `yaml:"expr"`
		EvalTime   string   `yaml:"eval_time"`
		ExpSamples []sample `yaml:"exp_samples"`
	}
	var exprTests []exprTest
	for _, tc := range tests {
		exprTests = append(exprTests, exprTest{Expr: expr(tc.title, tc.ref), EvalTime: "10m", ExpSamples: tc.want})
	}
	// The host panels read the deduplicating recording rules.
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(map[string]any{
		"rule_files":          []string{rules},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval":         "1m",
			"input_series":     input,
			"promql_expr_test": exprTests,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard_test.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runTool(t, ".", promtool, "test", "rules", path)
	if err != nil {
		t.Fatalf("dashboard queries gave unexpected results: %v\n%s", err, out)
	}
}

func TestAlertmanagerConfig(t *testing.T) {
	amtool := lookTool(t, "amtool", amtoolHint)
	out, err := runTool(t, ".", amtool, "check-config", alertmanagerFile)
	if err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
	tests := []struct {
		name     string
		labels   []string
		receiver string
	}{
		{"db critical pages dba", []string{"alertname=FleetHostUnreachable", "set=db1", "severity=critical"}, "dba-pager"},
		{"db warning to dba", []string{"alertname=FleetSSHDownICMPUp", "set=db1", "severity=warning"}, "dba"},
		{"web critical pages web", []string{"alertname=FleetSetMostlyDown", "set=web3", "severity=critical"}, "web-pager"},
		{"unowned set to ops", []string{"alertname=FleetHostUnreachable", "set=lab", "severity=critical"}, "ops"},
		{"exporter health to monitoring", []string{"alertname=FleetExporterDown", "job=fleet", "severity=critical"}, "monitoring"},
		{"drift to ticket queue", []string{"alertname=FleetCommandOutputDrift", "set=db1", "severity=warning"}, "config-drift"},
		{"bastion down pages the set's team", []string{"alertname=FleetBastionDown", "set=db1", "bastion=jump@b1:22", "severity=critical"}, "dba-pager"},
		{"host key changed to security and the set's team", []string{"alertname=FleetSSHHostKeyChanged", "set=web2", "severity=warning"}, "security,web"},
		{"host key changed of an unowned set to security and ops", []string{"alertname=FleetSSHHostKeyChanged", "set=lab", "severity=warning"}, "security,ops"},
		{"shared host key to security", []string{"alertname=FleetSSHHostKeyShared", "set=db1", "severity=info"}, "security,dba"},
		{"certificate expiring to the set's team", []string{"alertname=FleetSSHHostCertificateExpiring", "set=db1", "severity=info"}, "dba"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"config", "routes", "test", "--config.file=" + alertmanagerFile, "--verify.receivers=" + tc.receiver}, tc.labels...)
			out, err := runTool(t, ".", amtool, args...)
			if err != nil {
				t.Errorf("labels %v: want receiver %s: %v\n%s", tc.labels, tc.receiver, err, out)
			}
		})
	}
}

// TestAlertmanagerInhibitRules checks the inhibition contract without amtool.
func TestAlertmanagerInhibitRules(t *testing.T) {
	b, err := os.ReadFile(alertmanagerFile)
	if err != nil {
		t.Fatal(err)
	}
	type inhibitRule struct {
		SourceMatchers []string `yaml:"source_matchers"`
		TargetMatchers []string `yaml:"target_matchers"`
		Equal          []string `yaml:"equal"`
	}
	var cfg struct {
		InhibitRules []inhibitRule `yaml:"inhibit_rules"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	want := []inhibitRule{
		{
			SourceMatchers: []string{`alertname="FleetSetMostlyDown"`},
			TargetMatchers: []string{`alertname=~"FleetHostUnreachable|FleetSSHDownICMPUp"`},
			Equal:          []string{"set"},
		},
		{
			SourceMatchers: []string{`alertname="FleetSetSSHFailing"`},
			TargetMatchers: []string{`alertname="FleetSSHDownICMPUp"`},
			Equal:          []string{"set"},
		},
		{
			SourceMatchers: []string{`alertname="FleetBastionDown"`},
			TargetMatchers: []string{`alertname=~"FleetSSHDownICMPUp|FleetSSHLoginSlow|FleetCommandFailing"`},
			Equal:          []string{"set", "instance"},
		},
		{
			SourceMatchers: []string{`alertname="FleetBastionDown"`},
			TargetMatchers: []string{`alertname="FleetSetSSHFailing"`},
			Equal:          []string{"set"},
		},
		{
			SourceMatchers: []string{`alertname="FleetExporterDown"`},
			TargetMatchers: []string{`alertname=~"Fleet.+"`, `alertname!="FleetExporterDown"`},
		},
	}
	if diff := cmp.Diff(want, cfg.InhibitRules); diff != "" {
		t.Errorf("inhibit_rules (-want +got):\n%s", diff)
	}
}

// readUnit returns the unit file's directives by section, values of repeated
// keys in order.
func readUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			unit[section][k] = append(unit[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return unit
}

func TestSystemdUnit(t *testing.T) {
	unit := readUnit(t, unitFile)
	tests := []struct {
		section, key, want string
	}{
		{"Service", "ExecStart", "/usr/local/bin/fleet_exporter --config.file=/etc/fleet_exporter/fleet.yml --storage.path=/var/lib/fleet_exporter"},
		{"Service", "StateDirectory", "fleet_exporter"},
		{"Service", "ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Service", "Restart", "on-failure"},
		{"Service", "DynamicUser", "yes"},
		{"Service", "AmbientCapabilities", "CAP_NET_RAW"},
		{"Service", "CapabilityBoundingSet", "CAP_NET_RAW"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Service", "ProtectKernelTunables", "yes"},
		{"Service", "ProtectKernelModules", "yes"},
		{"Service", "ProtectKernelLogs", "yes"},
		{"Service", "RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX AF_NETLINK"},
		{"Install", "WantedBy", "multi-user.target"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			got := unit[tc.section][tc.key]
			if diff := cmp.Diff([]string{tc.want}, got); diff != "" {
				t.Errorf("[%s] %s (-want +got):\n%s", tc.section, tc.key, diff)
			}
		})
	}
}

// TestSystemdAnalyzeVerify runs `systemd-analyze verify` on the unit, with
// ExecStart pointed at a stand-in executable (verify requires the binary to
// exist). Any output is a finding, since unknown keys are only warned about.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa := lookTool(t, "systemd-analyze", "install systemd")
	orig, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		extra     string
		wantClean bool
	}{
		{"shipped unit", "", true},
		// Proves the check notices problems verify only warns about.
		{"unknown key", "[Service]\nProtectKernelTunable=yes\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "fleet_exporter")
			if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(string(orig), "/usr/local/bin/fleet_exporter", bin) + tc.extra
			path := filepath.Join(dir, filepath.Base(unitFile))
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := runTool(t, dir, sa, "verify", "--man=no", path)
			clean := err == nil && strings.TrimSpace(out) == ""
			if clean != tc.wantClean {
				t.Fatalf("systemd-analyze verify: clean = %v, want %v (err %v)\n%s", clean, tc.wantClean, err, out)
			}
		})
	}
}

func TestExpandGrafanaVars(t *testing.T) {
	vars := map[string]string{"set": "web|db", "__rate_interval": "1m", "__range": "1h", "setting": "X"}
	tests := []struct {
		name, in, want, wantErr string
	}{
		{"dollar", `up{set=~"$set"}`, `up{set=~"web|db"}`, ""},
		{"braces", `up{set=~"${set}"}`, `up{set=~"web|db"}`, ""},
		{"braces with format", `up{set=~"${set:regex}"}`, `up{set=~"web|db"}`, ""},
		{"brackets", `up{set=~"[[set]]"}`, `up{set=~"web|db"}`, ""},
		{"longest name wins", `x{a="$setting",b="$set"}`, `x{a="X",b="web|db"}`, ""},
		{"builtin", `rate(x[$__rate_interval]) + rate(x[$__range])`, `rate(x[1m]) + rate(x[1h])`, ""},
		{"backreference kept", `label_replace(x, "a", "$1", "b", "(.*)")`, `label_replace(x, "a", "$1", "b", "(.*)")`, ""},
		{"unknown", `rate(x[$__interval]) + $foo + $foo`, "", "__interval, foo"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := deploy.ExpandGrafanaVars(tc.in, vars)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		load    func(string) ([]string, error)
		path    string
		want    []string
		wantErr string
	}{
		{
			"rules ok", deploy.RuleExprs,
			write("ok.yml", "groups:\n- name: g\n  rules:\n  - record: a:b:c\n    expr: up\n  - alert: A\n    expr: up == 0\n"),
			[]string{"up", "up == 0"},
			"",
		},
		{
			"rules misspelt key", deploy.RuleExprs,
			write("typo.yml", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    anotations: {}\n"), nil, "anotations",
		},
		{
			"rules record and alert", deploy.RuleExprs,
			write("both.yml", "groups:\n- name: g\n  rules:\n  - alert: A\n    record: a:b:c\n    expr: up\n"), nil, "exactly one",
		},
		{
			"rules empty expr", deploy.RuleExprs,
			write("empty.yml", "groups:\n- name: g\n  rules:\n  - alert: A\n"), nil, "empty expr",
		},
		{"rules missing file", deploy.RuleExprs, filepath.Join(dir, "nope.yml"), nil, "no such file"},
		{
			"dashboard nested rows", deploy.DashboardExprs,
			write("d.json", `{"panels":[{"type":"row","panels":[{"targets":[{"refId":"A","expr":"up"}]}]},{"targets":[{"refId":"A","expr":"x"},{"refId":"B","expr":"y"}]}]}`),
			[]string{"up", "x", "y"},
			"",
		},
		{
			"dashboard empty expr", deploy.DashboardExprs,
			write("e.json", `{"panels":[{"title":"p","targets":[{"refId":"A","expr":" "}]}]}`), nil, "no expr",
		},
		{"dashboard bad json", deploy.DashboardExprs, write("bad.json", `{"panels":[`), nil, "unexpected end"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.load(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("exprs (-want +got):\n%s", diff)
			}
		})
	}
}
