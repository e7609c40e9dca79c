package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// webLimits are the HTTP server's defences against clients that hold
// connections, read slowly or never, or flood the pages.
type webLimits struct {
	readHeaderTimeout time.Duration
	writeTimeout      time.Duration
	idleTimeout       time.Duration
	// maxConnections bounds open client connections; 0 disables the bound.
	maxConnections int
	// maxPageRequests bounds status pages rendered at once; 0 disables it.
	maxPageRequests int
}

// newHTTPServer returns the server for handler with every timeout set. The
// read timeout covers headers and the (tiny) bodies our routes accept; the
// write timeout bounds how long a response may go without the client
// taking any of it (progressDeadline), so a client that stops reading a
// scrape releases its slot of --web.max-requests after it instead of never,
// while one that keeps reading a large scrape on a loaded machine is not
// cut off halfway.
func newHTTPServer(handler http.Handler, l webLimits, logger *slog.Logger, reg prometheus.Registerer) *http.Server {
	srv := &http.Server{
		Handler:           progressDeadline(handler, l.writeTimeout),
		ReadHeaderTimeout: l.readHeaderTimeout,
		ReadTimeout:       l.readHeaderTimeout + 5*time.Second,
		WriteTimeout:      l.writeTimeout,
		IdleTimeout:       l.idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	if l.maxConnections > 0 {
		cl := newConnLimiter(l.maxConnections, reg)
		srv.ConnState = cl.track
	}
	return srv
}

// progressDeadline moves the write deadline of every response to timeout
// after its latest write that the connection took (at most once a second,
// or four times per timeout when that is shorter):
// the server's WriteTimeout alone bounds the whole response, which cut off
// a 215 MB scrape of a million targets that a busy machine wrote in 95 s.
// A write that blocks because the client stopped reading still fails at
// the deadline.
func progressDeadline(next http.Handler, timeout time.Duration) http.Handler {
	if timeout <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pw := &progressWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}
		pw.extend(time.Now())
		next.ServeHTTP(pw, r)
	})
}

// progressWriter is the ResponseWriter of progressDeadline.
type progressWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	// next is when a write may move the deadline again.
	next time.Time
}

func (pw *progressWriter) Write(b []byte) (int, error) {
	n, err := pw.ResponseWriter.Write(b)
	if n > 0 {
		if now := time.Now(); !now.Before(pw.next) {
			pw.extend(now)
		}
	}
	return n, err
}

func (pw *progressWriter) extend(now time.Time) {
	// An error means the connection cannot have deadlines moved (not
	// ours to fix): the server's WriteTimeout then still holds.
	_ = pw.rc.SetWriteDeadline(now.Add(pw.timeout))
	// Well within the timeout, or a write that ends just before the
	// deadline could not move it.
	pw.next = now.Add(min(time.Second, pw.timeout/4))
}

// Unwrap lets http.ResponseController reach the server's writer.
func (pw *progressWriter) Unwrap() http.ResponseWriter { return pw.ResponseWriter }

// Flush implements http.Flusher for handlers that stream.
func (pw *progressWriter) Flush() { _ = pw.rc.Flush() }

// connLimiter closes connections beyond a limit as soon as they are
// accepted. It works on the server's ConnState hook, so it applies to every
// listener exporter-toolkit opens (several addresses, systemd sockets, TLS).
type connLimiter struct {
	limit    int
	rejected prometheus.Counter
	open     prometheus.Gauge

	// mu guards conns.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newConnLimiter(limit int, reg prometheus.Registerer) *connLimiter {
	cl := &connLimiter{
		limit: limit,
		conns: make(map[net.Conn]struct{}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleet_http_connections_rejected_total",
			Help: "HTTP connections closed on accept because --web.max-connections were open.",
		}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleet_http_connections",
			Help: "Open HTTP client connections.",
		}),
	}
	if reg != nil {
		reg.MustRegister(cl.rejected, cl.open)
	}
	return cl
}

// track is the http.Server ConnState hook.
func (cl *connLimiter) track(c net.Conn, state http.ConnState) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	switch state {
	case http.StateNew:
		if len(cl.conns) >= cl.limit {
			cl.rejected.Inc()
			_ = c.Close()
			return
		}
		cl.conns[c] = struct{}{}
	case http.StateHijacked, http.StateClosed:
		delete(cl.conns, c)
	}
	cl.open.Set(float64(len(cl.conns)))
}

// limitInFlight answers 503 while n requests of h are already being served,
// so that a burst of expensive requests cannot take the memory of the
// process with it. n <= 0 disables the bound.
func limitInFlight(h http.Handler, n int) http.Handler {
	if n <= 0 {
		return h
	}
	sem := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
			h.ServeHTTP(w, r)
		default:
			http.Error(w, "Too many requests in flight; try again later", http.StatusServiceUnavailable)
		}
	})
}

// contentSecurityPolicy allows the pages nothing but their own inline
// style sheet and same-origin forms: no script at all, no framing.
const contentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// securityHeaders sets headers that stop browsers from sniffing content
// types, running injected scripts or framing the pages.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// sameOrigin refuses state-changing requests a browser sends on behalf of
// another site: a page elsewhere can make a visitor's browser POST a form
// to /-/reload, but the browser then says so in Sec-Fetch-Site, and in
// Origin. Requests from curl, Prometheus or scripts carry neither header
// and pass.
func sameOrigin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
			http.Error(w, "cross-site request refused", http.StatusForbidden)
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" {
			u, err := url.Parse(origin)
			if err != nil || u.Host != r.Host {
				http.Error(w, "cross-origin request refused", http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
