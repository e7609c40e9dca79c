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
	labelSet   = "set"
	labelHost  = "host"
	labelProbe = "probe"
	// labelPort is the probed port of a tcp target, empty for the other
	// probe types.
	labelPort    = "port"
	labelReason  = "reason"
	labelPhase   = "phase"
	labelCommand = "command"
	labelResult  = "result"

	labelSHA256        = "sha256"
	labelValue         = "value"
	labelServerVersion = "server_version"
	labelKEX           = "kex"
	labelCipher        = "cipher"
	labelMAC           = "mac"
	labelHostKeyAlg    = "host_key_algorithm"
	labelKeyType       = "type"
	labelFingerprint   = "fingerprint_sha256"
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

// descs holds the Descs and label layouts for one static label name union.
// It is immutable once built and shared by concurrent Collect calls.
type descs struct {
	labelNames []string
	// names holds one string per label name; label pairs point at them.
	names map[string]*string
	// perm[k][i] is the index, in the source sequence set, host, static
	// labels..., extras..., of the i-th label of the per-host row kind k
	// sorted by name.
	perm [numRowKinds][]int

	fams *[numFamilies]family
	desc [numFamilies]*prometheus.Desc
}

func newDescs(labelNames []string) *descs {
	d := &descs{labelNames: labelNames, names: map[string]*string{}, fams: familyTable()}
	intern := func(n string) {
		if _, ok := d.names[n]; !ok {
			d.names[n] = &n
		}
	}
	for _, n := range []string{
		labelSet, labelHost, labelProbe, labelPort, labelReason, labelPhase, labelCommand, labelResult,
		labelSHA256, labelValue, labelServerVersion, labelKEX, labelCipher, labelMAC, labelHostKeyAlg,
		labelKeyType, labelFingerprint,
	} {
		intern(n)
	}
	for _, n := range labelNames {
		intern(n)
	}

	base := append([]string{labelSet, labelHost}, labelNames...)
	labels := func(k rowKind) []string {
		if !k.perHost() {
			return k.extras()
		}
		return append(slices.Clip(base), k.extras()...)
	}
	for k := range numRowKinds {
		if !k.perHost() {
			continue
		}
		seq := labels(k)
		perm := make([]int, len(seq))
		for i := range perm {
			perm[i] = i
		}
		sort.SliceStable(perm, func(a, b int) bool { return seq[perm[a]] < seq[perm[b]] })
		d.perm[k] = perm
	}
	for id := range d.fams {
		f := &d.fams[id]
		d.desc[id] = prometheus.NewDesc(f.name, f.help, labels(f.rows), nil)
	}
	return d
}

// descCache keeps the descs of the current static label name union.
type descCache struct {
	// mu guards d.
	mu sync.Mutex
	d  *descs
}

// get returns the cached descs for labelNames, rebuilding them only when
// the union changed.
func (c *descCache) get(labelNames []string) *descs {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.d == nil || !slices.Equal(c.d.labelNames, labelNames) {
		c.d = newDescs(labelNames)
	}
	return c.d
}

// storeCollector turns a Snapshot of the store into const metrics.
type storeCollector struct {
	store *Store
	descs descCache
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

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.store.Snapshot()
	d := c.descs.get(snap.LabelNames)
	var e emitter
	e.reset(d, &chanSink{ch: ch, d: d})
	e.run(snap)
}

// sink receives the series of one emitter run.
type sink interface {
	// series takes one series of family id. labels are sorted by name and
	// may be shared with other series; nobody may modify them.
	series(id famID, labels []*dto.LabelPair, v float64)
}

// constMetric is a const gauge or counter whose label pairs may be shared
// with other metrics of the same scrape. client_golang allows custom Metric
// implementations; sharing the pairs is what keeps a scrape of a million
// series cheap. Nothing mutates a metric after it was sent.
type constMetric struct {
	desc    *prometheus.Desc
	labels  []*dto.LabelPair
	value   float64
	counter bool
	gauge   dto.Gauge
	count   dto.Counter
}

// Desc implements prometheus.Metric.
func (m *constMetric) Desc() *prometheus.Desc { return m.desc }

// Write implements prometheus.Metric.
func (m *constMetric) Write(out *dto.Metric) error {
	out.Label = m.labels
	if m.counter {
		out.Counter = &m.count
	} else {
		out.Gauge = &m.gauge
	}
	return nil
}

// chanSink sends every series as a constMetric, for Collect.
type chanSink struct {
	ch      chan<- prometheus.Metric
	d       *descs
	metrics slab[constMetric]
}

func (s *chanSink) series(id famID, labels []*dto.LabelPair, v float64) {
	m := s.metrics.next()
	m.desc, m.labels, m.value = s.d.desc[id], labels, v
	m.counter = s.d.fams[id].typ == dto.MetricType_COUNTER
	if m.counter {
		m.count.Value = &m.value
	} else {
		m.gauge.Value = &m.value
	}
	s.ch <- m
}

// slabSize is how many objects a slab allocates at once; batching keeps
// the allocation count per scrape low.
const slabSize = 512

// slab hands out pointers into large chunks, so that a scrape allocates per
// chunk rather than per object. reset makes the chunks available again; the
// caller must know that nothing still uses what they hold.
type slab[T any] struct {
	chunks  [][]T
	ci, off int
}

func (s *slab[T]) next() *T {
	if s.ci == len(s.chunks) {
		s.chunks = append(s.chunks, make([]T, slabSize))
	}
	p := &s.chunks[s.ci][s.off]
	if s.off++; s.off == slabSize {
		s.ci, s.off = s.ci+1, 0
	}
	return p
}

func (s *slab[T]) reset() { s.ci, s.off = 0, 0 }

// ptrSlab is a slab of label pair slices of varying length.
type ptrSlab struct {
	chunks  [][]*dto.LabelPair
	ci, off int
}

// take returns a slice of n pointers, with its capacity capped at n so an
// append elsewhere cannot overwrite a neighbour.
func (s *ptrSlab) take(n int) []*dto.LabelPair {
	for {
		if s.ci == len(s.chunks) {
			s.chunks = append(s.chunks, make([]*dto.LabelPair, max(8*slabSize, n)))
		}
		if c := s.chunks[s.ci]; s.off+n <= len(c) {
			out := c[s.off : s.off+n : s.off+n]
			s.off += n
			return out
		}
		s.ci, s.off = s.ci+1, 0
	}
}

func (s *ptrSlab) reset() { s.ci, s.off = 0, 0 }

// emitter builds the series of one snapshot and hands them to a sink. An
// emitter may be reused for later snapshots once its sink's consumers are
// done with the label pairs of the previous one.
type emitter struct {
	sink sink
	d    *descs

	// Slabs the label pairs are carved from.
	pairs slab[labelPair]
	ptrs  ptrSlab

	// src is scratch space: set, host, static labels, extras.
	src []*dto.LabelPair
	// curSet is the set whose pairs fill src[0] and the static slots;
	// sets holds the set pair followed by the static pairs of every set.
	curSet string
	sets   map[string][]*dto.LabelPair
	// probes, ports, reason and phases cache label pairs with constant values.
	probes map[string]*dto.LabelPair
	ports  map[string]*dto.LabelPair
	reason map[probe.Reason]*dto.LabelPair
	phases [3]*dto.LabelPair
	// group is scratch space for the targets of one host.
	group []*TargetState
	// shares is the snapshot's host count per host key fingerprint.
	shares map[string]int
}

// reset prepares e for a run with descs d and sink s, keeping its slabs.
func (e *emitter) reset(d *descs, s sink) {
	e.sink, e.d = s, d
	e.pairs.reset()
	e.ptrs.reset()
	e.src = slices.Grow(e.src[:0], 2+len(d.labelNames)+maxExtras)[:2+len(d.labelNames)+maxExtras]
	clear(e.src)
	e.curSet = ""
	if e.sets == nil {
		e.sets = map[string][]*dto.LabelPair{}
		e.probes = map[string]*dto.LabelPair{}
		e.ports = map[string]*dto.LabelPair{}
		e.reason = map[probe.Reason]*dto.LabelPair{}
	}
	clear(e.sets)
	clear(e.probes)
	clear(e.ports)
	clear(e.reason)
	clear(e.group)
	e.shares = nil
}

// run emits the series of snap.
func (e *emitter) run(snap *Snapshot) {
	d := e.d
	// In label value order, the order of the exposition.
	e.phases = [3]*dto.LabelPair{
		e.pair(d.names[labelPhase], phaseAuth),
		e.pair(d.names[labelPhase], phaseConnect),
		e.pair(d.names[labelPhase], phaseHandshake),
	}
	e.setProbes(snap.SetProbes)
	e.driftRows(snap.driftRows())
	e.shares = snap.hostKeyShares()

	ts, order := snap.Targets, snap.order
	if len(order) != len(ts) {
		// Not a snapshot of the store: emit in Targets order.
		order = make([]int32, len(ts))
		for i := range order {
			order[i] = int32(i)
		}
	}
	for i := 0; i < len(order); {
		first := &ts[order[i]]
		e.group = append(e.group[:0], first)
		j := i + 1
		for ; j < len(order); j++ {
			t := &ts[order[j]]
			if t.Target.Set != first.Target.Set || t.Target.Host != first.Target.Host {
				break
			}
			e.group = append(e.group, t)
		}
		e.host(e.group)
		i = j
	}
	clear(e.group)
}

// labelPair keeps a label value next to the pair that points at it: the
// registry and the encoder read every value several times per scrape, and
// the copy saves a cache miss into the scattered config each time.
type labelPair struct {
	pair  dto.LabelPair
	value string
}

func (e *emitter) pair(name *string, value string) *dto.LabelPair {
	p := e.pairs.next()
	p.value = value
	p.pair.Name, p.pair.Value = name, &p.value
	return &p.pair
}

// maxExtras is the most extra labels a per-host row kind has.
const maxExtras = 5

// labels returns the sorted label pairs of per-host kind k, with x1, x2 and
// x3 as the extra labels' pairs (nil when the kind has fewer).
func (e *emitter) labels(k rowKind, x1, x2, x3 *dto.LabelPair) []*dto.LabelPair {
	perm := e.d.perm[k]
	n := len(e.d.labelNames)
	e.src[2+n], e.src[2+n+1], e.src[2+n+2] = x1, x2, x3
	out := e.ptrs.take(len(perm))
	for i, p := range perm {
		out[i] = e.src[p]
	}
	return out
}

// labelsN is labels for kinds with more than two extras, given in the
// order of the kind's extras().
func (e *emitter) labelsN(k rowKind, xs ...*dto.LabelPair) []*dto.LabelPair {
	n := len(e.d.labelNames)
	copy(e.src[2+n:], xs)
	perm := e.d.perm[k]
	out := e.ptrs.take(len(perm))
	for i, p := range perm {
		out[i] = e.src[p]
	}
	return out
}

func (e *emitter) probePair(probe string) *dto.LabelPair {
	p, ok := e.probes[probe]
	if !ok {
		p = e.pair(e.d.names[labelProbe], probe)
		e.probes[probe] = p
	}
	return p
}

func (e *emitter) portPair(port string) *dto.LabelPair {
	p, ok := e.ports[port]
	if !ok {
		p = e.pair(e.d.names[labelPort], port)
		e.ports[port] = p
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
		set, probe := e.pair(setName, sp.Set), e.pair(probeName, sp.Probe)
		// The label names of rowsTargets and rowsProbes sorted: probe,
		// (result,) set.
		tl := e.ptrs.take(2)
		tl[0], tl[1] = probe, set
		e.sink.series(famTargets, tl, float64(sp.Targets))
		sl, fl := e.ptrs.take(3), e.ptrs.take(3)
		sl[0], sl[1], sl[2] = probe, success, set
		fl[0], fl[1], fl[2] = probe, failure, set
		e.sink.series(famProbesTotal, sl, float64(sp.Successes))
		e.sink.series(famProbesTotal, fl, float64(sp.Failures))
	}
}

// driftRows emits fleet_ssh_command_output_distinct_hashes.
func (e *emitter) driftRows(rows []driftRow) {
	setName, cmdName := e.d.names[labelSet], e.d.names[labelCommand]
	for i := range rows {
		r := &rows[i]
		// Label names sorted: command, set.
		l := e.ptrs.take(2)
		l[0], l[1] = e.pair(cmdName, r.command), e.pair(setName, r.set)
		e.sink.series(famCmdDistinct, l, float64(r.distinct))
	}
}

// useSet fills the set and static label slots of src for t's set. Hosts of
// different sets interleave in exposition order, so the pairs of every set
// are kept for the whole run.
func (e *emitter) useSet(t *config.Target) {
	if e.src[0] != nil && e.curSet == t.Set {
		return
	}
	e.curSet = t.Set
	n := len(e.d.labelNames)
	pairs, ok := e.sets[t.Set]
	if !ok {
		pairs = e.ptrs.take(1 + n)
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
	base := e.labels(rowsHost, nil, nil, nil)
	up := false
	for _, t := range group {
		if !t.HasResult {
			continue
		}
		up = up || t.Success
		e.target(t, base)
	}
	e.sink.series(famHostUp, base, boolFloat(up))
}

// target emits the series of one target that has a result.
func (e *emitter) target(t *TargetState, base []*dto.LabelPair) {
	out := e.sink
	probe := e.probePair(t.Target.Probe)
	port := e.portPair(t.portLabel())
	pl := e.labels(rowsTarget, probe, port, nil)
	out.series(famProbeSuccess, pl, boolFloat(t.Success))
	out.series(famProbeDuration, pl, t.Duration.Seconds())
	out.series(famProbeLastRun, pl, unixSeconds(t.LastRun))
	if !t.LastSuccess.IsZero() {
		out.series(famProbeLastSuccess, pl, unixSeconds(t.LastSuccess))
	}
	out.series(famProbeConsecutiveFailures, pl, float64(t.ConsecutiveFailures))
	if !t.Success {
		out.series(famProbeFailureInfo, e.labels(rowsFailure, probe, e.reasonPair(t.Reason), port), 1)
	}
	if !t.FailingSince.IsZero() {
		out.series(famProbeFailingSince, pl, unixSeconds(t.FailingSince))
	}
	if t.Addr.IsValid() {
		out.series(famProbeIPAddrHash, pl, addrHash(t.Addr))
		out.series(famProbeIPProtocol, pl, addrProtocol(t.Addr))
	}

	switch t.Target.Probe {
	case config.ProbeICMP:
		if t.ICMP.LastReceived > 0 {
			out.series(famICMPRTT, base, t.ICMP.RTT.Seconds())
		}
		out.series(famICMPSent, base, float64(t.ICMP.PacketsSent))
		out.series(famICMPReceived, base, float64(t.ICMP.PacketsReceived))
	case config.ProbeSSH:
		if t.SSH != nil {
			e.ssh(t.SSH, base)
		}
	}
}

func (e *emitter) ssh(s *SSHState, base []*dto.LabelPair) {
	out := e.sink
	if s.HasPhases {
		for i, v := range [3]time.Duration{s.Auth, s.Connect, s.Handshake} {
			if v > 0 {
				out.series(famSSHPhase, e.labels(rowsPhase, e.phases[i], nil, nil), v.Seconds())
			}
		}
	}
	if ci := s.Conn; ci != nil {
		names := e.d.names
		out.series(famSSHConnInfo, e.labelsN(rowsConn,
			e.pair(names[labelServerVersion], ci.ServerVersion), e.pair(names[labelKEX], ci.KEX),
			e.pair(names[labelCipher], ci.Cipher), e.pair(names[labelMAC], ci.MAC),
			e.pair(names[labelHostKeyAlg], ci.HostKeyAlgorithm)), 1)
	}
	if k := s.HostKey; k != nil {
		// The series of rowsHostKey have the host's labels only.
		out.series(famHostKeyInfo, e.labels(rowsHostKeyInfo,
			e.pair(e.d.names[labelKeyType], k.Type), e.pair(e.d.names[labelFingerprint], k.FingerprintSHA256), nil), 1)
		out.series(famHostKeyChanged, base, hostKeyChanged(k))
		out.series(famHostKeyShared, base, float64(e.shares[k.FingerprintSHA256]))
		if k.HasCertificateExpiry() {
			out.series(famHostCertExpiry, base, unixSeconds(k.CertificateExpiry))
		}
	}
	for i := range s.Commands {
		c := &s.Commands[i]
		if !c.Exported() {
			continue
		}
		cmd := e.pair(e.d.names[labelCommand], c.Name)
		cl := e.labels(rowsCommand, cmd, nil, nil)
		out.series(famCmdDuration, cl, c.Duration.Seconds())
		out.series(famCmdExitStatus, cl, float64(c.ExitStatus))
		if c.HasHash() {
			out.series(famCmdHash, cl, float64(c.Hash))
			out.series(famCmdBytes, cl, float64(c.Bytes))
			out.series(famCmdChanged, cl, unixSeconds(c.HashChanged))
		}
		if c.SHA256 != "" {
			out.series(famCmdOutputInfo, e.labelsN(rowsCmdInfo, cmd,
				e.pair(e.d.names[labelSHA256], c.SHA256), e.pair(e.d.names[labelValue], c.Value)), 1)
		}
	}
}

// hostKeyChanged is the value of fleet_ssh_host_key_changed_timestamp_seconds:
// 0 until a change was seen, rather than no series, so that an alert on
// changes() or on the time since the change does not need absent().
func hostKeyChanged(k *HostKeyState) float64 {
	if k.Changed.IsZero() {
		return 0
	}
	return unixSeconds(k.Changed)
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
