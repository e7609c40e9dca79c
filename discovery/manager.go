package discovery

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// Reasons a discovery read fails, the reason label of
// fleet_discovery_failures_total.
const (
	// ReasonRead: a file is missing or unreadable, or a glob matches no file.
	ReasonRead = "read"
	// ReasonParse: the content is not a list of target groups (or, from
	// http_sd, not JSON).
	ReasonParse = "parse"
	// ReasonTooLarge: a file or response is larger than MaxSourceBytes.
	ReasonTooLarge = "too_large"
	// ReasonHTTP: the request failed before a response (refused, TLS,
	// DNS).
	ReasonHTTP = "http"
	// ReasonHTTPStatus: the response status was not 200.
	ReasonHTTPStatus = "http_status"
	// ReasonTimeout: the fetch took longer than its timeout.
	ReasonTimeout = "timeout"
	// ReasonInvalidTarget: a target (after relabeling) is not a valid host
	// entry, or lacks the port the set's tcp probe needs.
	ReasonInvalidTarget = "invalid_target"
	// ReasonTooManyTargets: the set would pass max_targets_per_set.
	ReasonTooManyTargets = "too_many_targets"
)

var (
	fileReasons = []string{ReasonRead, ReasonParse, ReasonTooLarge, ReasonInvalidTarget, ReasonTooManyTargets}
	httpReasons = []string{ReasonHTTP, ReasonHTTPStatus, ReasonTimeout, ReasonParse, ReasonTooLarge, ReasonInvalidTarget, ReasonTooManyTargets}
)

// DefaultDebounce is how long a file change waits for more changes before
// the files are read: an editor or a deploy tool writing in several steps
// causes one read, not one per step.
const DefaultDebounce = 500 * time.Millisecond

// readError is a failed read with its reason.
type readError struct {
	reason string
	err    error
}

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

func reasonOf(err error) string {
	var re *readError
	if errors.As(err, &re) {
		return re.reason
	}
	var ce *config.CapError
	if errors.As(err, &ce) {
		return ReasonTooManyTargets
	}
	return ReasonInvalidTarget
}

// Options configure a Manager.
type Options struct {
	Logger *slog.Logger
	// Debounce overrides DefaultDebounce.
	Debounce time.Duration
}

// SourceStatus is the state of one source, for --config.check and logs.
type SourceStatus struct {
	Set, Source string
	// Hosts is how many hosts the source's last good read yielded, after
	// relabeling and expansion.
	Hosts int
	// OK reports that the source has a good read.
	OK bool
	// Err is the last read's error, nil after a good read.
	Err error
}

// Manager runs the discovery sources of one config. ApplyConfig (re)builds
// them and reads every new one once; Run keeps them refreshing. Changes
// receives a value whenever the discovered hosts of a set changed.
type Manager struct {
	logger   *slog.Logger
	debounce time.Duration
	changes  chan struct{}

	targets     *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	failures    *prometheus.CounterVec
	dropped     *prometheus.CounterVec

	// applyMu serialises ApplyConfig and the end of Run.
	applyMu sync.Mutex

	// version is bumped before every value sent on changes (see Version).
	version atomic.Uint64

	// mu guards cfg, sources, runCtx and the state fields of every source.
	mu      sync.Mutex
	cfg     *config.Config
	sources []*source
	runCtx  context.Context
}

// source is one file_sd glob or http_sd URL of one set.
type source struct {
	set, name string
	reader    interface {
		read(ctx context.Context) ([]Group, error)
	}
	file    *fileSource // nil for http_sd
	http    *httpSource // nil for file_sd
	refresh time.Duration

	// Guarded by Manager.mu.
	good    bool
	groups  []Group // last good read
	hosts   []config.DiscoveredHost
	count   int
	lastErr error
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewManager returns a Manager without sources.
func NewManager(opts Options) *Manager {
	m := &Manager{
		logger:   opts.Logger,
		debounce: opts.Debounce,
		changes:  make(chan struct{}, 1),
		targets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleet_discovery_targets",
			Help: "Hosts a discovery source contributes to its set: its last good read, after relabeling and expansion.",
		}, []string{"set", "source"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleet_discovery_last_success_timestamp_seconds",
			Help: "Unix time of a discovery source's last good read.",
		}, []string{"set", "source"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleet_discovery_failures_total",
			Help: "Failed reads of a discovery source, by reason; the source keeps its last good hosts.",
		}, []string{"set", "source", "reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleet_discovery_dropped_labels_total",
			Help: "Labels of discovered targets dropped because the set does not declare them, counted per target and read.",
		}, []string{"set", "source"}),
	}
	if m.logger == nil {
		m.logger = slog.New(slog.DiscardHandler)
	}
	if m.debounce <= 0 {
		m.debounce = DefaultDebounce
	}
	return m
}

// Describe implements prometheus.Collector: the Manager exports the
// discovery metrics of its sources.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	m.targets.Describe(ch)
	m.lastSuccess.Describe(ch)
	m.failures.Describe(ch)
	m.dropped.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	m.targets.Collect(ch)
	m.lastSuccess.Collect(ch)
	m.failures.Collect(ch)
	m.dropped.Collect(ch)
}

// Changes receives a value after the discovered hosts of any set changed;
// several changes in a row may yield one value.
func (m *Manager) Changes() <-chan struct{} { return m.changes }

// sourceName is the source label of a file_sd glob or http_sd URL.
func fileSourceName(glob string) string { return "file_sd:" + glob }
func httpSourceName(u string) string    { return "http_sd:" + redactURL(u) }

// buildSources makes one source per file_sd glob and http_sd URL of cfg.
func buildSources(cfg *config.Config) ([]*source, error) {
	var out []*source
	for i := range cfg.HostSets {
		hs := &cfg.HostSets[i]
		for _, g := range hs.FileSD {
			f := &fileSource{glob: g}
			out = append(out, &source{set: hs.Name, name: fileSourceName(g), reader: f, file: f, refresh: hs.FileSDRefreshInterval.D()})
		}
		for j := range hs.HTTPSD {
			h, err := newHTTPSource(&hs.HTTPSD[j])
			if err != nil {
				for _, s := range out {
					s.close()
				}
				return nil, err
			}
			out = append(out, &source{set: hs.Name, name: httpSourceName(hs.HTTPSD[j].URL), reader: h, http: h, refresh: hs.HTTPSD[j].RefreshInterval.D()})
		}
	}
	return out, nil
}

func (s *source) close() {
	if s.http != nil {
		s.http.close()
	}
}

// ApplyConfig replaces the sources with those of cfg. A source kept from
// the previous config (same set and source label) keeps its last good
// read, reprocessed with cfg's relabel_configs and labels, and reads again
// at once once Run runs; a new source is read once before ApplyConfig
// returns, every new one in parallel, each bounded by its timeout (or
// ctx). An error (an HTTP client that cannot be built from its settings)
// leaves the running sources alone.
func (m *Manager) ApplyConfig(ctx context.Context, cfg *config.Config) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	fresh, err := buildSources(cfg)
	if err != nil {
		return err
	}
	m.mu.Lock()
	old := m.sources
	m.mu.Unlock()
	stopSources(old)

	m.mu.Lock()
	prev := make(map[[2]string]*source, len(old))
	for _, s := range old {
		prev[[2]string{s.set, s.name}] = s
		s.close()
	}
	m.cfg = cfg
	m.sources = fresh
	var unread []*source
	for _, s := range fresh {
		m.initMetrics(s)
		p := prev[[2]string{s.set, s.name}]
		delete(prev, [2]string{s.set, s.name})
		if p == nil || !p.good {
			unread = append(unread, s)
			continue
		}
		s.good, s.groups, s.hosts, s.count = true, p.groups, p.hosts, p.count
	}
	// Kept sources first, so that a new one is checked against their
	// counts under the set's cap.
	for _, s := range fresh {
		if s.good {
			m.updateLocked(s, s.groups, nil, true)
		}
	}
	for key := range prev {
		m.targets.DeleteLabelValues(key[0], key[1])
		m.lastSuccess.DeleteLabelValues(key[0], key[1])
		m.failures.DeletePartialMatch(prometheus.Labels{"set": key[0], "source": key[1]})
		m.dropped.DeleteLabelValues(key[0], key[1])
	}
	m.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range unread {
		wg.Go(func() {
			groups, err := s.reader.read(ctx)
			m.update(s, groups, err)
		})
	}
	wg.Wait()

	m.mu.Lock()
	if m.runCtx != nil {
		for _, s := range fresh {
			m.startLocked(s, !slices.Contains(unread, s))
		}
	}
	m.mu.Unlock()
	m.signal()
	return nil
}

func (m *Manager) initMetrics(s *source) {
	m.targets.WithLabelValues(s.set, s.name)
	m.lastSuccess.WithLabelValues(s.set, s.name)
	m.dropped.WithLabelValues(s.set, s.name)
	reasons := fileReasons
	if s.http != nil {
		reasons = httpReasons
	}
	for _, r := range reasons {
		m.failures.WithLabelValues(s.set, s.name, r)
	}
}

// Run refreshes every source until ctx ends, then stops them.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	m.runCtx = ctx
	for _, s := range m.sources {
		m.startLocked(s, false)
	}
	m.mu.Unlock()
	<-ctx.Done()
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	m.runCtx = nil
	srcs := m.sources
	m.mu.Unlock()
	stopSources(srcs)
	for _, s := range srcs {
		s.close()
	}
	return nil
}

// Close stops what a Manager that never ran holds: the HTTP clients.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sources {
		s.close()
	}
}

// startLocked starts s's refresh loop; readNow makes its first read
// immediate rather than one refresh interval away.
func (m *Manager) startLocked(s *source, readNow bool) {
	ctx, cancel := context.WithCancel(m.runCtx)
	s.cancel, s.done = cancel, make(chan struct{})
	go m.loop(ctx, s, s.done, readNow)
}

// stopSources ends the loops of srcs and waits for them. It must be called
// without m.mu held: a loop takes it to record a read.
func stopSources(srcs []*source) {
	for _, s := range srcs {
		if s.cancel != nil {
			s.cancel()
		}
	}
	for _, s := range srcs {
		if s.done != nil {
			<-s.done
		}
	}
}

// loop reads s every refresh interval and, for files, after fsnotify
// reports a change in a watched directory, debounced.
func (m *Manager) loop(ctx context.Context, s *source, done chan struct{}, readNow bool) {
	defer close(done)
	var (
		events <-chan fsnotify.Event
		errs   <-chan error
	)
	if s.file != nil {
		if w, err := fsnotify.NewWatcher(); err != nil {
			m.logger.Warn("Cannot watch discovery files; reading them every refresh interval only", "set", s.set, "discovery_source", s.name, "err", err)
		} else {
			defer func() { _ = w.Close() }() // nothing to flush
			for _, d := range s.file.dirs() {
				if err := w.Add(d); err != nil {
					m.logger.Warn("Cannot watch a discovery directory; reading it every refresh interval only", "set", s.set, "discovery_source", s.name, "dir", d, "err", err)
				}
			}
			events, errs = w.Events, w.Errors
		}
	}
	wait := s.refresh
	if readNow || events != nil {
		// A file source reads once the watch is in place: a change
		// between the last read and the watch would otherwise wait for
		// the refresh interval.
		wait = 0
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var debounce *time.Timer
	var debounced <-chan time.Time
	defer func() {
		if debounce != nil {
			debounce.Stop()
		}
	}()
	read := func() {
		groups, err := s.reader.read(ctx)
		if ctx.Err() != nil {
			return // stopped, not failed
		}
		m.update(s, groups, err)
		timer.Reset(s.refresh)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			// Any change in the directory counts: Kubernetes swaps a
			// ConfigMap's files through a symbolic link the glob does
			// not match.
			if debounced == nil {
				debounce = time.NewTimer(m.debounce)
				debounced = debounce.C
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			m.logger.Warn("Watching discovery files failed", "set", s.set, "discovery_source", s.name, "err", err)
		case <-debounced:
			debounced = nil
			read()
		case <-timer.C:
			read()
		}
	}
}

// update records a read of s.
func (m *Manager) update(s *source, groups []Group, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Contains(m.sources, s) {
		return // replaced by a reload meanwhile
	}
	m.updateLocked(s, groups, err, false)
}

// updateLocked turns a read into hosts and records it. A failed read keeps
// the last good hosts, except when reprocess finds that kept hosts no
// longer fit a new config: they are dropped then.
func (m *Manager) updateLocked(s *source, groups []Group, err error, reprocess bool) {
	var (
		hosts   []config.DiscoveredHost
		n       int
		dropped int
	)
	if err == nil {
		hosts, dropped = m.process(s, groups)
		n, err = m.cfg.CheckDiscovered(s.set, hosts, m.othersLocked(s))
	}
	if err != nil {
		reason := reasonOf(err)
		s.lastErr = err
		m.failures.WithLabelValues(s.set, s.name, reason).Inc()
		if reprocess {
			s.good, s.groups, s.hosts, s.count = false, nil, nil, 0
			m.targets.WithLabelValues(s.set, s.name).Set(0)
			m.logger.Error("Discovered targets do not fit the new configuration; dropping them", "set", s.set, "discovery_source", s.name, "reason", reason, "err", err)
			m.signal()
			return
		}
		m.logger.Warn("Discovery failed; keeping the last good targets", "set", s.set, "discovery_source", s.name, "reason", reason, "targets", s.count, "err", err)
		return
	}
	s.lastErr = nil
	if dropped > 0 {
		m.dropped.WithLabelValues(s.set, s.name).Add(float64(dropped))
	}
	changed := !s.good || !equalHosts(s.hosts, hosts)
	s.good, s.groups, s.hosts, s.count = true, groups, hosts, n
	m.targets.WithLabelValues(s.set, s.name).Set(float64(n))
	if !reprocess {
		m.lastSuccess.WithLabelValues(s.set, s.name).SetToCurrentTime()
	}
	if changed {
		m.logger.Info("Discovered targets changed", "set", s.set, "discovery_source", s.name, "hosts", n)
		m.signal()
	}
}

// othersLocked counts the hosts the other sources of s's set hold.
func (m *Manager) othersLocked(s *source) int {
	n := 0
	for _, o := range m.sources {
		if o != s && o.set == s.set && o.good {
			n += o.count
		}
	}
	return n
}

func (m *Manager) signal() {
	m.version.Add(1)
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// process relabels every target of groups with the set's relabel_configs
// and maps the result onto a host entry (label host, else __address__) and
// the set's declared label names. A declared label the target does not
// carry keeps the set's static value; an undeclared one is dropped and
// counted, so the label names of the set's series never change; names
// starting with "__" are meta labels and vanish without being counted.
func (m *Manager) process(s *source, groups []Group) ([]config.DiscoveredHost, int) {
	var hs *config.HostSet
	for i := range m.cfg.HostSets {
		if m.cfg.HostSets[i].Name == s.set {
			hs = &m.cfg.HostSets[i]
		}
	}
	if hs == nil {
		return nil, 0
	}
	var (
		hosts    []config.DiscoveredHost
		dropped  int
		interned = map[string]map[string]string{}
		key      strings.Builder
		declared = slices.Sorted(maps.Keys(hs.Labels))
	)
	for _, g := range groups {
		for _, t := range g.Targets {
			out := make(map[string]string, len(g.Labels)+1)
			maps.Copy(out, g.Labels)
			out["__address__"] = t
			if !relabelInPlace(hs.RelabelConfigs, out) {
				continue
			}
			entry := out["host"]
			if entry == "" {
				entry = out["__address__"]
			}
			if entry == "" {
				continue
			}
			labels := maps.Clone(hs.Labels)
			if labels == nil {
				labels = map[string]string{}
			}
			for name, v := range out {
				if name == "host" || strings.HasPrefix(name, "__") {
					continue
				}
				if _, ok := hs.Labels[name]; ok {
					labels[name] = v
				} else {
					dropped++
				}
			}
			// labels holds exactly the declared names, so their values
			// in a fixed order identify it.
			key.Reset()
			for _, name := range declared {
				key.WriteString(labels[name])
				key.WriteByte(0)
			}
			if l, ok := interned[key.String()]; ok {
				labels = l
			} else {
				interned[key.String()] = labels
			}
			hosts = append(hosts, config.DiscoveredHost{Entry: entry, Labels: labels})
		}
	}
	return hosts, dropped
}

func equalHosts(a, b []config.DiscoveredHost) bool {
	return slices.EqualFunc(a, b, func(x, y config.DiscoveredHost) bool {
		return x.Entry == y.Entry && maps.Equal(x.Labels, y.Labels)
	})
}

// Hosts returns the discovered hosts of every set: the last good read of
// each of its sources, in config order.
func (m *Manager) Hosts() map[string][]config.DiscoveredHost {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]config.DiscoveredHost{}
	for _, s := range m.sources {
		if s.good {
			out[s.set] = append(out[s.set], s.hosts...)
		}
	}
	return out
}

// Version counts what may have changed Hosts' answer: it grows with every
// ApplyConfig and every change of a set's discovered hosts, before Changes
// hears of it. A caller that reads Version, then Hosts, and keeps the
// version, needs to rebuild its targets on a later value from Changes only
// when Version has moved on since.
func (m *Manager) Version() uint64 { return m.version.Load() }

// Status returns the state of every source, in config order.
func (m *Manager) Status() []SourceStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]SourceStatus, 0, len(m.sources))
	for _, s := range m.sources {
		out = append(out, SourceStatus{Set: s.set, Source: s.name, Hosts: s.count, OK: s.good, Err: s.lastErr})
	}
	return out
}
