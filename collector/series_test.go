package collector

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// TestSeriesPerHost pins the per-host series counts docs/metrics.md
// ("Series per host"), the README and deploy/ quote for sizing
// sample_limit: adding a per-host family must update them.
func TestSeriesPerHost(t *testing.T) {
	addr := netip.MustParseAddr("127.0.0.1")
	ok := func(tg *config.Target, success bool, reason probe.Reason) probe.Result {
		r := probe.Result{Key: tg.Key(), Start: time.Unix(1_700_000_000, 0), Duration: time.Millisecond, Success: success, Reason: reason, Addr: addr}
		switch tg.Probe {
		case config.ProbeICMP:
			r.ICMP = &probe.ICMPResult{Sent: 1, Received: 1, RTT: time.Millisecond}
		case config.ProbeSSH:
			if success {
				// As the prober reports them: with the negotiated algorithms,
				// the host key (a plain one) and each command's full SHA-256.
				r.SSH = &probe.SSHResult{
					NewConnection: true, Connect: time.Millisecond, Handshake: time.Millisecond, Auth: time.Millisecond,
					Conn:    &probe.ConnInfo{ServerVersion: "SSH-2.0-OpenSSH_9.2", KEX: "curve25519-sha256", Cipher: "chacha20-poly1305@openssh.com", MAC: "<implicit>", HostKeyAlgorithm: "ssh-ed25519"},
					HostKey: &probe.HostKey{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:" + strings.Repeat("A", 43)},
				}
				for _, c := range tg.SSH.Commands {
					r.SSH.Commands = append(r.SSH.Commands, probe.CommandResult{Name: c.Name, Ran: true, Duration: time.Millisecond, Hash: 1 << 40, SHA256: strings.Repeat("ab", 32), Bytes: 3})
				}
			}
		}
		return r
	}
	tests := []struct {
		name    string
		targets []*config.Target
		fail    string // probe type whose probe fails (refused)
		want    int
	}{
		{"icmp only", []*config.Target{icmpTarget("s", "h", nil)}, "", 11},
		{"tcp only", []*config.Target{tcpTarget("s", "h", nil)}, "", 8},
		{"icmp and ssh with one command", []*config.Target{icmpTarget("s", "h", nil), sshTarget("s", "h", nil, "c1")}, "", 31},
		{"icmp and ssh with two commands", []*config.Target{icmpTarget("s", "h", nil), sshTarget("s", "h", nil, "c1", "c2")}, "", 37},
		{"icmp and ssh that never succeeded", []*config.Target{icmpTarget("s", "h", nil), sshTarget("s", "h", nil, "c1")}, config.ProbeSSH, 19},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			s.Reconcile(tc.targets)
			for _, tg := range tc.targets {
				if tg.Probe == tc.fail {
					s.Update(ok(tg, false, probe.ReasonRefused))
				} else {
					s.Update(ok(tg, true, ""))
				}
			}
			var buf bytes.Buffer
			if err := s.Snapshot().WriteText(&buf); err != nil {
				t.Fatal(err)
			}
			n := 0
			for line := range strings.SplitSeq(buf.String(), "\n") {
				if strings.Contains(line, `host="h"`) {
					n++
				}
			}
			if n != tc.want {
				t.Errorf("%d series with host=\"h\", want %d (update docs/metrics.md, README and deploy/ if this changed):\n%s", n, tc.want, buf.String())
			}
		})
	}
}
