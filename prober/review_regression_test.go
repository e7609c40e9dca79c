package prober

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// TestPoolRunOnceReturnsWhenRunStops checks that a RunOnce that rides on an
// active Run returns as soon as that Run ends, instead of waiting for its own
// context: the jobs Run drops (one waiting for a slot, one still queued) must
// count as finished.
func TestPoolRunOnceReturnsWhenRunStops(t *testing.T) {
	tests := []struct {
		name    string
		targets int
	}{
		{name: "one running", targets: 1},
		{name: "one running, one waiting for a slot", targets: 2},
		{name: "one running, one waiting, some queued", targets: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := &schedFakeProber{hold: poolHold(-1)}
				p, _ := poolNew(t, config.Global{Concurrency: 1}, map[string]probe.Prober{config.ProbeICMP: fake}, &poolSink{})
				stop := poolStart(t, p)
				synctest.Wait()

				ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
				defer cancel()
				returned := make(chan time.Time, 1)
				go func() {
					p.RunOnce(ctx, poolTargets(tt.targets, config.ProbeICMP, 2*time.Hour))
					returned <- time.Now()
				}()
				synctest.Wait()
				if got := p.Stats().InFlight[config.ProbeICMP]; got != 1 {
					t.Fatalf("in flight = %d, want 1", got)
				}

				stopped := time.Now()
				stop()
				if got := (<-returned).Sub(stopped); got != 0 {
					t.Errorf("RunOnce returned %v after Run ended, want at once", got)
				}
			})
		})
	}
}

// warnCounter is a slog handler that counts warnings.
type warnCounter struct {
	mu sync.Mutex
	n  int
}

func (w *warnCounter) Enabled(context.Context, slog.Level) bool { return true }

func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		w.mu.Lock()
		w.n++
		w.mu.Unlock()
	}
	return nil
}

func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnCounter) WithGroup(string) slog.Handler      { return w }

func (w *warnCounter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// TestSSHForgetDropsInsecureWarnings checks that Forget drops the
// once-per-target insecure-mode warning state of removed targets whether or
// not they pool connections: without that, every target ever configured with
// insecure_skip_host_key_verification stayed in memory across reloads, and a
// target removed and added again was never warned about again.
func TestSSHForgetDropsInsecureWarnings(t *testing.T) {
	tests := []struct {
		name  string
		reuse bool
	}{
		{name: "fresh connections", reuse: false},
		{name: "reused connections", reuse: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			warns := &warnCounter{}
			p := NewSSHProber(NewResolver(0), slog.New(warns))
			t.Cleanup(p.Close)
			// A .invalid name fails at DNS, after the warning and without
			// any traffic.
			target := &config.Target{
				Set: "s", Host: "gone.invalid", Name: "gone.invalid", Probe: config.ProbeSSH,
				Interval: time.Minute, Timeout: time.Second, Fingerprint: "f",
				SSH: &config.SSHProbe{User: "u", InsecureSkipHostKeyVerification: true, ReuseConnections: tt.reuse},
			}
			probe := func() {
				t.Helper()
				if r := p.Probe(t.Context(), target); r.Reason != probe.ReasonDNS {
					t.Fatalf("Probe() reason = %q (err %v), want %q", r.Reason, r.Err, probe.ReasonDNS)
				}
			}

			probe()
			probe()
			if got := warns.count(); got != 1 {
				t.Fatalf("%d warnings after two probes, want 1", got)
			}

			p.Forget(func(config.Key) bool { return false })
			p.mu.Lock()
			left := len(p.warned)
			p.mu.Unlock()
			if left != 0 {
				t.Errorf("%d warning entries left after Forget, want 0", left)
			}

			probe()
			if got := warns.count(); got != 2 {
				t.Errorf("%d warnings after the target came back, want 2", got)
			}
		})
	}
}
