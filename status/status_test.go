package status

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

func TestMain(m *testing.M) {
	testutil.Main(m)
}

type probeOutcome struct {
	host, probe string
	ok          bool
	reason      probe.Reason
}

// newTestStore configures targets and feeds one result per outcome; targets
// without an outcome stay pending.
func newTestStore(t testing.TB, targets []*config.Target, outcomes []probeOutcome) *collector.Store {
	t.Helper()
	s := collector.NewStore()
	s.Reconcile(targets)
	start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, o := range outcomes {
		var set string
		for _, tg := range targets {
			if tg.Host == o.host && tg.Probe == o.probe {
				set = tg.Set
			}
		}
		r := probe.Result{
			Key:      config.Key{Set: set, Host: o.host, Probe: o.probe},
			Due:      start,
			Start:    start,
			Duration: 10 * time.Millisecond,
			Success:  o.ok,
			Reason:   o.reason,
		}
		if o.probe == config.ProbeICMP {
			r.ICMP = &probe.ICMPResult{Sent: 1}
			if o.ok {
				r.ICMP.Received = 1
			}
		}
		s.Update(r)
	}
	return s
}

func target(set, host, probe string) *config.Target {
	return testutil.NewTarget(set, host, probe, testutil.WithTimeout(time.Second))
}

// serve is serveInfo with the Info of most tests.
func serve(t *testing.T, s *collector.Store, path string) (int, string) {
	t.Helper()
	return serveInfo(t, s, Info{Version: "test", ConfigFile: "fleet.yml"}, path)
}

func fixture(t *testing.T) *collector.Store {
	targets := []*config.Target{
		target("web", "web1", "icmp"), target("web", "web1", "tcp"),
		target("web", "web2", "icmp"), target("web", "web2", "tcp"),
		target("web", "web3", "icmp"), target("web", "web3", "tcp"),
		target("web", "web4", "icmp"),
		target("db", "db1", "ssh"),
	}
	return newTestStore(t, targets, []probeOutcome{
		{"web1", "icmp", true, ""}, {"web1", "tcp", true, ""}, // up
		{"web2", "icmp", true, ""}, {"web2", "tcp", false, probe.ReasonRefused}, // degraded
		{"web3", "icmp", false, probe.ReasonTimeout}, {"web3", "tcp", false, probe.ReasonTimeout}, // down
		// web4 pending
		{"db1", "ssh", false, probe.ReasonHostKey}, // down
	})
}

func field(t *testing.T, body, set, name string) string {
	t.Helper()
	re := regexp.MustCompile(`<tr data-set="` + set + `">.*?data-field="` + name + `">(\d+)<`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s count for set %s in\n%s", name, set, body)
	}
	return m[1]
}

func TestLandingPage(t *testing.T) {
	code, body := serve(t, fixture(t), "/")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	want := map[string]map[string]string{
		"web": {"hosts": "4", "up": "1", "down": "1", "degraded": "1", "pending": "1"},
		"db":  {"hosts": "1", "up": "0", "down": "1", "degraded": "0", "pending": "0"},
	}
	for set, fields := range want {
		for f, v := range fields {
			if got := field(t, body, set, f); got != v {
				t.Errorf("set %s %s = %s, want %s", set, f, got, v)
			}
		}
	}
	for _, frag := range []string{
		`<tr data-host="web2"><td><a href="hosts/web/web2">web2</a></td><td class="degraded">degraded</td><td><span class="probe">tcp</span>: refused</td>`,
		// One row per host, every failing probe in it.
		`<tr data-host="web3"><td><a href="hosts/web/web3">web3</a></td><td class="down">down</td><td><span class="probe">icmp</span>: timeout, <span class="probe">tcp</span>: timeout</td>`,
		`<tr data-host="db1"><td><a href="hosts/db/db1">db1</a></td><td class="down">down</td><td><span class="probe">ssh</span>: hostkey</td>`,
		`href="sets/web"`, `href="metrics"`,
	} {
		if !strings.Contains(body, frag) {
			t.Errorf("landing page lacks %q", frag)
		}
	}
	if strings.Contains(body, `data-host="web1"`) {
		t.Error("a healthy host is listed as failing")
	}
	if n := strings.Count(body, `<tr data-host="web3">`); n != 1 {
		t.Errorf("web3 has %d rows in the failing table, want 1", n)
	}
}

func TestSetPage(t *testing.T) {
	s := fixture(t)
	tests := []struct {
		path      string
		code      int
		wantCount int
		wantState string
	}{
		{"/sets/web", 200, 4, ""},
		{"/sets/web?state=down", 200, 1, "down"},
		{"/sets/web?state=degraded", 200, 1, "degraded"},
		{"/sets/web?state=pending", 200, 1, "pending"},
		{"/sets/web?state=up", 200, 1, "up"},
		{"/sets/db?state=up", 200, 0, ""},
		{"/sets/nope", 404, 0, ""},
		{"/sets/web?state=bogus", 400, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			code, body := serve(t, s, tc.path)
			if code != tc.code {
				t.Fatalf("status %d, want %d", code, tc.code)
			}
			if code != 200 {
				return
			}
			if got := strings.Count(body, "data-state="); got != tc.wantCount {
				t.Errorf("grid has %d hosts, want %d", got, tc.wantCount)
			}
			if tc.wantState != "" && !strings.Contains(body, `data-state="`+tc.wantState+`"`) {
				t.Errorf("grid lacks a %s host", tc.wantState)
			}
		})
	}
}

// TestEscaping feeds hostile host names through the store: the pages must
// escape them, never emit them as markup.
func TestEscaping(t *testing.T) {
	evil := `<script>alert(1)</script>`
	s := newTestStore(t, []*config.Target{target("x", evil, "tcp")}, []probeOutcome{{evil, "tcp", false, probe.ReasonRefused}})
	for _, path := range []string{"/", "/sets/x", "/hosts/x/" + url.PathEscape(evil), "/search?q=script"} {
		code, body := serve(t, s, path)
		if code != 200 {
			t.Errorf("%s: status %d", path, code)
		}
		if strings.Contains(body, evil) {
			t.Errorf("%s: host name emitted unescaped", path)
		}
		if !strings.Contains(body, "&lt;script&gt;") {
			t.Errorf("%s: escaped host name missing", path)
		}
	}
}

func TestLargeSetGrid(t *testing.T) {
	const n = 10000
	targets := make([]*config.Target, 0, n)
	var outcomes []probeOutcome
	for i := range n {
		h := fmt.Sprintf("h%05d", i)
		targets = append(targets, target("big", h, "icmp"))
		outcomes = append(outcomes, probeOutcome{h, "icmp", i%10 != 0, probe.ReasonTimeout})
	}
	for i := range outcomes {
		if outcomes[i].ok {
			outcomes[i].reason = ""
		}
	}
	s := newTestStore(t, targets, outcomes)
	_, body := serve(t, s, "/sets/big")
	if got := strings.Count(body, `data-state="down"`); got != n/10 {
		t.Errorf("down hosts in grid = %d, want %d", got, n/10)
	}
	if len(body) > 200*n {
		t.Errorf("grid page is %d bytes for %d hosts; keep it compact", len(body), n)
	}
	_, body = serve(t, s, "/")
	if !strings.Contains(body, "more failing hosts") {
		t.Error("landing page does not truncate a long failure list")
	}
}

func BenchmarkSetPage10k(b *testing.B) {
	targets := make([]*config.Target, 0, 10000)
	for i := range 10000 {
		targets = append(targets, target("big", fmt.Sprintf("h%05d", i), "icmp"))
	}
	s := newTestStore(b, targets, nil)
	h, err := NewHandler(s.Snapshot, Info{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/sets/big", nil))
	}
}
