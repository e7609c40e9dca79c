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
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/version"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// httpSource fetches a Prometheus http_sd endpoint.
type httpSource struct {
	url     string
	timeout time.Duration
	refresh time.Duration
	client  *http.Client
}

func newHTTPSource(h *config.HTTPSD) (*httpSource, error) {
	client, err := commoncfg.NewClientFromConfig(h.HTTPClientConfig, "http_sd")
	if err != nil {
		return nil, err
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
