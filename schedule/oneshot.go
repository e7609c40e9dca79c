package schedule

import (
	"context"
	"sync"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// OneShot submits a fixed list of targets once, all due now, and reports
// when every accepted one has produced a result. It is what `--once` uses
// in place of the scheduler: the pool, its limits and its skip rule stay
// exactly those of the daemon, and the pool itself knows nothing of
// one-shot runs.
//
// Wire Observe into the pool's result sink before calling Run.
type OneShot struct {
	targets []*config.Target

	// mu guards pending and done.
	mu      sync.Mutex
	pending map[config.Key]struct{}
	done    chan struct{}
}

// NewOneShot returns a OneShot for targets. It submits nothing until Run.
func NewOneShot(targets []*config.Target) *OneShot {
	return &OneShot{
		targets: targets,
		pending: make(map[config.Key]struct{}, len(targets)),
		done:    make(chan struct{}),
	}
}

// Observe records a result; results of targets not submitted by Run (or
// already seen) are ignored. It is safe for concurrent use.
func (o *OneShot) Observe(r probe.Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.pending[r.Key]; !ok {
		return
	}
	delete(o.pending, r.Key)
	o.closeIfDoneLocked()
}

// Run hands every target to submit with due = now and blocks until each
// accepted one was observed or ctx ends, whichever comes first. A target
// listed twice is submitted once; one submit refuses (still in flight, or
// no prober for its type) is not waited for. Run returns ctx.Err() when ctx ended first, nil otherwise. Call it
// once.
func (o *OneShot) Run(ctx context.Context, submit func(t *config.Target, due time.Time) bool) error {
	now := time.Now()
	submitted := make(map[config.Key]struct{}, len(o.targets))
	for _, t := range o.targets {
		k := t.Key()
		// A key is probed once per run, however often it is listed: its
		// first probe may already be over when the duplicate comes, and
		// the pool only refuses duplicates still in flight.
		if _, dup := submitted[k]; dup {
			continue
		}
		submitted[k] = struct{}{}
		// Mark the key pending before submitting: its result can reach
		// Observe before submit returns.
		o.mu.Lock()
		o.pending[k] = struct{}{}
		o.mu.Unlock()
		if !submit(t, now) {
			o.mu.Lock()
			delete(o.pending, k)
			o.mu.Unlock()
		}
	}
	o.mu.Lock()
	o.targets = nil // submitted; from now on only pending matters
	o.closeIfDoneLocked()
	o.mu.Unlock()
	select {
	case <-o.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeIfDoneLocked closes done once every target was submitted and every
// accepted one observed. Callers hold mu.
func (o *OneShot) closeIfDoneLocked() {
	if o.targets != nil || len(o.pending) > 0 {
		return
	}
	select {
	case <-o.done:
	default:
		close(o.done)
	}
}
