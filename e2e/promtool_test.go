package e2e

import (
	"bytes"
	"testing"
	"time"
)

// TestPromtoolCheckMetrics pipes real scrapes of the exporter through
// `promtool check metrics`, which lints names, units, help and types. It
// scrapes with every host up and again with one host down, so the
// failure-only series (fleet_probe_failure_info, ...) are linted too.
func TestPromtoolCheckMetrics(t *testing.T) {
	t.Parallel()
	promtool := needTool(t, "/usr/bin/promtool", "prometheus")
	e := startEnv(t, envOptions{})
	down := e.tcp[2]

	cases := []struct {
		name  string
		setup func(t *testing.T)
		// want lists families the scrape must contain, so an empty or
		// truncated scrape cannot pass the lint.
		want []string
	}{
		{
			name:  "all hosts up",
			setup: func(*testing.T) {},
			want: []string{
				"fleet_host_up", "fleet_probe_success", "fleet_icmp_rtt_seconds",
				"fleet_ssh_phase_seconds", "fleet_ssh_command_output_hash", "fleet_probes_total",
			},
		},
		{
			name: "one host down",
			setup: func(t *testing.T) {
				down.down()
				e.waitHostUp(setTCP, down.addr, 0)
			},
			want: []string{"fleet_probe_failure_info", "fleet_probe_consecutive_failures"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup(t)
			body, err := e.scrapeText()
			if err != nil {
				t.Fatal(err)
			}
			for _, fam := range tc.want {
				if !bytes.Contains(body, []byte("\n"+fam)) {
					t.Errorf("scrape has no %s series", fam)
				}
			}
			stdout, stderr, err := runWithTimeout(30*time.Second, body, promtool, "check", "metrics")
			if err != nil || len(stdout) > 0 || len(stderr) > 0 {
				t.Errorf("promtool check metrics: err %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
			}
		})
	}
	if t.Failed() {
		return
	}
	// Guard against a promtool that accepts anything: a bad exposition must
	// be reported.
	t.Run("promtool reports a bad metric", func(t *testing.T) {
		bad := []byte("# HELP fleet_bad_count A counter without _total.\n# TYPE fleet_bad_count counter\nfleet_bad_count 1\n")
		stdout, stderr, err := runWithTimeout(30*time.Second, bad, promtool, "check", "metrics")
		if err == nil && len(stdout) == 0 && len(stderr) == 0 {
			t.Errorf("promtool check metrics accepted a counter named fleet_bad_count without a word")
		}
	})
}
