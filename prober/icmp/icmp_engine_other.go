//go:build !linux

package icmp

import (
	"context"
	"errors"
	"log/slog"
)

// errEngineUnavailable marks a missing shared engine; the prober then
// uses pro-bing for every probe.
var errEngineUnavailable = errors.New("shared ICMP engine is only built on Linux")

// sharedEngine is a stub outside Linux: every ping falls back to pro-bing.
type sharedEngine struct{}

// newEngine returns the stub engine.
func newEngine(Mode, *slog.Logger) *sharedEngine { return &sharedEngine{} }

// ping always reports the engine as unavailable.
func (*sharedEngine) ping(context.Context, roundSpec) (stats, error) {
	return stats{}, errEngineUnavailable
}

// start rejects every round: the prober falls back to pro-bing.
func (*sharedEngine) start(_ context.Context, specs []startSpec, _ outcomeSink) []rejected {
	rej := make([]rejected, len(specs))
	for i := range specs {
		rej[i] = rejected{spec: specs[i], err: errEngineUnavailable}
	}
	return rej
}

// Reasons a reply is discarded; the stub discards none.
const discardReasons = 3

var discardNames = [discardReasons]string{"duplicate", "late", "mismatched"}

// discardedReplies returns zeros.
func (*sharedEngine) discardedReplies() [discardReasons]uint64 { return [discardReasons]uint64{} }

// close does nothing.
func (*sharedEngine) close() {}
