package collector

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// Label names set by the collector itself. Static labels of a set must not
// reuse them; config validation rejects such names.
const (
	labelSet     = "set"
	labelHost    = "host"
	labelProbe   = "probe"
	labelReason  = "reason"
	labelPhase   = "phase"
	labelCommand = "command"
	labelResult  = "result"
)

// SSH phase label values.
const (
	phaseConnect   = "connect"
	phaseHandshake = "handshake"
	phaseAuth      = "auth"
)

// Probe result label values of fleet_probes_total.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

// shape names one label layout: set, host and the static label union, plus
// the extra labels of the shape.
type shape int

const (
	shapeHost    shape = iota // no extra label
	shapeProbe                // probe
	shapeReason               // probe, reason
	shapePhase                // phase
	shapeCommand              // command
	numShapes
)

func (s shape) extras() []string {
	switch s {
	case shapeProbe:
		return []string{labelProbe}
	case shapeReason:
		return []string{labelProbe, labelReason}
	case shapePhase:
		return []string{labelPhase}
	case shapeCommand:
		return []string{labelCommand}
	default:
		return nil
	}
}

// descs holds the Descs and label layouts for one static label name union.
// It is immutable once built and shared by concurrent Collect calls.
type descs struct {
	labelNames []string
	// names holds one string per label name; label pairs point at them.
	names map[string]*string
	// perm[s][i] is the index, in the source sequence set, host, static
	// labels..., extras..., of the i-th label of shape s sorted by name.
	perm [numShapes][]int

	hostUp, probeSuccess, probeDuration, probeLastRun, probeLastSuccess,
	probeConsecutiveFailures, probeFailureInfo,
	icmpRTT, icmpSent, icmpReceived,
	sshPhase, cmdDuration, cmdExitStatus, cmdHash, cmdBytes, cmdChanged,
	targets, probesTotal *prometheus.Desc
}

func newDescs(labelNames []string) *descs {
	d := &descs{labelNames: labelNames, names: map[string]*string{}}
	intern := func(n string) *string {
		p, ok := d.names[n]
		if !ok {
			p = &n
			d.names[n] = p
		}
		return p
	}
	for _, n := range []string{labelSet, labelHost, labelProbe, labelReason, labelPhase, labelCommand, labelResult} {
		intern(n)
	}
	for _, n := range labelNames {
		intern(n)
	}

	base := append([]string{labelSet, labelHost}, labelNames...)
	labels := func(s shape) []string { return append(slices.Clip(base), s.extras()...) }
	for s := range numShapes {
		seq := labels(s)
		perm := make([]int, len(seq))
		for i := range perm {
			perm[i] = i
		}
		sort.SliceStable(perm, func(a, b int) bool { return seq[perm[a]] < seq[perm[b]] })
		d.perm[s] = perm
	}

	desc := func(name, help string, s shape) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels(s), nil)
	}
	d.hostUp = desc("fleet_host_up",
		"Whether the last result of any enabled probe of the host succeeded (1) or not (0).", shapeHost)
	d.probeSuccess = desc("fleet_probe_success",
		"Whether the last probe succeeded (1) or failed (0).", shapeProbe)
	d.probeDuration = desc("fleet_probe_duration_seconds",
		"Wall time of the last probe in seconds.", shapeProbe)
	d.probeLastRun = desc("fleet_probe_last_run_timestamp_seconds",
		"Unix time at which the last probe ended.", shapeProbe)
	d.probeLastSuccess = desc("fleet_probe_last_success_timestamp_seconds",
		"Unix time at which the last successful probe ended; absent before the first success.", shapeProbe)
	d.probeConsecutiveFailures = desc("fleet_probe_consecutive_failures",
		"Number of failed probes since the last successful one.", shapeProbe)
	d.probeFailureInfo = desc("fleet_probe_failure_info",
		"Reason of the last probe's failure; present with value 1 only while the last probe failed.", shapeReason)
	d.icmpRTT = desc("fleet_icmp_rtt_seconds",
		"Mean round-trip time of the replies to the last ICMP probe in seconds; absent when no reply came.", shapeHost)
	d.icmpSent = desc("fleet_icmp_packets_sent_total",
		"Number of ICMP echo requests sent.", shapeHost)
	d.icmpReceived = desc("fleet_icmp_packets_received_total",
		"Number of ICMP echo replies received.", shapeHost)
	d.sshPhase = desc("fleet_ssh_phase_seconds",
		"Duration of each phase reached by the last SSH probe that established a connection, in seconds.", shapePhase)
	d.cmdDuration = desc("fleet_ssh_command_duration_seconds",
		"Wall time of the command in the last SSH probe in seconds.", shapeCommand)
	d.cmdExitStatus = desc("fleet_ssh_command_exit_status",
		"Exit status of the command in the last SSH probe; -1 when it had none (signal, timeout, dropped connection).", shapeCommand)
	d.cmdHash = desc("fleet_ssh_command_output_hash",
		"The first 52 bits of the SHA-256 of the command's standard output in the last SSH probe.", shapeCommand)
	d.cmdBytes = desc("fleet_ssh_command_output_bytes",
		"Size of the command's standard output in the last SSH probe in bytes.", shapeCommand)
	d.cmdChanged = desc("fleet_ssh_command_output_changed_timestamp_seconds",
		"Unix time of the end of the probe that first saw the current output hash of the command.", shapeCommand)
	d.targets = prometheus.NewDesc("fleet_targets",
		"Number of configured targets.", []string{labelSet, labelProbe}, nil)
	d.probesTotal = prometheus.NewDesc("fleet_probes_total",
		"Number of probe results received, by result.", []string{labelSet, labelProbe, labelResult}, nil)
	return d
}

// storeCollector turns a Snapshot of the store into const metrics.
type storeCollector struct {
	store *Store

	// mu guards descs.
	mu    sync.Mutex
	descs *descs
}

// NewCollector returns an unchecked collector of the store's metrics: its
// Describe sends nothing, because the label names change with the
// configuration. Each Collect takes one Snapshot and emits const metrics
// from it, holding no lock while sending.
func NewCollector(s *Store) prometheus.Collector {
	return &storeCollector{store: s}
}

// Describe implements prometheus.Collector. It sends nothing, which makes the
// collector unchecked.
func (c *storeCollector) Describe(chan<- *prometheus.Desc) {}

// descsFor returns the cached descs for labelNames, rebuilding them only
// when the union changed.
func (c *storeCollector) descsFor(labelNames []string) *descs {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.descs == nil || !slices.Equal(c.descs.labelNames, labelNames) {
		c.descs = newDescs(labelNames)
	}
	return c.descs
}

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.store.Snapshot()
	d := c.descsFor(snap.LabelNames)
	e := &emitter{
		ch:     ch,
		d:      d,
		src:    make([]*dto.LabelPair, 2+len(d.labelNames)+2),
		probes: map[string]*dto.LabelPair{},
		sets:   map[string][]*dto.LabelPair{},
		reason: map[probe.Reason]*dto.LabelPair{},
	}
	// In label value order, the order of the exposition.
	e.phases = [3]*dto.LabelPair{
		e.pair(d.names[labelPhase], phaseAuth),
		e.pair(d.names[labelPhase], phaseConnect),
		e.pair(d.names[labelPhase], phaseHandshake),
	}
	e.setProbes(snap.SetProbes)

	ts, order := snap.Targets, snap.order
	if len(order) != len(ts) {
		// Not a snapshot of the store: emit in Targets order.
		order = make([]int32, len(ts))
		for i := range order {
			order[i] = int32(i)
		}
	}
	group := make([]*TargetState, 0, len(config.ProbeTypes()))
	for i := 0; i < len(order); {
		first := &ts[order[i]]
		group = append(group[:0], first)
		j := i + 1
		for ; j < len(order); j++ {
			t := &ts[order[j]]
			if t.Target.Set != first.Target.Set || t.Target.Host != first.Target.Host {
				break
			}
			group = append(group, t)
		}
		e.host(group)
		i = j
	}
}

// gaugeMetric is a const gauge whose label pairs may be shared with other
// metrics of the same scrape. client_golang allows custom Metric
// implementations; sharing the pairs is what keeps a scrape of a million
// series cheap. Nothing mutates a metric after it was sent.
type gaugeMetric struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	value  float64
	gauge  dto.Gauge
}

// Desc implements prometheus.Metric.
func (m *gaugeMetric) Desc() *prometheus.Desc { return m.desc }

// Write implements prometheus.Metric.
func (m *gaugeMetric) Write(out *dto.Metric) error {
	out.Label = m.labels
	out.Gauge = &m.gauge
	return nil
}

// counterMetric is the counter counterpart of gaugeMetric.
type counterMetric struct {
	desc    *prometheus.Desc
	labels  []*dto.LabelPair
	value   float64
	counter dto.Counter
}

// Desc implements prometheus.Metric.
func (m *counterMetric) Desc() *prometheus.Desc { return m.desc }

// Write implements prometheus.Metric.
func (m *counterMetric) Write(out *dto.Metric) error {
	out.Label = m.labels
	out.Counter = &m.counter
	return nil
}

// slabSize is how many objects the emitter allocates at once; batching keeps
// the allocation count per scrape low.
const slabSize = 512

// emitter builds and sends the metrics of one Collect call.
type emitter struct {
	ch chan<- prometheus.Metric
	d  *descs

	// Slabs the metrics and label pairs are carved from.
	gauges   []gaugeMetric
	counters []counterMetric
	pairs    []labelPair
	ptrs     []*dto.LabelPair

	// src is scratch space: set, host, static labels, extras.
	src []*dto.LabelPair
	// curSet is the set whose pairs fill src[0] and the static slots;
	// sets holds the set pair followed by the static pairs of every set.
	curSet string
	sets   map[string][]*dto.LabelPair
	// probes, reason and phases cache label pairs with constant values.
	probes map[string]*dto.LabelPair
	reason map[probe.Reason]*dto.LabelPair
	phases [3]*dto.LabelPair
}

// labelPair keeps a label value next to the pair that points at it: the
// registry and the encoder read every value several times per scrape, and
// the copy saves a cache miss into the scattered config each time.
type labelPair struct {
	pair  dto.LabelPair
	value string
}

func (e *emitter) pair(name *string, value string) *dto.LabelPair {
	if len(e.pairs) == 0 {
		e.pairs = make([]labelPair, slabSize)
	}
	p := &e.pairs[0]
	e.pairs = e.pairs[1:]
	p.value = value
	p.pair.Name, p.pair.Value = name, &p.value
	return &p.pair
}

// labels returns the sorted label pairs of shape s, with x1 and x2 as the
// extra labels' pairs (nil when the shape has fewer).
func (e *emitter) labels(s shape, x1, x2 *dto.LabelPair) []*dto.LabelPair {
	perm := e.d.perm[s]
	n := len(e.d.labelNames)
	e.src[2+n], e.src[2+n+1] = x1, x2
	if len(e.ptrs) < len(perm) {
		e.ptrs = make([]*dto.LabelPair, max(slabSize*len(perm), len(perm)))
	}
	out := e.ptrs[:len(perm):len(perm)]
	e.ptrs = e.ptrs[len(perm):]
	for i, p := range perm {
		out[i] = e.src[p]
	}
	return out
}

func (e *emitter) gauge(desc *prometheus.Desc, labels []*dto.LabelPair, v float64) {
	if len(e.gauges) == 0 {
		e.gauges = make([]gaugeMetric, slabSize)
	}
	m := &e.gauges[0]
	e.gauges = e.gauges[1:]
	m.desc, m.labels, m.value = desc, labels, v
	m.gauge.Value = &m.value
	e.ch <- m
}

func (e *emitter) counter(desc *prometheus.Desc, labels []*dto.LabelPair, v float64) {
	if len(e.counters) == 0 {
		e.counters = make([]counterMetric, slabSize)
	}
	m := &e.counters[0]
	e.counters = e.counters[1:]
	m.desc, m.labels, m.value = desc, labels, v
	m.counter.Value = &m.value
	e.ch <- m
}

func (e *emitter) probePair(probe string) *dto.LabelPair {
	p, ok := e.probes[probe]
	if !ok {
		p = e.pair(e.d.names[labelProbe], probe)
		e.probes[probe] = p
	}
	return p
}

func (e *emitter) reasonPair(r probe.Reason) *dto.LabelPair {
	p, ok := e.reason[r]
	if !ok {
		p = e.pair(e.d.names[labelReason], string(r))
		e.reason[r] = p
	}
	return p
}

// setProbes emits the exporter-health families.
func (e *emitter) setProbes(sps []SetProbeState) {
	setName, probeName, resultName := e.d.names[labelSet], e.d.names[labelProbe], e.d.names[labelResult]
	success := e.pair(resultName, resultSuccess)
	failure := e.pair(resultName, resultFailure)
	for i := range sps {
		sp := &sps[i]
		// Sorted by name: probe, result, set.
		set, probe := e.pair(setName, sp.Set), e.pair(probeName, sp.Probe)
		e.gauge(e.d.targets, []*dto.LabelPair{probe, set}, float64(sp.Targets))
		e.counter(e.d.probesTotal, []*dto.LabelPair{probe, success, set}, float64(sp.Successes))
		e.counter(e.d.probesTotal, []*dto.LabelPair{probe, failure, set}, float64(sp.Failures))
	}
}

// useSet fills the set and static label slots of src for t's set. Hosts of
// different sets interleave in exposition order, so the pairs of every set
// are kept for the whole Collect.
func (e *emitter) useSet(t *config.Target) {
	if e.src[0] != nil && e.curSet == t.Set {
		return
	}
	e.curSet = t.Set
	n := len(e.d.labelNames)
	pairs, ok := e.sets[t.Set]
	if !ok {
		pairs = make([]*dto.LabelPair, 1+n)
		pairs[0] = e.pair(e.d.names[labelSet], t.Set)
		for i, name := range e.d.labelNames {
			pairs[1+i] = e.pair(e.d.names[name], t.Labels[name])
		}
		e.sets[t.Set] = pairs
	}
	e.src[0] = pairs[0]
	copy(e.src[2:2+n], pairs[1:])
}

// host emits the series of the targets of one host (same set and host).
func (e *emitter) host(group []*TargetState) {
	if !slices.ContainsFunc(group, func(t *TargetState) bool { return t.HasResult }) {
		return
	}
	first := group[0].Target
	e.useSet(first)
	e.src[1] = e.pair(e.d.names[labelHost], first.Host)
	base := e.labels(shapeHost, nil, nil)
	up := false
	for _, t := range group {
		if !t.HasResult {
			continue
		}
		up = up || t.Success
		e.target(t, base)
	}
	e.gauge(e.d.hostUp, base, boolFloat(up))
}

// target emits the series of one target that has a result.
func (e *emitter) target(t *TargetState, base []*dto.LabelPair) {
	d := e.d
	probe := e.probePair(t.Target.Probe)
	pl := e.labels(shapeProbe, probe, nil)
	e.gauge(d.probeSuccess, pl, boolFloat(t.Success))
	e.gauge(d.probeDuration, pl, t.Duration.Seconds())
	e.gauge(d.probeLastRun, pl, unixSeconds(t.LastRun))
	if !t.LastSuccess.IsZero() {
		e.gauge(d.probeLastSuccess, pl, unixSeconds(t.LastSuccess))
	}
	e.gauge(d.probeConsecutiveFailures, pl, float64(t.ConsecutiveFailures))
	if !t.Success {
		e.gauge(d.probeFailureInfo, e.labels(shapeReason, probe, e.reasonPair(t.Reason)), 1)
	}

	switch t.Target.Probe {
	case config.ProbeICMP:
		if t.ICMP.LastReceived > 0 {
			e.gauge(d.icmpRTT, base, t.ICMP.RTT.Seconds())
		}
		e.counter(d.icmpSent, base, float64(t.ICMP.PacketsSent))
		e.counter(d.icmpReceived, base, float64(t.ICMP.PacketsReceived))
	case config.ProbeSSH:
		if t.SSH != nil {
			e.ssh(t.SSH)
		}
	}
}

func (e *emitter) ssh(s *SSHState) {
	d := e.d
	if s.HasPhases {
		for i, v := range [3]time.Duration{s.Auth, s.Connect, s.Handshake} {
			if v > 0 {
				e.gauge(d.sshPhase, e.labels(shapePhase, e.phases[i], nil), v.Seconds())
			}
		}
	}
	for i := range s.Commands {
		c := &s.Commands[i]
		if !c.Ran {
			continue
		}
		cl := e.labels(shapeCommand, e.pair(d.names[labelCommand], c.Name), nil)
		e.gauge(d.cmdDuration, cl, c.Duration.Seconds())
		e.gauge(d.cmdExitStatus, cl, float64(c.ExitStatus))
		if c.OutputRead {
			e.gauge(d.cmdHash, cl, float64(c.Hash))
			e.gauge(d.cmdBytes, cl, float64(c.Bytes))
		}
		if !c.HashChanged.IsZero() {
			e.gauge(d.cmdChanged, cl, unixSeconds(c.HashChanged))
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// unixSeconds converts t to Unix seconds without going through UnixNano,
// whose float64 conversion would lose sub-microsecond precision.
func unixSeconds(t time.Time) float64 {
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}
