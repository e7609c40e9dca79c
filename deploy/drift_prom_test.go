package deploy_test

import (
	"fmt"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/deploy"
	"github.com/fleet-exporter/fleet_exporter/exposition"
	"github.com/fleet-exporter/fleet_exporter/internal/promtest"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// driftMarker precedes the drift expression's promql block in the docs.
const driftMarker = "<!-- drift-expression -->"

// docExpr returns the promql block that follows driftMarker in a Markdown
// file, failing unless there is exactly one.
func docExpr(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(string(b), driftMarker)
	if len(parts) != 2 {
		t.Fatalf("%s: %d drift expression markers, want 1", path, len(parts)-1)
	}
	m := regexp.MustCompile("(?s)^\\s*```promql\\n(.*?)\\n```").FindStringSubmatch(parts[1])
	if m == nil {
		t.Fatalf("%s: no promql block after %s", path, driftMarker)
	}
	return m[1]
}

// normalize collapses white space, so that indentation does not count.
func normalize(expr string) string { return strings.Join(strings.Fields(expr), " ") }

// driftExprs returns the drift expression of every place that carries one.
func driftExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{"README.md": docExpr(t, "../README.md"), "docs/metrics.md": docExpr(t, "../docs/metrics.md")}
	f, err := deploy.LoadRules(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "FleetCommandOutputDrift" {
				out[alertsFile] = r.Expr
			}
		}
	}
	d := loadDashboard(t)
	for _, p := range flatPanels(d.Panels) {
		if p.Title == "Command output drift" && len(p.Targets) == 1 {
			// The dashboard restricts every selector to $set.
			out[dashboardFile] = strings.ReplaceAll(p.Targets[0].Expr, `{set=~"$set"}`, "")
		}
	}
	if len(out) != 4 {
		t.Fatalf("drift expressions found in %v, want README, docs, alerts and dashboard", slices.Sorted(func(yield func(string) bool) {
			for k := range out {
				if !yield(k) {
					return
				}
			}
		}))
	}
	return out
}

// TestDriftExpressionIsOne checks that the README, docs/metrics.md, the
// alert and the dashboard carry the same drift expression.
func TestDriftExpressionIsOne(t *testing.T) {
	exprs := driftExprs(t)
	want := normalize(exprs[alertsFile])
	for where, e := range exprs {
		if got := normalize(e); got != want {
			t.Errorf("%s has another drift expression than %s:\n%s\nwant:\n%s", where, alertsFile, got, want)
		}
	}
}

// driftFleet is a fleet with known drift, by set: hosts and their hash of
// command "release". "web" has a 3 of 5 majority and two drifted hosts of
// different hashes; "edge" 2 of 3 and one; "db" is split 1:1 and "half" 2 of
// 4 (no strict majority: no drift); "same" agrees. "kernel" agrees on web.
var driftFleet = map[string][]uint64{
	"web":  {7, 7, 8, 7, 9},
	"edge": {5, 6, 5},
	"db":   {1, 2},
	"half": {3, 3, 4, 5},
	"same": {11, 11, 11},
}

// wantDrift lists the drifted hosts of driftFleet as set/host/command.
var wantDrift = []string{"edge/edge1/release", "web/web2/release", "web/web4/release"}

// TestDriftExpressionInPrometheus serves driftFleet through the /metrics
// handler to a real Prometheus that loads the shipped rules, and checks that
// the drift expression returns exactly the drifted hosts, that
// fleet_ssh_command_output_distinct_hashes equals the recording rule that
// counts hashes, and that the dashboard's majority table names the baseline.
func TestDriftExpressionInPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus")
	}
	var targets []*config.Target
	var results []probe.Result
	for set, hashes := range driftFleet {
		for i, h := range hashes {
			host := fmt.Sprintf("%s%d", set, i)
			tg := &config.Target{Set: set, Host: host, Name: host, Probe: config.ProbeSSH, SSH: &config.SSHProbe{Commands: []config.Command{{Name: "release"}, {Name: "kernel"}}}}
			targets = append(targets, tg)
			cmds := []probe.CommandResult{{Name: "release", Ran: true, Hash: h << 20}}
			if set == "web" {
				cmds = append(cmds, probe.CommandResult{Name: "kernel", Ran: true, Hash: 42 << 20})
			}
			results = append(results, probe.Result{Key: tg.Key(), Start: time.Now(), Success: true, SSH: &probe.SSHResult{Commands: cmds}})
		}
	}
	// For the new alerts' expressions: in "svc" t1 answers ICMP but its
	// TCP port is refused (FleetTCPPortDown), t2 fails both (its host is
	// down: not that alert's); in "logins" SSH fails on 3 of 4 hosts that
	// answer ping (FleetSetSSHFailing).
	add := func(set, host, probeType string, ok bool) {
		tg := &config.Target{Set: set, Host: host, Name: host, Probe: probeType}
		if probeType == config.ProbeSSH {
			tg.SSH = &config.SSHProbe{}
		}
		targets = append(targets, tg)
		r := probe.Result{Key: tg.Key(), Start: time.Now(), Success: ok}
		if !ok {
			r.Reason = probe.ReasonRefused
		}
		results = append(results, r)
	}
	add("svc", "t1", config.ProbeICMP, true)
	add("svc", "t1", config.ProbeTCP, false)
	add("svc", "t2", config.ProbeICMP, false)
	add("svc", "t2", config.ProbeTCP, false)
	for i := range 4 {
		host := fmt.Sprintf("l%d", i)
		add("logins", host, config.ProbeICMP, true)
		add("logins", host, config.ProbeSSH, i == 3)
	}
	store := collector.NewStore()
	store.Reconcile(targets)
	for _, r := range results {
		store.Update(r)
	}
	h, err := exposition.NewHandler(exposition.Options{Registry: prometheus.NewRegistry(), Snapshot: store.Snapshot})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	prom := promtest.Start(t, promtest.Options{Targets: []string{strings.TrimPrefix(srv.URL, "http://")}, RuleFiles: []string{rulesFile}})

	hashes := 0
	for _, hs := range driftFleet {
		hashes += len(hs)
	}
	hashes += len(driftFleet["web"]) // kernel
	prom.WaitQuery(30*time.Second, "count(fleet_ssh_command_output_hash)", func(got []promtest.Sample) error {
		if len(got) != 1 || got[0].Value != float64(hashes) {
			return fmt.Errorf("got %+v, want %d hash series", got, hashes)
		}
		return nil
	})

	for where, expr := range driftExprs(t) {
		t.Run(where, func(t *testing.T) {
			got, err := prom.Query(expr)
			if err != nil {
				t.Fatal(err)
			}
			var hosts []string
			for _, s := range got {
				hosts = append(hosts, s.Labels["set"]+"/"+s.Labels["host"]+"/"+s.Labels["command"])
				if s.Value != 1 {
					t.Errorf("%v = %v, want 1", s.Labels, s.Value)
				}
			}
			slices.Sort(hosts)
			if !slices.Equal(hosts, wantDrift) {
				t.Errorf("drifted hosts %v, want %v", hosts, wantDrift)
			}
		})
	}

	t.Run("distinct hashes", func(t *testing.T) {
		// The exported count and the recording rule agree; evaluated once
		// the rule has run.
		prom.WaitQuery(30*time.Second, "fleet:ssh_command_output_hash:distinct", func(got []promtest.Sample) error {
			if len(got) != len(driftFleet)+1 {
				return fmt.Errorf("%d series, want %d", len(got), len(driftFleet)+1)
			}
			return nil
		})
		got, err := prom.Query(`fleet_ssh_command_output_distinct_hashes != on (set, command) group_left () fleet:ssh_command_output_hash:distinct`)
		if err != nil || len(got) != 0 {
			t.Errorf("distinct hashes disagree with the recording rule: %+v, err %v", got, err)
		}
		got, err = prom.Query(`fleet_ssh_command_output_distinct_hashes{set="web"}`)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]float64{"release": 3, "kernel": 1}
		for _, s := range got {
			if s.Value != want[s.Labels["command"]] {
				t.Errorf("distinct hashes of %s = %v, want %v", s.Labels["command"], s.Value, want[s.Labels["command"]])
			}
		}
		if len(got) != 2 {
			t.Errorf("%d distinct-hash series for web, want 2", len(got))
		}
	})

	t.Run("new alerts", func(t *testing.T) {
		f, err := deploy.LoadRules(alertsFile)
		if err != nil {
			t.Fatal(err)
		}
		exprs := map[string]string{}
		for _, g := range f.Groups {
			for _, r := range g.Rules {
				exprs[r.Alert] = r.Expr
			}
		}
		got, err := prom.Query(exprs["FleetTCPPortDown"])
		if err != nil || len(got) != 1 || got[0].Labels["host"] != "t1" || got[0].Labels["set"] != "svc" {
			t.Errorf("FleetTCPPortDown expression: %+v, err %v, want svc/t1 only", got, err)
		}
		got, err = prom.Query(exprs["FleetSetSSHFailing"])
		if err != nil || len(got) != 1 || got[0].Labels["set"] != "logins" || got[0].Value != 0.75 {
			t.Errorf("FleetSetSSHFailing expression: %+v, err %v, want logins at 0.75", got, err)
		}
	})

	t.Run("majority table", func(t *testing.T) {
		var expr string
		for _, p := range flatPanels(loadDashboard(t).Panels) {
			if p.Title == "Majority output per command" {
				expr = strings.ReplaceAll(p.Targets[0].Expr, `{set=~"$set"}`, "")
			}
		}
		got, err := prom.Query(expr)
		if err != nil {
			t.Fatal(err)
		}
		var rows []string
		for _, s := range got {
			rows = append(rows, fmt.Sprintf("%s/%s/%s=%v", s.Labels["set"], s.Labels["command"], s.Labels["hash"], s.Value))
		}
		slices.Sort(rows)
		want := []string{
			fmt.Sprintf("edge/release/%d=2", 5<<20),
			fmt.Sprintf("same/release/%d=3", 11<<20),
			fmt.Sprintf("web/kernel/%d=5", 42<<20),
			fmt.Sprintf("web/release/%d=3", 7<<20),
		}
		if !slices.Equal(rows, want) {
			t.Errorf("majority table %v, want %v", rows, want)
		}
	})
}
