package status

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// keyNow is the time the host key pages are rendered at.
var keyNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// presents records an SSH result of target tg that ended at end and
// presented key; a nil key is a probe that timed out before the handshake.
func presents(s *collector.Store, tg *config.Target, end time.Time, key *probe.HostKey) {
	r := probe.Result{Key: tg.Key(), Start: end.Add(-time.Second), Duration: time.Second, Success: true, SSH: &probe.SSHResult{HostKey: key}}
	if key == nil {
		r.Success, r.Reason = false, probe.ReasonTimeout
	}
	s.Update(r)
}

func plainKey(fp string) *probe.HostKey {
	return &probe.HostKey{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:" + fp}
}

// serveAt serves path from s with the handler's clock at now.
func serveAt(t *testing.T, s *collector.Store, now time.Time, path string) string {
	t.Helper()
	h, err := NewHandler(s.Snapshot, Info{Version: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.now = func() time.Time { return now }
	mux := http.NewServeMux()
	h.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: status %d", path, rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// keyFleet returns a store where web[1-3] are clones (web1 also in set
// "other", on port 2222), db1's key changed an hour ago, db2's two days ago,
// db3 never presented a key and web4 presents a certificate.
func keyFleet(t *testing.T) *collector.Store {
	t.Helper()
	var targets []*config.Target
	add := func(set, host string) *config.Target {
		tg := target(set, host, config.ProbeSSH)
		targets = append(targets, tg)
		return tg
	}
	web := []*config.Target{add("web", "web1"), add("web", "web2"), add("web", "web3")}
	web1Other := add("other", "web1:2222")
	web1Other.Name = "web1"
	web4 := add("web", "web4")
	db1, db2, db3 := add("db", "db1"), add("db", "db2"), add("db", "db3")
	s := collector.NewStore()
	s.Reconcile(targets)
	for _, tg := range append(web, web1Other) {
		presents(s, tg, keyNow.Add(-3*time.Hour), plainKey("clone"))
	}
	presents(s, web4, keyNow.Add(-3*time.Hour), &probe.HostKey{
		Type: "ecdsa-sha2-nistp256", FingerprintSHA256: "SHA256:cert", Certificate: true, CertificateExpiry: keyNow.Add(30 * 24 * time.Hour),
	})
	presents(s, db1, keyNow.Add(-3*time.Hour), plainKey("db1-old"))
	presents(s, db1, keyNow.Add(-time.Hour), plainKey("db1-new"))
	presents(s, db2, keyNow.Add(-72*time.Hour), plainKey("db2-old"))
	presents(s, db2, keyNow.Add(-48*time.Hour), plainKey("db2-new"))
	presents(s, db3, keyNow.Add(-time.Hour), nil)
	return s
}

func TestLandingHostKeys(t *testing.T) {
	body := serveAt(t, keyFleet(t), keyNow, "/")
	for _, frag := range []string{
		`<h2 id="host-keys">Host keys</h2>`,
		`<tr data-set="db" data-host="db1"><td><a href="sets/db">db</a></td><td><a href="hosts/db/db1">db1</a></td><td><code>SHA256:db1-old</code></td><td>→ <code>SHA256:db1-new</code></td><td>ssh-ed25519</td><td>2026-11-22T11:00:00Z</td><td>1h0m0s</td></tr>`,
		// web1 in two sets is one host: web1, web2, web3.
		`<tr data-fingerprint="SHA256:clone"><td><code>SHA256:clone</code></td><td class="n" data-field="count">3</td><td class="ranges">web[1-3]</td><td><a href="sets/other">other</a>, <a href="sets/web">web</a></td></tr>`,
	} {
		if !strings.Contains(body, frag) {
			t.Errorf("landing page lacks %q", frag)
		}
	}
	// db2 changed two days ago; unique keys are no group.
	for _, frag := range []string{`data-host="db2"`, `data-fingerprint="SHA256:db1-new"`, `data-fingerprint="SHA256:cert"`} {
		if strings.Contains(body, frag) {
			t.Errorf("landing page has %q", frag)
		}
	}

	// Without changes or clones the section says so; without any SSH
	// host key it is left out.
	s := collector.NewStore()
	one := target("db", "db1", config.ProbeSSH)
	s.Reconcile([]*config.Target{one, target("web", "w1", config.ProbeICMP)})
	if body := serveAt(t, s, keyNow, "/"); strings.Contains(body, "Host keys") {
		t.Error("landing page has a host key section without any observed key")
	}
	presents(s, one, keyNow.Add(-time.Minute), plainKey("a"))
	body = serveAt(t, s, keyNow, "/")
	for _, frag := range []string{`No host key changed in the last 24 h.`, `Every observed host key is unique to its host.`} {
		if !strings.Contains(body, frag) {
			t.Errorf("landing page lacks %q", frag)
		}
	}
}

func TestHostKeysBounded(t *testing.T) {
	// Every host changes its key, and pairs of hosts share one: both lists
	// hit their bounds.
	n := 2 * max(maxKeyChangesListed, 2*maxKeyGroupsListed)
	var targets []*config.Target
	for i := range n {
		targets = append(targets, target("big", fmt.Sprintf("h%04d", i), config.ProbeSSH))
	}
	s := collector.NewStore()
	s.Reconcile(targets)
	for i, tg := range targets {
		presents(s, tg, keyNow.Add(-2*time.Hour), plainKey(fmt.Sprintf("old%d", i)))
		presents(s, tg, keyNow.Add(-time.Hour+time.Duration(i)*time.Second), plainKey(fmt.Sprintf("pair%d", i/2)))
	}
	v := buildHostKeys(s.Snapshot(), keyNow)
	if len(v.Changes) != maxKeyChangesListed || v.MoreChanges != n-maxKeyChangesListed {
		t.Errorf("%d changes listed, %d more; want %d and %d", len(v.Changes), v.MoreChanges, maxKeyChangesListed, n-maxKeyChangesListed)
	}
	if want := fmt.Sprintf("h%04d", n-1); v.Changes[0].Host != want {
		t.Errorf("first change is %s, want the most recent, %s", v.Changes[0].Host, want)
	}
	if len(v.Groups) != maxKeyGroupsListed || v.MoreGroups != n/2-maxKeyGroupsListed {
		t.Errorf("%d groups listed, %d more; want %d and %d", len(v.Groups), v.MoreGroups, maxKeyGroupsListed, n/2-maxKeyGroupsListed)
	}
	body := serveAt(t, s, keyNow, "/")
	for _, frag := range []string{
		fmt.Sprintf("%d more changes.", n-maxKeyChangesListed),
		fmt.Sprintf("%d more shared keys.", n/2-maxKeyGroupsListed),
	} {
		if !strings.Contains(body, frag) {
			t.Errorf("landing page lacks %q", frag)
		}
	}
}

func TestHostPageHostKey(t *testing.T) {
	s := keyFleet(t)
	row := regexp.MustCompile(`(?s)<table id="host-key">.*?</table>`)
	cells := regexp.MustCompile(`<td[^>]*data-field="([a-z]+)">(.*?)</td>`)
	fields := func(path string) map[string]string {
		t.Helper()
		table := row.FindString(serveAt(t, s, keyNow, path))
		if table == "" {
			return nil
		}
		m := map[string]string{}
		for _, c := range cells.FindAllStringSubmatch(table, -1) {
			m[c[1]] = c[2]
		}
		return m
	}
	tests := []struct {
		path string
		want map[string]string
	}{
		{"/hosts/db/db1", map[string]string{
			"type": "ssh-ed25519", "fingerprint": "<code>SHA256:db1-new</code>", "certificate": "no",
			"changed": "2026-11-22T11:00:00Z", "previous": "<code>SHA256:db1-old</code>", "shared": "1",
		}},
		{"/hosts/web/web2", map[string]string{
			"type": "ssh-ed25519", "fingerprint": "<code>SHA256:clone</code>", "certificate": "no",
			"changed": "no change seen", "previous": "", "shared": "3",
		}},
		{"/hosts/web/web4", map[string]string{
			"type": "ecdsa-sha2-nistp256", "fingerprint": "<code>SHA256:cert</code>", "certificate": "expires 2026-12-22T12:00:00Z",
			"changed": "no change seen", "previous": "", "shared": "1",
		}},
		// No handshake yet: no host key table.
		{"/hosts/db/db3", nil},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, fields(tc.path)); diff != "" {
				t.Errorf("host key table (-want +got):\n%s", diff)
			}
		})
	}
}
