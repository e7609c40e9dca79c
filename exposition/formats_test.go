package exposition

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/fleet-exporter/fleet_exporter/collector"
)

// Accept headers of the three formats, as Prometheus sends them when
// scrape_protocols names only that format.
const (
	acceptText        = "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
	acceptOpenMetrics = "application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.2"
	acceptProto       = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,*/*;q=0.2"
)

// decodeBody decodes a /metrics response body in the format its
// Content-Type names, gunzipping it first when it is gzip-encoded. The
// families come back in name order.
func decodeBody(t *testing.T, header http.Header, body []byte) []*dto.MetricFamily {
	t.Helper()
	if header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatalf("gunzip: %v", err)
		}
	}
	format := expfmt.ResponseFormat(header)
	if format.FormatType() == expfmt.TypeOpenMetrics && !bytes.HasSuffix(body, []byte("\n# EOF\n")) {
		t.Fatalf("OpenMetrics body does not end with # EOF:\n...%s", body[max(0, len(body)-200):])
	}
	dec := expfmt.NewDecoder(bytes.NewReader(body), format)
	var out []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode %s: %v", format, err)
		}
		out = append(out, mf)
	}
	slices.SortStableFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// familiesText renders decoded families as text 0.0.4, one canonical form
// for comparing what two responses carried. Families that depend on the
// request being served (the in-flight gauge, the request counters) are
// left out by the callers' registries.
func familiesText(t *testing.T, mfs []*dto.MetricFamily) string {
	t.Helper()
	var b strings.Builder
	for _, mf := range mfs {
		// OpenMetrics names a counter's family without _total; put it
		// back so every format renders alike.
		if mf.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(mf.GetName(), "_total") {
			name := mf.GetName() + "_total"
			mf.Name = &name
		}
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestHandlerNegotiatesFormats scrapes the handler with the Accept headers
// of several clients and checks the format chosen; every response is
// decoded with expfmt's decoder for its format and must carry the same
// families and samples as the registry road (promhttp over a registry
// holding collector.NewCollector) and the transactional road in that
// format, plain and gzipped.
func TestHandlerNegotiatesFormats(t *testing.T) {
	// Small: the OpenMetrics decoder is a strict ABNF parser, slow per
	// line. Every family is present (some hosts fail, SSH has phases and
	// a command).
	store, _ := handlerStore(6, true)
	h := mustHandler(t, selfRegistry(), store.Snapshot, 0, discardLogger())

	reg := selfRegistry()
	reg.MustRegister(collector.NewCollector(store))
	registryRoad := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry: reg, ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true,
	})
	transactionalRoad := NewTransactionalHandler(Options{Registry: selfRegistry(), Snapshot: store.Snapshot})

	// The reference in each format type, decoded.
	want := map[expfmt.FormatType]string{}
	for typ, accept := range map[expfmt.FormatType]string{
		expfmt.TypeTextPlain:   acceptText,
		expfmt.TypeOpenMetrics: acceptOpenMetrics,
		expfmt.TypeProtoDelim:  acceptProto,
	} {
		rec := scrape(t, registryRoad, http.Header{"Accept": {accept}}, "")
		if got := expfmt.ResponseFormat(rec.Header()).FormatType(); got != typ {
			t.Fatalf("registry road answered %q with %q", accept, rec.Header().Get("Content-Type"))
		}
		want[typ] = familiesText(t, decodeBody(t, rec.Header(), rec.Body.Bytes()))
		for _, name := range []string{"fleet_host_up", "fleet_probe_failure_info", "fleet_ssh_phase_seconds", "fleet_icmp_packets_sent_total", "fleet_probes_total"} {
			if !strings.Contains(want[typ], "# TYPE "+name+" ") {
				t.Fatalf("reference in %v lacks %s", typ, name)
			}
		}
	}
	// The formats carry the same samples: decoded, they agree.
	if diff := cmp.Diff(want[expfmt.TypeTextPlain], want[expfmt.TypeProtoDelim]); diff != "" {
		t.Errorf("registry road: protobuf and text differ (-text +proto):\n%s", diff)
	}
	if diff := cmp.Diff(want[expfmt.TypeTextPlain], want[expfmt.TypeOpenMetrics]); diff != "" {
		t.Errorf("registry road: OpenMetrics and text differ (-text +openmetrics):\n%s", diff)
	}

	tests := []struct {
		name, accept string
		// wantType is the format type and wantVersion the version
		// parameter the Content-Type must have.
		wantType    expfmt.FormatType
		wantVersion string
	}{
		{"no accept header", "", expfmt.TypeTextPlain, "0.0.4"},
		{"curl", "*/*", expfmt.TypeTextPlain, "0.0.4"},
		{"browser", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", expfmt.TypeTextPlain, "0.0.4"},
		{"text", acceptText, expfmt.TypeTextPlain, "0.0.4"},
		{"openmetrics 1.0", acceptOpenMetrics, expfmt.TypeOpenMetrics, "1.0.0"},
		{"openmetrics without version", "application/openmetrics-text", expfmt.TypeOpenMetrics, "0.0.1"},
		{
			"prometheus 2.x default", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
			expfmt.TypeOpenMetrics, "1.0.0",
		},
		{"protobuf", acceptProto, expfmt.TypeProtoDelim, ""},
		{
			"protobuf first", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
			expfmt.TypeProtoDelim, "",
		},
		{"protobuf text is not offered", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text", expfmt.TypeTextPlain, "0.0.4"},
		{"openmetrics 2.0 is not offered", "application/openmetrics-text;version=2.0.0", expfmt.TypeTextPlain, "0.0.4"},
	}
	for _, tc := range tests {
		for _, enc := range []string{"identity", "gzip"} {
			t.Run(tc.name+"/"+enc, func(t *testing.T) {
				header := http.Header{"Accept-Encoding": {enc}}
				if tc.accept != "" {
					header.Set("Accept", tc.accept)
				}
				for road, handler := range map[string]http.Handler{"handler": h, "transactional": transactionalRoad} {
					rec := scrape(t, handler, header, "")
					if rec.Code != http.StatusOK {
						t.Fatalf("%s: status %d: %s", road, rec.Code, rec.Body)
					}
					format := expfmt.ResponseFormat(rec.Header())
					if format.FormatType() != tc.wantType || format.Version() != tc.wantVersion {
						t.Fatalf("%s: Content-Type %q, want type %v version %q", road, rec.Header().Get("Content-Type"), tc.wantType, tc.wantVersion)
					}
					if gz := rec.Header().Get("Content-Encoding") == "gzip"; gz != (enc == "gzip") {
						t.Errorf("%s: Content-Encoding %q for Accept-Encoding %s", road, rec.Header().Get("Content-Encoding"), enc)
					}
					if vary := rec.Header().Values("Vary"); !slices.Contains(vary, "Accept") || !slices.Contains(vary, "Accept-Encoding") {
						t.Errorf("%s: Vary %q", road, vary)
					}
					got := familiesText(t, decodeBody(t, rec.Header(), rec.Body.Bytes()))
					if diff := cmp.Diff(want[tc.wantType], got); diff != "" {
						t.Errorf("%s: decoded families differ from the registry road (-registry +%s):\n%s", road, road, diff)
					}
				}
			})
		}
	}
}

// TestHandlerOpenMetricsShape checks what the OpenMetrics exposition adds to
// the text format: counters' HELP and TYPE without _total, samples with it,
// no _created samples for the store's counters (it has no creation times),
// floats with a decimal point and a final # EOF.
func TestHandlerOpenMetricsShape(t *testing.T) {
	store, _ := handlerStore(20, true)
	h := mustHandler(t, selfRegistry(), store.Snapshot, 0, discardLogger())
	body := scrape(t, h, http.Header{"Accept": {acceptOpenMetrics}}, "").Body.String()
	for _, want := range []string{
		"# HELP fleet_icmp_packets_sent Number of ICMP echo requests sent.\n# TYPE fleet_icmp_packets_sent counter\n",
		"# TYPE fleet_probes counter\n",
		"# TYPE fleet_host_up gauge\n",
		`fleet_probes_total{probe="icmp",result="success",set="set00"} 2.0` + "\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("OpenMetrics body lacks %q", want)
		}
	}
	for _, bad := range []string{"_created", "# TYPE fleet_probes_total", "\n# EOF\n# "} {
		if strings.Contains(body, bad) {
			t.Errorf("OpenMetrics body has %q", bad)
		}
	}
	if !strings.HasSuffix(body, "\n# EOF\n") || strings.Count(body, "# EOF") != 1 {
		t.Errorf("OpenMetrics body does not end with exactly one # EOF")
	}
}

// TestHandlerProtobufNameFilter checks name[] with the protobuf format,
// where the store's families come from the Gatherer.
func TestHandlerProtobufNameFilter(t *testing.T) {
	store, _ := handlerStore(20, true)
	h := mustHandler(t, selfRegistry(), store.Snapshot, 0, discardLogger())
	rec := scrape(t, h, http.Header{"Accept": {acceptProto}}, "?name[]=fleet_ssh_phase_seconds&name[]=fleet_probes_skipped_total")
	var got []string
	for _, mf := range decodeBody(t, rec.Header(), rec.Body.Bytes()) {
		got = append(got, mf.GetName())
	}
	if diff := cmp.Diff([]string{"fleet_probes_skipped_total", "fleet_ssh_phase_seconds"}, got); diff != "" {
		t.Errorf("families (-want +got):\n%s", diff)
	}
}
