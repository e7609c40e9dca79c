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

// close does nothing.
func (*sharedEngine) close() {}
