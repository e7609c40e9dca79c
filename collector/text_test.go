package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// registryText is the reference: the store gathered by a Registry holding
// only NewCollector and encoded by expfmt in the text format.
func registryText(t testing.TB, s *Store) string {
	t.Helper()
	return registryFormat(t, s, expfmt.FmtText)
}

// registryFormat is the store gathered by a Registry holding only
// NewCollector and encoded by expfmt in format f, without the encoder's
// Close (so OpenMetrics has no "# EOF").
func registryFormat(t testing.TB, s *Store, f expfmt.Format) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(s))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	return encodeFamilies(t, mfs, f)
}

// encodeFamilies encodes mfs with expfmt in format f, without Close.
func encodeFamilies(t testing.TB, mfs []*dto.MetricFamily, f expfmt.Format) string {
	t.Helper()
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, f)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatalf("Encode: %v", err)
		}
	}
	return b.String()
}

func writeText(t testing.TB, w *TextWriter, s *Snapshot, keep func(string) bool) string {
	t.Helper()
	var b bytes.Buffer
	if err := w.Write(&b, s, keep); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return b.String()
}

// escapingStore covers every family, static labels whose union leaves
// values empty, label values that need escaping, and the layouts in which
// the registry's order differs from the store's exposition order: one host
// name in several sets, several commands per host, static label names
// sorting before, between and after the collector's own labels.
func escapingStore() *Store {
	// "az" sorts before command, "env" between command and host, "pod"
	// between phase and probe, "rack" between reason and set, "zone" last.
	lA := map[string]string{"az": `a\z`, "env": "prod \"blue\"", "pod": "p\n1", "zone": "z1"}
	lB := map[string]string{"rack": `r"7"`, "zone": ""}
	lC := map[string]string{"env": "prod \"blue\"", "az": "b"}

	var targets []*config.Target
	add := func(t *config.Target) *config.Target { targets = append(targets, t); return t }
	// One host name in three sets, with differing probes.
	aICMP := add(icmpTarget("alpha", "shared\\host", lA))
	aTCP := add(tcpTarget("alpha", "shared\\host", lA))
	aSSH := add(sshTarget("alpha", "shared\\host", lA, "uname", "df -h", "cat \"x\""))
	bICMP := add(icmpTarget("beta\n2", "shared\\host", lB))
	bSSH := add(sshTarget("beta\n2", "shared\\host", lB, "uname", "df -h"))
	cTCP := add(tcpTarget("gamma", "shared\\host", lC))
	dTCP := add(tcpTarget("delta", "shared\\host", nil))
	// Hosts of one set only.
	bOnly := add(icmpTarget("beta\n2", "b-only", lB))
	cSSH := add(sshTarget("gamma", "c1", lC, "df -h"))
	cNoResult := add(tcpTarget("gamma", "c2", lC))
	aNoResult := add(icmpTarget("alpha", "a2", lA))
	_, _ = cNoResult, aNoResult

	s := NewStore()
	s.Reconcile(targets)
	ns := func(n int) time.Duration { return time.Duration(n)*time.Millisecond + 123456*time.Nanosecond }
	// alpha: icmp ok, tcp failing, ssh with every command state.
	s.Update(withAddr(icmpResult(aICMP, 0, 3, 2, ns(3)), "192.0.2.10"))
	s.Update(withAddr(result(aTCP, 0, true, probe.ReasonNone), "2001:db8::10"))
	s.Update(result(aTCP, 1, false, probe.ReasonRefused))
	s.Update(sshResult(aSSH, 0, true, probe.ReasonNone, &probe.SSHResult{
		Connect: ns(1), Handshake: ns(2), Auth: ns(3), NewConnection: true,
		Conn: &probe.ConnInfo{ServerVersion: "SSH-2.0-Weird \"v\" \\ 1", KEX: "curve25519-sha256", Cipher: "aes128-ctr", MAC: "hmac-sha2-256", HostKeyAlgorithm: "ssh-ed25519"},
		HostKey: &probe.HostKey{
			Type: "ssh-\"odd\"\\key", FingerprintSHA256: "SHA256:shared+/key",
			Certificate: true, CertificateExpiry: t0.Add(90*24*time.Hour + ns(1)),
		},
		Commands: []probe.CommandResult{
			{Name: "uname", Ran: true, Duration: ns(4), Hash: 0xabcdef0123456, SHA256: "ab" + strings.Repeat("0", 62), Value: "Linux \"6\" \\ x", Bytes: 6},
			{Name: "df -h", Ran: true, Duration: ns(5), Hash: 1 << 51, SHA256: "80" + strings.Repeat("0", 62), Bytes: 1 << 40},
			{Name: "cat \"x\"", Ran: true, Duration: ns(6), Hash: 42, Bytes: 0},
		},
	}))
	s.Update(sshResult(aSSH, 1, false, probe.ReasonCommand, &probe.SSHResult{
		Commands: []probe.CommandResult{
			{Name: "uname", Ran: true, Duration: ns(7), ExitStatus: 2, Hash: 0xabcdef0123456, Bytes: 6},
			{Name: "df -h", Ran: true, Duration: ns(8), ExitStatus: -1, Reason: probe.ReasonTimeout},
			{Name: "cat \"x\"", Ran: false},
		},
	}))
	// beta: icmp without reply (no rtt), ssh with a phase not reached.
	s.Update(icmpResult(bICMP, 0, 3, 0, 0))
	// The same host in another set with the same key: one host, not a
	// clone; a certificate valid forever has no expiry series.
	s.Update(sshResult(bSSH, 0, false, probe.ReasonAuth, &probe.SSHResult{
		Connect: ns(9), Handshake: ns(10), NewConnection: true,
		HostKey: &probe.HostKey{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:shared+/key", Certificate: true},
	}))
	s.Update(icmpResult(bOnly, 0, 5, 5, ns(11)))
	// gamma: failing tcp with another reason; ssh before any phase.
	s.Update(result(cTCP, 0, false, probe.ReasonTimeout))
	s.Update(withAddr(result(dTCP, 0, true, probe.ReasonNone), "fe80::1%eth0"))
	s.Update(sshResult(cSSH, 0, false, probe.ReasonDNS, nil))
	s.Update(sshResult(cSSH, 1, true, probe.ReasonNone, &probe.SSHResult{
		HostKey:  &probe.HostKey{Type: "ecdsa-sha2-nistp256", FingerprintSHA256: "SHA256:c1-old"},
		Commands: []probe.CommandResult{{Name: "df -h", Ran: true, Duration: 0, Hash: 7, Bytes: 3}},
	}))
	// c1 now presents the key of shared\host: a changed key and a clone.
	s.Update(sshResult(cSSH, 2, false, probe.ReasonHostKey, &probe.SSHResult{
		HostKey: &probe.HostKey{Type: "ssh-ed25519", FingerprintSHA256: "SHA256:shared+/key"},
	}))
	return s
}

// randomStore builds a fleet from a seeded source: overlapping host names
// across sets, random static labels (names before, between and after the
// collector's own), random probe types, commands and outcomes.
func randomStore(seed uint64, hosts int) *Store {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	labelNames := []string{"az", "dc", "env", "owner", "pod", "rack", "team", "zone"}
	values := []string{"", "a", "b", `x\y`, "q\"", "n\nl", "zz"}
	commands := []string{"a", "b c", "uname", "z\"q"}
	reasons := probe.Reasons()
	sets := make([]string, 1+rng.IntN(5))
	setLabels := make([]map[string]string, len(sets))
	for i := range sets {
		// Unique names in random order.
		sets[i] = fmt.Sprintf("s%d%d", rng.IntN(10), i)
		setLabels[i] = map[string]string{}
		for _, n := range labelNames {
			if rng.IntN(3) == 0 {
				setLabels[i][n] = values[rng.IntN(len(values))]
			}
		}
	}
	var targets []*config.Target
	for range hosts {
		si := rng.IntN(len(sets))
		host := fmt.Sprintf("h%d", rng.IntN(hosts))
		for _, p := range config.ProbeTypes() {
			if rng.IntN(2) == 0 {
				continue
			}
			switch p {
			case config.ProbeICMP:
				targets = append(targets, icmpTarget(sets[si], host, setLabels[si]))
			case config.ProbeTCP:
				targets = append(targets, tcpTarget(sets[si], host, setLabels[si]))
			default:
				var cmds []string
				for _, c := range commands {
					if rng.IntN(2) == 0 {
						cmds = append(cmds, c)
					}
				}
				targets = append(targets, sshTarget(sets[si], host, setLabels[si], cmds...))
			}
		}
	}
	s := NewStore()
	s.Reconcile(targets)
	d := func() time.Duration {
		return time.Duration(rng.IntN(3)) * time.Duration(rng.Int64N(int64(time.Second)))
	}
	for _, t := range targets {
		for n := range rng.IntN(3) {
			ok := rng.IntN(3) > 0
			reason := probe.ReasonNone
			if !ok {
				reason = reasons[rng.IntN(len(reasons))]
			}
			r := result(t, n, ok, reason)
			r.Duration = d()
			switch t.Probe {
			case config.ProbeICMP:
				recv := rng.IntN(4)
				r.ICMP = &probe.ICMPResult{Sent: 3, Received: recv, RTT: d()}
			case config.ProbeSSH:
				if rng.IntN(4) > 0 {
					sr := &probe.SSHResult{NewConnection: rng.IntN(2) == 0, Connect: d(), Handshake: d(), Auth: d()}
					if rng.IntN(2) == 0 {
						sr.Conn = &probe.ConnInfo{ServerVersion: fmt.Sprintf("SSH-2.0-v%d", rng.IntN(3)), KEX: "k", Cipher: "c", MAC: "m", HostKeyAlgorithm: "h"}
					}
					if rng.IntN(3) > 0 {
						// Few distinct keys, so that hosts share them.
						k := &probe.HostKey{Type: "ssh-ed25519", FingerprintSHA256: fmt.Sprintf("SHA256:k%d", rng.IntN(4))}
						if rng.IntN(2) == 0 {
							k.Certificate = true
							if rng.IntN(2) == 0 {
								k.CertificateExpiry = t0.Add(d())
							}
						}
						sr.HostKey = k
					}
					for _, c := range t.SSH.Commands {
						h := rng.Uint64N(1 << 52)
						cr := probe.CommandResult{
							Name: c.Name, Ran: rng.IntN(4) > 0, Duration: d(), ExitStatus: rng.IntN(3) - 1,
							Hash: h, Bytes: rng.Int64N(1 << 20),
						}
						if rng.IntN(2) == 0 {
							cr.SHA256 = fmt.Sprintf("%064x", h)
							cr.Value = fmt.Sprintf("v%d", rng.IntN(3))
						}
						sr.Commands = append(sr.Commands, cr)
					}
					rng.Shuffle(len(sr.Commands), func(i, j int) { sr.Commands[i], sr.Commands[j] = sr.Commands[j], sr.Commands[i] })
					r.SSH = sr
				}
			}
			s.Update(r)
		}
	}
	return s
}

// matchCase is one store the writers and the gatherer are compared on.
type matchCase struct {
	name  string
	store func() *Store
	// families that must be present, so the comparison is not vacuous.
	wantFamilies []string
}

// matchCases returns stores covering every family, the escaping rules and
// the layouts where sorting matters, plus random fleets.
func matchCases(t testing.TB) []matchCase {
	tests := []matchCase{
		{name: "empty store", store: NewStore},
		{name: "configured without results", store: func() *Store {
			s := NewStore()
			s.Reconcile([]*config.Target{icmpTarget("a", "h", map[string]string{"dc": "x"}), tcpTarget("b", "h", nil)})
			return s
		}, wantFamilies: []string{"fleet_targets", "fleet_probes_total"}},
		{name: "every family with escaping and reordering", store: escapingStore, wantFamilies: tableNames()},
		{name: "full store of the collector tests", store: fullStore},
		{name: "bench fleet", store: func() *Store { return benchStore(t, 300, true) }, wantFamilies: tableNames()},
	}
	for seed := range uint64(20) {
		tests = append(tests, matchCase{name: fmt.Sprintf("random seed %d", seed), store: func() *Store { return randomStore(seed, 60) }})
	}
	return tests
}

// TestWriteTextMatchesRegistry proves that WriteText writes byte for byte
// what the Registry + expfmt path writes for NewCollector.
func TestWriteTextMatchesRegistry(t *testing.T) {
	w := NewTextWriter()
	for _, tc := range matchCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.store()
			want := registryText(t, s)
			for _, f := range tc.wantFamilies {
				if !strings.Contains(want, "\n# TYPE "+f+" ") {
					t.Errorf("reference output lacks family %s", f)
				}
			}
			snap := s.Snapshot()
			// A fresh writer, a reused one (buffers from the previous case)
			// and a snapshot without the store's order must all agree.
			if got := writeText(t, NewTextWriter(), snap, nil); got != want {
				t.Errorf("fresh TextWriter differs from the registry (-registry +text):\n%s", cmp.Diff(want, got))
			}
			if got := writeText(t, w, snap, nil); got != want {
				t.Errorf("reused TextWriter differs from the registry (-registry +text):\n%s", cmp.Diff(want, got))
			}
			var b bytes.Buffer
			if err := snap.WriteText(&b); err != nil {
				t.Fatal(err)
			}
			if b.String() != want {
				t.Errorf("Snapshot.WriteText differs from the registry (-registry +text):\n%s", cmp.Diff(want, b.String()))
			}
			unordered := *snap
			unordered.order = nil
			if got := writeText(t, w, &unordered, nil); got != want {
				t.Errorf("snapshot without exposition order differs (-registry +text):\n%s", cmp.Diff(want, got))
			}
		})
	}
}

// TestOpenMetricsWriterMatchesRegistry proves that the OpenMetrics writer
// writes byte for byte what expfmt's OpenMetrics 1.0 encoder writes for the
// registry's families, and that the result with "# EOF" passes the strict
// OpenMetrics parser.
func TestOpenMetricsWriterMatchesRegistry(t *testing.T) {
	w := NewOpenMetricsWriter()
	for _, tc := range matchCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.store()
			want := registryFormat(t, s, expfmt.FmtOpenMetrics_1_0_0)
			for _, f := range tc.wantFamilies {
				f = strings.TrimSuffix(f, "_total")
				if !strings.Contains(want, "# TYPE "+f+" ") {
					t.Errorf("reference output lacks family %s", f)
				}
			}
			snap := s.Snapshot()
			for name, w := range map[string]*TextWriter{"fresh": NewOpenMetricsWriter(), "reused": w} {
				if got := writeText(t, w, snap, nil); got != want {
					t.Errorf("%s OpenMetrics writer differs from expfmt (-expfmt +writer):\n%s", name, cmp.Diff(want, got))
				}
			}
			if strings.Contains(want, "# TYPE fleet_probes counter") && !strings.Contains(want, "\nfleet_probes_total{") {
				t.Errorf("counter samples lack _total:\n%s", want)
			}
			// The strict parser walks an ABNF grammar, milliseconds per
			// line: only the small hand-made stores go through it.
			if !strings.HasPrefix(tc.name, "random") && tc.name != "bench fleet" {
				checkOpenMetrics(t, want+"# EOF\n")
			}
		})
	}
}

// TestProtobufWriterMatchesRegistry proves that the protobuf writer writes
// byte for byte what expfmt's delimited protobuf encoder writes for the
// registry's families, and that expfmt's decoder reads it back.
func TestProtobufWriterMatchesRegistry(t *testing.T) {
	w := NewProtobufWriter()
	for _, tc := range matchCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.store()
			want := registryFormat(t, s, expfmt.FmtProtoDelim)
			snap := s.Snapshot()
			for name, w := range map[string]*TextWriter{"fresh": NewProtobufWriter(), "reused": w} {
				got := writeText(t, w, snap, nil)
				if got == want {
					continue
				}
				// Show the difference decoded; bytes say little.
				t.Errorf("%s protobuf writer differs from expfmt (%d vs %d bytes); decoded (-expfmt +writer):\n%s", name, len(want), len(got),
					cmp.Diff(decodeProtoText(t, want), decodeProtoText(t, got)))
			}
			text := decodeProtoText(t, want)
			for _, f := range tc.wantFamilies {
				if !strings.Contains(text, "# TYPE "+f+" ") {
					t.Errorf("reference output lacks family %s", f)
				}
			}
			if text != registryText(t, s) {
				t.Errorf("decoded protobuf differs from the text exposition")
			}
		})
	}
}

// decodeProtoText decodes a delimited protobuf exposition and renders it as
// text 0.0.4.
func decodeProtoText(t *testing.T, b string) string {
	t.Helper()
	dec := expfmt.NewDecoder(strings.NewReader(b), expfmt.FmtProtoDelim)
	var out strings.Builder
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode protobuf: %v", err)
		}
		if _, err := expfmt.MetricFamilyToText(&out, &mf); err != nil {
			t.Fatal(err)
		}
	}
	return out.String()
}

// checkOpenMetrics parses an OpenMetrics exposition with the strict parser
// of expfmt's OpenMetrics decoder.
func checkOpenMetrics(t *testing.T, text string) {
	t.Helper()
	if text != "# EOF\n" && !strings.HasSuffix(text, "\n# EOF\n") {
		t.Fatalf("OpenMetrics exposition does not end with # EOF")
	}
	dec := expfmt.NewDecoder(strings.NewReader(text), expfmt.FmtOpenMetrics_1_0_0)
	n := 0
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("strict OpenMetrics parse: %v", err)
		}
		n++
	}
	if n == 0 && strings.Contains(text, "# TYPE") {
		t.Errorf("no family decoded")
	}
}

// TestGathererMatchesRegistry compares the Gatherer's families with the
// registry's: same families in the same order, same series, same values,
// proven by identical protobuf and text encodings.
func TestGathererMatchesRegistry(t *testing.T) {
	for _, tc := range matchCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.store()
			g := NewGatherer(s.Snapshot)
			for _, f := range []expfmt.Format{expfmt.FmtProtoDelim, expfmt.FmtText} {
				want := registryFormat(t, s, f)
				// Twice: the second gather reuses the first one's buffers.
				for i := range 2 {
					mfs, done, err := g.Gather()
					if err != nil {
						t.Fatal(err)
					}
					got := encodeFamilies(t, mfs, f)
					done()
					if got != want {
						t.Errorf("gather %d in %s differs from the registry (-registry +gatherer):\n%s", i, f, cmp.Diff(want, got))
					}
				}
			}
		})
	}
}

// TestGathererKeepsResultsUntilDone holds one result while another gather of
// a changed store runs: the first must not change until its done is called.
func TestGathererKeepsResultsUntilDone(t *testing.T) {
	s := benchStore(t, 50, true)
	g := NewGatherer(s.Snapshot)
	first, done1, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	before := encodeFamilies(t, first, expfmt.FmtText)
	tg := s.Snapshot().Targets[0].Target
	s.Update(icmpResult(tg, 9, 3, 0, 0))
	second, done2, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if after := encodeFamilies(t, first, expfmt.FmtText); after != before {
		t.Errorf("a result changed before done (-before +after):\n%s", cmp.Diff(before, after))
	}
	if encodeFamilies(t, second, expfmt.FmtText) == before {
		t.Errorf("the second gather does not show the update")
	}
	done1()
	done2()
}

// TestGathererConcurrentWithUpdates gathers from several goroutines while
// the store changes; under -race it shows that gathers share no buffers.
func TestGathererConcurrentWithUpdates(t *testing.T) {
	s := escapingStore()
	g := NewGatherer(s.Snapshot)
	targets := make([]*config.Target, 0)
	for _, ts := range s.Snapshot().Targets {
		targets = append(targets, ts.Target)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			tg := targets[n%len(targets)]
			if tg.Probe == config.ProbeICMP {
				s.Update(icmpResult(tg, n, 3, n%4, time.Millisecond))
			} else {
				s.Update(result(tg, n, n%2 == 0, probe.ReasonRefused))
			}
			if n%50 == 0 {
				s.Reconcile(targets[:len(targets)-n/50%3])
			}
		}
	})
	var gathers sync.WaitGroup
	for range 3 {
		gathers.Go(func() {
			for range 50 {
				mfs, done, err := g.Gather()
				if err != nil {
					t.Error(err)
					return
				}
				var b bytes.Buffer
				enc := expfmt.NewEncoder(&b, expfmt.FmtText)
				for _, mf := range mfs {
					if err := enc.Encode(mf); err != nil {
						t.Error(err)
					}
				}
				done()
				p := expfmt.NewTextParser(model.UTF8Validation)
				if _, err := p.TextToMetricFamilies(&b); err != nil {
					t.Errorf("gathered families do not parse: %v", err)
					return
				}
			}
		})
	}
	gathers.Wait()
	close(stop)
	wg.Wait()
}

// TestWriteTextSortsWhereTheStoreOrderDiffers makes sure the escaping store
// exercises the re-sorting: in the cases below the registry's order is not
// the store's host-by-host order, so a writer that never sorted would fail
// TestWriteTextMatchesRegistry.
func TestWriteTextSortsWhereTheStoreOrderDiffers(t *testing.T) {
	s := escapingStore()
	ref := registryText(t, s)
	got := writeText(t, NewTextWriter(), s.Snapshot(), nil)
	tests := []struct {
		name string
		// first comes before second in the registry's output although the
		// store reports second first.
		first, second string
	}{
		{
			// Commands sort by name, not in the order the prober reported.
			name:   "command before host",
			first:  `fleet_ssh_command_duration_seconds{az="a\\z",command="df -h"`,
			second: `fleet_ssh_command_duration_seconds{az="a\\z",command="uname"`,
		},
		{
			// One host name in two sets whose labels agree up to probe:
			// the probe label decides before the set label does.
			name:   "probe before set",
			first:  `fleet_probe_success{az="",env="",host="shared\\host",pod="",port="",probe="icmp",rack="r\"7\"",set="beta\n2"`,
			second: `fleet_probe_success{az="",env="",host="shared\\host",pod="",port="",probe="tcp",rack="",set="delta"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for name, out := range map[string]string{"registry": ref, "text": got} {
				i, j := strings.Index(out, tc.first), strings.Index(out, tc.second)
				if i < 0 || j < 0 {
					t.Fatalf("%s output lacks %q (at %d) or %q (at %d):\n%s", name, tc.first, i, tc.second, j, out)
				}
				if i > j {
					t.Errorf("%s output has %q after %q", name, tc.first, tc.second)
				}
			}
		})
	}
	// The store's own order puts delta's host (rack="") before beta's.
	snap := s.Snapshot()
	pos := map[config.Key]int{}
	for i, ti := range snap.order {
		pos[snap.Targets[ti].Target.Key()] = i
	}
	beta := pos[config.Key{Set: "beta\n2", Host: `shared\host`, Probe: config.ProbeICMP}]
	delta := pos[config.Key{Set: "delta", Host: `shared\host`, Probe: config.ProbeTCP}]
	if beta < delta {
		t.Errorf("store order has beta's icmp target (%d) before delta's tcp target (%d): the case tests nothing", beta, delta)
	}
}

func TestWriteTextFilter(t *testing.T) {
	s := escapingStore()
	snap := s.Snapshot()
	full := registryText(t, s)
	tests := []struct {
		name string
		keep []string
	}{
		{"one host family", []string{"fleet_host_up"}},
		{"health only", []string{"fleet_targets", "fleet_probes_total"}},
		{"commands and phases", []string{"fleet_ssh_phase_seconds", "fleet_ssh_command_output_hash"}},
		{"unknown family", []string{"fleet_nope"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keep := func(name string) bool { return slices.Contains(tc.keep, name) }
			got := writeText(t, NewTextWriter(), snap, keep)
			// The expected text is the reference restricted to the kept
			// families.
			var want strings.Builder
			for block := range strings.SplitSeq(full, "# HELP ") {
				if block == "" {
					continue
				}
				name, _, _ := strings.Cut(block, " ")
				if keep(name) {
					want.WriteString("# HELP " + block)
				}
			}
			if got != want.String() {
				t.Errorf("filtered output (-want +got):\n%s", cmp.Diff(want.String(), got))
			}
		})
	}
}

// tableNames returns the names of the families of the table, in the order
// of Families.
func tableNames() []string {
	var names []string
	for _, f := range Families() {
		names = append(names, f.Name)
	}
	return names
}

// TestFamilies checks the table against what the registry gathers from
// NewCollector for a store that has every family: same names, types, HELP
// texts and label names.
func TestFamilies(t *testing.T) {
	fams := Families()
	got := tableNames()
	if diff := cmp.Diff(familyNames(), got, cmpSortStrings); diff != "" {
		t.Errorf("Families differs from the collector's families (-collector +table):\n%s", diff)
	}
	for i := 1; i < len(got); i++ {
		if got[i-1] >= got[i] {
			t.Errorf("Families not sorted: %q before %q", got[i-1], got[i])
		}
	}
	s := escapingStore()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(s))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	staticNames := s.Snapshot().LabelNames
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	for _, f := range fams {
		t.Run(f.Name, func(t *testing.T) {
			if f.Type == dto.MetricType_COUNTER && !strings.HasSuffix(f.Name, "_total") {
				t.Errorf("counter %s lacks the _total suffix", f.Name)
			}
			if f.Type != dto.MetricType_COUNTER && strings.HasSuffix(f.Name, "_total") {
				t.Errorf("%s %s ends in _total", f.Type, f.Name)
			}
			mf := byName[f.Name]
			if mf == nil {
				t.Fatalf("registry gathered no %s", f.Name)
			}
			if mf.GetType() != f.Type || mf.GetHelp() != f.Help {
				t.Errorf("registry has %s %q, table %s %q", mf.GetType(), mf.GetHelp(), f.Type, f.Help)
			}
			want := slices.Clone(f.Labels)
			if f.StaticLabels {
				want = append(want, staticNames...)
			}
			for _, m := range mf.GetMetric() {
				var names []string
				for _, lp := range m.GetLabel() {
					names = append(names, lp.GetName())
				}
				if diff := cmp.Diff(want, names, cmpSortStrings); diff != "" {
					t.Fatalf("label names (-table +registry):\n%s", diff)
				}
			}
		})
	}
}

var cmpSortStrings = cmp.Transformer("sort", func(in []string) []string {
	return slices.Sorted(slices.Values(in))
})

func TestAppendFloatMatchesExpfmt(t *testing.T) {
	tests := []struct {
		name string
		v    float64
	}{
		{"zero", 0},
		{"negative zero", math.Copysign(0, -1)},
		{"one", 1},
		{"minus one", -1},
		{"nan", math.NaN()},
		{"+inf", math.Inf(1)},
		{"-inf", math.Inf(-1)},
		{"fraction", 0.25},
		{"timestamp", 1.70000000025e9},
		{"timestamp nanos", 1700000000.123456789},
		{"large integer", float64(1<<52 - 1)},
		{"huge", 1e21},
		{"tiny", 5e-324},
		{"negative", -42.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The reference: expfmt's text encoding of a gauge with value v.
			reg := prometheus.NewRegistry()
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "h"})
			g.Set(tc.v)
			reg.MustRegister(g)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if _, err := expfmt.MetricFamilyToText(&b, mfs[0]); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(b.String()), "\n")
			want := strings.TrimPrefix(lines[len(lines)-1], "g ")
			if got := string(appendFloat(nil, tc.v)); got != want {
				t.Errorf("appendFloat(%v) = %q, expfmt writes %q", tc.v, got, want)
			}
		})
	}
}

func TestAppendOpenMetricsFloatMatchesExpfmt(t *testing.T) {
	for _, v := range []float64{
		0, math.Copysign(0, -1), 1, -1, 2, 42, -42, 0.25, 1.70000000025e9, 1700000000.123456789,
		float64(1<<52 - 1), 1e21, 5e-324, math.NaN(), math.Inf(1), math.Inf(-1),
	} {
		t.Run(strconv.FormatFloat(v, 'g', -1, 64), func(t *testing.T) {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "h"})
			g.Set(v)
			reg := prometheus.NewRegistry()
			reg.MustRegister(g)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if _, err := expfmt.MetricFamilyToOpenMetrics(&b, mfs[0]); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(b.String()), "\n")
			want := strings.TrimPrefix(lines[len(lines)-1], "g ")
			if got := string(appendOpenMetricsFloat([]byte("x"), v)); got != "x"+want {
				t.Errorf("appendOpenMetricsFloat(%v) = %q, expfmt writes %q", v, got, "x"+want)
			}
		})
	}
}

func TestAppendEscaped(t *testing.T) {
	tests := []struct {
		name, in, want, wantHelp string
	}{
		{"plain", "abc", "abc", "abc"},
		{"backslash", `a\b`, `a\\b`, `a\\b`},
		{"quote", `a"b`, `a\"b`, `a"b`},
		{"newline", "a\nb", `a\nb`, `a\nb`},
		{"all at the end", "x\\\"\n", `x\\\"\n`, `x\\"\n`},
		{"utf8", "zürich", "zürich", "zürich"},
		{"empty", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(appendEscaped([]byte("p"), tc.in)); got != "p"+tc.want {
				t.Errorf("appendEscaped(%q) = %q, want %q", tc.in, got, "p"+tc.want)
			}
			if got := string(appendEscapedHelp(nil, tc.in)); got != tc.wantHelp {
				t.Errorf("appendEscapedHelp(%q) = %q, want %q", tc.in, got, tc.wantHelp)
			}
		})
	}
}

// failingWriter fails every write after the first n bytes.
type failingWriter struct {
	n      int
	writes int
}

var errWrite = errors.New("write failed")

func (f *failingWriter) Write(p []byte) (int, error) {
	f.writes++
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, errWrite
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriteTextReturnsWriteErrors(t *testing.T) {
	snap := benchStore(t, 5000, true).Snapshot()
	tests := []struct {
		name string
		n    int
	}{
		{"first write", 0},
		{"after some output", 3 * textFlushSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fw := &failingWriter{n: tc.n}
			err := NewTextWriter().Write(fw, snap, nil)
			if !errors.Is(err, errWrite) {
				t.Fatalf("Write error = %v, want %v", err, errWrite)
			}
			// The writer stops at the first error.
			if fw.writes > tc.n/textFlushSize+1 {
				t.Errorf("%d writes after the error, want none", fw.writes-(tc.n/textFlushSize+1))
			}
		})
	}
}

// TestWriteTextConcurrentWithUpdates writes snapshots while several
// goroutines update the store and reconfigure it; under -race this proves
// that writing reads only the snapshot's copies. Every output must parse.
func TestWriteTextConcurrentWithUpdates(t *testing.T) {
	s := escapingStore()
	targets := make([]*config.Target, 0)
	for _, ts := range s.Snapshot().Targets {
		targets = append(targets, ts.Target)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				tg := targets[(n+g)%len(targets)]
				switch tg.Probe {
				case config.ProbeICMP:
					s.Update(icmpResult(tg, n, 3, n%4, time.Millisecond))
				case config.ProbeSSH:
					s.Update(sshResult(tg, n, n%3 > 0, probe.ReasonAuth, &probe.SSHResult{
						NewConnection: n%2 == 0, Connect: time.Millisecond,
						Commands: []probe.CommandResult{{Name: "df -h", Ran: true, Hash: uint64(n%7 + 1), Bytes: 1}},
					}))
				default:
					s.Update(result(tg, n, n%2 == 0, probe.ReasonRefused))
				}
				if g == 0 && n%50 == 0 {
					s.Reconcile(targets[:len(targets)-n/50%3])
				}
			}
		})
	}
	w := NewTextWriter()
	for i := range 200 {
		var b bytes.Buffer
		if err := w.Write(&b, s.Snapshot(), nil); err != nil {
			t.Fatal(err)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		if _, err := p.TextToMetricFamilies(&b); err != nil {
			t.Fatalf("scrape %d does not parse: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestWriteTextAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting is slow with -short")
	}
	snap := benchStore(t, 2000, true).Snapshot()
	w := NewTextWriter()
	var b bytes.Buffer
	b.Grow(4 << 20)
	if err := w.Write(&b, snap, nil); err != nil { // warm the buffers
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(5, func() {
		b.Reset()
		if err := w.Write(&b, snap, nil); err != nil {
			t.Fatal(err)
		}
	})
	// A warm writer should not allocate per series (2000 hosts write
	// about 30,000 series).
	if allocs > 50 {
		t.Errorf("warm Write allocates %v times per scrape, want at most 50", allocs)
	}
}
