package exposition

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// handlerStore builds a store of hosts hosts in a few sets with static
// labels, an ICMP target per host and, with withSSH, an SSH target with one
// command; every tenth host fails.
func handlerStore(hosts int, withSSH bool) (*collector.Store, []*config.Target) {
	var targets []*config.Target
	var results []probe.Result
	t0 := time.Unix(1_700_000_000, 0)
	for i := range hosts {
		set := fmt.Sprintf("set%02d", i%7)
		labels := map[string]string{"dc": fmt.Sprintf("dc\"%d\"", i%7%3), "team": "net\\ops"}
		host := fmt.Sprintf("host%06d.example.net", i)
		icmp := &config.Target{Set: set, Host: host, Name: host, Probe: config.ProbeICMP, Labels: labels, ICMP: &config.ICMPProbe{Count: 3}}
		targets = append(targets, icmp)
		r := probe.Result{
			Key: icmp.Key(), Start: t0, Duration: 250 * time.Millisecond, Success: i%10 != 0,
			ICMP: &probe.ICMPResult{Sent: 3, Received: 3, RTT: time.Millisecond},
		}
		if !r.Success {
			r.Reason, r.ICMP.Received = probe.ReasonTimeout, 0
		}
		results = append(results, r)
		if withSSH {
			ssh := &config.Target{
				Set: set, Host: host, Name: host, Probe: config.ProbeSSH, Labels: labels,
				SSH: &config.SSHProbe{Commands: []config.Command{{Name: "uname", Run: "uname"}}},
			}
			targets = append(targets, ssh)
			results = append(results, probe.Result{
				Key: ssh.Key(), Start: t0, Duration: time.Second, Success: true,
				SSH: &probe.SSHResult{
					Connect: time.Millisecond, Handshake: 2 * time.Millisecond, Auth: 3 * time.Millisecond, NewConnection: true,
					Commands: []probe.CommandResult{{Name: "uname", Ran: true, Duration: time.Millisecond, Hash: uint64(i%5 + 1), Bytes: 40}},
				},
			})
		}
	}
	s := collector.NewStore()
	s.Reconcile(targets)
	for _, r := range results {
		s.Update(r)
	}
	return s, targets
}

// selfRegistry is a deterministic stand-in for the daemon's registry: a
// gauge, a counter vector and the reload metric names.
func selfRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleet_config_last_reload_successful", Help: "Whether the last reload succeeded."})
	g.Set(1)
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleet_probes_skipped_total", Help: "Skipped turns."}, []string{"probe"})
	c.WithLabelValues("icmp").Add(3)
	reg.MustRegister(g, c)
	// The handler's pause counter, which it reuses, so that promhttp over
	// this registry carries it too; handlers built without MaxPause never
	// pause, so it stays 0.
	if _, err := registerPaused(reg); err != nil {
		panic(err)
	}
	return reg
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// mustHandler returns NewHandler's handler for the arguments.
func mustHandler(t testing.TB, reg *prometheus.Registry, snapshot func() *collector.Snapshot, maxRequests int, logger *slog.Logger) *Handler {
	t.Helper()
	h, err := NewHandler(Options{Registry: reg, Snapshot: snapshot, MaxRequestsInFlight: maxRequests, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// scrape serves one request to h and returns the recorded response.
func scrape(t *testing.T, h http.Handler, header http.Header, query string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics"+query, nil)
	maps := header
	for k, v := range maps {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// normalize parses an exposition and writes it back family by family in
// name order, so two expositions with the same content compare equal
// whatever the order of their families. It fails on invalid input, which
// includes a family written twice.
func normalize(t *testing.T, body []byte) string {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("exposition does not parse: %v", err)
	}
	names := make([]string, 0, len(mfs))
	for n := range mfs {
		names = append(names, n)
	}
	slices.Sort(names)
	var b bytes.Buffer
	for _, n := range names {
		if _, err := expfmt.MetricFamilyToText(&b, mfs[n]); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestHandlerMatchesPromhttp compares the handler with the path it
// replaces: promhttp.HandlerFor over a registry holding the same self
// metrics plus collector.NewCollector. Same families, same samples.
func TestHandlerMatchesPromhttp(t *testing.T) {
	store, _ := handlerStore(200, true)

	reg := selfRegistry()
	h := mustHandler(t, reg, store.Snapshot, 0, discardLogger())

	old := selfRegistry()
	old.MustRegister(collector.NewCollector(store))
	oldH := promhttp.HandlerFor(old, promhttp.HandlerOpts{Registry: old, ErrorHandling: promhttp.ContinueOnError})

	rec := scrape(t, h, nil, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Content-Type"); !strings.HasPrefix(got, "text/plain; version=0.0.4; charset=utf-8") {
		t.Errorf("Content-Type %q", got)
	}
	if got := rec.Header().Get("Content-Encoding"); got != "" {
		t.Errorf("Content-Encoding %q without Accept-Encoding", got)
	}
	oldRec := scrape(t, oldH, http.Header{"Accept": {"text/plain;version=0.0.4"}}, "")
	if got, want := rec.Header().Get("Content-Type"), oldRec.Header().Get("Content-Type"); got != want {
		t.Errorf("Content-Type %q, promhttp sends %q", got, want)
	}
	if diff := cmp.Diff(normalize(t, oldRec.Body.Bytes()), normalize(t, rec.Body.Bytes())); diff != "" {
		t.Errorf("handler output differs from promhttp + NewCollector (-old +new):\n%s", diff)
	}

	// Byte for byte: the registry's families, then the snapshot's text.
	var want bytes.Buffer
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	enc := expfmt.NewEncoder(&want, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Snapshot().WriteText(&want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.String(), rec.Body.String()); diff != "" {
		t.Errorf("handler output (-want +got):\n%s", diff)
	}
}

func TestHandlerGzip(t *testing.T) {
	store, _ := handlerStore(500, true)
	h := mustHandler(t, selfRegistry(), store.Snapshot, 0, discardLogger())
	plain := scrape(t, h, nil, "").Body.String()

	tests := []struct {
		name, acceptEncoding string
		wantGzip             bool
	}{
		{"none", "", false},
		{"gzip", "gzip", true},
		{"prometheus default", "gzip", true},
		{"curl compressed", "deflate, gzip, br, zstd", true},
		{"upper case", "GZIP", true},
		{"refused", "gzip;q=0", false},
		{"identity preferred", "gzip;q=0.5, identity", false},
		{"gzip preferred", "identity;q=0.5, gzip;q=0.9", true},
		{"wildcard ties go to identity", "*", false},
		{"wildcard with identity refused", "*, identity;q=0", false},
		{"gzip over wildcard", "*;q=0.1, gzip", true},
		{"other codings only", "br, zstd", false},
		{"bad q", "gzip;q=x", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			header := http.Header{}
			if tc.acceptEncoding != "" {
				header.Set("Accept-Encoding", tc.acceptEncoding)
			}
			// Twice, so the second request reuses the pooled writers.
			for range 2 {
				rec := scrape(t, h, header, "")
				if rec.Code != http.StatusOK {
					t.Fatalf("status %d", rec.Code)
				}
				if !slices.Contains(rec.Header().Values("Vary"), "Accept-Encoding") {
					t.Errorf("Vary %q lacks Accept-Encoding", rec.Header().Values("Vary"))
				}
				body := rec.Body.Bytes()
				gotGzip := rec.Header().Get("Content-Encoding") == "gzip"
				if gotGzip != tc.wantGzip {
					t.Fatalf("Content-Encoding %q, want gzip %v", rec.Header().Get("Content-Encoding"), tc.wantGzip)
				}
				if gotGzip {
					zr, err := gzip.NewReader(bytes.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					if body, err = io.ReadAll(zr); err != nil {
						t.Fatalf("gunzip: %v", err)
					}
				}
				if string(body) != plain {
					t.Errorf("decoded body differs from the plain one (%d vs %d bytes)", len(body), len(plain))
				}
			}
		})
	}
}

// TestHandlerLimit holds one scrape inside the handler and checks
// that the next one is refused with 503 and counted, as promhttp does.
func TestHandlerLimit(t *testing.T) {
	store, _ := handlerStore(10, false)
	reg := selfRegistry()
	entered := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	snapshot := func() *collector.Snapshot {
		// Only the first scrape waits, so a broken limit fails the test
		// instead of hanging it.
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		return store.Snapshot()
	}
	h := promhttp.InstrumentMetricHandler(reg, mustHandler(t, reg, snapshot, 1, discardLogger()))

	first := make(chan *httptest.ResponseRecorder)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		first <- rec
	}()
	<-entered
	rec := scrape(t, h, nil, "")
	if body := rec.Body.String(); rec.Code != http.StatusServiceUnavailable || !strings.Contains(body, "Limit of concurrent requests reached (1)") {
		t.Errorf("second scrape while the first is in flight: %d %q, want 503", rec.Code, body[:min(len(body), 200)])
	}
	close(release)
	if rec := <-first; rec.Code != http.StatusOK {
		t.Errorf("first scrape: %d", rec.Code)
	}
	// The slot is free again, and the instrumentation saw both outcomes.
	rec = scrape(t, h, nil, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape after the first finished: %d", rec.Code)
	}
	for _, want := range []string{
		`promhttp_metric_handler_requests_total{code="200"} 1`,
		`promhttp_metric_handler_requests_total{code="503"} 1`,
		"promhttp_metric_handler_requests_in_flight 1",
		`promhttp_metric_handler_errors_total{cause="encoding"} 0`,
	} {
		if !strings.Contains(rec.Body.String(), want+"\n") {
			t.Errorf("body lacks %q", want)
		}
	}
}

func TestHandlerUnlimited(t *testing.T) {
	store, _ := handlerStore(10, false)
	entered := make(chan struct{}, 3)
	release := make(chan struct{})
	snapshot := func() *collector.Snapshot {
		entered <- struct{}{}
		<-release
		return store.Snapshot()
	}
	h := mustHandler(t, selfRegistry(), snapshot, 0, discardLogger())
	codes := make(chan int, 3)
	for range 3 {
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			codes <- rec.Code
		}()
	}
	// The three overlap: the first takes the snapshot the others will
	// share, and with no limit none of them is turned away meanwhile.
	<-entered
	select {
	case c := <-codes:
		t.Fatalf("a scrape answered %d while the first one was still taking its snapshot", c)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	for range 3 {
		if c := <-codes; c != http.StatusOK {
			t.Errorf("status %d, want 200", c)
		}
	}
}

// TestHandlerNameFilter checks name[] over registry and store families,
// and that a scrape keeping no store family takes no store snapshot.
func TestHandlerNameFilter(t *testing.T) {
	store, _ := handlerStore(20, true)
	var snaps atomic.Int64
	h := mustHandler(t, selfRegistry(), func() *collector.Snapshot {
		snaps.Add(1)
		return store.Snapshot()
	}, 0, discardLogger())
	tests := []struct {
		name, query string
		want        []string
		snapshot    bool
	}{
		{"store family", "?name[]=fleet_host_up", []string{"fleet_host_up"}, true},
		{
			name:     "registry and store families",
			query:    "?name[]=fleet_probes_skipped_total&name[]=fleet_ssh_phase_seconds",
			want:     []string{"fleet_probes_skipped_total", "fleet_ssh_phase_seconds"},
			snapshot: true,
		},
		{"registry family only", "?name[]=fleet_probes_skipped_total", []string{"fleet_probes_skipped_total"}, false},
		{"unknown", "?name[]=nope", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := snaps.Load()
			rec := scrape(t, h, nil, tc.query)
			if took := snaps.Load() > before; took != tc.snapshot {
				t.Errorf("took a store snapshot: %v, want %v", took, tc.snapshot)
			}
			p := expfmt.NewTextParser(model.UTF8Validation)
			mfs, err := p.TextToMetricFamilies(rec.Body)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for n := range mfs {
				got = append(got, n)
			}
			slices.Sort(got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("families (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHandlerSkipsRegisteredCollector registers NewCollector in the
// served registry by mistake: every family must still appear once.
func TestHandlerSkipsRegisteredCollector(t *testing.T) {
	store, _ := handlerStore(20, true)
	reg := selfRegistry()
	reg.MustRegister(collector.NewCollector(store))
	var logs bytes.Buffer
	h := mustHandler(t, reg, store.Snapshot, 0, slog.New(slog.NewTextHandler(&logs, nil)))
	for range 2 {
		rec := scrape(t, h, nil, "")
		normalize(t, rec.Body.Bytes()) // fails on a family written twice
		if n := strings.Count(rec.Body.String(), "# TYPE fleet_host_up "); n != 1 {
			t.Errorf("fleet_host_up written %d times", n)
		}
	}
	if n := strings.Count(logs.String(), "the store owns"); n != 1 {
		t.Errorf("clash logged %d times, want once:\n%s", n, logs.String())
	}
}

// errWriter is a ResponseWriter whose body writes fail.
type errWriter struct{ header http.Header }

func (e *errWriter) Header() http.Header       { return e.header }
func (e *errWriter) WriteHeader(int)           {}
func (e *errWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestHandlerCountsWriteErrors(t *testing.T) {
	store, _ := handlerStore(2000, true)
	reg := selfRegistry()
	var logs bytes.Buffer
	h := mustHandler(t, reg, store.Snapshot, 0, slog.New(slog.NewTextHandler(&logs, nil)))
	tests := []struct {
		name, acceptEncoding string
	}{
		{"identity", ""},
		{"gzip", "gzip"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			if tc.acceptEncoding != "" {
				req.Header.Set("Accept-Encoding", tc.acceptEncoding)
			}
			h.ServeHTTP(&errWriter{header: http.Header{}}, req)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var got float64
			for _, mf := range mfs {
				if mf.GetName() != "promhttp_metric_handler_errors_total" {
					continue
				}
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == "encoding" {
						got = m.GetCounter().GetValue()
					}
				}
			}
			if got < float64(i+1) {
				t.Errorf("encoding errors %v after %d failed scrapes", got, i+1)
			}
			if !strings.Contains(logs.String(), "connection reset") {
				t.Errorf("write error not logged:\n%s", logs.String())
			}
		})
	}
}

// TestHandlerPromtool runs promtool check metrics on the output of
// the handler as the daemon wires it: build info, Go and process metrics,
// instrumentation and the store's families.
func TestHandlerPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (scripts/install-test-deps.sh installs it)")
	}
	store, _ := handlerStore(100, true)
	reg := prometheus.NewRegistry()
	reg.MustRegister(versioncollector.NewCollector("fleet_exporter"),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := promhttp.InstrumentMetricHandler(reg, mustHandler(t, reg, store.Snapshot, 4, discardLogger()))
	scrape(t, h, nil, "") // so the request counter has a 200 sample
	body := scrape(t, h, nil, "").Body.Bytes()
	normalize(t, body)

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestHandlerConcurrentScrapes scrapes over HTTP from several
// goroutines while others update and reconfigure the store; under -race it
// shows that writing a scrape shares no unsynchronised state with the
// probes' updates. Every response must be a valid exposition.
func TestHandlerConcurrentScrapes(t *testing.T) {
	store, targets := handlerStore(100, true)
	reg := selfRegistry()
	srv := httptest.NewServer(promhttp.InstrumentMetricHandler(reg, mustHandler(t, reg, store.Snapshot, 8, discardLogger())))
	defer srv.Close()

	stop := make(chan struct{})
	var updaters sync.WaitGroup
	for g := range 4 {
		updaters.Go(func() {
			t0 := time.Unix(1_700_000_000, 0)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				tg := targets[(n*7+g)%len(targets)]
				r := probe.Result{Key: tg.Key(), Start: t0.Add(time.Duration(n) * time.Second), Duration: time.Millisecond, Success: n%3 > 0}
				if !r.Success {
					r.Reason = probe.ReasonTimeout
				}
				if tg.Probe == config.ProbeSSH {
					r.SSH = &probe.SSHResult{
						NewConnection: n%2 == 0, Connect: time.Millisecond,
						Commands: []probe.CommandResult{{Name: "uname", Ran: true, Hash: uint64(n%9 + 1), Bytes: 3}},
					}
				} else {
					r.ICMP = &probe.ICMPResult{Sent: 3, Received: n % 4, RTT: time.Millisecond}
				}
				store.Update(r)
				if g == 0 && n%100 == 0 {
					store.Reconcile(targets[:len(targets)-n/100%5])
				}
			}
		})
	}

	var scrapers sync.WaitGroup
	for g := range 3 {
		scrapers.Go(func() {
			client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			defer client.CloseIdleConnections()
			for i := range 8 {
				req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
				if err != nil {
					t.Error(err)
					return
				}
				gz := (g+i)%2 == 0
				if gz {
					req.Header.Set("Accept-Encoding", "gzip")
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				var body io.Reader = resp.Body
				if gz {
					zr, err := gzip.NewReader(resp.Body)
					if err != nil {
						resp.Body.Close()
						t.Error(err)
						return
					}
					body = zr
				}
				b, err := io.ReadAll(body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Errorf("scrape: %d %v", resp.StatusCode, err)
					return
				}
				p := expfmt.NewTextParser(model.UTF8Validation)
				if _, err := p.TextToMetricFamilies(bytes.NewReader(b)); err != nil {
					t.Errorf("scrape %d of goroutine %d does not parse: %v", i, g, err)
				}
				if !bytes.Contains(b, []byte("fleet_host_up{")) {
					t.Errorf("scrape %d of goroutine %d has no fleet_host_up series", i, g)
				}
			}
		})
	}
	scrapers.Wait()
	close(stop)
	updaters.Wait()
}
