package e2e

import (
	"fmt"
	"maps"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleet-exporter/fleet_exporter/deploy"
)

// shortHostUnreachableFor replaces FleetHostUnreachable's shipped `for: 1m`
// in the test's copy of alerts.yml. Waiting a real minute twice (firing, then
// resolved) would blow the package's time budget, and the shipped duration
// is covered by the promtool unit tests in deploy/ (alerts_test.yml). What
// this test adds is the rest of the path: real probes, a real scrape, real
// rule evaluation and the alert's labels and annotations.
const shortHostUnreachableFor = "5s"

// seriesWant builds the label sets a per-host family must have in
// Prometheus: __name__, job, instance, set, host, the set's static labels,
// and for each element of extras one series with those extra labels.
func (e *env) seriesWant(name string, sets []string, extras []map[string]string) []string {
	if extras == nil {
		extras = []map[string]string{{}}
	}
	var want []string
	hosts := e.hostsBySet()
	for _, set := range sets {
		for _, host := range hosts[set] {
			for _, x := range extras {
				l := map[string]string{"__name__": name, "job": "fleet", "instance": e.exporter, "set": set, "host": host}
				maps.Copy(l, staticLabels(set))
				maps.Copy(l, x)
				if _, port, err := net.SplitHostPort(host); err == nil && x["probe"] == "tcp" {
					// A TCP probe's series carry the probed port.
					l["port"] = port
				}
				want = append(want, labelKey(l))
			}
		}
	}
	slices.Sort(want)
	return want
}

func labelKeys(got []sample) []string {
	var keys []string
	for _, s := range got {
		keys = append(keys, labelKey(s.labels))
	}
	slices.Sort(keys)
	return keys
}

// inRange checks that every sample is in (lo, hi).
func inRange(lo, hi float64) func([]sample) error {
	return func(got []sample) error {
		for _, s := range got {
			if !(s.value > lo && s.value < hi) {
				return fmt.Errorf("%s = %v, want in (%v, %v)", labelKey(s.labels), s.value, lo, hi)
			}
		}
		return nil
	}
}

// TestPrometheusEndToEnd runs the exporter against a TCP, an ICMP and an SSH
// (fleetsim) host set, scraped by a real Prometheus with the shipped rules,
// and checks through the Prometheus HTTP API that the target is up, that
// every per-host family arrives with the right labels, and that
// FleetHostUnreachable fires for exactly the TCP host whose listener is
// closed and goes back to inactive when the listener returns.
func TestPrometheusEndToEnd(t *testing.T) {
	t.Parallel()
	needTool(t, "/usr/bin/prometheus", "prometheus")
	e := startEnv(t, envOptions{prometheus: true, hostUnreachableFor: shortHostUnreachableFor})
	all := []string{setTCP, setICMP, setSSH}
	probeOf := map[string]string{setTCP: "tcp", setICMP: "icmp", setSSH: "ssh"}

	phases := []map[string]string{{"phase": "auth"}, {"phase": "connect"}, {"phase": "handshake"}}
	commands := []map[string]string{{"command": cmdCheck}, {"command": cmdHost}}

	cases := []struct {
		name   string
		metric string
		want   []string
		check  func([]sample) error
	}{
		{
			name: "host up", metric: "fleet_host_up",
			want:  e.seriesWant("fleet_host_up", all, nil),
			check: inRange(0.5, 1.5),
		},
		{
			name:   "probe success",
			metric: "fleet_probe_success",
			want: slices.Sorted(slices.Values(slices.Concat(
				e.seriesWant("fleet_probe_success", []string{setTCP}, []map[string]string{{"probe": probeOf[setTCP]}}),
				e.seriesWant("fleet_probe_success", []string{setICMP}, []map[string]string{{"probe": probeOf[setICMP]}}),
				e.seriesWant("fleet_probe_success", []string{setSSH}, []map[string]string{{"probe": probeOf[setSSH]}}),
			))),
			check: inRange(0.5, 1.5),
		},
		{
			name: "icmp rtt", metric: "fleet_icmp_rtt_seconds",
			want: e.seriesWant("fleet_icmp_rtt_seconds", []string{setICMP}, nil),
			// Loopback answers in microseconds; the timeout is 500ms.
			check: inRange(0, 0.5),
		},
		{
			name: "ssh phases", metric: "fleet_ssh_phase_seconds",
			want:  e.seriesWant("fleet_ssh_phase_seconds", []string{setSSH}, phases),
			check: inRange(0, 0.5),
		},
		{
			name: "ssh command output hash", metric: "fleet_ssh_command_output_hash",
			want: e.seriesWant("fleet_ssh_command_output_hash", []string{setSSH}, commands),
			check: func(got []sample) error {
				// fleetsim's "hostname" prints the host's address and a
				// newline: the hash is known exactly. "check" prints the
				// same on every (undrifted) host.
				var check []float64
				for _, s := range got {
					switch s.labels["command"] {
					case cmdHost:
						if want := outputHash(s.labels["host"] + "\n"); s.value != want {
							return fmt.Errorf("%s = %v, want %v (hash of %q)", labelKey(s.labels), s.value, want, s.labels["host"]+"\n")
						}
					case cmdCheck:
						check = append(check, s.value)
					}
				}
				if len(check) != 2 || check[0] != check[1] || check[0] == 0 {
					return fmt.Errorf("hashes of %q on the two hosts: %v, want two equal non-zero values", cmdCheck, check)
				}
				return nil
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []sample
			eventually(t, settleTimeout, tc.metric+" in Prometheus", func() (bool, string) {
				var err error
				got, err = e.query(tc.metric)
				if err != nil {
					return false, err.Error()
				}
				if diff := cmp.Diff(tc.want, labelKeys(got)); diff != "" {
					return false, "series (-want +got):\n" + diff
				}
				if err := tc.check(got); err != nil {
					return false, err.Error()
				}
				return true, ""
			})
		})
	}
	if t.Failed() {
		return
	}

	down := e.tcp[1]
	t.Run("host unreachable fires for the closed listener only", func(t *testing.T) {
		down.down()
		var mine []promAlert
		eventually(t, settleTimeout, "FleetHostUnreachable firing", func() (bool, string) {
			alerts, err := e.alerts()
			if err != nil {
				return false, err.Error()
			}
			mine = alertsNamed(alerts, "FleetHostUnreachable")
			for _, a := range mine {
				if a.State == "firing" {
					return true, ""
				}
			}
			return false, fmt.Sprintf("FleetHostUnreachable alerts: %+v", mine)
		})
		if len(mine) != 1 {
			t.Fatalf("FleetHostUnreachable alerts = %+v, want exactly one, for %s", mine, down.addr)
		}
		a := mine[0]
		want := map[string]string{
			"alertname": "FleetHostUnreachable", "severity": "critical",
			"job": "fleet", "instance": e.exporter, "set": setTCP, "host": down.addr,
		}
		maps.Copy(want, staticLabels(setTCP))
		if diff := cmp.Diff(want, a.Labels); diff != "" {
			t.Errorf("alert labels (-want +got):\n%s", diff)
		}
		// The description's template queries fleet_probe_failure_info; a
		// TCP probe is named with its port.
		_, port, _ := net.SplitHostPort(down.addr)
		if d, w := a.Annotations["description"], "tcp:"+port+"=refused"; !strings.Contains(d, w) {
			t.Errorf("description = %q, want it to name the failing probe as %s", d, w)
		}
	})
	t.Run("host unreachable resolves when the listener returns", func(t *testing.T) {
		down.up(t)
		eventually(t, settleTimeout, "FleetHostUnreachable inactive", func() (bool, string) {
			alerts, err := e.alerts()
			if err != nil {
				return false, err.Error()
			}
			if mine := alertsNamed(alerts, "FleetHostUnreachable"); len(mine) > 0 {
				return false, fmt.Sprintf("still alerting: %+v", mine)
			}
			rules, err := e.rules()
			if err != nil {
				return false, err.Error()
			}
			for _, r := range rules {
				if r.Name == "FleetHostUnreachable" {
					return r.State == "inactive", "rule state " + r.State
				}
			}
			return false, "rule FleetHostUnreachable not loaded"
		})
	})
}

func alertsNamed(alerts []promAlert, name string) []promAlert {
	var out []promAlert
	for _, a := range alerts {
		if a.Labels["alertname"] == name {
			out = append(out, a)
		}
	}
	return out
}

// TestQueriesReturnData evaluates every PromQL expression of the Grafana
// dashboard (variables substituted) and of the shipped rule files against a
// Prometheus scraping a live exporter with one TCP host down. Every
// expression must be accepted; the key panels must return data, and the
// right data; every rule must evaluate without error.
func TestQueriesReturnData(t *testing.T) {
	t.Parallel()
	needTool(t, "/usr/bin/prometheus", "prometheus")
	root := repoRoot(t)
	e := startEnv(t, envOptions{prometheus: true})
	down := e.tcp[0]
	down.down()
	eventually(t, settleTimeout, "Prometheus sees the failure", func() (bool, string) {
		got, err := e.query(fmt.Sprintf(`fleet_probe_failure_info{set=%q,host=%q} == 1`, setTCP, down.addr))
		return err == nil && len(got) == 1, fmt.Sprintf("%v, err %v", got, err)
	})

	// Short windows so that rate() has samples seconds after the start; the
	// exporter probes and Prometheus scrapes every second.
	vars := map[string]string{
		"set":             setRegex,
		"host":            ".+",
		"__rate_interval": "10s",
		"__interval":      "1s",
		"__range":         "1m",
		"datasource":      "prometheus",
	}
	keys := []struct {
		name  string
		match func(expr string) bool
		check func([]sample) error
	}{
		{
			name:  "hosts up per set",
			match: func(x string) bool { return strings.HasPrefix(x, "sum by (set) (fleet_host:host_up:max") },
			check: func(got []sample) error {
				want := map[string]float64{setTCP: 2, setICMP: 2, setSSH: 2}
				have := map[string]float64{}
				for _, s := range got {
					have[s.labels["set"]] = s.value
				}
				if diff := cmp.Diff(want, have); diff != "" {
					return fmt.Errorf("hosts up per set (-want +got):\n%s", diff)
				}
				return nil
			},
		},
		{
			name:  "unreachable hosts",
			match: func(x string) bool { return strings.Contains(x, "group_left (reason) (fleet_probe_failure_info") },
			check: func(got []sample) error {
				for _, s := range got {
					if s.labels["set"] != setTCP || s.labels["host"] != down.addr || s.labels["probe"] != "tcp" || s.labels["reason"] != "refused" || !(s.value > 0) {
						return fmt.Errorf("%s = %v, want only the closed TCP host, probe tcp, reason refused, value > 0", labelKey(s.labels), s.value)
					}
				}
				return nil
			},
		},
		{
			name:  "icmp rtt",
			match: func(x string) bool { return strings.Contains(x, "by (set) (fleet_icmp_rtt_seconds") },
			check: func(got []sample) error {
				if len(got) != 1 || got[0].labels["set"] != setICMP || !(got[0].value > 0) {
					return fmt.Errorf("got %v, want one positive series for set %s", got, setICMP)
				}
				return nil
			},
		},
		{
			name:  "ssh phase latency",
			match: func(x string) bool { return strings.HasPrefix(x, "avg by (phase) (fleet_ssh_phase_seconds") },
			check: func(got []sample) error {
				var phases []string
				for _, s := range got {
					if !(s.value > 0) {
						return fmt.Errorf("%s = %v, want > 0", labelKey(s.labels), s.value)
					}
					phases = append(phases, s.labels["phase"])
				}
				slices.Sort(phases)
				if want := []string{"auth", "connect", "handshake"}; !slices.Equal(phases, want) {
					return fmt.Errorf("phases %v, want %v", phases, want)
				}
				return nil
			},
		},
		{
			name:  "icmp rtt per host",
			match: func(x string) bool { return strings.HasPrefix(x, "fleet_icmp_rtt_seconds{") },
			check: func(got []sample) error {
				var hosts []string
				for _, s := range got {
					hosts = append(hosts, s.labels["host"])
				}
				slices.Sort(hosts)
				if !slices.Equal(hosts, e.icmp) {
					return fmt.Errorf("hosts %v, want %v", hosts, e.icmp)
				}
				return nil
			},
		},
		{
			name:  "latency heatmaps",
			match: func(x string) bool { return strings.HasPrefix(x, "sum by (le) (rate(fleet_set_") },
			check: func(got []sample) error {
				if err := notNaN(got); err != nil {
					return err
				}
				for _, s := range got {
					if s.labels["le"] == "" {
						return fmt.Errorf("heatmap series without le: %v", s.labels)
					}
				}
				return nil
			},
		},
		{
			name:  "majority output",
			match: func(x string) bool { return strings.HasPrefix(x, "topk by (set, command) (1,") },
			check: func(got []sample) error {
				// "check" agrees on both SSH hosts; "host" is split 1:1
				// and has no majority.
				if len(got) != 1 || got[0].labels["command"] != cmdCheck || got[0].value != 2 {
					return fmt.Errorf("got %v, want the %s output held by 2 hosts only", got, cmdCheck)
				}
				return nil
			},
		},
		{
			name:  "hosts holding the majority output",
			match: func(x string) bool { return strings.HasPrefix(x, "count_values by (set, command, host) (") },
			check: func(got []sample) error {
				// Both SSH hosts hold the one "check" output; "host" has
				// no majority, so none of its hosts is listed.
				var hosts []string
				for _, s := range got {
					if s.labels["command"] != cmdCheck || s.labels["hash"] == "" {
						return fmt.Errorf("%s listed, want only %s with its hash", labelKey(s.labels), cmdCheck)
					}
					hosts = append(hosts, s.labels["host"])
				}
				if len(hosts) != 2 {
					return fmt.Errorf("hosts %v, want both SSH hosts", hosts)
				}
				return nil
			},
		},
		{
			name:  "pool in flight and waiting",
			match: func(x string) bool { return strings.Contains(x, "fleet_pool_") },
			check: notNaN,
		},
		{
			name:  "scheduler lag",
			match: func(x string) bool { return strings.Contains(x, "fleet_scheduler_lag_seconds_bucket") },
			check: notNaN,
		},
		{
			name:  "exporter up",
			match: func(x string) bool { return x == `up{job="fleet"}` },
			check: func(got []sample) error {
				if len(got) != 1 || got[0].value != 1 {
					return fmt.Errorf("got %v, want one series with value 1", got)
				}
				return nil
			},
		},
	}

	dash, err := deploy.DashboardExprs(filepath.Join(root, "deploy", "grafana", "fleet_exporter.json"))
	if err != nil {
		t.Fatal(err)
	}
	matched := make([]int, len(keys))
	for i, raw := range dash {
		expr, err := deploy.ExpandGrafanaVars(raw, vars)
		if err != nil {
			t.Errorf("dashboard query %d: %v", i, err)
			continue
		}
		t.Run(fmt.Sprintf("dashboard/%02d", i), func(t *testing.T) {
			if _, err := e.query(expr); err != nil {
				t.Fatalf("query %s: %v", expr, err)
			}
			oneLine := strings.Join(strings.Fields(expr), " ")
			for k, key := range keys {
				if !key.match(oneLine) {
					continue
				}
				matched[k]++
				eventually(t, settleTimeout, key.name+": "+expr, func() (bool, string) {
					got, err := e.query(expr)
					if err != nil {
						return false, err.Error()
					}
					if len(got) == 0 {
						return false, "no data"
					}
					if err := key.check(got); err != nil {
						return false, err.Error()
					}
					return true, ""
				})
			}
		})
	}
	for k, key := range keys {
		if matched[k] == 0 {
			t.Errorf("no dashboard query is the key panel %q", key.name)
		}
	}

	for _, file := range []string{"alerts.yml", "rules.yml"} {
		exprs, err := deploy.RuleExprs(filepath.Join(root, "deploy", "prometheus", file))
		if err != nil {
			t.Fatal(err)
		}
		for i, expr := range exprs {
			t.Run(fmt.Sprintf("%s/%02d", file, i), func(t *testing.T) {
				if _, err := e.query(expr); err != nil {
					t.Errorf("query %s: %v", expr, err)
				}
			})
		}
	}

	t.Run("rules evaluate without error", func(t *testing.T) {
		eventually(t, settleTimeout, "every rule evaluated with health ok", func() (bool, string) {
			rules, err := e.rules()
			if err != nil {
				return false, err.Error()
			}
			if len(rules) == 0 {
				return false, "no rules loaded"
			}
			for _, r := range rules {
				if r.Health != "ok" {
					return false, fmt.Sprintf("rule %s: health %q, last error %q", r.Name, r.Health, r.LastError)
				}
			}
			return true, ""
		})
	})
}

func notNaN(got []sample) error {
	for _, s := range got {
		if math.IsNaN(s.value) || math.IsInf(s.value, 0) {
			return fmt.Errorf("%s = %v", labelKey(s.labels), s.value)
		}
	}
	return nil
}
