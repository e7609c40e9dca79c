package schedule

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

func TestCapacityWarnings(t *testing.T) {
	join := func(lists ...[]*config.Target) []*config.Target {
		var out []*config.Target
		for _, l := range lists {
			out = append(out, l...)
		}
		return out
	}
	tests := []struct {
		name    string
		g       config.Global
		targets []*config.Target
		want    []string
	}{
		{
			name:    "no targets",
			g:       config.Global{Concurrency: 1, Limits: config.ProbeLimits{SSH: config.Limit{Concurrency: 1, Rate: 1}}},
			targets: nil,
		},
		{
			name:    "ssh concurrency too low",
			g:       config.Global{Concurrency: 5000, Limits: config.ProbeLimits{SSH: config.Limit{Concurrency: 64}}},
			targets: poolTargets(10000, config.ProbeSSH, 10*time.Second, testutil.WithInterval(60*time.Second)),
			want: []string{
				"ssh: 10000 targets with timeout 10s every 1m need up to 1667 concurrent slots in the worst case but limits.ssh.concurrency is 64; raise it or lengthen the interval",
			},
		},
		{
			name:    "exactly enough",
			g:       config.Global{Concurrency: 1667, Limits: config.ProbeLimits{SSH: config.Limit{Concurrency: 1667, Rate: 10000.0 / 60}}},
			targets: poolTargets(10000, config.ProbeSSH, 10*time.Second, testutil.WithInterval(60*time.Second)),
		},
		{
			name:    "float noise does not round up",
			g:       config.Global{Concurrency: 1, Limits: config.ProbeLimits{TCP: config.Limit{Concurrency: 1}}},
			targets: poolTargets(6, config.ProbeTCP, time.Second, testutil.WithInterval(6*time.Second)),
		},
		{
			name: "global concurrency too low across types",
			g: config.Global{Concurrency: 100, Limits: config.ProbeLimits{
				ICMP: config.Limit{Concurrency: 1000}, TCP: config.Limit{Concurrency: 1000},
			}},
			targets: join(
				poolTargets(1000, config.ProbeICMP, time.Second, testutil.WithInterval(10*time.Second)),
				poolTargets(500, config.ProbeTCP, 5*time.Second, testutil.WithInterval(30*time.Second)),
			),
			want: []string{
				"all probes: 1500 targets with timeout 1s..5s every 10s..30s need up to 184 concurrent slots in the worst case but global.concurrency is 100; raise it or lengthen the intervals",
			},
		},
		{
			name:    "icmp rate too low",
			g:       config.Global{Limits: config.ProbeLimits{ICMP: config.Limit{Rate: 5000, Burst: 100}}},
			targets: poolTargets(100000, config.ProbeICMP, 500*time.Millisecond, testutil.WithInterval(time.Second)),
			want: []string{
				"icmp: 100000 targets every 1s need 100000 probe starts per second but limits.icmp.rate is 5000; raise it or lengthen the interval",
			},
		},
		{
			name:    "fractional rate",
			g:       config.Global{Limits: config.ProbeLimits{SSH: config.Limit{Rate: 0.25, Burst: 1}}},
			targets: poolTargets(10, config.ProbeSSH, time.Second, testutil.WithInterval(10*time.Second)),
			want: []string{
				"ssh: 10 targets every 10s need 1 probe starts per second but limits.ssh.rate is 0.25; raise it or lengthen the interval",
			},
		},
		{
			name: "timeout longer than interval counts one slot per target",
			g:    config.Global{Limits: config.ProbeLimits{TCP: config.Limit{Concurrency: 10}}},
			// 10 targets with timeout 30s every 10s still need only 10 slots:
			// a target never runs twice at once.
			targets: poolTargets(10, config.ProbeTCP, 30*time.Second, testutil.WithInterval(10*time.Second)),
		},
		{
			name: "unbounded limits never warn",
			g:    config.Global{},
			targets: join(
				poolTargets(100000, config.ProbeICMP, 5*time.Second, testutil.WithInterval(time.Second)),
				poolTargets(10000, config.ProbeSSH, 10*time.Second, testutil.WithInterval(10*time.Second)),
			),
		},
		{
			name:    "non-positive intervals are ignored",
			g:       config.Global{Concurrency: 1, Limits: config.ProbeLimits{TCP: config.Limit{Concurrency: 1, Rate: 1}}},
			targets: poolTargets(100, config.ProbeTCP, time.Second, testutil.WithInterval(0)),
		},
		{
			name: "every shortfall, in probe type order",
			g: config.Global{Concurrency: 10, Limits: config.ProbeLimits{
				ICMP: config.Limit{Concurrency: 5, Rate: 50},
				SSH:  config.Limit{Concurrency: 2, Rate: 1},
			}},
			targets: join(
				poolTargets(30, config.ProbeSSH, 10*time.Second, testutil.WithInterval(20*time.Second)),
				append(poolTargets(90, config.ProbeICMP, 2*time.Second, testutil.WithInterval(time.Second)),
					poolTargets(1, config.ProbeICMP, 2*time.Second, testutil.WithInterval(2*time.Second))...),
			),
			want: []string{
				"icmp: 91 targets with timeout 2s every 1s..2s need up to 91 concurrent slots in the worst case but limits.icmp.concurrency is 5; raise it or lengthen the interval",
				"icmp: 91 targets every 1s..2s need 90.5 probe starts per second but limits.icmp.rate is 50; raise it or lengthen the interval",
				"ssh: 30 targets with timeout 10s every 20s need up to 15 concurrent slots in the worst case but limits.ssh.concurrency is 2; raise it or lengthen the interval",
				"ssh: 30 targets every 20s need 1.5 probe starts per second but limits.ssh.rate is 1; raise it or lengthen the interval",
				"all probes: 121 targets with timeout 2s..10s every 1s..20s need up to 106 concurrent slots in the worst case but global.concurrency is 10; raise it or lengthen the intervals",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CapacityWarnings(tt.g, tt.targets)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("CapacityWarnings() (-want +got):\n%s", diff)
			}
		})
	}
}
