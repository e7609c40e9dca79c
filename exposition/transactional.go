package exposition

import (
	"cmp"
	"log/slog"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleet-exporter/fleet_exporter/collector"
)

// NewTransactionalHandler returns the other road to /metrics, kept as the
// reference the tests and benchmarks compare Handler with:
// promhttp.HandlerForTransactional over a prometheus.TransactionalGatherer
// that merges the self-metrics registry with a collector.Gatherer of the
// store's snapshots, with the same error handling, request bound and
// OpenMetrics negotiation as Handler. Every format goes through expfmt's
// encoders there. The daemon serves Handler, which BENCHMARKS.md shows to be
// faster for the text formats.
func NewTransactionalHandler(o Options) http.Handler {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &mergedGatherer{self: o.Registry, store: collector.NewGatherer(o.Snapshot)}
	return promhttp.HandlerForTransactional(g, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(logger.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            o.Registry,
		MaxRequestsInFlight: o.MaxRequestsInFlight,
		AcceptedFormats:     offeredFormats(),
		OfferedCompressions: []promhttp.Compression{promhttp.Identity, promhttp.Gzip},
	})
}

// mergedGatherer is a TransactionalGatherer of a registry's families and a
// store's, sorted by name.
type mergedGatherer struct {
	self  prometheus.Gatherer
	store *collector.Gatherer
}

// Gather implements prometheus.TransactionalGatherer.
func (m *mergedGatherer) Gather() ([]*dto.MetricFamily, func(), error) {
	self, err := m.self.Gather()
	store, done, _ := m.store.Gather()
	out := make([]*dto.MetricFamily, 0, len(self)+len(store))
	out = append(out, self...)
	out = append(out, store...)
	slices.SortStableFunc(out, func(a, b *dto.MetricFamily) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out, done, err
}
