package exposition

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/fleet-exporter/fleet_exporter/collector"
)

// bufferSize is the write buffer of one scrape.
const bufferSize = 64 << 10

// Options configures a Handler.
type Options struct {
	// Registry holds the self-metrics. The handler registers
	// promhttp_metric_handler_errors_total with it (or reuses the one
	// registered already). The store's collector must not be registered
	// in it; if it is, its families are skipped so none is written twice.
	Registry *prometheus.Registry
	// Snapshot returns the store snapshot a scrape writes, typically
	// collector.Store.Snapshot.
	Snapshot func() *collector.Snapshot
	// MaxRequestsInFlight bounds the concurrent scrapes; more are answered
	// with 503. Zero or less means no bound.
	MaxRequestsInFlight int
	// MaxPause bounds how long in all one scrape's writer may pause while
	// other goroutines (the probes) wait for a CPU; see pacer. Zero or less
	// never pauses.
	MaxPause time.Duration
	// Logger receives the errors of gathering and writing; nil discards
	// them.
	Logger *slog.Logger
}

// Handler serves /metrics. Like promhttp.HandlerFor with ContinueOnError it
// bounds concurrent scrapes, negotiates the format from the Accept header,
// compresses with gzip when the client accepts it, honours the name[] query
// filter and counts its errors in promhttp_metric_handler_errors_total. Wrap
// it with promhttp.InstrumentMetricHandler for the request metrics.
type Handler struct {
	gatherer prometheus.Gatherer
	snapshot *sharedSnapshot
	writers  *writerBudget
	logger   *slog.Logger
	// sem bounds the scrapes in flight; nil means unbounded.
	sem         chan struct{}
	maxRequests int
	maxPause    time.Duration
	errors      *prometheus.CounterVec
	paused      prometheus.Counter
	// formats are the offered formats, in order of preference.
	formats []expfmt.Format
	// owned holds the families the store exports.
	owned map[string]bool
	// warned is set once a registry family clashing with owned was logged.
	warned atomic.Bool

	// Per-scrape buffers, reused across scrapes.
	texts  sync.Pool // *collector.TextWriter, text format 0.0.4
	oms    sync.Pool // *collector.TextWriter, OpenMetrics
	protos sync.Pool // *collector.TextWriter, protobuf
	bufs   sync.Pool // *bufio.Writer
	gzips  sync.Pool // *gzip.Writer
}

// NewHandler returns the /metrics handler for o.
func NewHandler(o Options) (*Handler, error) {
	if o.Registry == nil || o.Snapshot == nil {
		return nil, errors.New("exposition: Registry and Snapshot are required")
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	errs, err := registerErrors(o.Registry)
	if err != nil {
		return nil, err
	}
	paused, err := registerPaused(o.Registry)
	if err != nil {
		return nil, err
	}
	h := &Handler{
		gatherer:    o.Registry,
		snapshot:    &sharedSnapshot{take: o.Snapshot, now: time.Now},
		writers:     &writerBudget{budget: writerMemoryBudget},
		logger:      logger,
		maxRequests: o.MaxRequestsInFlight,
		maxPause:    o.MaxPause,
		errors:      errs,
		paused:      paused,
		formats:     offeredFormats(),
		owned:       map[string]bool{},
	}
	if o.MaxRequestsInFlight > 0 {
		h.sem = make(chan struct{}, o.MaxRequestsInFlight)
	}
	for _, f := range collector.Families() {
		h.owned[f.Name] = true
	}
	return h, nil
}

// offeredFormats returns the formats /metrics offers, in promhttp's order
// of preference with OpenMetrics enabled but without the two protobuf text
// formats, which no Prometheus asks for: among formats a client accepts
// equally, OpenMetrics wins, then protobuf, then text 0.0.4, which is also
// the answer to an Accept header that matches none.
func offeredFormats() []expfmt.Format {
	return []expfmt.Format{expfmt.FmtOpenMetrics_1_0_0, expfmt.FmtOpenMetrics_0_0_1, expfmt.FmtProtoDelim, expfmt.FmtText}
}

// registerErrors registers promhttp's error counter with reg, or returns
// the one registered already (by an earlier handler or by promhttp).
func registerErrors(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "promhttp_metric_handler_errors_total",
		Help: "Total number of internal errors encountered by the promhttp metric handler.",
	}, []string{"cause"})
	errs.WithLabelValues("gathering")
	errs.WithLabelValues("encoding")
	if err := reg.Register(errs); err != nil {
		are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
		if !ok {
			return nil, fmt.Errorf("exposition: register the error counter: %w", err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("exposition: promhttp_metric_handler_errors_total is registered as %T", are.ExistingCollector)
		}
		errs = existing
	}
	return errs, nil
}

// registerPaused registers the scrapes' pause counter with reg, or returns
// the one an earlier handler registered.
func registerPaused(reg prometheus.Registerer) (prometheus.Counter, error) {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fleet_scrape_paused_seconds_total",
		Help: "Total time /metrics responses paused so that other goroutines (the probes) waiting for a CPU ran first.",
	})
	if err := reg.Register(c); err != nil {
		are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
		if !ok {
			return nil, fmt.Errorf("exposition: register the pause counter: %w", err)
		}
		existing, ok := are.ExistingCollector.(prometheus.Counter)
		if !ok {
			return nil, fmt.Errorf("exposition: fleet_scrape_paused_seconds_total is registered as %T", are.ExistingCollector)
		}
		c = existing
	}
	return c, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	var keep func(string) bool
	if names := r.URL.Query()["name[]"]; len(names) > 0 {
		// Same filter as promhttp's name[] parameter.
		want := make(map[string]bool, len(names))
		for _, n := range names {
			want[n] = true
		}
		keep = func(name string) bool { return want[name] }
	}

	// The snapshot is a copy: writing it holds no lock the probes need.
	// Scrapes that overlap share one, so that a burst of them costs one
	// copy of the store, not one each. A scrape whose name[] filter keeps
	// no store family (a check of a few self-metrics) takes none: the copy
	// is in proportion to the fleet.
	var snap *collector.Snapshot
	if h.wantsStore(keep) {
		snap = h.snapshot.acquire()
		defer h.snapshot.release()
		// A scrape's writer holds buffers in proportion to the fleet; past
		// a memory budget, scrapes wait for a writer instead of each
		// taking one.
		if !h.writers.acquire(r.Context(), len(snap.Targets)) {
			return // the client went away while waiting
		}
		defer h.writers.release()
	}

	format := expfmt.NegotiateAccept(r.Header, h.formats...)
	header := w.Header()
	header.Set("Content-Type", string(format))
	header.Add("Vary", "Accept")
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
		bw = bufio.NewWriterSize(out, bufferSize)
	} else {
		bw.Reset(out)
	}
	defer func() {
		bw.Reset(nil)
		h.bufs.Put(bw)
	}()

	pace := newPacer(pauseBudget(r, h.maxPause))
	defer func() { h.paused.Add(pace.paused.Seconds()) }()
	if err := h.write(bw, format, mfs, snap, keep, pace.yield); err != nil {
		h.encodingError(err)
		return
	}
	if err := bw.Flush(); err != nil {
		h.encodingError(err)
	}
}

// wantsStore reports whether a scrape filtered by keep (nil: no filter)
// writes any family of the store.
func (h *Handler) wantsStore(keep func(string) bool) bool {
	if keep == nil {
		return true
	}
	for name := range h.owned {
		if keep(name) {
			return true
		}
	}
	return false
}

// write writes the registry's families, then the snapshot's (none when
// snap is nil), in format.
func (h *Handler) write(bw *bufio.Writer, format expfmt.Format, mfs []*dto.MetricFamily, snap *collector.Snapshot, keep func(string) bool, yield func()) error {
	enc := expfmt.NewEncoder(bw, format)
	for _, mf := range mfs {
		name := mf.GetName()
		if keep != nil && !keep(name) {
			continue
		}
		if h.owned[name] {
			if !h.warned.Swap(true) {
				h.logger.Warn("A registered collector exports a family the store owns; serving the store's", "family", name)
			}
			continue
		}
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	switch {
	case snap == nil:
	case format.FormatType() == expfmt.TypeTextPlain:
		if err := h.writeText(&h.texts, collector.NewTextWriter, bw, snap, keep, yield); err != nil {
			return err
		}
	case format.FormatType() == expfmt.TypeOpenMetrics:
		if err := h.writeText(&h.oms, collector.NewOpenMetricsWriter, bw, snap, keep, yield); err != nil {
			return err
		}
	default:
		if err := h.writeText(&h.protos, collector.NewProtobufWriter, bw, snap, keep, yield); err != nil {
			return err
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		// The final "# EOF" line of OpenMetrics; a no-op otherwise.
		return c.Close()
	}
	return nil
}

// writeText writes snap with a pooled TextWriter made by newWriter, which
// calls yield between chunks of work.
func (h *Handler) writeText(pool *sync.Pool, newWriter func() *collector.TextWriter, bw *bufio.Writer, snap *collector.Snapshot, keep func(string) bool, yield func()) error {
	tw, _ := pool.Get().(*collector.TextWriter)
	if tw == nil {
		tw = newWriter()
	}
	tw.Yield = yield
	defer func() {
		tw.Yield = nil
		pool.Put(tw)
	}()
	return tw.Write(bw, snap, keep)
}

// gzipWriter returns a pooled gzip writer writing to w.
func (h *Handler) gzipWriter(w io.Writer) *gzip.Writer {
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
func (h *Handler) encodingError(err error) {
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

// snapshotShareAge is how old a snapshot may be and still be handed to a
// scrape that starts while another is writing it.
const snapshotShareAge = time.Second

// sharedSnapshot hands overlapping scrapes the same store snapshot. A
// snapshot of a large fleet is tens of megabytes; forty scrapes arriving
// together (several Prometheus servers, a dashboard refresh, a retry
// storm) would otherwise hold forty copies. A scrape that starts when no
// other is in flight, or when the shared copy is older than
// snapshotShareAge (a stuck reader is holding it), takes a fresh one, so
// sequential scrapes always see the newest results.
type sharedSnapshot struct {
	take func() *collector.Snapshot
	now  func() time.Time

	// mu guards cur, taken and users.
	mu    sync.Mutex
	cur   *collector.Snapshot
	taken time.Time
	users int
}

// acquire returns the snapshot to write; call release when done.
func (s *sharedSnapshot) acquire() *collector.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.now(); s.cur == nil || now.Sub(s.taken) > snapshotShareAge {
		s.cur, s.taken = s.take(), now
	}
	s.users++
	return s.cur
}

// release ends one acquire; the last one drops the shared copy.
func (s *sharedSnapshot) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users--
	if s.users == 0 {
		s.cur = nil
	}
}

const (
	// writerMemoryBudget is the memory the scrapes in flight may hold in
	// writer buffers together.
	writerMemoryBudget = 384 << 20
	// writerBytesPerTarget is what one scrape's writer holds per target
	// (rendered label sets, row lists), measured at 200,000 ICMP targets
	// with BenchmarkConcurrentScrapes.
	writerBytesPerTarget = 650
	// minWriters scrapes may always run at once, whatever the fleet size.
	minWriters = 2
)

// writerBudget bounds the scrapes writing at once by their memory: a fleet
// of 10,000 targets lets every in-flight scrape write, one of 200,000 three
// at a time. Waiting scrapes are served in turn; a client that stops
// reading holds its writer until --web.write-timeout cuts it off.
type writerBudget struct {
	budget int

	// mu guards active and wake.
	mu     sync.Mutex
	active int
	// wake is closed (and cleared) when a writer is released.
	wake chan struct{}
}

// limit is how many writers may run at once for a fleet of targets.
func (b *writerBudget) limit(targets int) int {
	return max(minWriters, b.budget/max(1, targets*writerBytesPerTarget))
}

// acquire waits for a writer for a scrape of targets targets; it returns
// false when ctx ends first.
func (b *writerBudget) acquire(ctx context.Context, targets int) bool {
	n := b.limit(targets)
	for {
		b.mu.Lock()
		if b.active < n {
			b.active++
			b.mu.Unlock()
			return true
		}
		if b.wake == nil {
			b.wake = make(chan struct{})
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-wake:
		}
	}
}

// release ends one acquire.
func (b *writerBudget) release() {
	b.mu.Lock()
	b.active--
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	b.mu.Unlock()
}
