package collector

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// Names of the per-set latency histograms.
const (
	nameSetProbeDuration = "fleet_set_probe_duration_seconds"
	nameSetSSHPhase      = "fleet_set_ssh_phase_seconds"
	nameSetICMPRTT       = "fleet_set_icmp_rtt_seconds"
)

// Native histogram parameters shared by the three histograms: buckets grow
// by at most 10% (schema 3), at most 160 buckets per series before the
// resolution is halved, and a reset at most once an hour to regain it.
const (
	nativeBucketFactor    = 1.1
	nativeMaxBuckets      = 160
	nativeMinResetEachDur = time.Hour
)

// latencyBuckets are the classic buckets of the probe duration and SSH
// phase histograms, from a loopback answer to the longest timeout.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// rttBuckets are the classic buckets of the ICMP RTT histogram: 50µs to
// about 3.3s in factors of two, as smokeping_prober's defaults.
var rttBuckets = prometheus.ExponentialBuckets(0.00005, 2, 17)

// SetHistograms holds the latency distributions of every host set: the
// duration of every probe by type, the SSH phases of every new connection
// and the ICMP round-trip time, one series per set (and probe or phase), never
// per host. Each is a native histogram with classic buckets as well, so a
// Prometheus that scrapes the protobuf format with native histograms enabled
// gets the fine-grained distribution and any other gets the buckets.
//
// It implements prometheus.Collector for the self-metrics registry and
// probe.Reconciler: series of sets no longer configured are deleted, and
// every configured (set, probe) pair has its series from the start, so the
// first observation shows in rate().
type SetHistograms struct {
	duration *prometheus.HistogramVec // set, probe
	phase    *prometheus.HistogramVec // set, phase
	rtt      *prometheus.HistogramVec // set

	// mu guards pairs. Observe holds it for reading while it observes, so
	// that Reconcile cannot delete a series between the check and the
	// observation (which would create it again).
	mu sync.RWMutex
	// pairs holds the (set, probe) pairs whose series exist, with their
	// children: looking them up by label values on every result was a
	// hash of the labels and a map walk per observation.
	pairs map[setProbeKey]*pairObservers
}

// NewSetHistograms returns the histograms with no series.
func NewSetHistograms() *SetHistograms {
	opts := func(name, help string, buckets []float64) prometheus.HistogramOpts {
		return prometheus.HistogramOpts{
			Name:                            name,
			Help:                            help,
			Buckets:                         buckets,
			NativeHistogramBucketFactor:     nativeBucketFactor,
			NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
			NativeHistogramMinResetDuration: nativeMinResetEachDur,
		}
	}
	return &SetHistograms{
		duration: prometheus.NewHistogramVec(opts(nameSetProbeDuration,
			"Distribution of the wall time of every probe of the set, failed ones included, in seconds.", latencyBuckets),
			[]string{labelSet, labelProbe}),
		phase: prometheus.NewHistogramVec(opts(nameSetSSHPhase,
			"Distribution of the duration of each phase of every new SSH connection of the set, in seconds.", latencyBuckets),
			[]string{labelSet, labelPhase}),
		rtt: prometheus.NewHistogramVec(opts(nameSetICMPRTT,
			"Distribution of the mean round-trip time of every ICMP probe of the set that got a reply, in seconds.", rttBuckets),
			[]string{labelSet}),
		pairs: map[setProbeKey]*pairObservers{},
	}
}

// Describe implements prometheus.Collector.
func (h *SetHistograms) Describe(ch chan<- *prometheus.Desc) {
	h.duration.Describe(ch)
	h.phase.Describe(ch)
	h.rtt.Describe(ch)
}

// Collect implements prometheus.Collector.
func (h *SetHistograms) Collect(ch chan<- prometheus.Metric) {
	h.duration.Collect(ch)
	h.phase.Collect(ch)
	h.rtt.Collect(ch)
}

// Reconcile implements probe.Reconciler: it creates the series of every
// configured (set, probe) pair that has none and deletes those of pairs no
// longer configured. Kept pairs keep their distributions.
func (h *SetHistograms) Reconcile(targets []*config.Target) {
	want := map[setProbeKey]struct{}{}
	for _, t := range targets {
		if t != nil {
			want[setProbeKey{t.Set, t.Probe}] = struct{}{}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.pairs {
		if _, ok := want[k]; ok {
			continue
		}
		delete(h.pairs, k)
		h.duration.DeleteLabelValues(k.set, k.probe)
		switch k.probe {
		case config.ProbeSSH:
			for _, p := range sshPhases() {
				h.phase.DeleteLabelValues(k.set, p)
			}
		case config.ProbeICMP:
			h.rtt.DeleteLabelValues(k.set)
		}
	}
	for k := range want {
		if _, ok := h.pairs[k]; ok {
			continue
		}
		o := &pairObservers{duration: h.duration.WithLabelValues(k.set, k.probe)}
		switch k.probe {
		case config.ProbeSSH:
			for i, p := range sshPhases() {
				o.phases[i] = h.phase.WithLabelValues(k.set, p)
			}
		case config.ProbeICMP:
			o.rtt = h.rtt.WithLabelValues(k.set)
		}
		h.pairs[k] = o
	}
}

// pairObservers are the histogram children of one (set, probe) pair.
type pairObservers struct {
	duration prometheus.Observer
	// rtt is set for ICMP, phases (in sshPhases order) for SSH.
	rtt    prometheus.Observer
	phases [3]prometheus.Observer
}

// sshPhases returns the phase label values, in exposition order.
func sshPhases() []string { return []string{phaseAuth, phaseConnect, phaseHandshake} }

// Observe adds one probe result to its set's distributions. Results of
// pairs that are not configured (a late result after a reload removed the
// set) are dropped, so they cannot bring deleted series back.
func (h *SetHistograms) Observe(r probe.Result) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if o := h.pairs[setProbeKey{r.Key.Set, r.Key.Probe}]; o != nil {
		o.observe(&r)
	}
}

// ObserveBatch is Observe for every result of rs, under one lock and one
// lookup per run of results of the same pair.
func (h *SetHistograms) ObserveBatch(rs []probe.Result) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var last setProbeKey
	var o *pairObservers
	for i := range rs {
		r := &rs[i]
		if k := (setProbeKey{r.Key.Set, r.Key.Probe}); i == 0 || k != last {
			last, o = k, h.pairs[k]
		}
		if o != nil {
			o.observe(r)
		}
	}
}

// observe adds r to the pair's distributions.
func (o *pairObservers) observe(r *probe.Result) {
	o.duration.Observe(r.Duration.Seconds())
	switch {
	case r.ICMP != nil && r.ICMP.Received > 0 && o.rtt != nil:
		o.rtt.Observe(r.ICMP.RTT.Seconds())
	case r.SSH != nil && r.SSH.NewConnection && o.phases[0] != nil:
		// Only a probe that established a connection measured the
		// phases, as for fleet_ssh_phase_seconds; a phase it did not
		// reach is zero and left out.
		for i, d := range [3]time.Duration{r.SSH.Auth, r.SSH.Connect, r.SSH.Handshake} {
			if d > 0 {
				o.phases[i].Observe(d.Seconds())
			}
		}
	}
}

// HistogramNames returns the names of the families SetHistograms exports,
// sorted.
func HistogramNames() []string {
	return slices.Sorted(slices.Values([]string{nameSetProbeDuration, nameSetSSHPhase, nameSetICMPRTT}))
}
