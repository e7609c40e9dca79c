package collector

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/fleet-exporter/fleet_exporter/config"
	kit "github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// histogramOf returns the histogram of family name with the given label
// values, or nil.
func histogramOf(t *testing.T, h *SetHistograms, name string, labels map[string]string) *dto.Histogram {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)
	if ms := kit.Series(t, reg, name, labels); len(ms) > 0 {
		return ms[0].GetHistogram()
	}
	return nil
}

func TestSetHistograms(t *testing.T) {
	icmp := icmpTarget("edge", "h1", map[string]string{"dc": "fra"})
	icmp2 := icmpTarget("edge", "h2", nil)
	ssh := sshTarget("db", "d1", nil, "uname")
	tcp := tcpTarget("db", "d1", nil)
	h := NewSetHistograms()
	h.Reconcile([]*config.Target{icmp, icmp2, ssh, tcp})

	// Every configured pair has its series before any result, at zero.
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{nameSetProbeDuration, map[string]string{"set": "edge", "probe": "icmp"}},
		{nameSetProbeDuration, map[string]string{"set": "db", "probe": "ssh"}},
		{nameSetProbeDuration, map[string]string{"set": "db", "probe": "tcp"}},
		{nameSetICMPRTT, map[string]string{"set": "edge"}},
		{nameSetSSHPhase, map[string]string{"set": "db", "phase": "connect"}},
		{nameSetSSHPhase, map[string]string{"set": "db", "phase": "handshake"}},
		{nameSetSSHPhase, map[string]string{"set": "db", "phase": "auth"}},
	} {
		hg := histogramOf(t, h, c.name, c.labels)
		if hg == nil || hg.GetSampleCount() != 0 {
			t.Errorf("%s%v before any result = %v, want a series with count 0", c.name, c.labels, hg)
		}
	}
	if hg := histogramOf(t, h, nameSetICMPRTT, map[string]string{"set": "db"}); hg != nil {
		t.Errorf("set db has no ICMP probe but an RTT histogram")
	}

	h.Observe(icmpResult(icmp, 0, 3, 3, 2*time.Millisecond))
	h.Observe(icmpResult(icmp2, 0, 3, 0, 0)) // no reply: a duration, no RTT
	h.Observe(sshResult(ssh, 0, true, "", &probe.SSHResult{NewConnection: true, Connect: 10 * time.Millisecond, Handshake: 20 * time.Millisecond, Auth: 30 * time.Millisecond}))
	// A reused connection measured no phase.
	h.Observe(sshResult(ssh, 1, true, "", &probe.SSHResult{Connect: time.Second}))
	// A result of a pair that is not configured is dropped.
	h.Observe(result(tcpTarget("gone", "x", nil), 0, true, ""))

	if hg := histogramOf(t, h, nameSetProbeDuration, map[string]string{"set": "edge", "probe": "icmp"}); hg.GetSampleCount() != 2 || math.Abs(hg.GetSampleSum()-0.5) > 1e-9 {
		t.Errorf("icmp durations: count %d sum %v, want 2 and 0.5", hg.GetSampleCount(), hg.GetSampleSum())
	}
	rtt := histogramOf(t, h, nameSetICMPRTT, map[string]string{"set": "edge"})
	if rtt.GetSampleCount() != 1 || rtt.GetSampleSum() != 0.002 {
		t.Errorf("rtt: count %d sum %v, want 1 and 0.002", rtt.GetSampleCount(), rtt.GetSampleSum())
	}
	// Native and classic at once.
	if rtt.Schema == nil || len(rtt.PositiveSpan) == 0 || len(rtt.Bucket) == 0 {
		t.Errorf("rtt histogram lacks native (schema %v, spans %d) or classic (%d) buckets", rtt.Schema, len(rtt.PositiveSpan), len(rtt.Bucket))
	}
	for phase, want := range map[string]float64{"connect": 0.01, "handshake": 0.02, "auth": 0.03} {
		hg := histogramOf(t, h, nameSetSSHPhase, map[string]string{"set": "db", "phase": phase})
		if hg.GetSampleCount() != 1 || hg.GetSampleSum() != want {
			t.Errorf("phase %s: count %d sum %v, want 1 and %v", phase, hg.GetSampleCount(), hg.GetSampleSum(), want)
		}
	}
	if hg := histogramOf(t, h, nameSetProbeDuration, map[string]string{"set": "gone", "probe": "tcp"}); hg != nil {
		t.Errorf("a result of an unconfigured pair created a series")
	}

	// Removing the ICMP probe of edge deletes its series; db keeps its
	// distributions.
	h.Reconcile([]*config.Target{ssh, tcp})
	if hg := histogramOf(t, h, nameSetICMPRTT, map[string]string{"set": "edge"}); hg != nil {
		t.Errorf("rtt series of a removed set kept")
	}
	if hg := histogramOf(t, h, nameSetProbeDuration, map[string]string{"set": "db", "probe": "ssh"}); hg.GetSampleCount() != 2 {
		t.Errorf("kept pair lost its distribution: count %d, want 2", hg.GetSampleCount())
	}

	problems, err := testutil.CollectAndLint(h)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if got := strings.Join(HistogramNames(), ","); got != "fleet_set_icmp_rtt_seconds,fleet_set_probe_duration_seconds,fleet_set_ssh_phase_seconds" {
		t.Errorf("HistogramNames = %s", got)
	}
}

// TestSetHistogramsObserveBatch checks that a batch adds to the same
// distributions as results one by one, skips pairs not configured, and
// keeps runs of several pairs apart.
func TestSetHistogramsObserveBatch(t *testing.T) {
	targets := []*config.Target{icmpTarget("a", "h1", nil), icmpTarget("b", "h2", nil), sshTarget("a", "h3", nil, "uname")}
	one, batch := NewSetHistograms(), NewSetHistograms()
	one.Reconcile(targets)
	batch.Reconcile(targets)
	var rs []probe.Result
	for i, k := range []config.Key{
		{Set: "a", Host: "h1", Probe: config.ProbeICMP},
		{Set: "a", Host: "h1", Probe: config.ProbeICMP},
		{Set: "b", Host: "h2", Probe: config.ProbeICMP},
		{Set: "gone", Host: "x", Probe: config.ProbeICMP},
		{Set: "a", Host: "h3", Probe: config.ProbeSSH},
		{Set: "a", Host: "h1", Probe: config.ProbeICMP},
	} {
		r := probe.Result{Key: k, Success: true, Duration: time.Duration(i+1) * time.Millisecond}
		if k.Probe == config.ProbeICMP {
			r.ICMP = &probe.ICMPResult{Sent: 1, Received: 1, RTT: time.Duration(i+1) * 100 * time.Microsecond}
		} else {
			r.SSH = &probe.SSHResult{NewConnection: true, Connect: time.Millisecond, Handshake: 2 * time.Millisecond, Auth: 3 * time.Millisecond}
		}
		rs = append(rs, r)
		one.Observe(r)
	}
	batch.ObserveBatch(rs)
	names := HistogramNames()
	want, err := testutil.CollectAndFormat(one, expfmt.TypeTextPlain, names...)
	if err != nil {
		t.Fatal(err)
	}
	got, err := testutil.CollectAndFormat(batch, expfmt.TypeTextPlain, names...)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("batch and one-by-one differ:\n--- one by one\n%s\n--- batch\n%s", want, got)
	}
	if !strings.Contains(string(got), `fleet_set_icmp_rtt_seconds_count{set="a"} 3`) {
		t.Errorf("set a's RTT count is not 3:\n%s", got)
	}
	if strings.Contains(string(got), `set="gone"`) {
		t.Error("a result of an unconfigured set made a series")
	}
}
