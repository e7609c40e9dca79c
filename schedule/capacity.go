package schedule

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/common/model"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// capacityDemand is the worst-case load of one probe type.
type capacityDemand struct {
	targets int
	// slots is the sum over targets of timeout/interval (at most 1 each,
	// since a target is never run twice at once).
	slots float64
	// starts is the sum over targets of 1/interval, in starts per second.
	starts float64

	minTimeout, maxTimeout   time.Duration
	minInterval, maxInterval time.Duration
}

func (d *capacityDemand) add(t *config.Target) {
	if d.targets == 0 {
		d.minTimeout, d.maxTimeout = t.Timeout, t.Timeout
		d.minInterval, d.maxInterval = t.Interval, t.Interval
	}
	d.targets++
	d.slots += min(t.Timeout.Seconds()/t.Interval.Seconds(), 1)
	d.starts += 1 / t.Interval.Seconds()
	d.minTimeout = min(d.minTimeout, t.Timeout)
	d.maxTimeout = max(d.maxTimeout, t.Timeout)
	d.minInterval = min(d.minInterval, t.Interval)
	d.maxInterval = max(d.maxInterval, t.Interval)
}

// describe renders "N targets with timeout T every I", with ranges when the
// targets differ.
func (d *capacityDemand) describe(withTimeout bool) string {
	s := fmt.Sprintf("%d targets", d.targets)
	if withTimeout {
		s += " with timeout " + capacityRange(d.minTimeout, d.maxTimeout)
	}
	return s + " every " + capacityRange(d.minInterval, d.maxInterval)
}

// capacityRange renders durations the way the config spells them ("90s",
// "1m").
func capacityRange(lo, hi time.Duration) string {
	if lo == hi {
		return model.Duration(lo).String()
	}
	return model.Duration(lo).String() + ".." + model.Duration(hi).String()
}

// CapacityWarnings checks whether the limits of g can carry targets and
// returns one human-readable warning per shortfall, in config.ProbeTypes
// order, or nil. Per probe type, the worst-case slot demand is the sum over
// its targets of timeout/interval (each probe may hold a slot for its whole
// timeout once per interval); it is compared with the type's concurrency and,
// summed over all types, with the overall concurrency. The start demand, the
// sum of 1/interval, is compared with the type's rate. Non-positive limits
// are unbounded and never warn; targets with a non-positive interval are
// ignored.
func CapacityWarnings(g config.Global, targets []*config.Target) []string {
	demand := make(map[string]*capacityDemand, len(config.ProbeTypes()))
	for _, t := range targets {
		if t.Interval <= 0 {
			continue
		}
		d := demand[t.Probe]
		if d == nil {
			d = &capacityDemand{}
			demand[t.Probe] = d
		}
		d.add(t)
	}

	var warnings []string
	var total capacityDemand
	for _, name := range config.ProbeTypes() {
		d := demand[name]
		if d == nil {
			continue
		}
		if total.targets == 0 {
			total = *d
		} else {
			total.targets += d.targets
			total.slots += d.slots
			total.starts += d.starts
			total.minTimeout = min(total.minTimeout, d.minTimeout)
			total.maxTimeout = max(total.maxTimeout, d.maxTimeout)
			total.minInterval = min(total.minInterval, d.minInterval)
			total.maxInterval = max(total.maxInterval, d.maxInterval)
		}
		l := g.Limits.For(name)
		if need := capacityCeil(d.slots); l.Concurrency > 0 && need > l.Concurrency {
			warnings = append(warnings, fmt.Sprintf(
				"%s: %s need up to %d concurrent slots in the worst case but limits.%s.concurrency is %d; raise it or lengthen the interval",
				name, d.describe(true), need, name, l.Concurrency))
		}
		if l.Rate > 0 && d.starts > l.Rate*(1+1e-9) {
			warnings = append(warnings, fmt.Sprintf(
				"%s: %s need %s probe starts per second but limits.%s.rate is %s; raise it or lengthen the interval",
				name, d.describe(false), capacityRate(d.starts), name, capacityRate(l.Rate)))
		}
	}
	if need := capacityCeil(total.slots); g.Concurrency > 0 && need > g.Concurrency {
		warnings = append(warnings, fmt.Sprintf(
			"all probes: %s need up to %d concurrent slots in the worst case but global.concurrency is %d; raise it or lengthen the intervals",
			total.describe(true), need, g.Concurrency))
	}
	return warnings
}

// capacityCeil rounds a slot demand up, forgiving float noise so that e.g.
// 6 targets at 1/6 each need 1 slot, not 2.
func capacityCeil(x float64) int {
	return int(math.Ceil(x - 1e-9))
}

// capacityRate renders a rate with four significant digits, without an
// exponent for large values.
func capacityRate(x float64) string {
	if x >= 1000 {
		return strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strconv.FormatFloat(x, 'g', 4, 64)
}
