package testutil

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Series gathers g and returns, in gather order, the series of the family
// name that carry every label pair of labels (an empty value matches a
// missing label, as in PromQL); none when the family is missing. A gather
// error fails the test.
func Series(tb testing.TB, g prometheus.Gatherer, name string, labels map[string]string) []*dto.Metric {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	var out []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if labelValue(m, k) != v {
					continue next
				}
			}
			out = append(out, m)
		}
	}
	return out
}

// labelValue returns the value of m's label name, "" without it.
func labelValue(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}
