package main

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/fleet-exporter/fleet_exporter/collector"
)

// metricsContentType is the only format the handler writes: the text
// exposition format 0.0.4, which every Prometheus version accepts whatever
// its Accept header prefers.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// metricsBufferSize is the write buffer of one scrape.
const metricsBufferSize = 64 << 10

// metricsHandler serves /metrics (issue 3). It writes the self-metrics
// registry (Go, process, build info, pool, reload, promhttp) through expfmt
// as promhttp does, then appends the per-target families straight from a
// store snapshot with collector.TextWriter, which skips the registry's
// per-series checks and sorting that dominate a big scrape. The store's
// collector must therefore not be registered in the registry it serves; if
// it is, its families are skipped so that none is written twice.
//
// Like promhttp.HandlerFor it bounds concurrent scrapes (503 when full),
// compresses with gzip when the client accepts it and counts its errors in
// promhttp_metric_handler_errors_total. Wrap it with
// promhttp.InstrumentMetricHandler for the request metrics.
type metricsHandler struct {
	gatherer prometheus.Gatherer
	snapshot func() *collector.Snapshot
	logger   *slog.Logger
	// sem bounds the scrapes in flight; nil means unbounded.
	sem         chan struct{}
	maxRequests int
	errors      *prometheus.CounterVec
	// owned holds the families the TextWriter writes.
	owned map[string]bool
	// warned is set once a registry family clashing with owned was logged.
	warned atomic.Bool

	// Per-scrape buffers, reused across scrapes.
	writers sync.Pool // *collector.TextWriter
	bufs    sync.Pool // *bufio.Writer
	gzips   sync.Pool // *gzip.Writer
}

// newMetricsHandler returns the /metrics handler serving reg and the
// snapshots returned by snapshot. maxRequests bounds the concurrent scrapes
// (0 or less: no bound). It registers promhttp_metric_handler_errors_total
// with reg, or reuses the one already registered.
func newMetricsHandler(reg *prometheus.Registry, snapshot func() *collector.Snapshot, maxRequests int, logger *slog.Logger) http.Handler {
	h := &metricsHandler{
		gatherer:    reg,
		snapshot:    snapshot,
		logger:      logger,
		maxRequests: maxRequests,
		owned:       map[string]bool{},
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "promhttp_metric_handler_errors_total",
			Help: "Total number of internal errors encountered by the promhttp metric handler.",
		}, []string{"cause"}),
	}
	if maxRequests > 0 {
		h.sem = make(chan struct{}, maxRequests)
	}
	for _, name := range collector.TextFamilies() {
		h.owned[name] = true
	}
	h.errors.WithLabelValues("gathering")
	h.errors.WithLabelValues("encoding")
	if err := reg.Register(h.errors); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			h.errors = are.ExistingCollector.(*prometheus.CounterVec)
		} else {
			// Same behaviour as promhttp.HandlerFor: a clash with another
			// collector of that name is a programming error.
			panic(err)
		}
	}
	return h
}

// ServeHTTP implements http.Handler.
func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.sem != nil {
		select {
		case h.sem <- struct{}{}:
			defer func() { <-h.sem }()
		default:
			http.Error(w, fmt.Sprintf("Limit of concurrent requests reached (%d), try again later.", h.maxRequests),
				http.StatusServiceUnavailable)
			return
		}
	}

	mfs, err := h.gatherer.Gather()
	if err != nil {
		// Like promhttp with ContinueOnError: serve what was gathered.
		h.logger.Error("Error gathering metrics", "err", err)
		h.errors.WithLabelValues("gathering").Inc()
	}
	// The snapshot is a copy: writing it holds no lock the probes need.
	snap := h.snapshot()

	var keep func(string) bool
	if names := r.URL.Query()["name[]"]; len(names) > 0 {
		// Same filter as promhttp's name[] parameter.
		want := make(map[string]bool, len(names))
		for _, n := range names {
			want[n] = true
		}
		keep = func(name string) bool { return want[name] }
	}

	header := w.Header()
	header.Set("Content-Type", metricsContentType)
	header.Add("Vary", "Accept-Encoding")
	var out io.Writer = w
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		header.Set("Content-Encoding", "gzip")
		gz := h.gzipWriter(w)
		defer func() {
			if err := gz.Close(); err != nil {
				h.encodingError(err)
			}
			h.gzips.Put(gz)
		}()
		out = gz
	}
	bw, _ := h.bufs.Get().(*bufio.Writer)
	if bw == nil {
		bw = bufio.NewWriterSize(out, metricsBufferSize)
	} else {
		bw.Reset(out)
	}
	defer func() {
		bw.Reset(nil)
		h.bufs.Put(bw)
	}()

	if err := h.write(bw, mfs, snap, keep); err != nil {
		h.encodingError(err)
		return
	}
	if err := bw.Flush(); err != nil {
		h.encodingError(err)
	}
}

// write writes the registry's families, then the snapshot's.
func (h *metricsHandler) write(bw *bufio.Writer, mfs []*dto.MetricFamily, snap *collector.Snapshot, keep func(string) bool) error {
	enc := expfmt.NewEncoder(bw, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		name := mf.GetName()
		if keep != nil && !keep(name) {
			continue
		}
		if h.owned[name] {
			if !h.warned.Swap(true) {
				h.logger.Warn("A registered collector exports a family the store's text writer owns; serving the store's", "family", name)
			}
			continue
		}
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	tw, _ := h.writers.Get().(*collector.TextWriter)
	if tw == nil {
		tw = collector.NewTextWriter()
	}
	defer h.writers.Put(tw)
	return tw.Write(bw, snap, keep)
}

// gzipWriter returns a pooled gzip writer writing to w.
func (h *metricsHandler) gzipWriter(w io.Writer) *gzip.Writer {
	if gz, ok := h.gzips.Get().(*gzip.Writer); ok {
		gz.Reset(w)
		return gz
	}
	// BestSpeed: on the text of 100,000 hosts it is four to five times
	// faster than the default level for output only a few per cent larger,
	// and compression would otherwise dominate a large scrape.
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		// Only an invalid level fails.
		panic(err)
	}
	return gz
}

// encodingError logs and counts an error while writing the response. The
// status line has been sent by then, so the scrape just ends short.
func (h *metricsHandler) encodingError(err error) {
	h.logger.Error("Error writing metrics", "err", err)
	h.errors.WithLabelValues("encoding").Inc()
}

// acceptsGzip reports whether an Accept-Encoding header prefers gzip over
// the identity encoding, with the rules of promhttp's negotiation: the best
// q-value wins, "*" matches both, a tie goes to identity and q=0 refuses.
func acceptsGzip(values []string) bool {
	qGzip, qIdentity := -1.0, -1.0
	for _, v := range values {
		for spec := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(spec, ";")
			coding = strings.TrimSpace(coding)
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(k), "q") {
					continue
				}
				f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
				if err != nil {
					f = 0
				}
				q = f
			}
			switch {
			case coding == "*":
				qGzip, qIdentity = max(qGzip, q), max(qIdentity, q)
			case strings.EqualFold(coding, "gzip"):
				qGzip = max(qGzip, q)
			case strings.EqualFold(coding, "identity"):
				qIdentity = max(qIdentity, q)
			}
		}
	}
	return qGzip > 0 && qGzip > qIdentity
}
