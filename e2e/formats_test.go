package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/fleet-exporter/fleet_exporter/internal/promtest"
)

// formatRecorder is a reverse proxy on loopback in front of the exporter
// that passes every scrape through unchanged and records the Content-Type
// of the answers, so a test knows which format a real Prometheus received.
type formatRecorder struct {
	addr string
	// mu guards types.
	mu    sync.Mutex
	types []string
}

func newFormatRecorder(t *testing.T, backend, accept string) *formatRecorder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &formatRecorder{addr: l.Addr().String()}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: backend})
	proxy.Transport = &http.Transport{DisableKeepAlives: true}
	proxy.ModifyResponse = func(resp *http.Response) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.types = append(r.types, resp.Header.Get("Content-Type"))
		return nil
	}
	handler := http.Handler(proxy)
	if accept != "" {
		// Stand in for scrape_protocols on a Prometheus that lacks it:
		// ask for exactly the format the test names.
		handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			req.Header.Set("Accept", accept)
			proxy.ServeHTTP(w, req)
		})
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return r
}

// formatTypes returns the format types answered so far.
func (r *formatRecorder) formatTypes() []expfmt.FormatType {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []expfmt.FormatType
	for _, ct := range r.types {
		out = append(out, expfmt.ResponseFormat(http.Header{"Content-Type": {ct}}).FormatType())
	}
	return out
}

// contentTypes returns the Content-Types answered so far.
func (r *formatRecorder) contentTypes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.types)
}

// supportsScrapeProtocols reports whether this Prometheus accepts
// scrape_protocols in a scrape config (Prometheus 2.49 and later), asking
// promtool, which ships with it, to check such a config.
func supportsScrapeProtocols(t *testing.T) bool {
	t.Helper()
	promtool := needTool(t, "/usr/bin/promtool", "prometheus")
	cfg := filepath.Join(t.TempDir(), "probe.yml")
	if err := os.WriteFile(cfg, []byte("scrape_configs:\n  - job_name: x\n    scrape_protocols: [PrometheusText0.0.4]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return exec.Command(promtool, "check", "config", cfg).Run() == nil
}

// TestPrometheusScrapeFormats runs a real Prometheus once per exposition
// format, each time with scrape_protocols naming only that format, through a
// proxy that records which format the exporter answered with. For each it
// checks that the target is up, that the answers were in that format, and
// that per-target series arrived with the right values: every host up, the
// SSH command hash of each host equal to the hash of its address, a
// counter (OpenMetrics names its family without _total) and the health
// counter by result.
//
// Prometheus before 2.49 has no scrape_protocols. There the OpenMetrics run
// relies on the default Accept header (which prefers OpenMetrics 1.0), the
// protobuf run on --enable-feature=native-histograms (which makes protobuf
// the first choice), and in the text 0.0.4 run the recording proxy asks
// for text 0.0.4 in Prometheus's place, since nothing makes such a
// Prometheus ask for it first; what it parses and stores is the same.
//
// It runs with each Prometheus this machine has: Debian's and the current
// one scripts/install-test-deps.sh builds (internal/promtest.ModernBinary),
// which has scrape_protocols.
func TestPrometheusScrapeFormats(t *testing.T) {
	t.Parallel()
	type server struct {
		name, binary string
		protocols    bool
	}
	var servers []server
	if _, err := os.Stat(promtest.Binary); err == nil {
		servers = append(servers, server{"debian", promtest.Binary, supportsScrapeProtocols(t)})
	}
	if _, err := os.Stat(promtest.ModernBinary); err == nil {
		servers = append(servers, server{"current", promtest.ModernBinary, true})
	}
	if len(servers) == 0 {
		t.Skipf("neither %s nor %s found: run scripts/install-test-deps.sh", promtest.Binary, promtest.ModernBinary)
	}
	e := startEnv(t, envOptions{})
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) { testScrapeFormats(t, e, srv.binary, srv.protocols) })
	}
}

// testScrapeFormats is TestPrometheusScrapeFormats with one Prometheus
// binary; protocols tells whether it has scrape_protocols.
func testScrapeFormats(t *testing.T, e *env, binary string, protocols bool) {
	cases := []struct {
		name, protocol string
		// oldArgs are the Prometheus flags that select the format
		// without scrape_protocols; nil when none does.
		oldArgs []string
		// oldAccept, when set, is the Accept header the recording proxy
		// sends instead of Prometheus's own when scrape_protocols is
		// missing: the exporter's text 0.0.4 still goes into a real
		// Prometheus's parser and TSDB.
		oldAccept string
		want      expfmt.FormatType
	}{
		{"text 0.0.4", "PrometheusText0.0.4", []string{}, "text/plain;version=0.0.4", expfmt.TypeTextPlain},
		{"OpenMetrics 1.0", "OpenMetricsText1.0.0", []string{}, "", expfmt.TypeOpenMetrics},
		{"protobuf", "PrometheusProto", []string{"--enable-feature=native-histograms"}, "", expfmt.TypeProtoDelim},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := envOptions{promBinary: binary}
			switch {
			case protocols:
				opts.jobExtra = fmt.Sprintf("    scrape_protocols: [%s]\n", tc.protocol)
			case tc.oldArgs == nil:
				t.Skipf("this Prometheus has no scrape_protocols (needs 2.49 or later) and no flag that makes it ask for %s first", tc.name)
			default:
				opts.promArgs = tc.oldArgs
			}
			accept := ""
			if !protocols {
				accept = tc.oldAccept
			}
			rec := newFormatRecorder(t, e.exporter, accept)
			opts.scrapeAddr = rec.addr
			prom := e.startPrometheus(opts)
			defer prom.Stop()

			if got := rec.formatTypes(); len(got) == 0 || slices.ContainsFunc(got, func(f expfmt.FormatType) bool { return f != tc.want }) {
				t.Fatalf("exporter answered Prometheus with Content-Types %q, want only %s", rec.contentTypes(), tc.name)
			}
			hosts := e.hostsBySet()
			nHosts := len(hosts[setTCP]) + len(hosts[setICMP]) + len(hosts[setSSH])
			instance := fmt.Sprintf("{instance=%q}", rec.addr)
			checks := []struct {
				name, expr string
				check      func([]sample) error
			}{
				{"every host up", "fleet_host_up" + instance, func(got []sample) error {
					if len(got) != nHosts || slices.ContainsFunc(got, func(s sample) bool { return s.value != 1 }) {
						return fmt.Errorf("got %v, want %d series of value 1", got, nHosts)
					}
					return nil
				}},
				{"ssh output hash", fmt.Sprintf("fleet_ssh_command_output_hash{instance=%q,command=%q}", rec.addr, cmdHost), func(got []sample) error {
					if len(got) != len(hosts[setSSH]) {
						return fmt.Errorf("got %v, want one series per SSH host", got)
					}
					for _, s := range got {
						if want := outputHash(s.labels["host"] + "\n"); s.value != want {
							return fmt.Errorf("%s = %v, want %v", labelKey(s.labels), s.value, want)
						}
					}
					return nil
				}},
				{"icmp counter", "fleet_icmp_packets_sent_total" + instance, func(got []sample) error {
					if len(got) != len(hosts[setICMP]) || slices.ContainsFunc(got, func(s sample) bool { return !(s.value >= 1) }) {
						return fmt.Errorf("got %v, want one series of at least 1 per ICMP host", got)
					}
					return nil
				}},
				{"health counter", fmt.Sprintf("fleet_probes_total{instance=%q,result=\"success\"}", rec.addr), func(got []sample) error {
					var probes []string
					for _, s := range got {
						if !(s.value >= 1) {
							return fmt.Errorf("%s = %v, want at least 1", labelKey(s.labels), s.value)
						}
						probes = append(probes, s.labels["probe"])
					}
					slices.Sort(probes)
					if want := []string{"icmp", "ssh", "tcp"}; !slices.Equal(probes, want) {
						return fmt.Errorf("probes %v, want %v", probes, want)
					}
					return nil
				}},
			}
			// The per-set histograms: native buckets where Prometheus
			// ingests native histograms (the protobuf run on a Prometheus
			// without scrape_protocols), the classic ones otherwise.
			histCount := fmt.Sprintf("fleet_set_probe_duration_seconds_count{instance=%q,set=%q,probe=\"ssh\"}", rec.addr, setSSH)
			if slices.Contains(opts.promArgs, "--enable-feature=native-histograms") {
				histCount = fmt.Sprintf("histogram_count(fleet_set_probe_duration_seconds{instance=%q,set=%q,probe=\"ssh\"})", rec.addr, setSSH)
			}
			checks = append(checks, struct {
				name, expr string
				check      func([]sample) error
			}{"per-set histogram", histCount, func(got []sample) error {
				if len(got) != 1 || !(got[0].value >= 1) {
					return fmt.Errorf("got %v, want one series counting at least one probe", got)
				}
				return nil
			}})
			for _, c := range checks {
				eventually(t, settleTimeout, c.name+" in Prometheus", func() (bool, string) {
					got, err := e.query(c.expr)
					if err != nil {
						return false, err.Error()
					}
					if err := c.check(got); err != nil {
						return false, err.Error()
					}
					return true, ""
				})
			}
			// Still only that format, after the scrapes of the checks.
			if got := rec.formatTypes(); slices.ContainsFunc(got, func(f expfmt.FormatType) bool { return f != tc.want }) {
				t.Errorf("exporter answered Prometheus with Content-Types %q", rec.contentTypes())
			}
		})
	}
}
