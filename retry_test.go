package main

import (
	"fmt"
	"testing"
	"time"
)

// probesTotal returns fleet_probes_total{set, probe, result} from url, or
// -1 when the series is missing or the scrape failed.
func probesTotal(url, set, probe, result string) float64 {
	fams, err := scrapeFamilies(url)
	if err != nil {
		return -1
	}
	for _, m := range fams["fleet_probes_total"].GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["set"] == set && l["probe"] == probe && l["result"] == result {
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

// TestDaemonRetriesBatchedICMP runs the daemon with an ICMP target that
// always fails (a name under .invalid, refused without a query) in a set
// with interval 5s and retry_interval 1s. ICMP goes through the pool's
// batch path, whose results must reach the scheduler too: three more
// failures follow the first within about 3s, where the regular slots
// would give none.
func TestDaemonRetriesBatchedICMP(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "fleet.yml", "host_sets:\n  - name: r\n    interval: 5s\n    retry_interval: 1s\n    timeout: 1s\n    hosts: [down.invalid]\n    probes:\n      icmp: {}\n")
	d := startDaemon(t, "--config.file="+cfg)
	url := fmt.Sprintf("http://%s/metrics", d.addr)
	var first time.Time
	waitFor(t, 10*time.Second, func() bool {
		first = time.Now()
		return probesTotal(url, "r", "icmp", "failure") >= 1
	})
	var n float64
	for time.Since(first) < 4500*time.Millisecond {
		if n = probesTotal(url, "r", "icmp", "failure"); n >= 4 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%v ICMP failures %v after the first, want 4 (retries 1s apart):\n%s", n, time.Since(first).Round(time.Millisecond), d.stderr)
}
