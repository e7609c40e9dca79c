package probe

import (
	"context"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// Request is one probe handed to a BatchProber.
type Request struct {
	Target *config.Target
	// Due is when the scheduler wanted the probe to start, Start when the
	// pool started it; both come back unchanged in the Completion.
	Due, Start time.Time
	// Timeout bounds the probe, counted from Start.
	Timeout time.Duration
}

// Completion is the outcome of one Request. The pool fills in the Result's
// Key, Due and Start from the Request.
type Completion struct {
	Request Request
	Result  Result
}

// BatchSink takes the completions of a BatchProber. ProbesDone may be
// called from any goroutine, with one or more completions at a time; the
// slice is only valid during the call (the Results it holds may be kept).
type BatchSink interface {
	// ProbesDone takes finished probes. It must not keep c after it
	// returns: the prober reuses the slice (the results in it are the
	// sink's to keep).
	ProbesDone(c []Completion)
}

// BatchProber is a Prober that can run many probes without a goroutine
// each: ProbeBatch starts one probe per request and returns without waiting
// for them. It calls sink.ProbesDone exactly once for every request, maybe
// before ProbeBatch returns. When ctx ends, the probes still in flight end
// early and are completed with what they measured so far. The pool calls
// ProbeBatch from several goroutines at once.
type BatchProber interface {
	Prober
	ProbeBatch(ctx context.Context, reqs []Request, sink BatchSink)
}
