package status

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

func serveInfo(t *testing.T, s *collector.Store, info Info, path string) (int, string) {
	t.Helper()
	h, err := NewHandler(s.Snapshot, info, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// gridHosts returns the host names of the grid cells, in page order.
func gridHosts(t *testing.T, body string) []string {
	t.Helper()
	re := regexp.MustCompile(`data-state="[a-z]+" href="\.\./hosts/[^/"]+/[^"]+" title="([^:"]+):`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestGridNaturalOrder(t *testing.T) {
	hosts := []string{"127.0.2.100", "127.0.2.10", "127.0.2.2", "127.0.2.1", "web10", "web2"}
	var targets []*config.Target
	for _, h := range hosts {
		targets = append(targets, target("s", h, "tcp"))
	}
	_, body := serve(t, newTestStore(t, targets, nil), "/sets/s")
	want := []string{"127.0.2.1", "127.0.2.2", "127.0.2.10", "127.0.2.100", "web2", "web10"}
	if got := gridHosts(t, body); !slices.Equal(got, want) {
		t.Errorf("grid order %v, want %v", got, want)
	}
}

func TestFilteredViewsNameHosts(t *testing.T) {
	const n = 300 // above namedCells: the unfiltered grid is squares only
	var targets []*config.Target
	var outcomes []probeOutcome
	for i := range n {
		h := "h" + strings.Repeat("0", 3-len(itoa(i))) + itoa(i)
		targets = append(targets, target("big", h, "icmp"))
		outcomes = append(outcomes, probeOutcome{h, "icmp", i%50 != 0, reasonIf(i%50 != 0)})
	}
	s := newTestStore(t, targets, outcomes)
	_, all := serve(t, s, "/sets/big")
	if strings.Contains(all, `icmp timeout">h000</a>`) {
		t.Error("the unfiltered grid of a large set names its cells")
	}
	_, down := serve(t, s, "/sets/big?state=down")
	for _, h := range []string{"h000", "h050", "h250"} {
		if !strings.Contains(down, `href="../hosts/big/`+h+`" title="`+h+`: down · icmp timeout">`+h+`</a>`) {
			t.Errorf("?state=down does not name %s", h)
		}
	}
	if got := strings.Count(down, `data-state="down"`); got != n/50 {
		t.Errorf("?state=down shows %d hosts, want %d", got, n/50)
	}
	_, q := serve(t, s, "/sets/big?q=H12")
	if got := gridHosts(t, q); !slices.Equal(got, []string{"h120", "h121", "h122", "h123", "h124", "h125", "h126", "h127", "h128", "h129"}) {
		t.Errorf("?q=H12 shows %v", got)
	}
	_, both := serve(t, s, "/sets/big?state=down&q=h1")
	if got := gridHosts(t, both); !slices.Equal(got, []string{"h100", "h150"}) {
		t.Errorf("?state=down&q=h1 shows %v", got)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func reasonIf(ok bool) probe.Reason {
	if ok {
		return ""
	}
	return probe.ReasonTimeout
}

func TestSearchPage(t *testing.T) {
	s := fixture(t)
	code, body := serve(t, s, "/search?q=WEB")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, frag := range []string{
		`4 hosts match “WEB”`,
		`<tr data-host="web3"><td><a href="sets/web">web</a></td><td><a href="hosts/web/web3">web3</a></td><td class="down">down</td><td>icmp timeout, tcp timeout</td></tr>`,
		`<tr data-host="web4">`,
		`value="WEB"`,
	} {
		if !strings.Contains(body, frag) {
			t.Errorf("search page lacks %q", frag)
		}
	}
	if strings.Contains(body, `data-host="db1"`) {
		t.Error("db1 matched web")
	}
	if _, body := serve(t, s, "/search"); !strings.Contains(body, "Type part of a host name") {
		t.Error("empty search lists hosts")
	}
}

func TestHostPage(t *testing.T) {
	ssh := target("db", "db1", "ssh")
	icmp := target("db", "db1", "icmp")
	other := []*config.Target{target("db", "db2", "ssh"), target("db", "db3", "ssh")}
	s := collector.NewStore()
	s.Reconcile(append([]*config.Target{ssh, icmp}, other...))
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	hashes := map[string]uint64{"db1": 111, "db2": 222, "db3": 222}
	for _, h := range []string{"db1", "db2", "db3"} {
		s.Update(probe.Result{
			Key: config.Key{Set: "db", Host: h, Probe: "ssh"}, Start: t0, Duration: 40 * time.Millisecond, Success: true,
			SSH: &probe.SSHResult{
				NewConnection: true, Connect: time.Millisecond, Handshake: 2 * time.Millisecond, Auth: 3 * time.Millisecond,
				Commands: []probe.CommandResult{{Name: "uname", Ran: true, Hash: hashes[h], Bytes: 6}, {Name: "check", Ran: true, ExitStatus: 3, Reason: probe.ReasonCommand, Hash: 5}},
			},
		})
	}
	s.Update(probe.Result{Key: icmp.Key(), Start: t0.Add(time.Minute), Duration: time.Second, Reason: probe.ReasonTimeout, ICMP: &probe.ICMPResult{Sent: 1}})

	code, body := serve(t, s, "/hosts/db/db1")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, frag := range []string{
		`id="host-state">degraded</span>`,
		`<tr data-probe="icmp"><td>icmp</td><td class="down" data-field="result">failed</td><td data-field="reason">timeout</td>`,
		`(since 2026-11-22T10:01:01Z)`,
		`<td data-phase="connect">1ms</td><td data-phase="handshake">2ms</td><td data-phase="auth">3ms</td>`,
		`<tr data-command="uname"><td>uname</td><td>yes</td><td class="n" data-field="exit">0</td><td></td><td data-field="hash"><code>111</code></td>`,
		`drifted: 1 of 3 hosts have this output, the majority (2) has 222`,
		`<tr data-command="check"><td>check</td><td>yes</td><td class="n" data-field="exit">3</td><td>command</td>`,
		`same on all 3 hosts`,
		`href="../../sets/db"`,
	} {
		if !strings.Contains(body, frag) {
			t.Errorf("host page lacks %q", frag)
		}
	}
	for _, path := range []string{"/hosts/db/nope", "/hosts/nope/db1"} {
		if code, _ := serve(t, s, path); code != 404 {
			t.Errorf("%s: status %d, want 404", path, code)
		}
	}
}

func TestDriftView(t *testing.T) {
	var targets []*config.Target
	hashes := map[string]uint64{}
	for i := 1; i <= 8; i++ {
		h := "127.0.1." + itoa(i)
		targets = append(targets, target("web", h, "ssh"))
		hashes[h] = 1000
	}
	hashes["127.0.1.3"], hashes["127.0.1.7"] = 2000, 2000
	hashes["127.0.1.5"] = 3000
	s := collector.NewStore()
	s.Reconcile(targets)
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for i, tg := range targets {
		s.Update(probe.Result{
			Key: tg.Key(), Start: t0.Add(time.Duration(i) * time.Minute), Success: true,
			SSH: &probe.SSHResult{Commands: []probe.CommandResult{{Name: "release", Ran: true, Hash: hashes[tg.Host]}}},
		})
	}
	_, body := serve(t, s, "/sets/web")
	for _, frag := range []string{
		`<table class="drift" data-command="release" data-distinct="3">`,
		`3 distinct outputs across 8 hosts`,
		`<tr data-hash="1000" class="majority"><td><code>1000</code> <small>majority</small></td><td class="n" data-field="count">5</td><td class="ranges">127.0.1.[1-2,4,6,8]</td><td>2026-11-22T10:07:00Z</td></tr>`,
		`<tr data-hash="2000" class="minority"><td><code>2000</code></td><td class="n" data-field="count">2</td><td class="ranges">127.0.1.[3,7]</td><td>2026-11-22T10:06:00Z</td></tr>`,
		`<a href="../hosts/web/127.0.1.3">127.0.1.3</a> changed 2026-11-22T10:02:00Z`,
		`<tr data-hash="3000" class="minority"><td><code>3000</code></td><td class="n" data-field="count">1</td><td class="ranges">127.0.1.5</td>`,
	} {
		if !strings.Contains(body, frag) {
			t.Errorf("drift view lacks %q", frag)
		}
	}
	// The majority's hosts are listed as ranges only.
	if strings.Contains(body, `127.0.1.1</a> changed`) {
		t.Error("majority hosts listed one by one")
	}
	if i, j := strings.Index(body, `data-hash="1000"`), strings.Index(body, `data-hash="2000"`); i > j {
		t.Error("majority not first")
	}
}

func TestDriftWithoutMajority(t *testing.T) {
	targets := []*config.Target{target("s", "a", "ssh"), target("s", "b", "ssh")}
	s := collector.NewStore()
	s.Reconcile(targets)
	for i, tg := range targets {
		s.Update(probe.Result{Key: tg.Key(), Start: time.Now(), Success: true, SSH: &probe.SSHResult{Commands: []probe.CommandResult{{Name: "c", Ran: true, Hash: uint64(10 + i)}}}})
	}
	_, body := serve(t, s, "/sets/s")
	if !strings.Contains(body, "no strict majority") || strings.Contains(body, `class="majority"`) {
		t.Error("a 1:1 split shows a majority")
	}
}

// TestCountsAgreeOnEveryPage checks that every page counts a host in the
// same state: the fleet totals in each page header, the landing summary and
// the set page.
func TestCountsAgreeOnEveryPage(t *testing.T) {
	s := fixture(t)
	totals := regexp.MustCompile(`data-total="([a-z]+)">[a-z]+ (\d+)<`)
	want := map[string]string{"up": "1", "degraded": "1", "down": "2", "pending": "1"}
	for _, path := range []string{"/", "/sets/web", "/sets/db", "/hosts/web/web1", "/search?q=x"} {
		_, body := serve(t, s, path)
		got := map[string]string{}
		for _, m := range totals.FindAllStringSubmatch(body, -1) {
			got[m[1]] = m[2]
		}
		if len(got) != 4 {
			t.Errorf("%s: totals %v", path, got)
		}
		for st, n := range want {
			if got[st] != n {
				t.Errorf("%s: total %s = %s, want %s", path, st, got[st], n)
			}
		}
	}
	_, landing := serve(t, s, "/")
	_, set := serve(t, s, "/sets/web")
	for _, f := range []string{"hosts", "up", "degraded", "down", "pending"} {
		if a, b := field(t, landing, "web", f), field(t, set, "web", f); a != b {
			t.Errorf("%s: landing says %s, set page %s", f, a, b)
		}
	}
}

func TestReloadFailureOnEveryPage(t *testing.T) {
	s := fixture(t)
	at := time.Date(2026, 12, 1, 23, 0, 0, 0, time.UTC)
	cfg, err := config.Parse([]byte("host_sets:\n  - name: web\n    hosts: [web1]\n    probes: {tcp: {port: 22}}\n"), "fleet.yml")
	if err != nil {
		t.Fatal(err)
	}
	info := Info{
		Config: func() *config.Config { return cfg },
		Reload: func() ReloadStatus {
			return ReloadStatus{Failed: true, Err: "fleet.yml:3: host_sets[0].probes.tcp.port: must be 1..65535", At: at, LastSuccess: at.Add(-time.Hour)}
		},
	}
	for _, path := range []string{"/", "/sets/web", "/hosts/web/web1", "/search?q=web", "/config"} {
		code, body := serveInfo(t, s, info, path)
		if code != 200 {
			t.Errorf("%s: status %d", path, code)
		}
		if !strings.Contains(body, `id="reload-failed"`) || !strings.Contains(body, "host_sets[0].probes.tcp.port: must be 1..65535") || !strings.Contains(body, "loaded 2026-12-01T22:00:00Z") {
			t.Errorf("%s does not show the failed reload", path)
		}
	}
	info.Reload = func() ReloadStatus { return ReloadStatus{At: at, LastSuccess: at} }
	if _, body := serveInfo(t, s, info, "/"); strings.Contains(body, "reload-failed") {
		t.Error("a successful reload shows as failed")
	}
}

func TestConfigPage(t *testing.T) {
	src := `host_sets:
  - name: db
    hosts: [db1]
    labels: {api_token: hunter2, team: dba}
    probes:
      ssh:
        user: probe
        private_key_file: /etc/fleet/id_ed25519
        passphrase_file: /etc/fleet/passphrase
        known_hosts_file: /etc/fleet/known_hosts
`
	cfg, err := config.Parse([]byte(src), "fleet.yml")
	if err != nil {
		t.Fatal(err)
	}
	info := Info{Config: func() *config.Config { return cfg }}
	code, body := serveInfo(t, fixture(t), info, "/config")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, frag := range []string{
		"api_token: &lt;secret&gt;", "team: dba", "private_key_file: /etc/fleet/id_ed25519",
		"passphrase_file: /etc/fleet/passphrase", "user: probe", cfg.Hash,
		// Defaults are filled in.
		"interval: 1m",
	} {
		if !strings.Contains(body, frag) {
			t.Errorf("config page lacks %q", frag)
		}
	}
	if strings.Contains(body, "hunter2") {
		t.Error("config page shows a secret")
	}
	if code, _ := serve(t, fixture(t), "/config"); code != 404 {
		t.Errorf("/config without a config hook: status %d, want 404", code)
	}
}

func TestMaskNode(t *testing.T) {
	tests := []struct{ key, value, want string }{
		{"password", "s3cret", masked},
		{"bearer_token", "abc", masked},
		{"secret_key", "abc", masked},
		{"keys", "abc", "abc"},
		{"password_file", "/etc/pw", "/etc/pw"},
		{"url", "https://user:pw@example.invalid/sd", "https://user:xxxxx@example.invalid/sd"},
		{"url", "https://example.invalid/sd", "https://example.invalid/sd"},
		{"name", "token-bucket", "token-bucket"},
		{"password", "", ""},
	}
	for _, tc := range tests {
		got, want := maskedValue(t, tc.key, tc.value), tc.want
		if got != want {
			t.Errorf("%s: %q masked to %q, want %q", tc.key, tc.value, got, want)
		}
	}
}

// maskedValue masks a one-key mapping and returns the value.
func maskedValue(t *testing.T, key, value string) string {
	t.Helper()
	var n yaml.Node
	if err := n.Encode(map[string]string{key: value}); err != nil {
		t.Fatal(err)
	}
	maskNode(&n, false)
	return n.Content[1].Value
}

func TestSetsNaturalOrder(t *testing.T) {
	var targets []*config.Target
	for _, set := range []string{"rack10", "rack2", "rack1"} {
		targets = append(targets, target(set, "h", "tcp"))
	}
	_, body := serve(t, newTestStore(t, targets, nil), "/")
	i1, i2, i10 := strings.Index(body, `data-set="rack1"`), strings.Index(body, `data-set="rack2"`), strings.Index(body, `data-set="rack10"`)
	if i1 < 0 || i1 >= i2 || i2 >= i10 {
		t.Errorf("sets not in natural order: rack1 at %d, rack2 at %d, rack10 at %d", i1, i2, i10)
	}
}

// TestDriftViewBounded: a command whose output differs on every host lists
// at most maxGroupsListed hashes, and says how many hosts it left off.
func TestDriftViewBounded(t *testing.T) {
	const n = 300
	var targets []*config.Target
	for i := range n {
		targets = append(targets, target("s", "h"+strconv.Itoa(i), "ssh"))
	}
	s := collector.NewStore()
	s.Reconcile(targets)
	for i, tg := range targets {
		s.Update(probe.Result{Key: tg.Key(), Start: time.Now(), Success: true, SSH: &probe.SSHResult{Commands: []probe.CommandResult{{Name: "hostname", Ran: true, Hash: uint64(1000 + i)}}}})
	}
	_, body := serve(t, s, "/sets/s")
	if got := strings.Count(body, `<tr data-hash=`); got != maxGroupsListed {
		t.Errorf("%d hashes listed, want %d", got, maxGroupsListed)
	}
	for _, frag := range []string{`data-distinct="300"`, "300 distinct outputs across 300 hosts", "50 of 300 outputs listed; 250 more hosts"} {
		if !strings.Contains(body, frag) {
			t.Errorf("drift view lacks %q", frag)
		}
	}
}

// TestConfigPageMasksDiscoveryCredentials: the HTTP client settings of an
// http_sd source carry inline secrets (basic_auth password, authorization
// credentials); /config must not show them.
func TestConfigPageMasksDiscoveryCredentials(t *testing.T) {
	src := `host_sets:
  - name: web
    http_sd:
      - url: https://user:urlpass@cmdb.example.invalid/sd
        basic_auth: {username: sd, password: hunter2}
    probes: {tcp: {port: 22}}
  - name: api
    http_sd:
      - url: https://cmdb.example.invalid/sd2
        authorization: {type: Bearer, credentials: s3cr3t-token}
    probes: {tcp: {port: 22}}
`
	cfg, err := config.Parse([]byte(src), "fleet.yml")
	if err != nil {
		t.Skipf("this config has no http_sd with inline credentials: %v", err)
	}
	_, body := serveInfo(t, fixture(t), Info{Config: func() *config.Config { return cfg }}, "/config")
	for _, secret := range []string{"hunter2", "s3cr3t-token", "urlpass"} {
		if strings.Contains(body, secret) {
			t.Errorf("/config shows the secret %q", secret)
		}
	}
	for _, frag := range []string{"username: sd", "cmdb.example.invalid/sd2"} {
		if !strings.Contains(body, frag) {
			t.Errorf("/config lacks %q", frag)
		}
	}
}

// TestPagesNameTCPPorts checks that a host probed on several TCP ports shows
// each port on its own, on the host page, in the failing table and in search.
func TestPagesNameTCPPorts(t *testing.T) {
	var targets []*config.Target
	for _, port := range []int{22, 443} {
		tg := target("edge", "gw1", "tcp")
		tg.Port = port
		targets = append(targets, tg)
	}
	s := collector.NewStore()
	s.Reconcile(targets)
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	s.Update(probe.Result{Key: targets[0].Key(), Start: t0, Duration: time.Millisecond, Success: true})
	s.Update(probe.Result{Key: targets[1].Key(), Start: t0, Duration: time.Millisecond, Reason: probe.ReasonRefused})

	_, host := serve(t, s, "/hosts/edge/gw1")
	for _, frag := range []string{`<td>tcp:22</td><td class="up"`, `<td>tcp:443</td><td class="down"`} {
		if !strings.Contains(host, frag) {
			t.Errorf("host page lacks %q", frag)
		}
	}
	_, set := serve(t, s, "/sets/edge")
	if !strings.Contains(set, `<span class="probe">tcp:443</span>: refused`) {
		t.Error("failing table does not name the port that failed")
	}
	_, search := serve(t, s, "/search?q=gw1")
	if !strings.Contains(search, "tcp:22 ok, tcp:443 refused") {
		t.Error("search result does not name both ports")
	}
}
