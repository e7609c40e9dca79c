package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/version"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/fileload"
)

// httpSource fetches a Prometheus http_sd endpoint.
type httpSource struct {
	url     string
	timeout time.Duration
	refresh time.Duration
	client  *http.Client
}

func newHTTPSource(h *config.HTTPSD) (*httpSource, error) {
	cc, headerFiles := boundedFiles(h.HTTPClientConfig)
	client, err := commoncfg.NewClientFromConfig(cc, "http_sd", commoncfg.WithSecretManager(fileSecrets{}))
	if err != nil {
		return nil, err
	}
	if len(headerFiles) > 0 {
		client.Transport = &fileHeaders{files: headerFiles, next: client.Transport}
	}
	// The context bounds each fetch; the client timeout backs it up for
	// the body read.
	client.Timeout = h.Timeout.D()
	return &httpSource{url: h.URL, timeout: h.Timeout.D(), refresh: h.RefreshInterval.D(), client: client}, nil
}

// read fetches and parses the endpoint's target groups.
func (h *httpSource) read(ctx context.Context) ([]Group, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return nil, &readError{reason: ReasonHTTP, err: err}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "fleet_exporter/"+version.Version)
	req.Header.Set("X-Prometheus-Refresh-Interval-Seconds", strconv.Itoa(int(h.refresh.Seconds())))
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, &readError{reason: httpReason(ctx, err), err: err}
	}
	defer func() {
		// Drain a little so that the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 4096)
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return nil, &readError{reason: ReasonHTTPStatus, err: fmt.Errorf("%s returned HTTP status %s", redactURL(h.url), resp.Status)}
	}
	if ct, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		return nil, &readError{reason: ReasonParse, err: fmt.Errorf("%s returned Content-Type %q, want application/json", redactURL(h.url), resp.Header.Get("Content-Type"))}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxSourceBytes+1))
	if err != nil {
		return nil, &readError{reason: httpReason(ctx, err), err: err}
	}
	if len(data) > MaxSourceBytes {
		return nil, &readError{reason: ReasonTooLarge, err: fmt.Errorf("%s returned more than %d bytes", redactURL(h.url), MaxSourceBytes)}
	}
	groups, err := parseJSON(data)
	if err != nil {
		return nil, &readError{reason: ReasonParse, err: err}
	}
	u := redactURL(h.url)
	for i := range groups {
		groups[i].Labels = withLabel(groups[i].Labels, "__meta_url", u)
	}
	return groups, nil
}

// httpReason tells a timeout from any other transport failure.
func httpReason(ctx context.Context, err error) string {
	var ne interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
		return ReasonTimeout
	}
	return ReasonHTTP
}

// redactURL drops the user information of a URL for labels and logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	u.User = nil
	return u.String()
}

// close releases the client's idle connections.
func (h *httpSource) close() { h.client.CloseIdleConnections() }

// fileSecrets reads the credential, TLS and header files of an http_sd
// source like every other file the config names: regular files only,
// through a bounded read, so that a FIFO, a device or an oversized file
// is an error at once instead of a read that blocks the reloader (the
// first read runs inside ApplyConfig) or exhausts memory. Left to itself,
// prometheus/common would read them with os.ReadFile on every request;
// boundedFiles hands it their paths as secret references instead.
type fileSecrets struct{}

// Fetch implements commoncfg.SecretManager; ref is a file path. Like
// prometheus/common's own file secrets, surrounding space is dropped.
func (fileSecrets) Fetch(_ context.Context, path string) (string, error) {
	b, err := fileload.Read(path, fileload.MaxSecretSize)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	clear(b)
	return s, nil
}

// boundedFiles returns c with every file setting moved to the matching
// secret reference, which fileSecrets reads, and without the files of
// http_headers, which have no reference form: they are returned by header
// name for fileHeaders to add. c's pointers are copied, never modified.
func boundedFiles(c commoncfg.HTTPClientConfig) (commoncfg.HTTPClientConfig, map[string][]string) {
	move := func(file, ref *string) {
		if *file != "" {
			*ref, *file = *file, ""
		}
	}
	tls := func(t *commoncfg.TLSConfig) {
		move(&t.CAFile, &t.CARef)
		move(&t.CertFile, &t.CertRef)
		move(&t.KeyFile, &t.KeyRef)
	}
	tls(&c.TLSConfig)
	if c.BearerTokenFile != "" {
		// Validate, run at load, turns this into authorization; a
		// config built by hand may still carry it.
		c.Authorization = &commoncfg.Authorization{Type: "Bearer", CredentialsFile: c.BearerTokenFile}
		c.BearerTokenFile = ""
	}
	if c.Authorization != nil {
		a := *c.Authorization
		move(&a.CredentialsFile, &a.CredentialsRef)
		c.Authorization = &a
	}
	if c.BasicAuth != nil {
		ba := *c.BasicAuth
		move(&ba.UsernameFile, &ba.UsernameRef)
		move(&ba.PasswordFile, &ba.PasswordRef)
		c.BasicAuth = &ba
	}
	if c.OAuth2 != nil {
		o := *c.OAuth2
		move(&o.ClientSecretFile, &o.ClientSecretRef)
		move(&o.ClientCertificateKeyFile, &o.ClientCertificateKeyRef)
		tls(&o.TLSConfig)
		c.OAuth2 = &o
	}
	var files map[string][]string
	if c.HTTPHeaders != nil {
		hs := &commoncfg.Headers{Headers: make(map[string]commoncfg.Header, len(c.HTTPHeaders.Headers))}
		for name, h := range c.HTTPHeaders.Headers {
			if len(h.Files) > 0 {
				if files == nil {
					files = map[string][]string{}
				}
				files[name] = h.Files
				h.Files = nil
			}
			hs.Headers[name] = h
		}
		c.HTTPHeaders = hs
	}
	return c, files
}

// fileHeaders adds the http_headers values that come from files, read by
// fileSecrets on every request as prometheus/common would.
type fileHeaders struct {
	files map[string][]string
	next  http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (rt *fileHeaders) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	for name, paths := range rt.files {
		for _, p := range paths {
			v, err := fileSecrets{}.Fetch(req.Context(), p)
			if err != nil {
				if req.Body != nil {
					_ = req.Body.Close()
				}
				return nil, fmt.Errorf("http_headers %s: %w", name, err)
			}
			req.Header.Add(name, v)
		}
	}
	return rt.next.RoundTrip(req)
}

// CloseIdleConnections closes the idle connections of the transport below.
func (rt *fileHeaders) CloseIdleConnections() {
	if ci, ok := rt.next.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
