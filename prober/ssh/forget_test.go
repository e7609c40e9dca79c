package ssh

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

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
			p := NewProber(dns.New(dns.Options{}), slog.New(warns))
			t.Cleanup(p.Close)
			// A .invalid name fails at DNS, after the warning and without
			// any traffic.
			target := testutil.SSHTarget("s", "gone.invalid", testutil.WithTimeout(time.Second),
				testutil.WithSSH(&config.SSHProbe{User: "u", InsecureSkipHostKeyVerification: true, ReuseConnections: tt.reuse}))
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

			p.forget(func(config.Key) bool { return false })
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
