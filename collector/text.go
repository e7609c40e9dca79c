package collector

import (
	"cmp"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// The text fast path (issue 3). Gathering a large fleet through a
// prometheus.Registry costs far more than producing the series: the registry
// builds a dto.Metric per series, hashes and checks every label set, sorts
// every family and the expfmt encoder then walks the protobuf structs again.
// TextWriter skips all of that and writes the per-target and health
// families of a Snapshot straight into a byte buffer, byte for byte what the
// Registry + expfmt text path produces for NewCollector (text_test.go proves
// it), so the two remain interchangeable.

// textFlushSize is the buffer size at which a TextWriter hands its output to
// the underlying writer: large enough that a big scrape costs few writes,
// small enough to stay in cache.
const textFlushSize = 64 << 10

// rowKind names one list of series sharing a label layout; several families
// read the same list.
type rowKind uint8

const (
	rowsHost    rowKind = iota // hosts with a result (fleet_host_up)
	rowsICMP                   // ICMP targets with a result, host labels
	rowsTarget                 // targets with a result, probe labels
	rowsFailure                // targets whose last probe failed
	rowsPhase                  // SSH phases reached
	rowsCommand                // SSH commands that ran
	rowsTargets                // (set, probe) pairs (fleet_targets)
	rowsProbes                 // (set, probe, result) triples (fleet_probes_total)
	numRowKinds
)

// row is one series before its value is read. g is the host group (index
// into the writer's label values), t indexes Snapshot.Targets (SetProbes for
// the health rows), x is the phase, the command index, the result (1 for
// success) or, for host rows, 1 when the host is up.
type row struct{ g, t, x int32 }

// slotKind says where a label value comes from.
type slotKind uint8

const (
	slotBase    slotKind = iota // set, host or a static label: the group's values
	slotProbe                   // the target's probe type
	slotReason                  // the target's failure reason
	slotPhase                   // the SSH phase of the row
	slotCommand                 // the SSH command of the row
	slotSPSet                   // the set of a SetProbes entry
	slotSPProbe                 // the probe of a SetProbes entry
	slotResult                  // success or failure
)

// slot is one label of a layout, in the exposition's label order.
type slot struct {
	kind slotKind
	// base is the index into a group's label values for slotBase.
	base int
	// prefix is `{name="` for the first label and `,name="` for the others.
	prefix string
}

// textLayout holds the label layouts for one static label name union. It is
// immutable once built.
type textLayout struct {
	labelNames []string
	// baseNames is set, host and the static label names, sorted; a group's
	// label values follow this order.
	baseNames []string
	// static[i] is the index in labelNames of baseNames[i], or -1 for set
	// and -2 for host.
	static []int
	slots  [numRowKinds][]slot
}

const (
	baseSet  = -1
	baseHost = -2
)

// appendLabelName appends name as expfmt's writeName does: as is when it is
// a legacy metric name, else quoted and escaped.
func appendLabelName(b []byte, name string) []byte {
	if model.LegacyValidation.IsValidMetricName(name) {
		return append(b, name...)
	}
	b = append(b, '"')
	b = appendEscaped(b, name)
	return append(b, '"')
}

func newTextLayout(labelNames []string) *textLayout {
	l := &textLayout{labelNames: labelNames}
	l.baseNames = slices.Sorted(slices.Values(append([]string{labelSet, labelHost}, labelNames...)))
	l.static = make([]int, len(l.baseNames))
	for i, n := range l.baseNames {
		switch n {
		case labelSet:
			l.static[i] = baseSet
		case labelHost:
			l.static[i] = baseHost
		default:
			l.static[i] = slices.Index(labelNames, n)
		}
	}
	build := func(extra ...layoutLabel) []slot {
		ls := make([]layoutLabel, 0, len(l.baseNames)+len(extra))
		for i, n := range l.baseNames {
			ls = append(ls, layoutLabel{n, slotBase, i})
		}
		// Stable, like the collector's label permutation.
		ls = append(ls, extra...)
		slices.SortStableFunc(ls, func(a, b layoutLabel) int { return cmp.Compare(a.name, b.name) })
		return slotsOf(ls)
	}
	l.slots[rowsHost] = build()
	l.slots[rowsICMP] = build()
	l.slots[rowsTarget] = build(layoutLabel{labelProbe, slotProbe, -1})
	l.slots[rowsFailure] = build(layoutLabel{labelProbe, slotProbe, -1}, layoutLabel{labelReason, slotReason, -1})
	l.slots[rowsPhase] = build(layoutLabel{labelPhase, slotPhase, -1})
	l.slots[rowsCommand] = build(layoutLabel{labelCommand, slotCommand, -1})
	// The health families have fixed labels, given here in name order.
	l.slots[rowsTargets] = slotsOf([]layoutLabel{{labelProbe, slotSPProbe, -1}, {labelSet, slotSPSet, -1}})
	l.slots[rowsProbes] = slotsOf([]layoutLabel{{labelProbe, slotSPProbe, -1}, {labelResult, slotResult, -1}, {labelSet, slotSPSet, -1}})
	return l
}

// layoutLabel is one label of a layout before its prefix is rendered.
type layoutLabel struct {
	name string
	kind slotKind
	base int
}

// slotsOf renders the labels ls, given in exposition order, into slots.
func slotsOf(ls []layoutLabel) []slot {
	slots := make([]slot, len(ls))
	for i, lb := range ls {
		sep := byte(',')
		if i == 0 {
			sep = '{'
		}
		p := appendLabelName([]byte{sep}, lb.name)
		slots[i] = slot{kind: lb.kind, base: lb.base, prefix: string(append(p, `="`...))}
	}
	return slots
}

// textFamily is one family of the exposition.
type textFamily struct {
	name string
	// header is the HELP and TYPE lines.
	header string
	rows   rowKind
	// value returns the sample of row r and whether the series exists.
	value func(w *TextWriter, r row) (float64, bool)
}

// newTextFamilies returns every family the collector emits, sorted by name
// as the registry sorts them. The HELP texts must stay those of newDescs;
// TestWriteTextMatchesRegistry fails when they drift.
func newTextFamilies() []textFamily {
	target := func(w *TextWriter, r row) *TargetState { return &w.snap.Targets[r.t] }
	command := func(w *TextWriter, r row) *CommandState { return &target(w, r).SSH.Commands[r.x] }
	always := func(f func(w *TextWriter, r row) float64) func(w *TextWriter, r row) (float64, bool) {
		return func(w *TextWriter, r row) (float64, bool) { return f(w, r), true }
	}
	fams := []textFamily{
		{
			"fleet_host_up", "Whether the last result of any enabled probe of the host succeeded (1) or not (0).", rowsHost,
			always(func(_ *TextWriter, r row) float64 { return float64(r.x) }),
		},
		{
			"fleet_probe_success", "Whether the last probe succeeded (1) or failed (0).", rowsTarget,
			always(func(w *TextWriter, r row) float64 { return boolFloat(target(w, r).Success) }),
		},
		{
			"fleet_probe_duration_seconds", "Wall time of the last probe in seconds.", rowsTarget,
			always(func(w *TextWriter, r row) float64 { return target(w, r).Duration.Seconds() }),
		},
		{
			"fleet_probe_last_run_timestamp_seconds", "Unix time at which the last probe ended.", rowsTarget,
			always(func(w *TextWriter, r row) float64 { return unixSeconds(target(w, r).LastRun) }),
		},
		{
			"fleet_probe_last_success_timestamp_seconds", "Unix time at which the last successful probe ended; absent before the first success.", rowsTarget,
			func(w *TextWriter, r row) (float64, bool) {
				t := target(w, r)
				return unixSeconds(t.LastSuccess), !t.LastSuccess.IsZero()
			},
		},
		{
			"fleet_probe_consecutive_failures", "Number of failed probes since the last successful one.", rowsTarget,
			always(func(w *TextWriter, r row) float64 { return float64(target(w, r).ConsecutiveFailures) }),
		},
		{
			"fleet_probe_failure_info", "Reason of the last probe's failure; present with value 1 only while the last probe failed.", rowsFailure,
			always(func(*TextWriter, row) float64 { return 1 }),
		},
		{
			"fleet_icmp_rtt_seconds", "Mean round-trip time of the replies to the last ICMP probe in seconds; absent when no reply came.", rowsICMP,
			func(w *TextWriter, r row) (float64, bool) {
				t := target(w, r)
				return t.ICMP.RTT.Seconds(), t.ICMP.LastReceived > 0
			},
		},
		{
			"fleet_icmp_packets_sent_total", "Number of ICMP echo requests sent.", rowsICMP,
			always(func(w *TextWriter, r row) float64 { return float64(target(w, r).ICMP.PacketsSent) }),
		},
		{
			"fleet_icmp_packets_received_total", "Number of ICMP echo replies received.", rowsICMP,
			always(func(w *TextWriter, r row) float64 { return float64(target(w, r).ICMP.PacketsReceived) }),
		},
		{
			"fleet_ssh_phase_seconds", "Duration of each phase reached by the last SSH probe that established a connection, in seconds.", rowsPhase,
			always(func(w *TextWriter, r row) float64 {
				s := target(w, r).SSH
				switch r.x {
				case 0:
					return s.Auth.Seconds()
				case 1:
					return s.Connect.Seconds()
				default:
					return s.Handshake.Seconds()
				}
			}),
		},
		{
			"fleet_ssh_command_duration_seconds", "Wall time of the command in the last SSH probe in seconds.", rowsCommand,
			always(func(w *TextWriter, r row) float64 { return command(w, r).Duration.Seconds() }),
		},
		{
			"fleet_ssh_command_exit_status", "Exit status of the command in the last SSH probe; -1 when it had none (signal, timeout, dropped connection).", rowsCommand,
			always(func(w *TextWriter, r row) float64 { return float64(command(w, r).ExitStatus) }),
		},
		{
			"fleet_ssh_command_output_hash", "The first 52 bits of the SHA-256 of the command's standard output in the last SSH probe.", rowsCommand,
			func(w *TextWriter, r row) (float64, bool) {
				c := command(w, r)
				return float64(c.Hash), c.OutputRead
			},
		},
		{
			"fleet_ssh_command_output_bytes", "Size of the command's standard output in the last SSH probe in bytes.", rowsCommand,
			func(w *TextWriter, r row) (float64, bool) {
				c := command(w, r)
				return float64(c.Bytes), c.OutputRead
			},
		},
		{
			"fleet_ssh_command_output_changed_timestamp_seconds", "Unix time of the end of the probe that first saw the current output hash of the command.", rowsCommand,
			func(w *TextWriter, r row) (float64, bool) {
				c := command(w, r)
				return unixSeconds(c.HashChanged), !c.HashChanged.IsZero()
			},
		},
		{
			"fleet_targets", "Number of configured targets.", rowsTargets,
			always(func(w *TextWriter, r row) float64 { return float64(w.snap.SetProbes[r.t].Targets) }),
		},
		{
			"fleet_probes_total", "Number of probe results received, by result.", rowsProbes,
			always(func(w *TextWriter, r row) float64 {
				sp := &w.snap.SetProbes[r.t]
				if r.x == 1 {
					return float64(sp.Successes)
				}
				return float64(sp.Failures)
			}),
		},
	}
	for i := range fams {
		f := &fams[i]
		typ := "gauge"
		if strings.HasSuffix(f.name, "_total") {
			typ = "counter"
		}
		// The header field holds the HELP text until here.
		var b []byte
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = appendEscapedHelp(b, f.header)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, typ...)
		b = append(b, '\n')
		f.header = string(b)
	}
	slices.SortFunc(fams, func(a, b textFamily) int { return cmp.Compare(a.name, b.name) })
	return fams
}

// TextFamilies returns the names of the families a TextWriter can write,
// sorted. They are the families NewCollector emits.
func TextFamilies() []string {
	fams := newTextFamilies()
	names := make([]string, len(fams))
	for i, f := range fams {
		names[i] = f.name
	}
	return names
}

// TextWriter writes Snapshots in the Prometheus text exposition format
// 0.0.4: the same families, HELP and TYPE lines, label order, series order
// and number formatting as a prometheus.Registry holding only NewCollector,
// encoded by expfmt, at a fraction of the cost and with few allocations.
//
// A TextWriter keeps its buffers between calls, so a scrape of the same
// fleet allocates almost nothing. It is not safe for concurrent use; keep
// one per goroutine or share them through a sync.Pool.
type TextWriter struct {
	fams   []textFamily
	layout *textLayout

	// State of the current Write call.
	snap *Snapshot
	out  io.Writer
	buf  []byte
	err  error
	// vals holds len(layout.baseNames) label values per host group.
	vals []string
	rows [numRowKinds][]row
	// labels holds the rendered label sets (`{...}`) of the row kinds that
	// several families share, so each is escaped once per scrape rather
	// than once per family: per host group for rowsHost and rowsICMP, per
	// row position for rowsTarget and rowsCommand. The i-th label set of
	// kind k is labels[ends[k][i]:ends[k][i+1]].
	labels []byte
	ends   [numRowKinds][]int
	// setVals caches the static label values of each set, in baseNames
	// order with set and host left empty.
	setVals map[string][]string
}

// NewTextWriter returns a TextWriter with empty buffers.
func NewTextWriter() *TextWriter {
	return &TextWriter{fams: newTextFamilies(), setVals: map[string][]string{}}
}

// WriteText writes the snapshot's per-target and health families to out in
// the text exposition format; see TextWriter. Callers that write often
// should keep a TextWriter, which reuses its buffers.
func (s *Snapshot) WriteText(out io.Writer) error {
	return NewTextWriter().Write(out, s, nil)
}

// Write writes the families of s to out, skipping those for which keep
// returns false (nil keeps all). Families without series are left out, as
// the registry leaves them out. It holds no lock: s is a copy. It returns
// the first error of out.
func (w *TextWriter) Write(out io.Writer, s *Snapshot, keep func(family string) bool) error {
	if w.layout == nil || !slices.Equal(w.layout.labelNames, s.LabelNames) {
		w.layout = newTextLayout(s.LabelNames)
	}
	w.snap, w.out, w.err = s, out, nil
	if cap(w.buf) < textFlushSize+4096 {
		w.buf = make([]byte, 0, textFlushSize+4096)
	}
	w.buf = w.buf[:0]
	defer func() {
		// Drop the references into the snapshot and to out; keep the
		// buffers.
		w.snap, w.out = nil, nil
		clear(w.vals)
		w.vals = w.vals[:0]
		clear(w.setVals)
	}()

	var need [numRowKinds]bool
	for _, f := range w.fams {
		if keep == nil || keep(f.name) {
			need[f.rows] = true
		}
	}
	w.buildRows(&need)
	for _, f := range w.fams {
		if !need[f.rows] || (keep != nil && !keep(f.name)) {
			continue
		}
		w.family(&f)
		if w.err != nil {
			return w.err
		}
	}
	w.flush()
	return w.err
}

// buildRows fills the row lists, each in exposition order.
func (w *TextWriter) buildRows(need *[numRowKinds]bool) {
	for k := range w.rows {
		w.rows[k] = w.rows[k][:0]
	}
	s := w.snap
	ts, order := s.Targets, s.order
	if len(order) != len(ts) {
		// Not a snapshot of the store: group in Targets order, as the
		// collector does.
		order = nil
	}
	idx := func(i int) int32 {
		if order == nil {
			return int32(i)
		}
		return order[i]
	}
	anyHostRows := need[rowsHost] || need[rowsICMP] || need[rowsTarget] || need[rowsFailure] || need[rowsPhase] || need[rowsCommand]
	g := int32(0)
	for i := 0; anyHostRows && i < len(ts); {
		first := &ts[idx(i)]
		j := i + 1
		for ; j < len(ts); j++ {
			t := ts[idx(j)].Target
			if t.Set != first.Target.Set || t.Host != first.Target.Host {
				break
			}
		}
		if w.group(g, i, j, idx) {
			w.vals = append(w.vals, w.baseValues(first.Target)...)
			g++
		}
		i = j
	}
	if need[rowsTargets] || need[rowsProbes] {
		for i := range s.SetProbes {
			w.rows[rowsTargets] = append(w.rows[rowsTargets], row{t: int32(i)})
			w.rows[rowsProbes] = append(w.rows[rowsProbes], row{t: int32(i)}, row{t: int32(i), x: 1})
		}
	}
	for k := range w.rows {
		if !need[k] {
			continue
		}
		rows := w.rows[k]
		slots := w.layout.slots[k]
		less := func(a, b row) int { return w.compare(slots, a, b) }
		// The store's order already is the registry's order for most
		// layouts; only a label that sorts between the base labels (e.g.
		// probe before set when one host name is in two sets, or a second
		// command) needs a sort.
		if !slices.IsSortedFunc(rows, less) {
			slices.SortStableFunc(rows, less)
		}
	}

	// Render the shared label sets. Host and ICMP rows have the same labels
	// for a group, so those are rendered per group.
	w.labels = w.labels[:0]
	for k := range w.ends {
		w.ends[k] = w.ends[k][:0]
	}
	if need[rowsHost] || need[rowsICMP] {
		slots := w.layout.slots[rowsHost]
		w.ends[rowsHost] = append(w.ends[rowsHost], len(w.labels))
		for gi := range g {
			w.labels = w.appendLabels(w.labels, slots, row{g: gi})
			w.ends[rowsHost] = append(w.ends[rowsHost], len(w.labels))
		}
	}
	for _, k := range [...]rowKind{rowsTarget, rowsCommand} {
		if !need[k] {
			continue
		}
		slots := w.layout.slots[k]
		w.ends[k] = append(w.ends[k], len(w.labels))
		for _, r := range w.rows[k] {
			w.labels = w.appendLabels(w.labels, slots, r)
			w.ends[k] = append(w.ends[k], len(w.labels))
		}
	}
}

// labelsOf returns the pre-rendered label set of the i-th row r of kind k,
// or nil when kind k is not pre-rendered.
func (w *TextWriter) labelsOf(k rowKind, i int, r row) []byte {
	switch k {
	case rowsHost, rowsICMP:
		i, k = int(r.g), rowsHost
	case rowsTarget, rowsCommand:
	default:
		return nil
	}
	return w.labels[w.ends[k][i]:w.ends[k][i+1]]
}

// appendLabels appends the label set of row r: `{name="value",...}`.
func (w *TextWriter) appendLabels(buf []byte, slots []slot, r row) []byte {
	for i := range slots {
		sl := &slots[i]
		buf = append(buf, sl.prefix...)
		buf = appendEscaped(buf, w.value(sl, r))
		buf = append(buf, '"')
	}
	return append(buf, '}')
}

// group appends the rows of the targets idx(i) to idx(j-1), the targets of
// one host, as group g and reports whether the host has any result; a host
// without one gets no rows.
func (w *TextWriter) group(g int32, i, j int, idx func(int) int32) bool {
	ts := w.snap.Targets
	has, up := false, false
	for k := i; k < j; k++ {
		ti := idx(k)
		t := &ts[ti]
		if !t.HasResult {
			continue
		}
		has = true
		up = up || t.Success
		r := row{g: g, t: ti}
		w.rows[rowsTarget] = append(w.rows[rowsTarget], r)
		if !t.Success {
			w.rows[rowsFailure] = append(w.rows[rowsFailure], r)
		}
		switch t.Target.Probe {
		case config.ProbeICMP:
			w.rows[rowsICMP] = append(w.rows[rowsICMP], r)
		case config.ProbeSSH:
			s := t.SSH
			if s == nil {
				break
			}
			if s.HasPhases {
				for x, v := range [3]int64{int64(s.Auth), int64(s.Connect), int64(s.Handshake)} {
					if v > 0 {
						w.rows[rowsPhase] = append(w.rows[rowsPhase], row{g: g, t: ti, x: int32(x)})
					}
				}
			}
			for x := range s.Commands {
				if s.Commands[x].Ran {
					w.rows[rowsCommand] = append(w.rows[rowsCommand], row{g: g, t: ti, x: int32(x)})
				}
			}
		}
	}
	if !has {
		return false
	}
	w.rows[rowsHost] = append(w.rows[rowsHost], row{g: g, t: -1, x: int32(boolFloat(up))})
	return true
}

// baseValues returns t's values of set, host and the static labels in
// baseNames order. The returned slice is scratch space, valid until the
// next call.
func (w *TextWriter) baseValues(t *config.Target) []string {
	vals, ok := w.setVals[t.Set]
	if !ok {
		vals = make([]string, len(w.layout.baseNames))
		for i, si := range w.layout.static {
			switch si {
			case baseSet:
				vals[i] = t.Set
			case baseHost:
			default:
				vals[i] = t.Labels[w.layout.labelNames[si]]
			}
		}
		w.setVals[t.Set] = vals
	}
	for i, si := range w.layout.static {
		if si == baseHost {
			vals[i] = t.Host
		}
	}
	return vals
}

// value returns the value of label slot sl of row r.
func (w *TextWriter) value(sl *slot, r row) string {
	switch sl.kind {
	case slotBase:
		return w.vals[int(r.g)*len(w.layout.baseNames)+sl.base]
	case slotProbe:
		return w.snap.Targets[r.t].Target.Probe
	case slotReason:
		return string(w.snap.Targets[r.t].Reason)
	case slotPhase:
		switch r.x {
		case 0:
			return phaseAuth
		case 1:
			return phaseConnect
		default:
			return phaseHandshake
		}
	case slotCommand:
		return w.snap.Targets[r.t].SSH.Commands[r.x].Name
	case slotSPSet:
		return w.snap.SetProbes[r.t].Set
	case slotSPProbe:
		return w.snap.SetProbes[r.t].Probe
	default:
		if r.x == 1 {
			return resultSuccess
		}
		return resultFailure
	}
}

// compare orders rows as the registry orders series: by label values taken
// in label name order.
func (w *TextWriter) compare(slots []slot, a, b row) int {
	for i := range slots {
		if c := strings.Compare(w.value(&slots[i], a), w.value(&slots[i], b)); c != 0 {
			return c
		}
	}
	return 0
}

// family writes one family: its header, then one line per existing series.
func (w *TextWriter) family(f *textFamily) {
	slots := w.layout.slots[f.rows]
	header := false
	buf := w.buf
	for i, r := range w.rows[f.rows] {
		v, ok := f.value(w, r)
		if !ok {
			continue
		}
		if !header {
			buf = append(buf, f.header...)
			header = true
		}
		buf = append(buf, f.name...)
		if l := w.labelsOf(f.rows, i, r); l != nil {
			buf = append(buf, l...)
		} else {
			buf = w.appendLabels(buf, slots, r)
		}
		buf = append(buf, ' ')
		buf = appendFloat(buf, v)
		buf = append(buf, '\n')
		if len(buf) >= textFlushSize {
			w.buf = buf
			w.flush()
			if w.err != nil {
				return
			}
			buf = w.buf
		}
	}
	w.buf = buf
}

// flush hands the buffer to the underlying writer.
func (w *TextWriter) flush() {
	if w.err == nil && len(w.buf) > 0 {
		_, w.err = w.out.Write(w.buf)
	}
	w.buf = w.buf[:0]
}

// appendEscaped appends a label value escaped as the text format requires:
// backslash, double quote and newline get a backslash.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\', '"', '\n':
			return appendEscapedFrom(b, s, i, true)
		}
	}
	return append(b, s...)
}

// appendEscapedHelp appends a HELP text: backslash and newline are escaped,
// double quotes are not.
func appendEscapedHelp(b []byte, s string) []byte {
	return appendEscapedFrom(b, s, 0, false)
}

// appendEscapedFrom appends s, escaping from index i on; s[:i] needs none.
func appendEscapedFrom(b []byte, s string, i int, quote bool) []byte {
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat formats f as expfmt's writeFloat does: shortest 'g' form,
// with 0, 1 and -1 spelt out (so -0 prints as 0) and NaN, +Inf and -Inf as
// in the text format.
func appendFloat(b []byte, f float64) []byte {
	switch {
	case f == 1:
		return append(b, '1')
	case f == 0:
		return append(b, '0')
	case f == -1:
		return append(b, "-1"...)
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, +1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}
