package promtest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// Binary is where the Debian package prometheus installs the server.
const Binary = "/usr/bin/prometheus"

// ModernBinary is a current Prometheus (3.16) that
// scripts/install-test-deps.sh builds from the Go module proxy, for tests
// that need what Debian's 2.42 lacks, such as scrape_protocols.
const ModernBinary = "/usr/local/lib/fleet_exporter-test/prometheus"

// Options configures a Server.
type Options struct {
	// Targets are the host:port addresses the job "fleet" scrapes.
	Targets []string
	// ScrapeInterval is the scrape and rule evaluation interval; zero means
	// one second.
	ScrapeInterval time.Duration
	// RuleFiles are copied next to the config and loaded.
	RuleFiles []string
	// NativeHistograms starts Prometheus with
	// --enable-feature=native-histograms, which makes it ask for the
	// protobuf format and ingest native histograms.
	NativeHistograms bool
	// JobConfig is YAML added to the job "fleet", each line indented by
	// four spaces (e.g. "    scrape_protocols: [PrometheusProto]\n").
	JobConfig string
	// Args are more Prometheus flags.
	Args []string
	// Binary is the server to run; empty means Binary.
	Binary string
}

// Server is one running Prometheus.
type Server struct {
	// Addr is the host:port of its HTTP API.
	Addr   string
	t      testing.TB
	client *http.Client
	log    string
	done   chan struct{}
	cmd    *exec.Cmd
}

// Start runs Prometheus for the test and stops it (by its PID) at cleanup.
// It returns once Prometheus is ready; it does not wait for a scrape.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := cmp.Or(o.Binary, Binary)
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s not found: run scripts/install-test-deps.sh (for %s: apt-get install -y prometheus)", bin, Binary)
	}
	dir := t.TempDir()
	interval := o.ScrapeInterval
	if interval == 0 {
		interval = time.Second
	}
	var rules []string
	for _, f := range o.RuleFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("rules%d-%s", len(rules), filepath.Base(f))
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		rules = append(rules, strconv.Quote(name))
	}
	var targets []string
	for _, a := range o.Targets {
		targets = append(targets, strconv.Quote(a))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
rule_files: [%[2]s]
scrape_configs:
  - job_name: fleet
    static_configs:
      - targets: [%[3]s]
%[4]s`, interval, strings.Join(rules, ", "), strings.Join(targets, ", "), o.JobConfig)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")))
	args := []string{
		"--config.file=" + cfgPath,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr,
	}
	if o.NativeHistograms {
		args = append(args, "--enable-feature=native-histograms")
	}
	args = append(args, o.Args...)
	s := &Server{
		Addr: addr, t: t, log: filepath.Join(dir, "prometheus.log"), done: make(chan struct{}),
		// No keep-alive: no idle connection goroutines for goleak to find.
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// A test binary killed by -timeout must not leave Prometheus behind.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start prometheus: %v", err)
	}
	go func() {
		_ = s.cmd.Wait()
		_ = logf.Close()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(s.log)
			t.Logf("prometheus log:\n%s", tail(string(b), 40))
		}
	})
	s.Wait(30*time.Second, "prometheus ready", func() (bool, string) {
		resp, err := s.client.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return s
}

// Stop ends Prometheus by its PID (SIGTERM, SIGKILL after 10 s) and waits
// for it; cleanup does the same for a server still running.
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Wait polls cond every 200ms until it holds, failing the test with cond's
// last explanation after timeout or when Prometheus exits.
func (s *Server) Wait(timeout time.Duration, what string, cond func() (bool, string)) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for {
		var ok bool
		if ok, why = cond(); ok {
			return
		}
		select {
		case <-s.done:
			b, _ := os.ReadFile(s.log)
			s.t.Fatalf("%s: prometheus exited; log:\n%s", what, tail(string(b), 40))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not after %v: %s", what, timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Sample is one element of an instant vector.
type Sample struct {
	Labels map[string]string
	// Value is the float value; NaN for a native histogram sample.
	Value float64
	// Histogram is set for a native histogram sample.
	Histogram *Histogram
}

// Histogram is a native histogram sample as the HTTP API returns it.
type Histogram struct {
	Count, Sum float64
	// Buckets holds [lower, upper, count] per populated bucket.
	Buckets [][3]float64
}

// API calls the Prometheus HTTP API endpoint path (a POST of form when it
// is not nil) and decodes the data of a successful answer into out.
func (s *Server) API(path string, form url.Values, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	method, body := http.MethodGet, io.Reader(nil)
	if form != nil {
		method, body = http.MethodPost, strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+s.Addr+path, body)
	if err != nil {
		return err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	var r struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %s: %w: %s", path, resp.Status, err, b)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: status %q: %s: %s", path, r.Status, r.ErrorType, r.Error)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(r.Data, out)
}

// Query evaluates expr at the current time and returns the instant vector
// (a scalar comes back as one sample without labels).
func (s *Server) Query(expr string) ([]Sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := s.API("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	switch data.ResultType {
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(data.Result, &v); err != nil {
			return nil, err
		}
		f, err := parseValue(v[1])
		return []Sample{{Value: f}}, err
	case "vector":
	default:
		return nil, fmt.Errorf("query %q: result type %s, want vector", expr, data.ResultType)
	}
	var vec []struct {
		Metric    map[string]string  `json:"metric"`
		Value     [2]any             `json:"value"`
		Histogram [2]json.RawMessage `json:"histogram"`
	}
	if err := json.Unmarshal(data.Result, &vec); err != nil {
		return nil, err
	}
	out := make([]Sample, 0, len(vec))
	var err error
	for _, e := range vec {
		smp := Sample{Labels: e.Metric}
		if e.Histogram[1] != nil {
			h, err := parseHistogram(e.Histogram[1])
			if err != nil {
				return nil, fmt.Errorf("query %q: %w", expr, err)
			}
			smp.Histogram = h
			smp.Value = math.NaN()
		} else if smp.Value, err = parseValue(e.Value[1]); err != nil {
			return nil, fmt.Errorf("query %q: %w", expr, err)
		}
		out = append(out, smp)
	}
	return out, nil
}

func parseValue(v any) (float64, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("sample value %v is not a string", v)
	}
	return strconv.ParseFloat(s, 64)
}

func parseHistogram(raw json.RawMessage) (*Histogram, error) {
	var h struct {
		Count   string  `json:"count"`
		Sum     string  `json:"sum"`
		Buckets [][]any `json:"buckets"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, err
	}
	out := &Histogram{}
	var err error
	if out.Count, err = strconv.ParseFloat(h.Count, 64); err != nil {
		return nil, err
	}
	if out.Sum, err = strconv.ParseFloat(h.Sum, 64); err != nil {
		return nil, err
	}
	for _, b := range h.Buckets {
		if len(b) != 4 {
			return nil, errors.New("histogram bucket without 4 fields")
		}
		var v [3]float64
		for i := range 3 {
			if v[i], err = parseValue(b[i+1]); err != nil {
				return nil, err
			}
		}
		out.Buckets = append(out.Buckets, v)
	}
	return out, nil
}

// WaitQuery polls expr until cond accepts its result.
func (s *Server) WaitQuery(timeout time.Duration, expr string, cond func([]Sample) error) []Sample {
	s.t.Helper()
	var got []Sample
	s.Wait(timeout, expr, func() (bool, string) {
		var err error
		got, err = s.Query(expr)
		if err == nil {
			err = cond(got)
		}
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return got
}
