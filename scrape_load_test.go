package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// TestConcurrentScrapesUnderProbeLoad runs 20 parallel scrapers against a
// daemon probing 300 TCP targets every two seconds. Every scrape must be complete,
// parseable exposition, and probing must stay on schedule: no skipped turns
// and no probe starting more than a second late. FLEET_SOAK=1 runs it for 30 s
// instead of 8 s. Under the race detector each scrape costs several times more
// CPU, so the scrapers pace themselves four times slower there; what the test
// is about, scrapes never holding a lock the probes need, is unchanged.
func TestConcurrentScrapesUnderProbeLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test; skipped with -short")
	}
	duration := 8 * time.Second
	if os.Getenv("FLEET_SOAK") == "1" {
		duration = 30 * time.Second
	}
	const hosts, scrapers = 300, 20
	port := testutil.FreePort(t, "127.0.0.1")
	for i := range hosts {
		testutil.TCPListenerOn(t, fmt.Sprintf("127.1.%d.%d", i/100, i%100+1), port)
	}
	cfg := writeFile(t, t.TempDir(), "fleet.yml", fmt.Sprintf(`
global:
  interval: 2s
  timeout: 1s
host_sets:
  - name: load
    labels: {env: test}
    hosts: ["127.1.[0-2].[1-100]"]
    probes:
      tcp: {port: %d}
`, port))
	d := startDaemon(t, "--config.file="+cfg, "--web.max-requests=0")
	url := "http://" + d.addr + "/metrics"

	// Wait until every target has a result.
	waitFor(t, 10*time.Second, func() bool {
		fams, err := scrapeFamilies(url)
		return err == nil && len(fams["fleet_probe_success"].GetMetric()) == hosts
	})

	deadline := time.Now().Add(duration)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		scrapes  int
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	for range scrapers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each scraper scrapes every 500ms: 40 scrapes/s in all, far
			// more than any real set of Prometheus servers would send.
			pace := 500 * time.Millisecond
			if raceEnabled {
				pace *= 4
			}
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for n := 0; n < 1000 && time.Now().Before(deadline); n++ {
				<-tick.C
				fams, err := scrapeFamilies(url)
				if err != nil {
					fail("scrape: %v", err)
					return
				}
				for _, name := range []string{"fleet_host_up", "fleet_probe_success", "fleet_probe_duration_seconds", "fleet_probe_last_run_timestamp_seconds"} {
					if got := len(fams[name].GetMetric()); got != hosts {
						fail("%s has %d series, want %d", name, got, hosts)
					}
				}
				mu.Lock()
				scrapes++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d scrapes by %d scrapers in %v", scrapes, scrapers, duration)

	fams, err := scrapeFamilies(url)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range fams["fleet_probes_skipped_total"].GetMetric() {
		if v := m.GetCounter().GetValue(); v != 0 {
			t.Errorf("%v turns skipped under scrape load", v)
		}
	}
	for _, m := range fams["fleet_scheduler_lag_seconds"].GetMetric() {
		h := m.GetHistogram()
		var withinOneSecond uint64
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() == 1 {
				withinOneSecond = b.GetCumulativeCount()
			}
		}
		// p99 under one second: at most 1% of starts later than that.
		if late := h.GetSampleCount() - withinOneSecond; late*100 > h.GetSampleCount() {
			t.Errorf("%d of %d probes started more than 1s late under scrape load", late, h.GetSampleCount())
		}
	}
}

// scrapeFamilies fetches and parses one exposition.
func scrapeFamilies(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}
