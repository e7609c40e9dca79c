package discovery_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/discovery"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// eventWait bounds every wait for a change: generous, because the machine
// may be loaded; the waits end as soon as the change is seen.
const eventWait = 15 * time.Second

func parseConfig(t testing.TB, dir, yml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), filepath.Join(dir, "fleet.yml"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// writeAtomic replaces path's content the way deploy tools do: a
// temporary file renamed over it.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// entries lists the discovered entries of set with their labels, as
// "entry dc=… role=…" lines.
func entries(m *discovery.Manager, set string) []string {
	var out []string
	for _, h := range m.Hosts()[set] {
		var ls []string
		for _, k := range []string{"dc", "role"} {
			if v, ok := h.Labels[k]; ok {
				ls = append(ls, k+"="+v)
			}
		}
		out = append(out, strings.TrimSpace(h.Entry+" "+strings.Join(ls, " ")))
	}
	return out
}

// waitEntries waits, on the manager's change signal, until set's entries
// are want.
func waitEntries(t *testing.T, m *discovery.Manager, set string, want []string) {
	t.Helper()
	deadline := time.After(eventWait)
	for {
		if got := entries(m, set); slices.Equal(got, want) {
			return
		}
		select {
		case <-m.Changes():
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("entries of %s = %q, want %q", set, entries(m, set), want)
		}
	}
}

// metric returns the value of the series of name with labels, and whether
// it exists.
func metric(t *testing.T, c prometheus.Collector, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if ms := testutil.Series(t, reg, name, labels); len(ms) > 0 {
		return value(ms[0]), true
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

// waitMetric waits until the series reaches at least want.
func waitMetric(t *testing.T, c prometheus.Collector, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for {
		v, _ := metric(t, c, name, labels)
		if v >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want at least %v", name, labels, v, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFileSDFollowsTheWatchedFile(t *testing.T) {
	dir := t.TempDir()
	sd := filepath.Join(dir, "targets", "web.json")
	if err := os.Mkdir(filepath.Dir(sd), 0o755); err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, sd, `[{"targets": ["web1:22", "web2:22"], "labels": {"dc": "fra"}}]`)
	// An hour between periodic reads: within the test, only fsnotify can
	// bring a change.
	cfg := parseConfig(t, dir, `
host_sets:
  - name: web
    labels: {dc: "none", role: ""}
    file_sd: [targets/*.json]
    file_sd_refresh_interval: 1h
    probes: {icmp: }
`)
	m := discovery.NewManager(discovery.Options{Debounce: 20 * time.Millisecond})
	defer m.Close()
	if err := m.ApplyConfig(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	src := map[string]string{"set": "web", "source": "file_sd:" + filepath.Join(dir, "targets/*.json")}
	// ApplyConfig reads every source once before it returns.
	if diff := cmp.Diff([]string{"web1:22 dc=fra role=", "web2:22 dc=fra role="}, entries(m, "web")); diff != "" {
		t.Fatalf("entries after the first read (-want +got):\n%s", diff)
	}
	if v, _ := metric(t, m, "fleet_discovery_targets", src); v != 2 {
		t.Errorf("fleet_discovery_targets = %v, want 2", v)
	}
	first, _ := metric(t, m, "fleet_discovery_last_success_timestamp_seconds", src)
	if first < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success timestamp = %v, want about now", first)
	}
	stop := testutil.Start(t, m.Run)
	defer stop()

	// Add a host, change a label: one write.
	writeAtomic(t, sd, `[{"targets": ["web1:22", "web2:22"], "labels": {"dc": "fra"}},
		{"targets": ["web3:22"], "labels": {"dc": "ams", "role": "db"}}]`)
	waitEntries(t, m, "web", []string{"web1:22 dc=fra role=", "web2:22 dc=fra role=", "web3:22 dc=ams role=db"})
	waitMetric(t, m, "fleet_discovery_targets", src, 3)

	// A second file under the glob adds its hosts.
	writeAtomic(t, filepath.Join(dir, "targets", "more.json"), `[{"targets": ["10.0.0.0/30"]}]`)
	waitEntries(t, m, "web", []string{"10.0.0.0/30 dc=none role=", "web1:22 dc=fra role=", "web2:22 dc=fra role=", "web3:22 dc=ams role=db"})
	// The /30 counts its two usable addresses.
	waitMetric(t, m, "fleet_discovery_targets", src, 5)
	if err := os.Remove(filepath.Join(dir, "targets", "more.json")); err != nil {
		t.Fatal(err)
	}

	// Remove hosts, rewriting in place rather than by rename.
	if err := os.WriteFile(sd, []byte(`[{"targets": ["web3:22"], "labels": {"dc": "ams"}}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	waitEntries(t, m, "web", []string{"web3:22 dc=ams role="})
	if v, _ := metric(t, m, "fleet_discovery_targets", src); v != 1 {
		t.Errorf("fleet_discovery_targets = %v, want 1", v)
	}

	// A corrupt file keeps the last good hosts and counts a failure.
	parse := map[string]string{"set": "web", "source": src["source"], "reason": "parse"}
	writeAtomic(t, sd, `[{"targets": ["web9:22"`)
	waitMetric(t, m, "fleet_discovery_failures_total", parse, 1)
	if got := entries(m, "web"); !slices.Equal(got, []string{"web3:22 dc=ams role="}) {
		t.Errorf("entries after a corrupt file = %q, want the last good ones", got)
	}
	if v, _ := metric(t, m, "fleet_discovery_targets", src); v != 1 {
		t.Errorf("fleet_discovery_targets after a corrupt file = %v, want 1", v)
	}

	// So does a file that is gone.
	read := map[string]string{"set": "web", "source": src["source"], "reason": "read"}
	if err := os.Remove(sd); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, m, "fleet_discovery_failures_total", read, 1)
	if got := entries(m, "web"); !slices.Equal(got, []string{"web3:22 dc=ams role="}) {
		t.Errorf("entries after the file vanished = %q, want the last good ones", got)
	}

	// And a target that is no host entry.
	invalid := map[string]string{"set": "web", "source": src["source"], "reason": "invalid_target"}
	writeAtomic(t, sd, `[{"targets": ["web 7"]}]`)
	waitMetric(t, m, "fleet_discovery_failures_total", invalid, 1)

	// A good file again: the source recovers.
	writeAtomic(t, sd, `[{"targets": ["web4:22"]}]`)
	waitEntries(t, m, "web", []string{"web4:22 dc=none role="})
	last, _ := metric(t, m, "fleet_discovery_last_success_timestamp_seconds", src)
	if last < first {
		t.Errorf("last success timestamp went back from %v to %v", first, last)
	}
}

func TestFileSDRelabelAndLabelNames(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "sd.yml"), `
- targets: ["a.example:2222", "b.example:2222", "test.example:2222"]
  labels:
    __meta_rack: r1
    team: db
    owner: alice
`)
	cfg := parseConfig(t, dir, `
host_sets:
  - name: db
    labels: {dc: "fra", role: ""}
    file_sd: [sd.yml]
    relabel_configs:
      - {source_labels: [__address__], regex: 'test\..*', action: drop}
      - {source_labels: [team], target_label: role}
      - {source_labels: [__address__], regex: '(.*):2222', target_label: host, replacement: '${1}:22'}
    probes: {tcp: }
`)
	m := discovery.NewManager(discovery.Options{})
	defer m.Close()
	if err := m.ApplyConfig(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	// host comes from relabeling; role from team; dc keeps its static
	// value; team and owner are not declared: dropped and counted (two
	// per target), the meta label vanishes uncounted.
	want := []string{"a.example:22 dc=fra role=db", "b.example:22 dc=fra role=db"}
	if diff := cmp.Diff(want, entries(m, "db")); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	for _, h := range m.Hosts()["db"] {
		if diff := cmp.Diff(map[string]string{"dc": "fra", "role": "db"}, h.Labels); diff != "" {
			t.Errorf("labels of %s (-want +got):\n%s", h.Entry, diff)
		}
	}
	src := map[string]string{"set": "db", "source": "file_sd:" + filepath.Join(dir, "sd.yml")}
	if v, _ := metric(t, m, "fleet_discovery_dropped_labels_total", src); v != 4 {
		t.Errorf("fleet_discovery_dropped_labels_total = %v, want 4", v)
	}
	// The discovered hosts expand into targets carrying exactly the
	// set's label names.
	targets, _, err := cfg.TargetsWith(m.Hosts())
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, tg := range targets {
		hosts = append(hosts, fmt.Sprintf("%s %s %v", tg.Host, tg.Probe, tg.Labels))
	}
	wantTargets := []string{"a.example:22 tcp map[dc:fra role:db]", "b.example:22 tcp map[dc:fra role:db]"}
	if diff := cmp.Diff(wantTargets, hosts); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
}

func TestFileSDCapAndPortRule(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "big.json"), `[{"targets": ["10.0.0.0/24"]}]`)
	writeAtomic(t, filepath.Join(dir, "noport.json"), `[{"targets": ["web1"]}]`)
	cfg := parseConfig(t, dir, `
global: {max_targets_per_set: 100}
host_sets:
  - name: big
    hosts: ["127.0.0.1"]
    file_sd: [big.json]
    probes: {icmp: }
  - name: noport
    file_sd: [noport.json]
    probes: {tcp: }
`)
	m := discovery.NewManager(discovery.Options{})
	defer m.Close()
	if err := m.ApplyConfig(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := m.Hosts(); len(got) != 0 {
		t.Errorf("hosts = %v, want none", got)
	}
	for _, c := range []struct{ set, file, reason string }{
		{"big", "big.json", "too_many_targets"},
		{"noport", "noport.json", "invalid_target"},
	} {
		l := map[string]string{"set": c.set, "source": "file_sd:" + filepath.Join(dir, c.file), "reason": c.reason}
		if v, _ := metric(t, m, "fleet_discovery_failures_total", l); v != 1 {
			t.Errorf("fleet_discovery_failures_total%v = %v, want 1", l, v)
		}
	}
	for _, s := range m.Status() {
		if s.OK || s.Err == nil {
			t.Errorf("status of %s %s = %+v, want a failure", s.Set, s.Source, s)
		}
	}
}

// sdServer is an http_sd endpoint whose answer a test switches.
type sdServer struct {
	mode  atomic.Value // "ok", "500", "slow", "html"
	body  atomic.Value // the JSON served in mode ok
	token string
	hits  atomic.Int64
}

func (s *sdServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	switch s.mode.Load() {
	case "500":
		http.Error(w, "boom", http.StatusInternalServerError)
	case "slow":
		// Far longer than the client's timeout; ends with the request.
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	case "html":
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<html>")
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, s.body.Load())
	}
}

func TestHTTPSDFollowsTheEndpoint(t *testing.T) {
	dir := t.TempDir()
	srv := &sdServer{token: "s3cret"}
	srv.mode.Store("ok")
	srv.body.Store(`[{"targets": ["10.1.0.1", "10.1.0.2"], "labels": {"dc": "fra"}}]`)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(srv.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := parseConfig(t, dir, fmt.Sprintf(`
host_sets:
  - name: api
    labels: {dc: ""}
    http_sd:
      - url: %s/sd?zone=1
        refresh_interval: 1s
        timeout: 300ms
        authorization: {credentials_file: token}
    probes: {icmp: }
`, hs.URL))
	m := discovery.NewManager(discovery.Options{})
	defer m.Close()
	if err := m.ApplyConfig(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	src := map[string]string{"set": "api", "source": "http_sd:" + hs.URL + "/sd?zone=1"}
	if diff := cmp.Diff([]string{"10.1.0.1 dc=fra", "10.1.0.2 dc=fra"}, entries(m, "api")); diff != "" {
		t.Fatalf("entries after the first fetch (-want +got):\n%s", diff)
	}
	stop := testutil.Start(t, m.Run)
	defer stop()

	srv.body.Store(`[{"targets": ["10.1.0.2", "10.1.0.3"], "labels": {"dc": "ams"}}]`)
	waitEntries(t, m, "api", []string{"10.1.0.2 dc=ams", "10.1.0.3 dc=ams"})
	waitMetric(t, m, "fleet_discovery_targets", src, 2)
	good := []string{"10.1.0.2 dc=ams", "10.1.0.3 dc=ams"}

	for _, c := range []struct{ mode, reason string }{
		{"500", "http_status"},
		{"slow", "timeout"},
		{"html", "parse"},
	} {
		srv.mode.Store(c.mode)
		l := map[string]string{"set": "api", "source": src["source"], "reason": c.reason}
		waitMetric(t, m, "fleet_discovery_failures_total", l, 1)
		if got := entries(m, "api"); !slices.Equal(got, good) {
			t.Errorf("entries after %s = %q, want the last good %q", c.mode, got, good)
		}
		if v, _ := metric(t, m, "fleet_discovery_targets", src); v != 2 {
			t.Errorf("fleet_discovery_targets after %s = %v, want 2", c.mode, v)
		}
	}

	srv.mode.Store("ok")
	srv.body.Store(`[]`)
	waitEntries(t, m, "api", nil)
	waitMetric(t, m, "fleet_discovery_targets", src, 0)
	if v, _ := metric(t, m, "fleet_discovery_targets", src); v != 0 {
		t.Errorf("fleet_discovery_targets after an empty answer = %v, want 0", v)
	}
}

// TestHTTPSDTimeoutBoundsTheFirstRead checks that a source that never
// answers cannot hold ApplyConfig (the start, a reload) past its timeout.
func TestHTTPSDTimeoutBoundsTheFirstRead(t *testing.T) {
	srv := &sdServer{}
	srv.mode.Store("slow")
	hs := httptest.NewServer(srv)
	defer hs.Close()
	cfg := parseConfig(t, t.TempDir(), fmt.Sprintf(`
host_sets:
  - name: api
    http_sd: [{url: %s, timeout: 200ms}]
    probes: {icmp: }
`, hs.URL))
	m := discovery.NewManager(discovery.Options{})
	defer m.Close()
	ctx, cancel := context.WithTimeout(t.Context(), eventWait)
	defer cancel()
	if err := m.ApplyConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("ApplyConfig waited for the slow answer")
	}
	l := map[string]string{"set": "api", "source": "http_sd:" + hs.URL, "reason": "timeout"}
	if v, _ := metric(t, m, "fleet_discovery_failures_total", l); v != 1 {
		t.Errorf("fleet_discovery_failures_total%v = %v, want 1", l, v)
	}
}

func TestApplyConfigKeepsLastGoodAcrossReload(t *testing.T) {
	dir := t.TempDir()
	sd := filepath.Join(dir, "sd.json")
	writeAtomic(t, sd, `[{"targets": ["web1", "web2"], "labels": {"dc": "fra"}}]`)
	yml := `
host_sets:
  - name: web
    labels: {%s: ""}
    file_sd: [sd.json]
    file_sd_refresh_interval: 1h
    probes: {icmp: }
`
	m := discovery.NewManager(discovery.Options{})
	defer m.Close()
	if err := m.ApplyConfig(t.Context(), parseConfig(t, dir, fmt.Sprintf(yml, "dc"))); err != nil {
		t.Fatal(err)
	}
	// The file turns bad; a reload that renames the label keeps the last
	// good read and maps it onto the new label names.
	writeAtomic(t, sd, `not json`)
	if err := m.ApplyConfig(t.Context(), parseConfig(t, dir, fmt.Sprintf(yml, "role"))); err != nil {
		t.Fatal(err)
	}
	for _, h := range m.Hosts()["web"] {
		if diff := cmp.Diff(map[string]string{"role": ""}, h.Labels); diff != "" {
			t.Errorf("labels of %s after the reload (-want +got):\n%s", h.Entry, diff)
		}
	}
	if got := len(m.Hosts()["web"]); got != 2 {
		t.Errorf("%d hosts after the reload, want the 2 last good ones", got)
	}
	// A reload that drops the source drops its hosts and series.
	if err := m.ApplyConfig(t.Context(), parseConfig(t, dir, `
host_sets:
  - name: web
    hosts: [web1]
    probes: {icmp: }
`)); err != nil {
		t.Fatal(err)
	}
	if got := m.Hosts(); len(got) != 0 {
		t.Errorf("hosts after removing the source = %v, want none", got)
	}
	if n := promtestutil.CollectAndCount(m); n != 0 {
		t.Errorf("%d discovery series after removing the source, want 0", n)
	}
}

// TestHTTPSDWithTLSAndBasicAuth fetches over TLS, verified against a CA
// file, with basic auth whose password comes from a file; a certificate
// the client cannot verify is a failed request.
func TestHTTPSDWithTLSAndBasicAuth(t *testing.T) {
	hs := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "sd" || p != "pw-from-file" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprint(w, `[{"targets": ["10.2.0.1"]}]`)
	}))
	defer hs.Close()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("pw-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := `
host_sets:
  - name: tls
    http_sd:
      - url: %s
        basic_auth: {username: sd, password_file: %s}
        tls_config: {ca_file: %s}
    probes: {icmp: }
`
	// Without tls_config the system roots apply, which do not hold the
	// test server's certificate.
	noCA := strings.Replace(yml, "        tls_config: {ca_file: %s}\n", "", 1)
	for _, c := range []struct {
		name, pw, ca, reason string
		hosts                int
	}{
		{"verified with the right password", "pw", "ca.pem", "", 1},
		{"wrong password", "ca.pem", "ca.pem", "http_status", 0},
		{"unknown CA", "pw", "", "http", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := discovery.NewManager(discovery.Options{})
			defer m.Close()
			text := fmt.Sprintf(yml, hs.URL, c.pw, c.ca)
			if c.ca == "" {
				text = fmt.Sprintf(noCA, hs.URL, c.pw)
			}
			if err := m.ApplyConfig(t.Context(), parseConfig(t, dir, text)); err != nil {
				t.Fatal(err)
			}
			if got := len(m.Hosts()["tls"]); got != c.hosts {
				t.Errorf("%d hosts, want %d (status %+v)", got, c.hosts, m.Status())
			}
			if c.reason != "" {
				l := map[string]string{"set": "tls", "source": "http_sd:" + hs.URL, "reason": c.reason}
				if v, _ := metric(t, m, "fleet_discovery_failures_total", l); v != 1 {
					t.Errorf("fleet_discovery_failures_total%v = %v, want 1 (status %+v)", l, v, m.Status())
				}
			}
		})
	}
}

// TestVersionMovesBeforeChanges checks the contract the daemon relies on
// to skip rebuilds: ApplyConfig moves Version, a change of the discovered
// hosts moves it before Changes hears of it, and nothing else does.
func TestVersionMovesBeforeChanges(t *testing.T) {
	dir := t.TempDir()
	sd := filepath.Join(dir, "web.json")
	writeAtomic(t, sd, `[{"targets": ["web1:22"]}]`)
	cfg := parseConfig(t, dir, `
host_sets:
  - name: web
    file_sd: [web.json]
    file_sd_refresh_interval: 1h
    probes: {icmp: }
`)
	m := discovery.NewManager(discovery.Options{Debounce: 20 * time.Millisecond})
	defer m.Close()
	v0 := m.Version()
	if err := m.ApplyConfig(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	v1 := m.Version()
	if v1 == v0 {
		t.Fatalf("Version did not move with ApplyConfig (%d)", v1)
	}
	<-m.Changes() // ApplyConfig's own signal
	stop := testutil.Start(t, m.Run)
	defer stop()
	writeAtomic(t, sd, `[{"targets": ["web1:22", "web2:22"]}]`)
	select {
	case <-m.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("no change signal after the file changed")
	}
	v2 := m.Version()
	if v2 == v1 {
		t.Fatalf("Version did not move before the change signal (%d)", v2)
	}
	if got := entries(m, "web"); len(got) != 2 {
		t.Fatalf("entries = %q, want 2", got)
	}
	if v := m.Version(); v != v2 {
		t.Errorf("Version moved from %d to %d without a change", v2, v)
	}
}

// TestHTTPSDRefusesUnsafeFiles points each kind of file an http_sd source
// may name (a credentials file, basic auth's password file, the TLS CA and
// an http_headers file) at a FIFO without writer and at /dev/zero. Such a
// read used to block ApplyConfig, and with it the reloader and
// --config.check, for good, or to exhaust memory: now the source fails at
// once with an error naming the file and what it is, and a good source
// next to it is read as usual.
func TestHTTPSDRefusesUnsafeFiles(t *testing.T) {
	hs := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `[{"targets": ["10.3.0.1"]}]`)
	}))
	defer hs.Close()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw})
	for name, content := range map[string][]byte{"ca.pem": ca, "secret": []byte("s3cret\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A read stuck on the FIFO despite the fix is released at cleanup.
	t.Cleanup(func() {
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			_ = w.Close()
		}
	})
	settings := []struct{ name, yaml string }{
		{"authorization credentials_file", "authorization: {credentials_file: %s}"},
		{"basic_auth password_file", "basic_auth: {username: sd, password_file: %s}"},
		{"tls_config ca_file", "tls_config: {ca_file: %s}"},
		{"http_headers files", "http_headers: {X-Token: {files: [%s]}}"},
	}
	for _, s := range settings {
		for _, u := range []struct{ name, path, want string }{
			{"fifo", fifo, "named pipe (FIFO)"},
			{"dev zero", "/dev/zero", "character device"},
		} {
			t.Run(s.name+"/"+u.name, func(t *testing.T) {
				bad := fmt.Sprintf(s.yaml, u.path)
				if s.name != "tls_config ca_file" {
					bad += ", tls_config: {ca_file: ca.pem}"
				}
				cfg := parseConfig(t, dir, fmt.Sprintf(`
host_sets:
  - name: bad
    http_sd: [{url: %s/bad, timeout: 5s, %s}]
    probes: {icmp: }
  - name: good
    http_sd: [{url: %s/good, timeout: 5s, authorization: {credentials_file: secret}, tls_config: {ca_file: ca.pem}}]
    probes: {icmp: }
`, hs.URL, bad, hs.URL))
				m := discovery.NewManager(discovery.Options{})
				defer m.Close()
				done := make(chan error, 1)
				go func() { done <- m.ApplyConfig(t.Context(), cfg) }()
				var err error
				select {
				case err = <-done:
				case <-time.After(3 * time.Second):
					t.Fatal("ApplyConfig still blocked after 3s")
				}
				if err == nil {
					// The client was built; its first read must have failed.
					for _, st := range m.Status() {
						if st.Set == "bad" {
							err = st.Err
						}
					}
					if got := len(m.Hosts()["good"]); got != 1 {
						t.Errorf("the good source next to it has %d hosts, want 1", got)
					}
				}
				if err == nil {
					t.Fatal("the source read its file")
				}
				t.Logf("refused: %v", err)
				for _, w := range []string{u.path, u.want} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			})
		}
	}
}
