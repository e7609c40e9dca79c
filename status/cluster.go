package status

import (
	"bytes"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
)

//go:embed clusterpage/cluster.html
var clusterFS embed.FS

// ClusterMember is one member in this member's view of the cluster.
type ClusterMember struct {
	Name, Address string
	// Self marks the member serving the page.
	Self bool
}

// ClusterState is what the cluster page shows of the membership.
type ClusterState struct {
	// Mode is "static" or "gossip".
	Mode              string
	Self              string
	ReplicationFactor int
	// Isolated is set when this member sees no other member although it
	// has peers to join.
	Isolated bool
	// OwnedTargets counts the targets this member probes.
	OwnedTargets int
	Members      []ClusterMember
}

// ClusterSource reports the membership and decides ownership; the daemon
// adapts its cluster to it, so this package knows nothing of gossip.
type ClusterSource interface {
	ClusterState() ClusterState
	// Owners returns the members owning (set, host), highest rank first.
	Owners(set, host string) []string
}

// ClusterHandler serves the cluster page: the members and, for a host
// asked for by set and name, the members that own it.
type ClusterHandler struct {
	src    ClusterSource
	info   Info
	logger *slog.Logger
	tmpl   *template.Template
}

const patternCluster = "GET /cluster"

// ClusterPatterns returns the ServeMux patterns ClusterHandler.Register adds.
func ClusterPatterns() []string { return []string{patternCluster} }

// NewClusterHandler parses the page's template.
func NewClusterHandler(src ClusterSource, info Info, logger *slog.Logger) (*ClusterHandler, error) {
	tmpl, err := template.ParseFS(clusterFS, "clusterpage/cluster.html")
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ClusterHandler{src: src, info: info, logger: logger, tmpl: tmpl}, nil
}

// Register adds the route to mux.
func (h *ClusterHandler) Register(mux *http.ServeMux) {
	mux.HandleFunc(patternCluster, h.page)
}

// clusterPage is the template's data.
type clusterPage struct {
	Info  Info
	State ClusterState
	// Set and Host are the looked-up host; Owners its owners, Asked
	// whether a lookup was made.
	Set, Host string
	Owners    []string
	Asked     bool
	OwnedHere bool
}

func (h *ClusterHandler) page(w http.ResponseWriter, r *http.Request) {
	p := clusterPage{Info: h.info, State: h.src.ClusterState()}
	// Bounded like any label value: a query string is not a place for a
	// megabyte of host name.
	p.Set = truncate(strings.TrimSpace(r.URL.Query().Get("set")), 256)
	p.Host = truncate(strings.TrimSpace(r.URL.Query().Get("host")), 1024)
	if p.Host != "" {
		p.Asked = true
		p.Owners = h.src.Owners(p.Set, p.Host)
		for _, o := range p.Owners {
			if o == p.State.Self {
				p.OwnedHere = true
			}
		}
	}
	var buf bytes.Buffer
	if err := h.tmpl.ExecuteTemplate(&buf, "cluster.html", p); err != nil {
		h.logger.Error("Cannot render the cluster page", "err", err)
		http.Error(w, "cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
