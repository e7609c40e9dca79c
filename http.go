package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"

	"github.com/fleet-exporter/fleet_exporter/cluster"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/exposition"
	"github.com/fleet-exporter/fleet_exporter/prober/ssh"
	"github.com/fleet-exporter/fleet_exporter/status"
)

// newMux builds the exporter's routes on its own ServeMux.
func newMux(opts *options, reg *prometheus.Registry, rl *reloader, f *fleet, cl *cluster.Cluster, logger *slog.Logger) (http.Handler, error) {
	metrics, err := exposition.NewHandler(exposition.Options{
		Registry: reg, Snapshot: f.store.Snapshot, MaxRequestsInFlight: opts.maxRequests, MaxPause: opts.maxScrapePause,
		Logger: logger.With("component", "metrics"),
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, metrics))
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "Healthy")
	})
	mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !rl.ready.Load() {
			http.Error(w, "Not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "Ready")
	})
	mux.Handle("POST /-/reload", sameOrigin(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := rl.reload(); err != nil {
			http.Error(w, "reload failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = fmt.Fprintln(w, "Reloaded")
	})))
	if opts.enablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	links := []status.Link{}
	if opts.enablePprof {
		links = append(links, status.Link{Address: "debug/pprof/", Text: "Profiling"})
	}
	if cl != nil {
		links = append(links, status.Link{Address: "cluster", Text: "Cluster"})
	}
	pages, err := status.NewHandler(f.store.Snapshot, status.Info{
		Version:    versionString(),
		ConfigFile: rl.configName(),
		ExtraLinks: links,
		Config:     rl.pages.running.Load,
		Reload:     rl.pages.status,
		Bastions:   func() []status.Bastion { return statusBastions(f.probers.Bastions()) },
	}, logger.With("component", "status"))
	if err != nil {
		// The templates are embedded and parsed by the tests; this cannot
		// fail in a released binary, but never serve without metrics.
		logger.Error("Cannot build the status pages", "err", err)
	} else {
		// The pages share one in-flight bound: rendering a large set costs
		// memory, and a flood of page requests must not cost the scrapes.
		pageMux := http.NewServeMux()
		pages.Register(pageMux)
		limited := limitInFlight(pageMux, opts.web.maxPageRequests)
		for _, pattern := range status.Patterns() {
			mux.Handle(pattern, limited)
		}
		if cl != nil {
			registerClusterPage(pageMux, mux, limited, cl, logger)
		}
	}
	return securityHeaders(mux), nil
}

// versionString is the short version shown on the pages.
func versionString() string {
	v := version.Version
	if v == "" {
		v = "dev"
	}
	return fmt.Sprintf("%s (revision %s)", v, version.GetRevision())
}

// reloadPages holds what the status pages show of reloads: the outcome of
// the last attempt and the configuration in use. The pages read it without
// the reloader's lock, so they never wait for a reload in progress.
type reloadPages struct {
	last    atomic.Pointer[status.ReloadStatus]
	running atomic.Pointer[config.Config]
}

// succeeded records a successful load of cfg.
func (p *reloadPages) succeeded(cfg *config.Config) {
	now := time.Now()
	p.last.Store(&status.ReloadStatus{At: now, LastSuccess: now})
	p.running.Store(cfg)
}

// failed records a failed reload; the running configuration stays.
func (p *reloadPages) failed(err error) {
	st := &status.ReloadStatus{Failed: true, Err: err.Error(), At: time.Now()}
	if prev := p.last.Load(); prev != nil {
		st.LastSuccess = prev.LastSuccess
	}
	p.last.Store(st)
}

// status returns the outcome of the last reload attempt.
func (p *reloadPages) status() status.ReloadStatus {
	if st := p.last.Load(); st != nil {
		return *st
	}
	return status.ReloadStatus{}
}

// statusBastions converts the SSH prober's bastion states for the pages.
func statusBastions(in []ssh.BastionStatus) []status.Bastion {
	out := make([]status.Bastion, 0, len(in))
	for _, b := range in {
		sb := status.Bastion{Name: b.Name, Up: b.Up, Connections: b.Connections, Channels: b.Channels, Targets: b.Targets}
		if b.LastError != nil {
			sb.LastError = b.LastError.Error()
		}
		out = append(out, sb)
	}
	return out
}
