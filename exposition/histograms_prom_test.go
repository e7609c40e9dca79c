package exposition

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/promtest"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// TestSetHistogramsInPrometheus serves the per-set histograms through the
// /metrics handler to a real Prometheus, once with native histograms
// enabled (which scrapes protobuf and ingests the native buckets) and once
// without (which reads the classic buckets from the text format), and checks
// that both answer the same questions about a known distribution: ten ICMP
// round trips of 2ms and ten of 20ms in set "edge".
func TestSetHistogramsInPrometheus(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts two Prometheus servers")
	}
	target := &config.Target{Set: "edge", Host: "h1", Name: "h1", Probe: config.ProbeICMP, ICMP: &config.ICMPProbe{Count: 1}}
	store := collector.NewStore()
	store.Reconcile([]*config.Target{target})
	hist := collector.NewSetHistograms()
	hist.Reconcile([]*config.Target{target})
	for i := range 20 {
		rtt := 2 * time.Millisecond
		if i%2 == 1 {
			rtt = 20 * time.Millisecond
		}
		r := probe.Result{Key: target.Key(), Start: time.Now(), Duration: rtt, Success: true, ICMP: &probe.ICMPResult{Sent: 1, Received: 1, RTT: rtt}}
		store.Update(r)
		hist.Observe(r)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(hist)
	h, err := NewHandler(Options{Registry: reg, Snapshot: store.Snapshot})
	if err != nil {
		t.Fatal(err)
	}

	for _, native := range []bool{true, false} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var served []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h.ServeHTTP(w, r)
				mu.Lock()
				served = append(served, w.Header().Get("Content-Type"))
				mu.Unlock()
			}))
			t.Cleanup(srv.Close)
			prom := promtest.Start(t, promtest.Options{Targets: []string{strings.TrimPrefix(srv.URL, "http://")}, NativeHistograms: native})

			count := `fleet_set_icmp_rtt_seconds_count{set="edge"}`
			p90 := `histogram_quantile(0.9, fleet_set_icmp_rtt_seconds_bucket{set="edge"})`
			if native {
				count = `histogram_count(fleet_set_icmp_rtt_seconds{set="edge"})`
				p90 = `histogram_quantile(0.9, fleet_set_icmp_rtt_seconds{set="edge"})`
			}
			prom.WaitQuery(30*time.Second, count, oneValue(func(v float64) bool { return v == 20 }, "20"))
			// Native buckets are at most 10% wide: the 90th percentile of
			// 2ms and 20ms samples lies in the bucket of 20ms. The classic
			// buckets are powers of two from 50µs: (12.8ms, 25.6ms].
			lo, hi := 0.0128, 0.0256
			if native {
				lo, hi = 0.018, 0.022
			}
			prom.WaitQuery(10*time.Second, p90, oneValue(func(v float64) bool { return v > lo && v <= hi }, fmt.Sprintf("in (%v, %v]", lo, hi)))
			// The probe duration histogram exists per (set, probe).
			dur := `fleet_set_probe_duration_seconds_count{set="edge",probe="icmp"}`
			if native {
				dur = `histogram_count(fleet_set_probe_duration_seconds{set="edge",probe="icmp"})`
			}
			prom.WaitQuery(10*time.Second, dur, oneValue(func(v float64) bool { return v == 20 }, "20"))
			if native {
				// A Prometheus that ingests native histograms stores
				// them as such: the plain selector returns a histogram.
				got, err := prom.Query(`fleet_set_icmp_rtt_seconds{set="edge"}`)
				if err != nil || len(got) != 1 || got[0].Histogram == nil || got[0].Histogram.Count != 20 {
					t.Errorf("native histogram sample: %+v, err %v", got, err)
				}
			}

			mu.Lock()
			defer mu.Unlock()
			// Prometheus 2.42 asks for protobuf only with native
			// histograms enabled, OpenMetrics otherwise.
			const protobuf = "application/vnd.google.protobuf"
			if len(served) == 0 || strings.HasPrefix(served[0], protobuf) != native {
				t.Errorf("scrapes served as %v, want protobuf: %v", served, native)
			}
		})
	}
}

// oneValue accepts a result of exactly one sample whose value passes ok.
func oneValue(ok func(float64) bool, want string) func([]promtest.Sample) error {
	return func(got []promtest.Sample) error {
		if len(got) != 1 || !ok(got[0].Value) {
			return fmt.Errorf("got %+v, want one sample %s", got, want)
		}
		return nil
	}
}
