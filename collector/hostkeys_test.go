package collector

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// hostKey returns a plain host key with fingerprint "SHA256:" + fp.
func hostKey(fp string) *probe.HostKey {
	return &probe.HostKey{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:" + fp}
}

// certKey returns a host certificate for the key fp expiring at expiry.
func certKey(fp string, expiry time.Time) *probe.HostKey {
	k := hostKey(fp)
	k.Certificate, k.CertificateExpiry = true, expiry
	return k
}

// keyResult is the n-th SSH result of t, presenting key (nil: no handshake).
func keyResult(t *config.Target, n int, success bool, key *probe.HostKey) probe.Result {
	reason := probe.ReasonNone
	if !success {
		reason = probe.ReasonHostKey
	}
	return sshResult(t, n, success, reason, &probe.SSHResult{HostKey: key})
}

// logLines decodes the JSON log lines in b.
func logLines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		delete(m, "time")
		out = append(out, m)
	}
	return out
}

func TestHostKeyHistory(t *testing.T) {
	ssh := sshTarget("a", "h1", nil)
	expiry := t0.Add(90 * 24 * time.Hour)
	changeLog := func(from, to string) map[string]any {
		return map[string]any{
			"level": "WARN", "msg": "SSH host key changed", "set": "a", "host": "h1",
			"old_fingerprint": "SHA256:" + from, "old_type": "ssh-ed25519",
			"new_fingerprint": "SHA256:" + to, "new_type": "ssh-ed25519",
		}
	}
	tests := []struct {
		name    string
		results []probe.Result
		want    *HostKeyState
		logs    []map[string]any
	}{
		{
			name:    "no handshake yet",
			results: []probe.Result{keyResult(ssh, 0, false, nil), sshResult(ssh, 1, false, probe.ReasonTimeout, nil)},
		},
		{
			name:    "first sight is no change",
			results: []probe.Result{keyResult(ssh, 0, true, hostKey("a"))},
			want:    &HostKeyState{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:a"},
		},
		{
			name: "probes without a handshake keep the key",
			results: []probe.Result{
				keyResult(ssh, 0, true, hostKey("a")),
				keyResult(ssh, 1, true, nil),
				sshResult(ssh, 2, false, probe.ReasonTimeout, nil),
				keyResult(ssh, 3, false, &probe.HostKey{}),
			},
			want: &HostKeyState{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:a"},
		},
		{
			name: "a different fingerprint is a change, also when rejected",
			results: []probe.Result{
				keyResult(ssh, 0, true, hostKey("a")),
				keyResult(ssh, 1, true, hostKey("a")),
				keyResult(ssh, 2, false, hostKey("b")),
				keyResult(ssh, 3, false, nil),
			},
			want: &HostKeyState{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:b", Changed: end(2), Previous: "SHA256:a"},
			logs: []map[string]any{changeLog("a", "b")},
		},
		{
			name: "changing back is a change too",
			results: []probe.Result{
				keyResult(ssh, 0, true, hostKey("a")),
				keyResult(ssh, 1, false, hostKey("b")),
				keyResult(ssh, 2, true, hostKey("a")),
			},
			want: &HostKeyState{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:a", Changed: end(2), Previous: "SHA256:b"},
			logs: []map[string]any{changeLog("a", "b"), changeLog("b", "a")},
		},
		{
			name: "a renewed certificate of the same key is no change",
			results: []probe.Result{
				keyResult(ssh, 0, true, hostKey("a")),
				keyResult(ssh, 1, true, certKey("b", expiry)),
				keyResult(ssh, 2, true, certKey("b", expiry.Add(time.Hour))),
			},
			want: &HostKeyState{
				Type: "ssh-ed25519", FingerprintSHA256: "SHA256:b", Certificate: true, CertificateExpiry: expiry.Add(time.Hour),
				Changed: end(1), Previous: "SHA256:a",
			},
			logs: []map[string]any{changeLog("a", "b")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, batch := range []bool{false, true} {
				var logs bytes.Buffer
				s := NewStore()
				s.SetLogger(slog.New(slog.NewJSONHandler(&logs, nil)))
				s.Reconcile([]*config.Target{ssh})
				if batch {
					s.UpdateBatch(tc.results)
				} else {
					for _, r := range tc.results {
						s.Update(r)
					}
				}
				st := s.Snapshot().Targets[0]
				var got *HostKeyState
				if st.SSH != nil {
					got = st.SSH.HostKey
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("batch=%v: host key (-want +got):\n%s", batch, diff)
				}
				if diff := cmp.Diff(tc.logs, logLines(t, &logs)); diff != "" {
					t.Errorf("batch=%v: logged changes (-want +got):\n%s", batch, diff)
				}
			}
		})
	}
}

func TestHostKeyWithoutLogger(t *testing.T) {
	ssh := sshTarget("a", "h1", nil)
	s := NewStore()
	s.Reconcile([]*config.Target{ssh})
	s.Update(keyResult(ssh, 0, true, hostKey("a")))
	s.Update(keyResult(ssh, 1, true, hostKey("b")))
	if k := s.Snapshot().Targets[0].SSH.HostKey; k.Previous != "SHA256:a" || !k.Changed.Equal(end(1)) {
		t.Errorf("change not recorded without a logger: %+v", k)
	}
}

func TestHostKeySeries(t *testing.T) {
	dc := map[string]string{"dc": "fra"}
	web1 := sshTarget("web", "web1", dc)
	web2 := sshTarget("web", "web2", dc)
	// web1 again, in another set and on another port: the same host.
	web1Other := sshTarget("other", "web1:2222", nil)
	web1Other.Name = "web1"
	db1 := sshTarget("db", "db1", nil)
	// No host key observed: no series, not counted.
	db2 := sshTarget("db", "db2", nil)
	icmp := icmpTarget("web", "web3", dc)
	targets := []*config.Target{web1, web2, web1Other, db1, db2, icmp}
	expiry := time.Unix(1_800_000_000, 500_000_000)

	s := NewStore()
	s.Reconcile(targets)
	s.Update(keyResult(web1, 0, true, hostKey("clone")))
	s.Update(keyResult(web1Other, 0, true, hostKey("clone")))
	s.Update(keyResult(web2, 0, true, certKey("clone", expiry)))
	s.Update(keyResult(db1, 0, true, hostKey("db1")))
	// db1 changes to the clone key and then fails without a handshake.
	s.Update(keyResult(db1, 1, false, hostKey("clone")))
	s.Update(sshResult(db1, 2, false, probe.ReasonTimeout, nil))
	s.Update(keyResult(db2, 0, false, nil))
	s.Update(icmpResult(icmp, 0, 3, 3, time.Millisecond))

	names := []string{
		"fleet_ssh_host_key_info", "fleet_ssh_host_key_changed_timestamp_seconds",
		"fleet_ssh_host_key_shared_hosts", "fleet_ssh_host_certificate_expiry_timestamp_seconds",
	}
	want := expo(t,
		`fleet_ssh_host_key_info{dc="",fingerprint_sha256="SHA256:clone",host="db1",set="db",type="ssh-ed25519"} 1`,
		`fleet_ssh_host_key_info{dc="",fingerprint_sha256="SHA256:clone",host="web1:2222",set="other",type="ssh-ed25519"} 1`,
		`fleet_ssh_host_key_info{dc="fra",fingerprint_sha256="SHA256:clone",host="web1",set="web",type="ssh-ed25519"} 1`,
		`fleet_ssh_host_key_info{dc="fra",fingerprint_sha256="SHA256:clone",host="web2",set="web",type="ssh-ed25519"} 1`,
		`fleet_ssh_host_key_changed_timestamp_seconds{dc="",host="db1",set="db"} 1700000060.25`,
		`fleet_ssh_host_key_changed_timestamp_seconds{dc="",host="web1:2222",set="other"} 0`,
		`fleet_ssh_host_key_changed_timestamp_seconds{dc="fra",host="web1",set="web"} 0`,
		`fleet_ssh_host_key_changed_timestamp_seconds{dc="fra",host="web2",set="web"} 0`,
		// web1 in two sets counts once: web1, web2, db1.
		`fleet_ssh_host_key_shared_hosts{dc="",host="db1",set="db"} 3`,
		`fleet_ssh_host_key_shared_hosts{dc="",host="web1:2222",set="other"} 3`,
		`fleet_ssh_host_key_shared_hosts{dc="fra",host="web1",set="web"} 3`,
		`fleet_ssh_host_key_shared_hosts{dc="fra",host="web2",set="web"} 3`,
		`fleet_ssh_host_certificate_expiry_timestamp_seconds{dc="fra",host="web2",set="web"} 1800000000.5`,
	)
	if err := testutil.CollectAndCompare(NewCollector(s), strings.NewReader(want), names...); err != nil {
		t.Errorf("unexpected exposition:\n%v", err)
	}
	if got, want := writeText(t, NewTextWriter(), s.Snapshot(), nil), registryText(t, s); got != want {
		t.Errorf("TextWriter differs from the registry (-registry +text):\n%s", cmp.Diff(want, got))
	}
	if n := s.Snapshot().HostKeySharedHosts("SHA256:clone"); n != 3 {
		t.Errorf("HostKeySharedHosts = %d, want 3", n)
	}

	// web2 and db1 leave the configuration: their series go, and the
	// clone key is left on one host.
	s.Reconcile([]*config.Target{web1, web1Other, db2, icmp})
	want = expo(t,
		`fleet_ssh_host_key_info{dc="",fingerprint_sha256="SHA256:clone",host="web1:2222",set="other",type="ssh-ed25519"} 1`,
		`fleet_ssh_host_key_info{dc="fra",fingerprint_sha256="SHA256:clone",host="web1",set="web",type="ssh-ed25519"} 1`,
		`fleet_ssh_host_key_changed_timestamp_seconds{dc="",host="web1:2222",set="other"} 0`,
		`fleet_ssh_host_key_changed_timestamp_seconds{dc="fra",host="web1",set="web"} 0`,
		`fleet_ssh_host_key_shared_hosts{dc="",host="web1:2222",set="other"} 1`,
		`fleet_ssh_host_key_shared_hosts{dc="fra",host="web1",set="web"} 1`,
	)
	if err := testutil.CollectAndCompare(NewCollector(s), strings.NewReader(want), names...); err != nil {
		t.Errorf("after removal:\n%v", err)
	}
	if n := s.Snapshot().HostKeySharedHosts("SHA256:clone"); n != 1 {
		t.Errorf("after removal HostKeySharedHosts = %d, want 1", n)
	}
}

// TestHostKeyFamiliesPromtool runs promtool check metrics on a store that
// exports every family, the host key ones included.
func TestHostKeyFamiliesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (scripts/install-test-deps.sh installs it)")
	}
	text := writeText(t, NewTextWriter(), fullStore().Snapshot(), nil)
	for _, f := range []string{"fleet_ssh_host_key_info", "fleet_ssh_host_key_changed_timestamp_seconds", "fleet_ssh_host_key_shared_hosts", "fleet_ssh_host_certificate_expiry_timestamp_seconds"} {
		if !strings.Contains(text, "\n"+f+"{") {
			t.Fatalf("the full store exports no %s", f)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
