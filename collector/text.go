package collector

import (
	"bytes"
	"cmp"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// The text fast path. Gathering a large fleet through a prometheus.Registry
// costs far more than producing the series: the registry builds a dto.Metric
// per series, hashes and checks every label set, sorts every family and the
// expfmt encoder then walks the protobuf structs again. TextWriter skips all
// of that and writes the per-target and health families of a Snapshot
// straight into a byte buffer, byte for byte what the Registry + expfmt path
// produces for NewCollector in the same format (text_test.go proves it), so
// the two remain interchangeable.

// textFlushSize is the buffer size at which a TextWriter hands its output to
// the underlying writer: large enough that a big scrape costs few writes,
// small enough to stay in cache.
const textFlushSize = 64 << 10

// row is one series before its value is read. g is the host group (index
// into the writer's label values), t indexes Snapshot.Targets (SetProbes for
// the health rows), x is the phase, the command index, the result (1 for
// success) or, for host rows, 1 when the host is up.
type row struct{ g, t, x int32 }

// slotKind says where a label value comes from.
type slotKind uint8

const (
	slotBase          slotKind = iota // set, host or a static label: the group's values
	slotProbe                         // the target's probe type
	slotPort                          // the target's probed tcp port
	slotReason                        // the target's failure reason
	slotPhase                         // the SSH phase of the row
	slotCommand                       // the SSH command of the row
	slotSPSet                         // the set of a SetProbes entry
	slotSPProbe                       // the probe of a SetProbes entry
	slotResult                        // success or failure
	slotSHA256                        // the full output hash of the row's command
	slotValue                         // the value label of the row's command
	slotServerVersion                 // the server version of the target's connection
	slotKEX                           // its key exchange
	slotCipher                        // its cipher
	slotMAC                           // its MAC
	slotHostKeyAlg                    // its host key algorithm
	slotDriftSet                      // the set of a drift row
	slotDriftCommand                  // the command of a drift row
	slotKeyType                       // the type of the target's host key
	slotFingerprint                   // its SHA-256 fingerprint
)

// slot is one label of a layout, in the exposition's label order.
type slot struct {
	kind slotKind
	// base is the index into a group's label values for slotBase.
	base int
	// prefix is `{name="` for the first label and `,name="` for the others.
	prefix string
	// name is the label name, for the protobuf format.
	name string
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
	for k := range numRowKinds {
		if !k.perHost() {
			// The health families have fixed labels only.
			var ls []layoutLabel
			for _, n := range k.extras() {
				ls = append(ls, layoutLabel{n, healthSlot(k, n), -1})
			}
			slices.SortFunc(ls, func(a, b layoutLabel) int { return cmp.Compare(a.name, b.name) })
			l.slots[k] = slotsOf(ls)
			continue
		}
		ls := make([]layoutLabel, 0, len(l.baseNames)+2)
		for i, n := range l.baseNames {
			ls = append(ls, layoutLabel{n, slotBase, i})
		}
		for _, n := range k.extras() {
			ls = append(ls, layoutLabel{n, hostSlot(n), -1})
		}
		// Stable, like the collector's label permutation.
		slices.SortStableFunc(ls, func(a, b layoutLabel) int { return cmp.Compare(a.name, b.name) })
		l.slots[k] = slotsOf(ls)
	}
	return l
}

// hostSlot returns where the value of the extra label name of a per-host
// row comes from.
func hostSlot(name string) slotKind {
	switch name {
	case labelProbe:
		return slotProbe
	case labelPort:
		return slotPort
	case labelReason:
		return slotReason
	case labelPhase:
		return slotPhase
	case labelSHA256:
		return slotSHA256
	case labelValue:
		return slotValue
	case labelServerVersion:
		return slotServerVersion
	case labelKEX:
		return slotKEX
	case labelCipher:
		return slotCipher
	case labelMAC:
		return slotMAC
	case labelHostKeyAlg:
		return slotHostKeyAlg
	case labelKeyType:
		return slotKeyType
	case labelFingerprint:
		return slotFingerprint
	default:
		return slotCommand
	}
}

// healthSlot returns where the value of label name of a health row of kind
// k comes from.
func healthSlot(k rowKind, name string) slotKind {
	if k == rowsDrift {
		if name == labelSet {
			return slotDriftSet
		}
		return slotDriftCommand
	}
	switch name {
	case labelSet:
		return slotSPSet
	case labelProbe:
		return slotSPProbe
	default:
		return slotResult
	}
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
		slots[i] = slot{kind: lb.kind, base: lb.base, prefix: string(append(p, `="`...)), name: lb.name}
	}
	return slots
}

// textFamily is one family of the exposition.
type textFamily struct {
	name string
	// header is the HELP and TYPE lines.
	header string
	typ    dto.MetricType
	rows   rowKind
	// value returns the sample of row r and whether the series exists.
	value func(w *TextWriter, r row) (float64, bool)
}

// textValues returns, per family, how a TextWriter reads the sample of a
// row.
func textValues() *[numFamilies]func(w *TextWriter, r row) (float64, bool) {
	target := func(w *TextWriter, r row) *TargetState { return &w.snap.Targets[r.t] }
	command := func(w *TextWriter, r row) *CommandState { return &target(w, r).SSH.Commands[r.x] }
	always := func(f func(w *TextWriter, r row) float64) func(w *TextWriter, r row) (float64, bool) {
		return func(w *TextWriter, r row) (float64, bool) { return f(w, r), true }
	}
	return &[numFamilies]func(w *TextWriter, r row) (float64, bool){
		famHostUp:       always(func(_ *TextWriter, r row) float64 { return float64(r.x) }),
		famProbeSuccess: always(func(w *TextWriter, r row) float64 { return boolFloat(target(w, r).Success) }),
		famProbeDuration: always(func(w *TextWriter, r row) float64 {
			return target(w, r).Duration.Seconds()
		}),
		famProbeLastRun: always(func(w *TextWriter, r row) float64 { return unixSeconds(target(w, r).LastRun) }),
		famProbeLastSuccess: func(w *TextWriter, r row) (float64, bool) {
			t := target(w, r)
			return unixSeconds(t.LastSuccess), !t.LastSuccess.IsZero()
		},
		famProbeConsecutiveFailures: always(func(w *TextWriter, r row) float64 {
			return float64(target(w, r).ConsecutiveFailures)
		}),
		famProbeFailureInfo: always(func(*TextWriter, row) float64 { return 1 }),
		famProbeIPAddrHash: func(w *TextWriter, r row) (float64, bool) {
			t := target(w, r)
			return addrHash(t.Addr), t.Addr.IsValid()
		},
		famProbeIPProtocol: func(w *TextWriter, r row) (float64, bool) {
			t := target(w, r)
			return addrProtocol(t.Addr), t.Addr.IsValid()
		},
		famICMPRTT: func(w *TextWriter, r row) (float64, bool) {
			t := target(w, r)
			return t.ICMP.RTT.Seconds(), t.ICMP.LastReceived > 0
		},
		famICMPSent:     always(func(w *TextWriter, r row) float64 { return float64(target(w, r).ICMP.PacketsSent) }),
		famICMPReceived: always(func(w *TextWriter, r row) float64 { return float64(target(w, r).ICMP.PacketsReceived) }),
		famSSHPhase: always(func(w *TextWriter, r row) float64 {
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
		famCmdDuration:   always(func(w *TextWriter, r row) float64 { return command(w, r).Duration.Seconds() }),
		famCmdExitStatus: always(func(w *TextWriter, r row) float64 { return float64(command(w, r).ExitStatus) }),
		famCmdHash: func(w *TextWriter, r row) (float64, bool) {
			c := command(w, r)
			return float64(c.Hash), c.HasHash()
		},
		famCmdBytes: func(w *TextWriter, r row) (float64, bool) {
			c := command(w, r)
			return float64(c.Bytes), c.HasHash()
		},
		famCmdOutputInfo: always(func(*TextWriter, row) float64 { return 1 }),
		famSSHConnInfo:   always(func(*TextWriter, row) float64 { return 1 }),
		famCmdChanged: func(w *TextWriter, r row) (float64, bool) {
			c := command(w, r)
			return unixSeconds(c.HashChanged), !c.HashChanged.IsZero()
		},
		famProbeFailingSince: func(w *TextWriter, r row) (float64, bool) {
			t := target(w, r)
			return unixSeconds(t.FailingSince), !t.FailingSince.IsZero()
		},
		famCmdDistinct: always(func(w *TextWriter, r row) float64 { return float64(w.drift[r.t].distinct) }),
		famHostKeyInfo: always(func(*TextWriter, row) float64 { return 1 }),
		famHostKeyChanged: always(func(w *TextWriter, r row) float64 {
			return hostKeyChanged(target(w, r).SSH.HostKey)
		}),
		famHostKeyShared: always(func(w *TextWriter, r row) float64 {
			return float64(w.shares[target(w, r).SSH.HostKey.FingerprintSHA256])
		}),
		famHostCertExpiry: func(w *TextWriter, r row) (float64, bool) {
			k := target(w, r).SSH.HostKey
			return unixSeconds(k.CertificateExpiry), k.HasCertificateExpiry()
		},
		famTargets: always(func(w *TextWriter, r row) float64 { return float64(w.snap.SetProbes[r.t].Targets) }),
		famProbesTotal: always(func(w *TextWriter, r row) float64 {
			sp := &w.snap.SetProbes[r.t]
			if r.x == 1 {
				return float64(sp.Successes)
			}
			return float64(sp.Failures)
		}),
	}
}

// writerFormat is the exposition format of a TextWriter.
type writerFormat uint8

const (
	formatText        writerFormat = iota // Prometheus text 0.0.4
	formatOpenMetrics                     // OpenMetrics 1.0 text
	formatProto                           // delimited protobuf
)

// newTextFamilies returns every family of the table in name order, as the
// registry sorts them, with the HELP and TYPE lines of the text format 0.0.4
// or of OpenMetrics 1.0: there a counter's HELP and TYPE name the family
// without its _total suffix, and HELP escapes quotes too. For protobuf the
// header holds the family's name, help and type fields.
func newTextFamilies(format writerFormat) []textFamily {
	t, values := familyTable(), textValues()
	fams := make([]textFamily, 0, numFamilies)
	openMetrics := format == formatOpenMetrics
	for _, id := range familyOrder(t) {
		f := &t[id]
		if format == formatProto {
			fams = append(fams, textFamily{name: f.name, header: string(protoFamilyHeader(f)), typ: f.typ, rows: f.rows, value: values[id]})
			continue
		}
		name, typ := f.name, "gauge"
		if f.typ == dto.MetricType_COUNTER {
			typ = "counter"
			if openMetrics {
				// Every counter of the table ends in _total;
				// TestFamilies checks it.
				name = strings.TrimSuffix(name, "_total")
			}
		}
		var b []byte
		b = append(b, "# HELP "...)
		b = append(b, name...)
		b = append(b, ' ')
		b = appendEscapedFrom(b, f.help, 0, openMetrics)
		b = append(b, "\n# TYPE "...)
		b = append(b, name...)
		b = append(b, ' ')
		b = append(b, typ...)
		b = append(b, '\n')
		fams = append(fams, textFamily{name: f.name, header: string(b), typ: f.typ, rows: f.rows, value: values[id]})
	}
	return fams
}

// TextWriter writes Snapshots in the Prometheus text exposition format
// 0.0.4 (NewTextWriter) or in OpenMetrics 1.0 text (NewOpenMetricsWriter):
// the same families, HELP and TYPE lines, label order, series order and
// number formatting as a prometheus.Registry holding only NewCollector,
// encoded by expfmt in that format, at a fraction of the cost and with few
// allocations.
//
// A TextWriter keeps its buffers between calls, so a scrape of the same
// fleet allocates almost nothing. It is not safe for concurrent use; keep
// one per goroutine or share them through a sync.Pool.
type TextWriter struct {
	// Yield, when set, is called between chunks of work (after every
	// flush and every yieldEvery targets or rows) instead of
	// runtime.Gosched, so that the caller can make a large scrape give way
	// to other work; it may block. The exposition handler sets it per
	// scrape.
	Yield func()

	fams   []textFamily
	layout *textLayout
	format writerFormat

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
	// drift holds the snapshot's drift rows while rowsDrift is needed,
	// shares its host counts per host key while rowsHostKey is.
	drift  []driftRow
	shares map[string]int
}

// NewTextWriter returns a TextWriter for the text format 0.0.4 with empty
// buffers.
func NewTextWriter() *TextWriter {
	return &TextWriter{fams: newTextFamilies(formatText), setVals: map[string][]string{}}
}

// NewOpenMetricsWriter returns a TextWriter for OpenMetrics 1.0 text with
// empty buffers. It writes families only: the caller ends the exposition
// with the "# EOF" line after whatever other families it writes.
//
// Counters are written without _created samples: the store keeps no
// creation time for its counters (the ICMP packet counters and
// fleet_probes_total start when a target or (set, probe) pair is first
// configured, and a reload that keeps a target keeps its counters), and a
// made-up one would be worse than none.
func NewOpenMetricsWriter() *TextWriter {
	return &TextWriter{fams: newTextFamilies(formatOpenMetrics), format: formatOpenMetrics, setVals: map[string][]string{}}
}

// NewProtobufWriter returns a TextWriter for the delimited protobuf format
// (each family a varint length followed by an io.prometheus.client
// MetricFamily message) with empty buffers. Its output is byte for byte
// what expfmt's FmtProtoDelim encoder writes for the registry's families.
func NewProtobufWriter() *TextWriter {
	return &TextWriter{fams: newTextFamilies(formatProto), format: formatProto, setVals: map[string][]string{}}
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
		w.snap, w.out, w.drift, w.shares = nil, nil, nil, nil
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
	anyHostRows := need[rowsHost] || need[rowsICMP] || need[rowsTarget] || need[rowsFailure] || need[rowsPhase] || need[rowsCommand] ||
		need[rowsCmdInfo] || need[rowsConn] || need[rowsHostKey] || need[rowsHostKeyInfo]
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
			if g%yieldEvery == 0 {
				w.yield()
			}
		}
		i = j
	}
	if need[rowsTargets] || need[rowsProbes] {
		for i := range s.SetProbes {
			w.rows[rowsTargets] = append(w.rows[rowsTargets], row{t: int32(i)})
			w.rows[rowsProbes] = append(w.rows[rowsProbes], row{t: int32(i)}, row{t: int32(i), x: 1})
		}
	}
	if need[rowsHostKey] {
		w.shares = s.hostKeyShares()
	}
	if need[rowsDrift] {
		w.drift = s.driftRows()
		for i := range w.drift {
			w.rows[rowsDrift] = append(w.rows[rowsDrift], row{t: int32(i)})
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

	// Render the shared label sets. Host, ICMP and host key rows have the
	// same labels for a group, so those are rendered per group.
	w.labels = w.labels[:0]
	for k := range w.ends {
		w.ends[k] = w.ends[k][:0]
	}
	if need[rowsHost] || need[rowsICMP] || need[rowsHostKey] {
		slots := w.layout.slots[rowsHost]
		w.ends[rowsHost] = append(w.ends[rowsHost], len(w.labels))
		for gi := range g {
			w.labels = w.appendLabels(w.labels, slots, row{g: gi})
			w.ends[rowsHost] = append(w.ends[rowsHost], len(w.labels))
			if gi%yieldEvery == yieldEvery-1 {
				w.yield()
			}
		}
	}
	for k := range numRowKinds {
		// Protobuf needs every label set's size before writing a
		// family, so there every kind is rendered ahead.
		if !need[k] || k == rowsHost || k == rowsICMP || k == rowsHostKey ||
			(w.format != formatProto && k != rowsTarget && k != rowsCommand) {
			continue
		}
		slots := w.layout.slots[k]
		w.ends[k] = append(w.ends[k], len(w.labels))
		for i, r := range w.rows[k] {
			w.labels = w.appendLabels(w.labels, slots, r)
			w.ends[k] = append(w.ends[k], len(w.labels))
			if i%yieldEvery == yieldEvery-1 {
				w.yield()
			}
		}
	}
}

// labelsOf returns the pre-rendered label set of the i-th row r of kind k,
// or nil when kind k is not pre-rendered.
func (w *TextWriter) labelsOf(k rowKind, i int, r row) []byte {
	switch {
	case k == rowsHost || k == rowsICMP || k == rowsHostKey:
		i, k = int(r.g), rowsHost
	case k == rowsTarget || k == rowsCommand || w.format == formatProto:
	default:
		return nil
	}
	return w.labels[w.ends[k][i]:w.ends[k][i+1]]
}

// appendLabels appends the label set of row r: `{name="value",...}`, or
// the label fields of a protobuf Metric.
func (w *TextWriter) appendLabels(buf []byte, slots []slot, r row) []byte {
	if w.format == formatProto {
		return w.appendProtoLabels(buf, slots, r)
	}
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
			if s.Conn != nil {
				w.rows[rowsConn] = append(w.rows[rowsConn], row{g: g, t: ti})
			}
			if s.HostKey != nil {
				w.rows[rowsHostKey] = append(w.rows[rowsHostKey], row{g: g, t: ti})
				w.rows[rowsHostKeyInfo] = append(w.rows[rowsHostKeyInfo], row{g: g, t: ti})
			}
			for x := range s.Commands {
				c := &s.Commands[x]
				if c.Exported() {
					w.rows[rowsCommand] = append(w.rows[rowsCommand], row{g: g, t: ti, x: int32(x)})
				}
				if c.SHA256 != "" {
					w.rows[rowsCmdInfo] = append(w.rows[rowsCmdInfo], row{g: g, t: ti, x: int32(x)})
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
	case slotPort:
		return w.snap.Targets[r.t].portLabel()
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
	case slotSHA256:
		return w.snap.Targets[r.t].SSH.Commands[r.x].SHA256
	case slotValue:
		return w.snap.Targets[r.t].SSH.Commands[r.x].Value
	case slotServerVersion:
		return w.snap.Targets[r.t].SSH.Conn.ServerVersion
	case slotKEX:
		return w.snap.Targets[r.t].SSH.Conn.KEX
	case slotCipher:
		return w.snap.Targets[r.t].SSH.Conn.Cipher
	case slotMAC:
		return w.snap.Targets[r.t].SSH.Conn.MAC
	case slotHostKeyAlg:
		return w.snap.Targets[r.t].SSH.Conn.HostKeyAlgorithm
	case slotKeyType:
		return w.snap.Targets[r.t].SSH.HostKey.Type
	case slotFingerprint:
		return w.snap.Targets[r.t].SSH.HostKey.FingerprintSHA256
	case slotSPSet:
		return w.snap.SetProbes[r.t].Set
	case slotSPProbe:
		return w.snap.SetProbes[r.t].Probe
	case slotDriftSet:
		return w.drift[r.t].set
	case slotDriftCommand:
		return w.drift[r.t].command
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
	if w.format == formatProto {
		w.protoFamily(f)
		return
	}
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
		if w.format == formatOpenMetrics {
			buf = appendOpenMetricsFloat(buf, v)
		} else {
			buf = appendFloat(buf, v)
		}
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

// flush hands the buffer to the underlying writer, then yields (see
// yieldEvery).
func (w *TextWriter) flush() {
	if w.err == nil && len(w.buf) > 0 {
		_, w.err = w.out.Write(w.buf)
	}
	w.buf = w.buf[:0]
	w.yield()
}

// yield gives way to other goroutines between two chunks of work: through
// Yield when it is set, else with runtime.Gosched.
func (w *TextWriter) yield() {
	if w.Yield != nil {
		w.Yield()
		return
	}
	runtime.Gosched()
}

// yieldEvery is how many targets or rows the writer goes through between
// two yields (see TextWriter.Yield), as it yields after every flush of
// textFlushSize bytes: a scrape of 100,000 targets is a second of CPU in
// one goroutine, and without yields the probe path's goroutines, woken by
// the network and the scheduler's timer, waited behind it for their time slice, which put
// every probe due during a scrape hundreds of milliseconds late on a busy
// 2-core machine. Yielding costs the scrape well under 1 %.
const yieldEvery = 1024

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

// appendOpenMetricsFloat formats f as expfmt's OpenMetrics writer does:
// like appendFloat, but a number with neither a dot nor an exponent gets
// ".0", so integers read as floats.
func appendOpenMetricsFloat(b []byte, f float64) []byte {
	switch {
	case f == 1:
		return append(b, "1.0"...)
	case f == 0:
		return append(b, "0.0"...)
	case f == -1:
		return append(b, "-1.0"...)
	case math.IsNaN(f) || math.IsInf(f, 0):
		return appendFloat(b, f)
	}
	n := len(b)
	b = strconv.AppendFloat(b, f, 'g', -1, 64)
	if !bytes.ContainsAny(b[n:], "e.") {
		b = append(b, '.', '0')
	}
	return b
}
