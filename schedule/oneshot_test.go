package schedule

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// TestOneShot checks that a one-shot run through a running pool returns once
// every accepted target has a result, under the pool's limits, without
// waiting for targets the pool refuses, and at once when its context ends.
func TestOneShot(t *testing.T) {
	tests := []struct {
		name        string
		hold        time.Duration
		ctxTimeout  time.Duration
		wantErr     error
		wantResults int
		wantElapsed time.Duration
	}{
		// Seven targets, three slots, one second each: three rounds.
		{name: "all results", hold: time.Second, ctxTimeout: time.Hour, wantResults: 7, wantElapsed: 3 * time.Second},
		{name: "instant probes", hold: 0, ctxTimeout: time.Hour, wantResults: 7, wantElapsed: 0},
		{name: "context ends first", hold: -1, ctxTimeout: 5 * time.Second, wantErr: context.DeadlineExceeded, wantResults: 0, wantElapsed: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := &schedFakeProber{hold: poolHold(tt.hold)}
				sink := &poolSink{}
				p, _ := poolNew(t, config.Global{Concurrency: 3}, map[string]probe.Prober{config.ProbeICMP: fake, config.ProbeTCP: fake}, sink)
				stop := testutil.Start(t, p.Run)
				defer stop()

				targets := append(poolTargets(4, config.ProbeICMP, time.Minute), poolTargets(3, config.ProbeTCP, time.Minute)...)
				targets = append(targets,
					targets[0], // a duplicate is submitted once, not waited for
					poolTarget("no-prober", config.ProbeSSH, time.Minute), // refused: no prober
				)
				o := NewOneShot(targets)
				sink.observe = o.Observe
				ctx, cancel := context.WithTimeout(t.Context(), tt.ctxTimeout)
				defer cancel()
				start := time.Now()
				err := o.Run(ctx, p.Submit)
				if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
					t.Errorf("Run() = %v, want %v", err, tt.wantErr)
				}
				if got := time.Since(start); got != tt.wantElapsed {
					t.Errorf("Run took %v, want %v", got, tt.wantElapsed)
				}
				if got := len(sink.get()); got != tt.wantResults {
					t.Errorf("%d results, want %d", got, tt.wantResults)
				}
			})
		})
	}
}

// TestOneShotIgnoresForeignResults checks that results of targets the
// one-shot did not submit (a scheduler sharing the sink) neither finish it
// early nor block it.
func TestOneShotIgnoresForeignResults(t *testing.T) {
	targets := poolTargets(2, config.ProbeICMP, time.Minute)
	o := NewOneShot(targets)
	submitted := make(chan *config.Target, len(targets))
	errc := make(chan error, 1)
	go func() {
		errc <- o.Run(t.Context(), func(tg *config.Target, _ time.Time) bool { submitted <- tg; return true })
	}()
	first := <-submitted
	<-submitted
	o.Observe(probe.Result{Key: config.Key{Set: "other", Host: "x", Probe: config.ProbeICMP}})
	o.Observe(probe.Result{Key: first.Key()})
	select {
	case err := <-errc:
		t.Fatalf("Run returned %v with one result missing", err)
	case <-time.After(50 * time.Millisecond):
	}
	o.Observe(probe.Result{Key: targets[1].Key()})
	if err := <-errc; err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
}
