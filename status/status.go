package status

import (
	"cmp"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/fleet-exporter/fleet_exporter/collector"
)

//go:embed templates/*.html
var templateFS embed.FS

// HostState is the state of a host as the pages show it.
type HostState string

// Host states. A host is up when the last result of some probe succeeded
// (the same rule as fleet_host_up), degraded when it is up but another probe
// fails, down when it has results and none succeeded, and pending before its
// first result.
const (
	StateUp       HostState = "up"
	StateDegraded HostState = "degraded"
	StateDown     HostState = "down"
	StatePending  HostState = "pending"
)

// states lists the states in display order.
var states = [...]HostState{StateUp, StateDegraded, StateDown, StatePending}

// States returns the states in display order, as a fresh slice.
func States() []HostState { return append([]HostState(nil), states[:]...) }

// Info is the static part of the pages.
type Info struct {
	Version     string
	ConfigFile  string
	ExtraLinks  []Link
	MaxFailures int // failing probes listed per set on the landing page
}

// Link is a link shown in the landing page header.
type Link struct {
	Address, Text string
}

// Handler serves the landing page ("/") and the set pages ("/sets/{set}").
type Handler struct {
	snapshot func() *collector.Snapshot
	info     Info
	logger   *slog.Logger
	tmpl     *template.Template
	now      func() time.Time
}

// NewHandler parses the templates. snapshot is called once per request.
func NewHandler(snapshot func() *collector.Snapshot, info Info, logger *slog.Logger) (*Handler, error) {
	tmpl, err := template.New("").Funcs(template.FuncMap{
		"since": func(now, t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return now.Sub(t).Round(time.Second).String()
		},
		"stamp": func(t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			return t.UTC().Format(time.RFC3339)
		},
	}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if info.MaxFailures <= 0 {
		info.MaxFailures = 50
	}
	return &Handler{snapshot: snapshot, info: info, logger: logger, tmpl: tmpl, now: time.Now}, nil
}

// Register adds the routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc(patternLanding, h.landing)
	mux.HandleFunc(patternSet, h.setPage)
}

// The routes Register adds.
const (
	patternLanding = "GET /{$}"
	patternSet     = "GET /sets/{set}"
)

// Patterns returns the ServeMux patterns Register adds, so that a caller can
// route them through its own middleware.
func Patterns() []string { return []string{patternLanding, patternSet} }

// Failure is one failing probe of one host.
type Failure struct {
	Host, Probe, Reason string
	// Since is when the current failure streak began.
	Since time.Time
	// Failures is the number of consecutive failures.
	Failures int
}

// HostView is one host of a set with its probes.
type HostView struct {
	Host   string
	State  HostState
	Probes []ProbeView
}

// ProbeView is the last result of one probe of a host.
type ProbeView struct {
	Probe   string
	Pending bool
	Success bool
	Reason  string
	Since   time.Time
}

// SetView summarises one host set.
type SetView struct {
	Name string
	// Hosts counts the set's hosts; Counts the hosts per state.
	Hosts  int
	Counts map[HostState]int
	// Failures lists failing probes, most recent streak first; Truncated
	// tells how many were left off.
	Failures  []Failure
	Truncated int
	hosts     []HostView
}

// Up returns the hosts that are up, degraded ones included (fleet_host_up).
func (s *SetView) Up() int { return s.Counts[StateUp] + s.Counts[StateDegraded] }

// Down returns the hosts that are down.
func (s *SetView) Down() int { return s.Counts[StateDown] }

// Degraded returns the hosts that are up with some probe failing.
func (s *SetView) Degraded() int { return s.Counts[StateDegraded] }

// Count returns the hosts in state st.
func (s *SetView) Count(st HostState) int { return s.Counts[st] }

// Pending returns the hosts without any result yet.
func (s *SetView) Pending() int { return s.Counts[StatePending] }

// buildSets groups a snapshot (sorted by set, host, probe) into set views.
func buildSets(snap *collector.Snapshot) []*SetView {
	var sets []*SetView
	var cur *SetView
	var host *HostView
	for i := range snap.Targets {
		ts := &snap.Targets[i]
		t := ts.Target
		if cur == nil || cur.Name != t.Set {
			cur = &SetView{Name: t.Set, Counts: map[HostState]int{}}
			sets = append(sets, cur)
			host = nil
		}
		if host == nil || host.Host != t.Host {
			cur.hosts = append(cur.hosts, HostView{Host: t.Host})
			host = &cur.hosts[len(cur.hosts)-1]
		}
		pv := ProbeView{Probe: t.Probe, Pending: !ts.HasResult, Success: ts.Success, Reason: string(ts.Reason), Since: ts.FailingSince}
		host.Probes = append(host.Probes, pv)
		if ts.HasResult && !ts.Success {
			cur.Failures = append(cur.Failures, Failure{
				Host: t.Host, Probe: t.Probe, Reason: string(ts.Reason),
				Since: ts.FailingSince, Failures: ts.ConsecutiveFailures,
			})
		}
	}
	for _, s := range sets {
		s.Hosts = len(s.hosts)
		for i := range s.hosts {
			s.hosts[i].State = hostState(s.hosts[i].Probes)
			s.Counts[s.hosts[i].State]++
		}
		slices.SortStableFunc(s.Failures, func(a, b Failure) int { return b.Since.Compare(a.Since) })
	}
	return sets
}

func hostState(probes []ProbeView) HostState {
	var ok, failed int
	for _, p := range probes {
		switch {
		case p.Pending:
		case p.Success:
			ok++
		default:
			failed++
		}
	}
	switch {
	case ok > 0 && failed > 0:
		return StateDegraded
	case ok > 0:
		return StateUp
	case failed > 0:
		return StateDown
	default:
		return StatePending
	}
}

type landingData struct {
	Info   Info
	Now    time.Time
	Sets   []*SetView
	States []HostState
	// Total sums every set.
	Total *SetView
}

func (h *Handler) landing(w http.ResponseWriter, _ *http.Request) {
	sets := buildSets(h.snapshot())
	d := landingData{Info: h.info, Now: h.now(), Sets: sets, States: States(), Total: &SetView{Name: "all", Counts: map[HostState]int{}}}
	for _, s := range sets {
		d.Total.Hosts += s.Hosts
		for st, n := range s.Counts {
			d.Total.Counts[st] += n
		}
		if len(s.Failures) > h.info.MaxFailures {
			s.Truncated = len(s.Failures) - h.info.MaxFailures
			s.Failures = s.Failures[:h.info.MaxFailures]
		}
	}
	h.render(w, "landing.html", d)
}

type setData struct {
	Info   Info
	Now    time.Time
	Set    *SetView
	Filter HostState
	States []HostState
	Hosts  []HostView
}

func (h *Handler) setPage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("set")
	var set *SetView
	for _, s := range buildSets(h.snapshot()) {
		if s.Name == name {
			set = s
			break
		}
	}
	if set == nil {
		http.Error(w, "no such host set", http.StatusNotFound)
		return
	}
	filter := HostState(strings.ToLower(r.URL.Query().Get("state")))
	if filter != "" && !slices.Contains(states[:], filter) {
		http.Error(w, "state must be one of up, degraded, down, pending", http.StatusBadRequest)
		return
	}
	hosts := set.hosts
	if filter != "" {
		hosts = slices.DeleteFunc(slices.Clone(hosts), func(hv HostView) bool { return hv.State != filter })
	}
	// Down hosts first within the grid would reorder it on every change;
	// sort by host name so the grid stays put.
	slices.SortStableFunc(hosts, func(a, b HostView) int { return cmp.Compare(a.Host, b.Host) })
	h.render(w, "set.html", setData{Info: h.info, Now: h.now(), Set: set, Filter: filter, States: States(), Hosts: hosts})
}

func (h *Handler) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := h.tmpl.ExecuteTemplate(w, name, data); err != nil {
		h.logger.Error("Cannot render page", "page", name, "err", err)
	}
}
