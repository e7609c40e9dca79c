package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/discovery"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// TestDaemonFollowsFileSD runs the daemon on a watched file_sd file: hosts
// added, relabelled and removed in the file show in /metrics without a
// restart, a kept host keeps its counters, and a corrupt file keeps the
// last good targets with the failure counted.
func TestDaemonFollowsFileSD(t *testing.T) {
	a := testutil.TCPListener(t, "127.0.0.1")
	b := testutil.TCPListener(t, "127.0.0.1")
	dir := t.TempDir()
	sd := filepath.Join(dir, "targets.json")
	group := func(ports ...int) string {
		var ts []string
		for _, p := range ports {
			ts = append(ts, fmt.Sprintf(`"127.0.0.1:%d"`, p))
		}
		return fmt.Sprintf(`[{"targets": [%s], "labels": {"dc": "fra", "extra": "x"}}]`, strings.Join(ts, ", "))
	}
	write := func(content string) {
		t.Helper()
		tmp := sd + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, sd); err != nil {
			t.Fatal(err)
		}
	}
	write(group(a))
	// file_sd_refresh_interval is an hour: changes must come through the
	// watch.
	cfgFile := writeFile(t, dir, "fleet.yml", `
global:
  interval: 1s
  timeout: 500ms
host_sets:
  - name: sd
    labels: {dc: ""}
    file_sd: [targets.json]
    file_sd_refresh_interval: 1h
    probes:
      tcp: {}
`)
	d := startDaemon(t, "--config.file="+cfgFile)
	base := "http://" + d.addr
	scrape := func() string {
		_, body := httpDo(t, "GET", base+"/metrics")
		return body
	}
	series := func(port int) string {
		return fmt.Sprintf(`fleet_probe_success{dc="fra",host="127.0.0.1:%d",port="%d",probe="tcp",set="sd"} 1`, port, port)
	}
	has := func(s string) func() bool { return func() bool { return strings.Contains(scrape(), s) } }
	src := `source="file_sd:` + sd + `"`

	waitFor(t, 10*time.Second, has(series(a)))
	if body := scrape(); !strings.Contains(body, `fleet_discovery_targets{set="sd",`+src+`} 1`) ||
		!strings.Contains(body, `fleet_discovery_dropped_labels_total{set="sd",`+src+`} `) ||
		strings.Contains(body, `fleet_discovery_dropped_labels_total{set="sd",`+src+`} 0`) {
		t.Fatalf("discovery metrics missing:\n%s", grep(body, "fleet_discovery_"))
	}

	write(group(a, b))
	waitFor(t, 10*time.Second, has(series(b)))
	waitFor(t, 10*time.Second, has(`fleet_discovery_targets{set="sd",`+src+`} 2`))

	write(group(b))
	waitFor(t, 10*time.Second, func() bool { return !strings.Contains(scrape(), fmt.Sprintf(`host="127.0.0.1:%d"`, a)) })
	if !strings.Contains(scrape(), series(b)) {
		t.Error("the kept host's series vanished when another host was removed")
	}

	write(`[{"targets": `)
	waitFor(t, 10*time.Second, has(`fleet_discovery_failures_total{reason="parse",set="sd",`+src+`} 1`))
	if !strings.Contains(scrape(), series(b)) {
		t.Error("a corrupt file removed the last good targets")
	}
	if !strings.Contains(d.stderr.String(), "Discovery failed; keeping the last good targets") {
		t.Errorf("no log line for the failed read:\n%s", d.stderr)
	}
}

// TestDaemonFollowsHTTPSD does the same against an http_sd endpoint that
// answers, fails with 500, and hangs past its timeout.
func TestDaemonFollowsHTTPSD(t *testing.T) {
	a := testutil.TCPListener(t, "127.0.0.1")
	b := testutil.TCPListener(t, "127.0.0.1")
	var mode atomic.Value
	mode.Store(fmt.Sprintf(`[{"targets": ["127.0.0.1:%d"]}]`, a))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch m := mode.Load().(string); m {
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "slow":
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, m)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	cfgFile := writeFile(t, dir, "fleet.yml", fmt.Sprintf(`
global:
  interval: 1s
  timeout: 500ms
host_sets:
  - name: api
    http_sd: [{url: %s, refresh_interval: 1s, timeout: 300ms}]
    probes:
      tcp: {}
`, srv.URL))
	d := startDaemon(t, "--config.file="+cfgFile)
	base := "http://" + d.addr
	scrape := func() string {
		_, body := httpDo(t, "GET", base+"/metrics")
		return body
	}
	series := func(port int) string {
		return fmt.Sprintf(`fleet_probe_success{host="127.0.0.1:%d",port="%d",probe="tcp",set="api"} 1`, port, port)
	}
	has := func(s string) func() bool { return func() bool { return strings.Contains(scrape(), s) } }
	src := `source="http_sd:` + srv.URL + `"`

	waitFor(t, 10*time.Second, has(series(a)))
	mode.Store(fmt.Sprintf(`[{"targets": ["127.0.0.1:%d"]}]`, b))
	waitFor(t, 10*time.Second, has(series(b)))
	waitFor(t, 10*time.Second, func() bool { return !strings.Contains(scrape(), fmt.Sprintf(`host="127.0.0.1:%d"`, a)) })

	for _, c := range []struct{ mode, reason string }{{"500", "http_status"}, {"slow", "timeout"}} {
		mode.Store(c.mode)
		waitFor(t, 10*time.Second, has(`fleet_discovery_failures_total{reason="`+c.reason+`",set="api",`+src+`} 1`))
		if !strings.Contains(scrape(), series(b)) {
			t.Errorf("after %s the last good targets are gone", c.mode)
		}
	}
	d.cancel()
	select {
	case code := <-d.done:
		d.done <- code
		if code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("daemon did not stop within 5s with a hanging http_sd endpoint")
	}
}

func TestConfigCheckReadsDiscovery(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "sd.json", `[{"targets": ["127.0.0.1:22", "127.0.1.0/30"]}]`)
	cfgFile := writeFile(t, dir, "fleet.yml", `
host_sets:
  - name: sd
    hosts: [127.0.0.2]
    file_sd: [sd.json, missing/*.json]
    probes: {icmp: }
`)
	var out, errb bytes.Buffer
	if code := run([]string{"--config.check", "--config.file=" + cfgFile}, &out, &errb); code != 0 {
		t.Fatalf("exit %d; stdout %q stderr %q", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "(1 host sets, 4 targets)") {
		t.Errorf("stdout lacks the target count:\n%s", out.String())
	}
	rows := map[string]bool{}
	for _, l := range strings.Split(out.String(), "\n") {
		rows[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{
		"sd file_sd:" + filepath.Join(dir, "sd.json") + " 3 ok",
		"sd file_sd:" + filepath.Join(dir, "missing/*.json") + " 0 failed",
	} {
		if !rows[want] {
			t.Errorf("stdout lacks the row %q:\n%s", want, out.String())
		}
	}
	// The warning points at the line of the set's file_sd key.
	if !strings.Contains(errb.String(), "warning: "+cfgFile+`:5: host set "sd": discovery source file_sd:`+filepath.Join(dir, "missing/*.json")+" failed: no file matches") {
		t.Errorf("stderr lacks the failed source:\n%s", errb.String())
	}
}

// grep returns the lines of s containing sub.
func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReloadWithDiscovery checks that a reload reads the sources it adds
// before it returns, keeps a source it does not change, and that a reload
// that fails goes back to the running sources.
func TestReloadWithDiscovery(t *testing.T) {
	a := testutil.TCPListener(t, "127.0.0.1")
	b := testutil.TCPListener(t, "127.0.0.1")
	dir := t.TempDir()
	writeFile(t, dir, "a.json", fmt.Sprintf(`[{"targets": ["127.0.0.1:%d"]}]`, a))
	writeFile(t, dir, "b.json", fmt.Sprintf(`[{"targets": ["127.0.0.1:%d"]}]`, b))
	cfg := func(globs, extra string) string {
		return fmt.Sprintf(`
global:
  interval: 1s
  timeout: 500ms
host_sets:
  - name: sd
    file_sd: [%s]
    probes:
      tcp: {}%s
`, globs, extra)
	}
	cfgFile := writeFile(t, dir, "fleet.yml", cfg("a.json", ""))
	d := startDaemon(t, "--config.file="+cfgFile)
	base := "http://" + d.addr
	scrape := func() string {
		_, body := httpDo(t, "GET", base+"/metrics")
		return body
	}
	series := func(port int) string {
		return fmt.Sprintf(`fleet_probe_success{host="127.0.0.1:%d",port="%d",probe="tcp",set="sd"} 1`, port, port)
	}
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(scrape(), series(a)) })

	writeFile(t, dir, "fleet.yml", cfg("a.json, b.json", ""))
	if code, body := httpDo(t, "POST", base+"/-/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	// The added source was read by the reload itself.
	if body := scrape(); !strings.Contains(body, `fleet_targets{probe="tcp",set="sd"} 2`) {
		t.Errorf("after the reload fleet_targets is not 2:\n%s", grep(body, "fleet_targets"))
	}
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(scrape(), series(b)) })

	// A reload that fails after reading its sources (a key file that is
	// not there) keeps both sources' hosts.
	writeFile(t, dir, "fleet.yml", cfg("a.json, b.json, c.json", `
      ssh:
        user: u
        insecure_skip_host_key_verification: true
        private_key_file: `+filepath.Join(dir, "no-such-key")))
	if code, body := httpDo(t, "POST", base+"/-/reload"); code != 500 || !strings.Contains(body, "no-such-key") {
		t.Errorf("bad reload: %d %q, want 500 naming the key file", code, body)
	}
	if body := scrape(); !strings.Contains(body, series(a)) || !strings.Contains(body, `fleet_discovery_targets{set="sd",source="file_sd:`+filepath.Join(dir, "b.json")+`"} 1`) {
		t.Errorf("a failed reload lost discovered hosts:\n%s", grep(body, `set="sd"`))
	}

	// Dropping a source drops its hosts and its series.
	writeFile(t, dir, "fleet.yml", cfg("b.json", ""))
	if code, body := httpDo(t, "POST", base+"/-/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	body := scrape()
	if strings.Contains(body, fmt.Sprintf(`host="127.0.0.1:%d"`, a)) || strings.Contains(body, "a.json") {
		t.Errorf("the removed source's hosts or series remain:\n%s", grep(body, "a.json"))
	}
	if !strings.Contains(body, series(b)) {
		t.Error("the kept source's host lost its result across the reload")
	}
}

// TestDiscoverySignalWithoutChangeRebuildsNothing checks that a change
// signal without new discovered hosts (every ApplyConfig sends one, the
// start's included) does not expand the target list again: at 100,000
// targets that second list cost as much memory and CPU as the first. The
// reloader has no fleet here, so a rebuild would panic; TestDaemonFollowsFileSD
// checks that real changes are still followed.
func TestDiscoverySignalWithoutChangeRebuildsNothing(t *testing.T) {
	cfg := config.Default()
	targets, _, err := cfg.TargetsWith(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := discovery.NewManager(discovery.Options{})
	defer m.Close()
	if err := m.ApplyConfig(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	rl := newReloader("fleet.yml", cfg, targets, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	rl.disc, rl.discVersion = m, m.Version()
	select {
	case <-m.Changes():
	default:
		t.Fatal("ApplyConfig sent no change signal")
	}
	rl.applyDiscovered()
	if len(rl.targets) != len(targets) || (len(targets) > 0 && rl.targets[0] != targets[0]) {
		t.Error("the target list was rebuilt without a discovery change")
	}
}
