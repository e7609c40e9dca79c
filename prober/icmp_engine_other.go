//go:build !linux

package prober

import (
	"context"
	"errors"
	"log/slog"
)

// errICMPEngineUnavailable marks a missing shared engine; the prober then
// uses pro-bing for every probe.
var errICMPEngineUnavailable = errors.New("shared ICMP engine is only built on Linux")

// icmpEngine is a stub outside Linux: every ping falls back to pro-bing.
type icmpEngine struct{}

// newICMPEngine returns the stub engine.
func newICMPEngine(ICMPMode, *slog.Logger) *icmpEngine { return &icmpEngine{} }

// ping always reports the engine as unavailable.
func (*icmpEngine) ping(context.Context, icmpRound) (icmpStats, error) {
	return icmpStats{}, errICMPEngineUnavailable
}

// close does nothing.
func (*icmpEngine) close() {}
