package collector

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/fleet-exporter/fleet_exporter/config"
	kit "github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// TestExportImport fills a store, exports it and imports the copy into a
// fresh store configured with a changed target list: kept keys keep every
// field (even where the config changed), removed keys and removed commands
// are dropped, new keys stay empty.
func TestExportImport(t *testing.T) {
	icmp := icmpTarget("a", "h1", nil)
	tcp := tcpTarget("a", "h2", nil)
	ssh := sshTarget("b", "h1", nil, "uname", "df")
	gone := tcpTarget("gone", "h9", nil)

	old := NewStore()
	old.Reconcile([]*config.Target{icmp, tcp, ssh, gone})
	old.Update(icmpResult(icmp, 0, 3, 2, time.Millisecond))
	old.Update(result(tcp, 0, true, ""))
	old.Update(result(tcp, 1, false, probe.ReasonRefused))
	old.Update(sshResult(ssh, 0, true, "", &probe.SSHResult{
		NewConnection: true, Connect: 1, Handshake: 2, Auth: 3,
		Commands: []probe.CommandResult{{Name: "uname", Ran: true, Hash: 7, Bytes: 5, Duration: 4}, {Name: "df", Ran: true, Hash: 8}},
	}))
	old.Update(sshResult(ssh, 1, true, "", &probe.SSHResult{HostKey: certKey("k1", end(9))}))
	old.Update(sshResult(ssh, 2, true, "", &probe.SSHResult{HostKey: hostKey("k2")}))
	old.Update(result(gone, 0, true, ""))
	saved := old.Export()
	if len(saved.Targets) != 4 || len(saved.SetProbes) != 4 {
		t.Fatalf("export has %d targets and %d set/probe pairs, want 4 and 4", len(saved.Targets), len(saved.SetProbes))
	}

	// New config: the TCP target changed (new labels, new fingerprint) but
	// kept its key, the SSH target dropped a command, one target is gone
	// and one is new.
	tcp2 := kit.TCPTarget("a", "h2", kit.WithLabels(map[string]string{"env": "prod"}), kit.WithTCPPort(81))
	ssh2 := sshTarget("b", "h1", nil, "uname")
	added := tcpTarget("a", "h3", nil)
	s := NewStore()
	s.Reconcile([]*config.Target{icmp, tcp2, ssh2, added})
	if n := s.Import(saved); n != 3 {
		t.Errorf("Import restored %d targets, want 3", n)
	}

	want := old.Snapshot()
	got := s.Snapshot()
	byKey := func(snap *Snapshot) map[config.Key]TargetState {
		m := map[config.Key]TargetState{}
		for _, st := range snap.Targets {
			m[st.Target.Key()] = st
		}
		return m
	}
	w, g := byKey(want), byKey(got)
	ignore := cmpopts.IgnoreFields(TargetState{}, "Target")
	for _, k := range []config.Key{icmp.Key(), tcp.Key()} {
		if diff := cmp.Diff(w[k], g[k], ignore, cmpopts.IgnoreUnexported(TargetState{}), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Errorf("%v after import (-want +got):\n%s", k, diff)
		}
	}
	if g[tcp.Key()].Target != tcp2 {
		t.Errorf("imported TCP target has config %p, want the new one %p", g[tcp.Key()].Target, tcp2)
	}
	wantSSH := *w[ssh.Key()].SSH
	wantSSH.Commands = wantSSH.Commands[:1]
	if diff := cmp.Diff(&wantSSH, g[ssh.Key()].SSH); diff != "" {
		t.Errorf("SSH state after import (-want +got):\n%s", diff)
	}
	if k := g[ssh.Key()].SSH.HostKey; k == nil || k.Previous != "SHA256:k1" || !k.Changed.Equal(end(2)) {
		t.Errorf("host key after import: %+v, want SHA256:k2 changed from SHA256:k1 at %v", k, end(2))
	}
	if _, ok := g[gone.Key()]; ok {
		t.Error("a target no longer configured was imported")
	}
	if st := g[added.Key()]; st.HasResult {
		t.Errorf("a target that was not saved has a result: %+v", st)
	}
	wantSets := []SetProbeState{
		{Set: "a", Probe: config.ProbeICMP, Targets: 1, Successes: 1},
		{Set: "a", Probe: config.ProbeTCP, Targets: 2, Successes: 1, Failures: 1},
		{Set: "b", Probe: config.ProbeSSH, Targets: 1, Successes: 3},
	}
	if diff := cmp.Diff(wantSets, got.SetProbes); diff != "" {
		t.Errorf("probe counters after import (-want +got):\n%s", diff)
	}

	// Updates after the import continue the streak and the counters.
	s.Update(result(tcp2, 2, false, probe.ReasonTimeout))
	st := byKey(s.Snapshot())[tcp.Key()]
	if st.ConsecutiveFailures != 2 || !st.FailingSince.Equal(end(1)) || !st.LastSuccess.Equal(end(0)) {
		t.Errorf("after one more failure: streak %d since %v, last success %v; want 2 since %v, %v",
			st.ConsecutiveFailures, st.FailingSince, st.LastSuccess, end(1), end(0))
	}
}
