package status

import (
	"embed"
	"fmt"
	"html"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
)

//go:embed templates/*.html
var templateFS embed.FS

// HostState is the state of a host as the pages show it.
type HostState string

// Host states. A host is up when the last result of every probe with a
// result succeeded, degraded when some succeeded and some failed (up and
// degraded hosts have fleet_host_up 1), down when it has results and none
// succeeded, and pending before its first result. Every page counts hosts
// by these states.
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

// Info is the static part of the pages and the hooks to the daemon's state.
type Info struct {
	Version    string
	ConfigFile string
	ExtraLinks []Link
	// MaxFailures bounds the failing hosts listed per set on the landing
	// page; the set page lists up to maxSetFailures.
	MaxFailures int
	// Config returns the running configuration for /config; nil leaves the
	// page out.
	Config func() *config.Config
	// Reload returns the outcome of the last reload attempt; nil means
	// reloads are never reported.
	Reload func() ReloadStatus
	// Bastions returns the proxy_jump chains in use, sorted by name; nil
	// or empty leaves the section out.
	Bastions func() []Bastion
}

// Bastion is one proxy_jump chain's state for the landing page.
type Bastion struct {
	Name string
	Up   bool
	// Connections work now; Channels are open now.
	Connections, Channels int
	// Targets counts the SSH targets behind the chain by set.
	Targets map[string]int
	// LastError is the last connection failure, empty after a success.
	LastError string
}

// TargetCount is the number of targets behind the chain over all sets.
func (b Bastion) TargetCount() int {
	n := 0
	for _, c := range b.Targets {
		n += c
	}
	return n
}

// SetNames lists the sets behind the chain, sorted.
func (b Bastion) SetNames() []string {
	names := make([]string, 0, len(b.Targets))
	for s := range b.Targets {
		names = append(names, s)
	}
	slices.Sort(names)
	return names
}

// ReloadStatus is the outcome of the last configuration reload attempt.
type ReloadStatus struct {
	// Failed is true when the last attempt failed; the daemon then runs the
	// configuration it loaded at LastSuccess.
	Failed bool
	// Err is the error of the failed attempt.
	Err string
	// At is when the last attempt was made; LastSuccess when the running
	// configuration was loaded.
	At, LastSuccess time.Time
}

// Link is a link shown in the page header.
type Link struct {
	Address, Text string
}

// Handler serves the status pages.
type Handler struct {
	snapshot func() *collector.Snapshot
	info     Info
	logger   *slog.Logger
	tmpl     *template.Template
	now      func() time.Time
}

// maxSetFailures bounds the failing hosts listed on a set page, and
// maxSearchResults the hosts a search lists.
const (
	maxSetFailures   = 1000
	maxSearchResults = 1000
	// namedCells is the host count up to which the grid names every host
	// even without a filter.
	namedCells = 200
)

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
		"dur": func(d time.Duration) string {
			if d <= 0 {
				return "-"
			}
			return d.Round(time.Microsecond).String()
		},
		"path":    url.PathEscape,
		"states":  States,
		"failing": newFailingView,
		"drift":   driftNote,
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

// The routes Register adds.
const (
	patternLanding = "GET /{$}"
	patternSet     = "GET /sets/{set}"
	patternHost    = "GET /hosts/{set}/{host}"
	patternSearch  = "GET /search"
	patternConfig  = "GET /config"
)

// Register adds the routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc(patternLanding, h.landing)
	mux.HandleFunc(patternSet, h.setPage)
	mux.HandleFunc(patternHost, h.hostPage)
	mux.HandleFunc(patternSearch, h.searchPage)
	mux.HandleFunc(patternConfig, h.configPage)
}

// Patterns returns the ServeMux patterns Register adds, so that a caller can
// route them through its own middleware.
func Patterns() []string {
	return []string{patternLanding, patternSet, patternHost, patternSearch, patternConfig}
}

// page is what every page shows: header links, the fleet's counts, the
// search box and a failed reload.
type page struct {
	Title string
	// Root is the relative path from the page to "/", so that the pages
	// work behind a reverse proxy's path prefix.
	Root   string
	Info   Info
	Now    time.Time
	Reload ReloadStatus
	// Total counts every host of every set.
	Total Counts
	// Query is the search box's value.
	Query     string
	HasConfig bool
}

func (h *Handler) newPage(title, root string, sets []*SetView) page {
	p := page{Title: title, Root: root, Info: h.info, Now: h.now(), HasConfig: h.info.Config != nil}
	if h.info.Reload != nil {
		p.Reload = h.info.Reload()
	}
	for _, s := range sets {
		p.Total = p.Total.plus(s.Counts)
	}
	return p
}

// failingSet is a set with its failing hosts, possibly truncated.
type failingSet struct {
	Set       *SetView
	Hosts     []HostView
	Truncated int
}

// failingView is what the "failing" template renders.
type failingView struct {
	failingSet
	Root string
	Now  time.Time
	// More links to the page listing every failing host; empty on that
	// page.
	More string
}

func newFailingView(f failingSet, root string, now time.Time, more string) failingView {
	return failingView{failingSet: f, Root: root, Now: now, More: more}
}

// driftNote tells how hash relates to the distribution of command in the
// host's set.
func driftNote(drift map[string]*DriftView, command string, hash uint64) string {
	d := drift[command]
	if d == nil {
		return ""
	}
	i := d.GroupOf(strconv.FormatUint(hash, 10))
	switch {
	case i < 0 && d.Majority:
		// A hash of the groups not listed: a minority one.
		return fmt.Sprintf("drifted: the majority (%d of %d hosts) has %s", d.Groups[0].Count, d.Hosts, d.Groups[0].Hash)
	case i < 0:
		return fmt.Sprintf("one of %d distinct outputs; no strict majority", d.Distinct)
	case !d.Drifted():
		return fmt.Sprintf("same on all %d hosts", d.Hosts)
	case i == 0 && d.Majority:
		return fmt.Sprintf("majority (%d of %d hosts)", d.Groups[0].Count, d.Hosts)
	case d.Majority:
		return fmt.Sprintf("drifted: %d of %d hosts have this output, the majority (%d) has %s", d.Groups[i].Count, d.Hosts, d.Groups[0].Count, d.Groups[0].Hash)
	default:
		return fmt.Sprintf("%d of %d hosts have this output; no strict majority", d.Groups[i].Count, d.Hosts)
	}
}

func truncateFailing(s *SetView, limit int) failingSet {
	f := failingSet{Set: s, Hosts: s.Failing()}
	if len(f.Hosts) > limit {
		f.Truncated = len(f.Hosts) - limit
		f.Hosts = f.Hosts[:limit]
	}
	return f
}

type landingData struct {
	page
	Sets     []*SetView
	Failing  []failingSet
	Bastions []Bastion
	HostKeys HostKeysView
}

func (h *Handler) landing(w http.ResponseWriter, _ *http.Request) {
	snap := h.snapshot()
	sets := buildSets(snap)
	d := landingData{page: h.newPage("fleet_exporter", "", sets), Sets: sets}
	d.HostKeys = buildHostKeys(snap, d.Now)
	if h.info.Bastions != nil {
		d.Bastions = h.info.Bastions()
	}
	for _, s := range sets {
		if f := truncateFailing(s, h.info.MaxFailures); len(f.Hosts) > 0 {
			d.Failing = append(d.Failing, f)
		}
	}
	h.render(w, "landing.html", d)
}

type setData struct {
	page
	Set *SetView
	// Filter is the state filter, SetQuery the host filter of the page.
	Filter   HostState
	SetQuery string
	// Hosts are the hosts the grid shows; Named is true when each cell
	// shows its host's name.
	Hosts   []HostView
	Named   bool
	Grid    template.HTML
	Failing failingSet
	Drift   []DriftView
}

func (h *Handler) findSet(w http.ResponseWriter, name string) ([]*SetView, *SetView) {
	return findSetIn(w, h.snapshot(), name)
}

// findSetIn is findSet in snap.
func findSetIn(w http.ResponseWriter, snap *collector.Snapshot, name string) ([]*SetView, *SetView) {
	sets := buildSets(snap)
	for _, s := range sets {
		if s.Name == name {
			return sets, s
		}
	}
	http.Error(w, fmt.Sprintf("no host set %q", name), http.StatusNotFound)
	return nil, nil
}

func (h *Handler) setPage(w http.ResponseWriter, r *http.Request) {
	sets, set := h.findSet(w, r.PathValue("set"))
	if set == nil {
		return
	}
	filter := HostState(strings.ToLower(r.URL.Query().Get("state")))
	if filter != "" && !slices.Contains(states[:], filter) {
		http.Error(w, "state must be one of up, degraded, down, pending", http.StatusBadRequest)
		return
	}
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	lq := strings.ToLower(q)
	hosts := set.Hosts
	if filter != "" || q != "" {
		hosts = slices.DeleteFunc(slices.Clone(hosts), func(hv HostView) bool {
			return (filter != "" && hv.State != filter) || !matchHost(hv.Host, lq)
		})
	}
	d := setData{
		page: h.newPage(set.Name+" · fleet_exporter", "../", sets),
		Set:  set, Filter: filter, SetQuery: q, Hosts: hosts,
		Named:   filter != "" || q != "" || len(set.Hosts) <= namedCells,
		Failing: truncateFailing(set, maxSetFailures),
		Drift:   buildDrift(set),
	}
	d.Grid = gridHTML(hosts, d.Named)
	h.render(w, "set.html", d)
}

type hostData struct {
	page
	Host *HostView
	// Drift maps each command to its set's distribution, for the
	// "majority" column.
	Drift map[string]*DriftView
	// KeyShared is the number of hosts presenting the host's SSH host key
	// (fleet_ssh_host_key_shared_hosts); 0 without an observed key.
	KeyShared int
}

func (h *Handler) hostPage(w http.ResponseWriter, r *http.Request) {
	snap := h.snapshot()
	sets, set := findSetIn(w, snap, r.PathValue("set"))
	if set == nil {
		return
	}
	name := r.PathValue("host")
	i := slices.IndexFunc(set.Hosts, func(hv HostView) bool { return hv.Host == name })
	if i < 0 {
		http.Error(w, fmt.Sprintf("no host %q in set %q", name, set.Name), http.StatusNotFound)
		return
	}
	d := hostData{page: h.newPage(name+" · "+set.Name+" · fleet_exporter", "../../", sets), Host: &set.Hosts[i], Drift: map[string]*DriftView{}}
	drift := buildDrift(set)
	for j := range drift {
		d.Drift[drift[j].Command] = &drift[j]
	}
	for _, p := range d.Host.Probes {
		if p.SSH != nil && p.SSH.HostKey != nil && !p.Pending {
			d.KeyShared = snap.HostKeySharedHosts(p.SSH.HostKey.FingerprintSHA256)
		}
	}
	h.render(w, "host.html", d)
}

type searchData struct {
	page
	Hosts     []HostView
	Counts    Counts
	Truncated int
}

func (h *Handler) searchPage(w http.ResponseWriter, r *http.Request) {
	sets := buildSets(h.snapshot())
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	d := searchData{page: h.newPage("search · fleet_exporter", "", sets)}
	d.Query = q
	if q != "" {
		lq := strings.ToLower(q)
		for _, s := range sets {
			for _, hv := range s.Hosts {
				if !matchHost(hv.Host, lq) {
					continue
				}
				d.Counts.add(hv.State)
				if len(d.Hosts) < maxSearchResults {
					d.Hosts = append(d.Hosts, hv)
				} else {
					d.Truncated++
				}
			}
		}
	}
	h.render(w, "search.html", d)
}

type configData struct {
	page
	Config *config.Config
	YAML   string
	Err    string
}

func (h *Handler) configPage(w http.ResponseWriter, r *http.Request) {
	if h.info.Config == nil {
		http.NotFound(w, r)
		return
	}
	sets := buildSets(h.snapshot())
	d := configData{page: h.newPage("config · fleet_exporter", "", sets), Config: h.info.Config()}
	if d.Config != nil {
		b, err := MaskedYAML(d.Config)
		if err != nil {
			h.logger.Error("Cannot render the configuration", "err", err)
			d.Err = err.Error()
		}
		d.YAML = string(b)
	}
	h.render(w, "config.html", d)
}

// gridHTML renders the grid cells of hosts: one link per host to its page,
// coloured by state, with the probes in the title and, when named, the host
// name as text. It is built here rather than in the template because a set
// of 10,000 hosts makes html/template's per-value escaping the cost of the
// page; every value is escaped as the template would (html.EscapeString for
// text and attributes, url.PathEscape for path segments).
func gridHTML(hosts []HostView, named bool) template.HTML {
	var b strings.Builder
	b.Grow(len(hosts) * 128)
	for i := range hosts {
		hv := &hosts[i]
		st := string(hv.State)
		b.WriteString(`<a class="`)
		b.WriteString(st)
		b.WriteString(`" data-state="`)
		b.WriteString(st)
		b.WriteString(`" href="../hosts/`)
		b.WriteString(html.EscapeString(url.PathEscape(hv.Set)))
		b.WriteByte('/')
		b.WriteString(html.EscapeString(url.PathEscape(hv.Host)))
		b.WriteString(`" title="`)
		b.WriteString(html.EscapeString(hv.Host))
		b.WriteString(": ")
		b.WriteString(st)
		for _, p := range hv.Probes {
			b.WriteString(" · ")
			b.WriteString(html.EscapeString(p.Probe))
			b.WriteByte(' ')
			switch {
			case p.Pending:
				b.WriteString("pending")
			case p.Success:
				b.WriteString("ok")
			default:
				b.WriteString(html.EscapeString(p.Reason))
			}
		}
		b.WriteString(`">`)
		if named {
			b.WriteString(html.EscapeString(hv.Host))
		}
		b.WriteString("</a>")
	}
	// Every dynamic value above is escaped: safe as HTML.
	return template.HTML(b.String())
}

func (h *Handler) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := h.tmpl.ExecuteTemplate(w, name, data); err != nil {
		h.logger.Error("Cannot render page", "page", name, "err", err)
	}
}
