package collector

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// end returns the end time of the n-th fake result.
func end(n int) time.Time { return t0.Add(time.Duration(n)*time.Minute + probeDuration) }

func TestStoreTargetState(t *testing.T) {
	tcp := tcpTarget("a", "h1", nil)
	icmp := icmpTarget("a", "h1", nil)
	ignore := cmp.Options{cmpopts.IgnoreUnexported(TargetState{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}
	addr := netip.MustParseAddr("2001:db8::7")
	withAddr := func(r probe.Result, a netip.Addr) probe.Result { r.Addr = a; return r }

	tests := []struct {
		name    string
		target  *config.Target
		results []probe.Result
		want    TargetState
	}{
		{
			name:   "no result",
			target: tcp,
			want:   TargetState{Target: tcp},
		},
		{
			name:    "failure streak starts at the first failure",
			target:  tcp,
			results: []probe.Result{result(tcp, 0, true, ""), result(tcp, 1, false, probe.ReasonTimeout), result(tcp, 2, false, probe.ReasonRefused)},
			want: TargetState{
				Target: tcp, HasResult: true, Reason: probe.ReasonRefused, Duration: probeDuration,
				LastRun: end(2), LastSuccess: end(0), FailingSince: end(1), ConsecutiveFailures: 2,
			},
		},
		{
			name:    "success ends the streak",
			target:  tcp,
			results: []probe.Result{result(tcp, 0, false, probe.ReasonTimeout), result(tcp, 1, true, "")},
			want: TargetState{
				Target: tcp, HasResult: true, Success: true, Duration: probeDuration,
				LastRun: end(1), LastSuccess: end(1),
			},
		},
		{
			name:    "address follows the last probe",
			target:  tcp,
			results: []probe.Result{withAddr(result(tcp, 0, true, ""), netip.MustParseAddr("192.0.2.1")), withAddr(result(tcp, 1, true, ""), addr)},
			want: TargetState{
				Target: tcp, HasResult: true, Success: true, Duration: probeDuration,
				LastRun: end(1), LastSuccess: end(1), Addr: addr,
			},
		},
		{
			name:    "a probe whose name did not resolve has no address",
			target:  tcp,
			results: []probe.Result{withAddr(result(tcp, 0, true, ""), addr), result(tcp, 1, false, probe.ReasonDNS)},
			want: TargetState{
				Target: tcp, HasResult: true, Reason: probe.ReasonDNS, Duration: probeDuration,
				LastRun: end(1), LastSuccess: end(0), FailingSince: end(1), ConsecutiveFailures: 1,
			},
		},
		{
			name:   "icmp counters accumulate and rtt follows the last probe",
			target: icmp,
			results: []probe.Result{
				icmpResult(icmp, 0, 3, 3, time.Millisecond),
				icmpResult(icmp, 1, 3, 1, 2*time.Millisecond),
				icmpResult(icmp, 2, 3, 0, 0),
			},
			want: TargetState{
				Target: icmp, HasResult: true, Reason: probe.ReasonTimeout, Duration: probeDuration,
				LastRun: end(2), LastSuccess: end(1), FailingSince: end(2), ConsecutiveFailures: 1,
				ICMP: ICMPState{PacketsSent: 9, PacketsReceived: 4, LastSent: 3},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			s.Reconcile([]*config.Target{tc.target})
			for _, r := range tc.results {
				s.Update(r)
			}
			snap := s.Snapshot()
			if len(snap.Targets) != 1 {
				t.Fatalf("snapshot has %d targets, want 1", len(snap.Targets))
			}
			if diff := cmp.Diff(tc.want, snap.Targets[0], ignore); diff != "" {
				t.Errorf("target state mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStoreCommandHistory(t *testing.T) {
	ssh := sshTarget("a", "h1", nil, "uname", "df")
	cmd := func(name string, hash uint64) probe.CommandResult {
		return probe.CommandResult{Name: name, Ran: true, Duration: time.Millisecond, Hash: hash, Bytes: 1}
	}
	probeN := func(n int, cmds ...probe.CommandResult) probe.Result {
		return sshResult(ssh, n, true, "", &probe.SSHResult{Commands: cmds})
	}

	tests := []struct {
		name    string
		results []probe.Result
		want    []CommandState
	}{
		{
			name:    "first observation sets the changed time",
			results: []probe.Result{probeN(0, cmd("uname", 7))},
			want: []CommandState{
				{Name: "uname", Ran: true, Duration: time.Millisecond, OutputRead: true, Hash: 7, Bytes: 1, HashChanged: end(0)},
			},
		},
		{
			name:    "same hash keeps the changed time",
			results: []probe.Result{probeN(0, cmd("uname", 7)), probeN(1, cmd("uname", 7))},
			want: []CommandState{
				{Name: "uname", Ran: true, Duration: time.Millisecond, OutputRead: true, Hash: 7, Bytes: 1, HashChanged: end(0)},
			},
		},
		{
			name:    "new hash moves the changed time",
			results: []probe.Result{probeN(0, cmd("uname", 7)), probeN(1, cmd("uname", 8))},
			want: []CommandState{
				{Name: "uname", Ran: true, Duration: time.Millisecond, OutputRead: true, Hash: 8, Bytes: 1, HashChanged: end(1)},
			},
		},
		{
			name: "hash survives runs without output and probes without the command",
			results: []probe.Result{
				probeN(0, cmd("uname", 7), cmd("df", 9)),
				probeN(1, probe.CommandResult{Name: "uname", Ran: true, ExitStatus: -1, Reason: probe.ReasonTimeout}),
				probeN(2, cmd("uname", 7)),
			},
			want: []CommandState{
				{Name: "uname", Ran: true, Duration: time.Millisecond, OutputRead: true, Hash: 7, Bytes: 1, HashChanged: end(0)},
				// df keeps its last run too, so its series stay.
				{Name: "df", Duration: time.Millisecond, Hash: 9, Bytes: 1, HashChanged: end(0)},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			s.Reconcile([]*config.Target{ssh})
			for _, r := range tc.results {
				s.Update(r)
			}
			got := s.Snapshot().Targets[0].SSH
			if got == nil {
				t.Fatal("no SSH state")
			}
			if diff := cmp.Diff(tc.want, got.Commands); diff != "" {
				t.Errorf("commands mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStorePrunesRemovedCommands(t *testing.T) {
	ssh := sshTarget("a", "h1", nil, "uname", "df")
	s := NewStore()
	s.Reconcile([]*config.Target{ssh})
	s.Update(sshResult(ssh, 0, true, "", &probe.SSHResult{Commands: []probe.CommandResult{
		{Name: "uname", Ran: true, Hash: 1}, {Name: "df", Ran: true, Hash: 2},
	}}))
	before := s.Snapshot()

	s.Reconcile([]*config.Target{sshTarget("a", "h1", nil, "df")})
	after := s.Snapshot()

	want := []CommandState{{Name: "df", Ran: true, OutputRead: true, Hash: 2, HashChanged: end(0)}}
	if diff := cmp.Diff(want, after.Targets[0].SSH.Commands); diff != "" {
		t.Errorf("commands after reload mismatch (-want +got):\n%s", diff)
	}
	// The earlier snapshot must not see the pruning.
	if n := len(before.Targets[0].SSH.Commands); n != 2 {
		t.Errorf("earlier snapshot has %d commands, want 2", n)
	}
}

func TestSnapshotIsolation(t *testing.T) {
	icmp := icmpTarget("a", "h1", nil)
	ssh := sshTarget("a", "h1", nil, "uname")
	s := NewStore()
	s.Reconcile([]*config.Target{icmp, ssh})
	s.Update(icmpResult(icmp, 0, 3, 3, time.Millisecond))
	s.Update(sshResult(ssh, 0, true, "", &probe.SSHResult{HostKey: &probe.HostKey{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:a"}, Commands: []probe.CommandResult{{Name: "uname", Ran: true, Hash: 1}}}))
	snap := s.Snapshot()
	want := deepCopy(snap)

	s.Update(icmpResult(icmp, 1, 3, 0, 0))
	s.Update(sshResult(ssh, 1, false, probe.ReasonAuth, &probe.SSHResult{HostKey: &probe.HostKey{Type: "ssh-rsa", FingerprintSHA256: "SHA256:b"}, Commands: []probe.CommandResult{{Name: "uname", Ran: true, Hash: 2}}}))
	s.Reconcile(nil)

	if diff := cmp.Diff(want, snap, cmp.AllowUnexported(Snapshot{}), cmpopts.IgnoreUnexported(TargetState{}), cmp.Comparer(func(a, b *driftCache) bool { return true }), cmp.Comparer(func(a, b *hostKeyCache) bool { return true }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("snapshot changed after later updates (-before +after):\n%s", diff)
	}
}

// deepCopy copies s including everything its pointers lead to, except the
// config targets.
func deepCopy(s *Snapshot) *Snapshot {
	c := &Snapshot{
		LabelNames: slices.Clone(s.LabelNames),
		Targets:    slices.Clone(s.Targets),
		SetProbes:  slices.Clone(s.SetProbes),
		order:      slices.Clone(s.order),
		drift:      s.drift,
		hostKeys:   s.hostKeys,
	}
	for i := range c.Targets {
		if ssh := c.Targets[i].SSH; ssh != nil {
			cp := *ssh
			cp.Commands = slices.Clone(ssh.Commands)
			if ssh.HostKey != nil {
				k := *ssh.HostKey
				cp.HostKey = &k
			}
			c.Targets[i].SSH = &cp
		}
	}
	return c
}

func TestUpdateIgnoresUnknownKeys(t *testing.T) {
	a := tcpTarget("a", "h1", nil)
	s := NewStore()
	s.Update(result(a, 0, true, "")) // before any configuration
	s.Reconcile([]*config.Target{a})
	s.Update(result(tcpTarget("a", "gone", nil), 0, true, ""))
	s.Update(result(icmpTarget("a", "h1", nil), 0, true, "")) // same host, other probe

	snap := s.Snapshot()
	if snap.Targets[0].HasResult {
		t.Errorf("target has a result from before it was configured")
	}
	want := []SetProbeState{{Set: "a", Probe: config.ProbeTCP, Targets: 1}}
	if diff := cmp.Diff(want, snap.SetProbes); diff != "" {
		t.Errorf("set probes mismatch (-want +got):\n%s", diff)
	}
}

func TestSnapshotOrderAndLabelNames(t *testing.T) {
	targets := []*config.Target{
		tcpTarget("b", "h1", map[string]string{"zone": "z"}),
		icmpTarget("a", "h2", map[string]string{"dc": "x"}),
		tcpTarget("a", "h1", map[string]string{"dc": "x"}),
		icmpTarget("a", "h1", map[string]string{"dc": "x"}),
		tcpTarget("a", "h1", map[string]string{"dc": "x"}), // duplicate key
	}
	s := NewStore()
	s.Reconcile(targets)
	snap := s.Snapshot()

	var keys []config.Key
	for _, ts := range snap.Targets {
		keys = append(keys, ts.Target.Key())
	}
	wantKeys := []config.Key{
		{Set: "a", Host: "h1", Probe: "icmp"},
		{Set: "a", Host: "h1", Probe: "tcp"},
		{Set: "a", Host: "h2", Probe: "icmp"},
		{Set: "b", Host: "h1", Probe: "tcp"},
	}
	if diff := cmp.Diff(wantKeys, keys); diff != "" {
		t.Errorf("target order mismatch (-want +got):\n%s", diff)
	}
	// Exposition order: dc, host, set, zone, then probe; set b has dc="".
	var expo []config.Key
	for _, i := range snap.order {
		expo = append(expo, snap.Targets[i].Target.Key())
	}
	wantExpo := []config.Key{
		{Set: "b", Host: "h1", Probe: "tcp"},
		{Set: "a", Host: "h1", Probe: "icmp"},
		{Set: "a", Host: "h1", Probe: "tcp"},
		{Set: "a", Host: "h2", Probe: "icmp"},
	}
	if diff := cmp.Diff(wantExpo, expo); diff != "" {
		t.Errorf("exposition order mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"dc", "zone"}, snap.LabelNames); diff != "" {
		t.Errorf("label names mismatch (-want +got):\n%s", diff)
	}
	wantSets := []SetProbeState{
		{Set: "a", Probe: "icmp", Targets: 2}, {Set: "a", Probe: "tcp", Targets: 1}, {Set: "b", Probe: "tcp", Targets: 1},
	}
	if diff := cmp.Diff(wantSets, snap.SetProbes); diff != "" {
		t.Errorf("set probes mismatch (-want +got):\n%s", diff)
	}
}

// TestStoreMemoryPerICMPTarget checks the store's own footprint (targets
// themselves belong to the config) stays under 1 KiB per ICMP target.
func TestStoreMemoryPerICMPTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a large store")
	}
	const n = 20000
	labels := map[string]string{"dc": "fra", "team": "net"}
	targets := make([]*config.Target, n)
	for i := range targets {
		targets[i] = icmpTarget("edge", fmt.Sprintf("host%05d.example.net", i), labels)
	}
	results := make([]probe.Result, n)
	for i, tg := range targets {
		results[i] = icmpResult(tg, 0, 3, 3, time.Millisecond)
	}

	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	s := NewStore()
	s.Reconcile(targets)
	for _, r := range results {
		s.Update(r)
	}
	after := heap()
	runtime.KeepAlive(s)
	runtime.KeepAlive(targets)
	runtime.KeepAlive(results)

	perTarget := (int64(after) - int64(before)) / n
	t.Logf("store uses %d bytes per ICMP target", perTarget)
	if perTarget >= 1024 {
		t.Errorf("store uses %d bytes per ICMP target, want < 1024", perTarget)
	}
}

// TestReconcileAddsAPort changes `port: 22` into `ports: [22, 443]`: the
// port-22 target keeps its state, the new port starts without a result.
func TestReconcileAddsAPort(t *testing.T) {
	tcp := func(port int) *config.Target {
		tg := tcpTarget("a", "h1", nil)
		tg.Port = port
		return tg
	}
	s := NewStore()
	s.Reconcile([]*config.Target{tcp(22)})
	s.Update(result(tcp(22), 0, false, probe.ReasonRefused))
	s.Reconcile([]*config.Target{tcp(22), tcp(443)})
	got := map[int]TargetState{}
	for _, st := range s.Snapshot().Targets {
		got[st.Target.Port] = st
	}
	if st := got[22]; !st.HasResult || st.ConsecutiveFailures != 1 || st.portLabel() != "22" {
		t.Errorf("port 22 after the reload: %+v", st)
	}
	if st, ok := got[443]; !ok || st.HasResult || st.portLabel() != "443" {
		t.Errorf("port 443 after the reload: present %v, %+v", ok, st)
	}
}

// TestUpdateByTarget checks the lookup by the target a result carries: the
// current target's result is applied, one carrying the target of an
// earlier config (a probe in flight across a reload) is applied by its
// key, and one carrying a target no longer configured is ignored even
// though it names a target.
func TestUpdateByTarget(t *testing.T) {
	old := tcpTarget("a", "h1", nil)
	cur := tcpTarget("a", "h1", nil) // the same key in a reloaded config
	gone := tcpTarget("a", "gone", nil)
	s := NewStore()
	s.Reconcile([]*config.Target{cur})
	for _, tc := range []struct {
		name   string
		target *config.Target
		key    *config.Target
		want   bool
	}{
		{"current target", cur, cur, true},
		{"target of an earlier config", old, old, true},
		{"target no longer configured", gone, gone, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.Reconcile([]*config.Target{cur}) // forget the last result
			s.Reconcile(nil)
			s.Reconcile([]*config.Target{cur})
			r := result(tc.key, 0, true, "")
			r.Target = tc.target
			s.Update(r)
			if got := s.Snapshot().Targets[0].HasResult; got != tc.want {
				t.Errorf("h1 has a result: %v, want %v", got, tc.want)
			}
		})
	}
}
