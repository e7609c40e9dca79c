package collector

import (
	"slices"
	"strings"
	"sync"

	dto "github.com/prometheus/client_model/go"
)

// Gatherer turns snapshots straight into dto.MetricFamily values, without a
// prometheus.Registry in between: the families, series and sort order a
// Registry holding only NewCollector gathers, but none of the registry's
// per-series consistency checks and hashing, and with every dto value carved
// from buffers that are reused once the caller is done with a result. It
// implements prometheus.TransactionalGatherer, so promhttp's
// HandlerForTransactional can serve it, and it is what the exposition
// package encodes the protobuf format from.
//
// A Gatherer is safe for concurrent use; concurrent gathers use separate
// buffers.
type Gatherer struct {
	snapshot func() *Snapshot
	descs    descCache
	states   sync.Pool // *gatherState
}

// NewGatherer returns a Gatherer whose Gather reads one snapshot from
// snapshot per call (typically Store.Snapshot).
func NewGatherer(snapshot func() *Snapshot) *Gatherer {
	return &Gatherer{snapshot: snapshot}
}

// Gather implements prometheus.TransactionalGatherer. The families are
// valid until done is called; after that their memory is reused. The error
// is always nil: a snapshot always converts.
func (g *Gatherer) Gather() (_ []*dto.MetricFamily, done func(), _ error) {
	mfs, done := g.GatherSnapshot(g.snapshot())
	return mfs, done, nil
}

// GatherSnapshot is Gather for a given snapshot.
func (g *Gatherer) GatherSnapshot(snap *Snapshot) (_ []*dto.MetricFamily, done func()) {
	d := g.descs.get(snap.LabelNames)
	st, _ := g.states.Get().(*gatherState)
	if st == nil {
		st = newGatherState()
	}
	st.sink.d = d
	st.sink.slab.reset()
	for i := range st.sink.fams {
		st.sink.fams[i].Metric = st.sink.fams[i].Metric[:0]
	}
	st.em.reset(d, &st.sink)
	st.em.run(snap)

	st.out = st.out[:0]
	for _, id := range st.order {
		mf := &st.sink.fams[id]
		if len(mf.Metric) == 0 {
			// A registry leaves out families without series.
			continue
		}
		if !slices.IsSortedFunc(mf.Metric, compareMetrics) {
			// The store's order is the registry's for most layouts; see
			// TextWriter.buildRows for the exceptions.
			slices.SortFunc(mf.Metric, compareMetrics)
		}
		st.out = append(st.out, mf)
	}
	return st.out, func() {
		// Drop the references into the snapshot before pooling.
		st.em.reset(d, &st.sink)
		g.states.Put(st)
	}
}

// compareMetrics orders metrics as a registry does: by their label values
// taken in label name order (the label names of a family agree).
func compareMetrics(a, b *dto.Metric) int {
	if len(a.Label) != len(b.Label) {
		return len(a.Label) - len(b.Label)
	}
	for i, lp := range a.Label {
		if c := strings.Compare(lp.GetValue(), b.Label[i].GetValue()); c != 0 {
			return c
		}
	}
	return 0
}

// gatherState holds the reusable buffers of one gather.
type gatherState struct {
	em    emitter
	sink  famSink
	order []famID
	out   []*dto.MetricFamily
}

func newGatherState() *gatherState {
	st := &gatherState{}
	t := familyTable()
	st.order = familyOrder(t)
	for id := range t {
		f := &t[id]
		mf := &st.sink.fams[id]
		name, help, typ := f.name, f.help, f.typ
		mf.Name, mf.Help, mf.Type = &name, &help, &typ
	}
	return st
}

// famSink appends every series to its family.
type famSink struct {
	d    *descs
	fams [numFamilies]dto.MetricFamily
	slab slab[dtoSeries]
}

// dtoSeries is one metric with the value it points at.
type dtoSeries struct {
	m dto.Metric
	g dto.Gauge
	c dto.Counter
	v float64
}

func (s *famSink) series(id famID, labels []*dto.LabelPair, v float64) {
	p := s.slab.next()
	p.v = v
	p.m.Label = labels
	if s.d.fams[id].typ == dto.MetricType_COUNTER {
		p.c.Value = &p.v
		p.m.Counter, p.m.Gauge = &p.c, nil
	} else {
		p.g.Value = &p.v
		p.m.Gauge, p.m.Counter = &p.g, nil
	}
	s.fams[id].Metric = append(s.fams[id].Metric, &p.m)
}
