package schedule

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// schedGauge tracks a current and a maximum count.
type schedGauge struct {
	mu       sync.Mutex
	cur, max int
}

func (g *schedGauge) add(d int) {
	g.mu.Lock()
	g.cur += d
	g.max = max(g.max, g.cur)
	g.mu.Unlock()
}

func (g *schedGauge) peak() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.max
}

// schedFakeProber is a probe.Prober that holds each probe for a configurable time
// (or until its context ends) and records what happened.
type schedFakeProber struct {
	// hold returns how long a probe of t takes; a negative value means
	// "until the context ends".
	hold func(t *config.Target) time.Duration
	// setDuration makes the prober report this Duration itself.
	setDuration time.Duration
	// global, if set, is shared between probers to track overall
	// concurrency.
	global *schedGauge

	local schedGauge

	mu        sync.Mutex
	starts    []time.Time
	cancelled int
}

func (f *schedFakeProber) Probe(ctx context.Context, t *config.Target) probe.Result {
	f.local.add(1)
	defer f.local.add(-1)
	if f.global != nil {
		f.global.add(1)
		defer f.global.add(-1)
	}
	f.mu.Lock()
	f.starts = append(f.starts, time.Now())
	f.mu.Unlock()

	var d time.Duration
	if f.hold != nil {
		d = f.hold(t)
	}
	var fired <-chan time.Time
	if d >= 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		fired = timer.C
	}
	select {
	case <-fired:
		return probe.Result{Success: true, Duration: f.setDuration}
	case <-ctx.Done():
		f.mu.Lock()
		f.cancelled++
		f.mu.Unlock()
		return probe.Result{Reason: probe.ReasonTimeout, Err: ctx.Err(), Duration: f.setDuration}
	}
}

func (f *schedFakeProber) startTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.starts...)
}

func (f *schedFakeProber) cancelledCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cancelled
}

// poolBatchFake is a probe.BatchProber around a schedFakeProber: each
// request runs the fake's Probe (in a goroutine of the fake's own) under
// the request's timeout, and completes through the sink. batches records
// the size of every ProbeBatch call.
type poolBatchFake struct {
	f *schedFakeProber

	mu      sync.Mutex
	batches []int
}

func (b *poolBatchFake) Probe(ctx context.Context, t *config.Target) probe.Result {
	return b.f.Probe(ctx, t)
}

func (b *poolBatchFake) ProbeBatch(ctx context.Context, reqs []probe.Request, sink probe.BatchSink) {
	b.mu.Lock()
	b.batches = append(b.batches, len(reqs))
	b.mu.Unlock()
	for _, r := range reqs {
		go func() {
			pctx, cancel := context.WithTimeout(ctx, r.Timeout)
			defer cancel()
			res := b.f.Probe(pctx, r.Target)
			sink.ProbesDone([]probe.Completion{{Request: r, Result: res}})
		}()
	}
}

func (b *poolBatchFake) batchSizes() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.batches...)
}

func poolHold(d time.Duration) func(*config.Target) time.Duration {
	return func(*config.Target) time.Duration { return d }
}

// poolSink collects results.
type poolSink struct {
	mu      sync.Mutex
	results []probe.Result
	// observe, when set, also receives every result.
	observe func(probe.Result)
}

func (s *poolSink) put(r probe.Result) {
	s.mu.Lock()
	s.results = append(s.results, r)
	s.mu.Unlock()
	if s.observe != nil {
		s.observe(r)
	}
}

func (s *poolSink) get() []probe.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]probe.Result(nil), s.results...)
}

func (s *poolSink) byHost() map[string]probe.Result {
	m := make(map[string]probe.Result)
	for _, r := range s.get() {
		m[r.Key.Host] = r
	}
	return m
}

// poolTarget returns a target of the set "s" whose probe times out after
// timeout.
func poolTarget(host, probe string, timeout time.Duration) *config.Target {
	return testutil.NewTarget("s", host, probe, testutil.WithTimeout(timeout))
}

// poolTargets returns n targets of the set "s" for probe, hosts named after
// the probe type and a number; opts apply to each.
func poolTargets(n int, probe string, timeout time.Duration, opts ...testutil.TargetOption) []*config.Target {
	opts = append([]testutil.TargetOption{testutil.WithTimeout(timeout)}, opts...)
	out := make([]*config.Target, n)
	for i := range out {
		out[i] = testutil.NewTarget("s", fmt.Sprintf("%s%03d", probe, i), probe, opts...)
	}
	return out
}

// poolValue returns the value of a collector holding exactly one counter or
// gauge series. It does what testutil.ToFloat64 does; testutil is avoided
// because its github.com/kylelemons/godebug dependency is not in go.mod.
func poolValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	var ms []prometheus.Metric
	for m := range ch {
		ms = append(ms, m)
	}
	if len(ms) != 1 {
		t.Fatalf("collected %d series, want 1", len(ms))
	}
	var m dto.Metric
	if err := ms[0].Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("series %v is neither a counter nor a gauge", &m)
	return 0
}

// poolSeries counts the series a collector currently exposes.
func poolSeries(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	n := 0
	for range ch {
		n++
	}
	return n
}

// poolNew builds a pool on a fresh registry and fails the test on error.
func poolNew(t *testing.T, g config.Global, probers map[string]probe.Prober, sink *poolSink) (*Pool, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := NewPool(g, probers, sink.put, nil, reg)
	if err != nil {
		t.Fatalf("NewPool() error = %v", err)
	}
	return p, reg
}

func poolSubmitAll(t *testing.T, p *Pool, targets []*config.Target) {
	t.Helper()
	now := time.Now()
	for _, tg := range targets {
		if !p.Submit(tg, now) {
			t.Fatalf("Submit(%v) = false, want true", tg.Key())
		}
	}
}

func TestNewPoolErrors(t *testing.T) {
	fake := &schedFakeProber{}
	sink := func(probe.Result) {}
	tests := []struct {
		name    string
		probers map[string]probe.Prober
		sink    func(probe.Result)
		reg     func() prometheus.Registerer
		wantErr string
	}{
		{name: "nil sink", probers: map[string]probe.Prober{config.ProbeICMP: fake}, wantErr: "nil result sink"},
		{name: "no probers", sink: sink, wantErr: "no probers"},
		{name: "unknown type", probers: map[string]probe.Prober{"udp": fake}, sink: sink, wantErr: `unknown probe type "udp"`},
		{name: "nil prober", probers: map[string]probe.Prober{config.ProbeTCP: nil}, sink: sink, wantErr: "nil prober"},
		{
			name: "metrics already registered", probers: map[string]probe.Prober{config.ProbeTCP: fake}, sink: sink,
			reg: func() prometheus.Registerer {
				reg := prometheus.NewRegistry()
				if _, err := NewPool(config.Global{}, map[string]probe.Prober{config.ProbeTCP: fake}, sink, nil, reg); err != nil {
					t.Fatal(err)
				}
				return reg
			},
			wantErr: "register metrics",
		},
		{name: "nil registerer is fine", probers: map[string]probe.Prober{config.ProbeSSH: fake}, sink: sink},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reg prometheus.Registerer
			if tt.reg != nil {
				reg = tt.reg()
			}
			_, err := NewPool(config.Global{Concurrency: 1}, tt.probers, tt.sink, nil, reg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("NewPool() error = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("NewPool() error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestPoolConcurrencyLimits(t *testing.T) {
	tests := []struct {
		name      string
		global    int
		icmp, tcp int // per type concurrency; 0 = unbounded
		n         int // targets per type
		// want peaks: per type and overall.
		wantICMP, wantTCP, wantAll int
	}{
		{name: "per type bounds", global: 100, icmp: 3, tcp: 5, n: 20, wantICMP: 3, wantTCP: 5, wantAll: 8},
		{name: "global bound", global: 4, icmp: 3, tcp: 3, n: 20, wantICMP: 3, wantTCP: 3, wantAll: 4},
		{name: "unbounded types under a global bound", global: 6, n: 10, wantAll: 6},
		{name: "one at a time", global: 1, icmp: 5, tcp: 5, n: 5, wantAll: 1},
	}
	for _, tt := range tests {
		for _, batch := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/batch=%v", tt.name, batch), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					all := &schedGauge{}
					icmp := &schedFakeProber{hold: poolHold(time.Second), global: all}
					tcp := &schedFakeProber{hold: poolHold(time.Second), global: all}
					g := config.Global{Concurrency: tt.global, Limits: config.ProbeLimits{
						ICMP: config.Limit{Concurrency: tt.icmp},
						TCP:  config.Limit{Concurrency: tt.tcp},
					}}
					sink := &poolSink{}
					var icmpProber probe.Prober = icmp
					if batch {
						icmpProber = &poolBatchFake{f: icmp}
					}
					p, _ := poolNew(t, g, map[string]probe.Prober{config.ProbeICMP: icmpProber, config.ProbeTCP: tcp}, sink)
					poolSubmitAll(t, p, poolTargets(tt.n, config.ProbeICMP, 10*time.Second))
					poolSubmitAll(t, p, poolTargets(tt.n, config.ProbeTCP, 10*time.Second))
					stop := testutil.Start(t, p.Run)

					// Half a second in, the pool is saturated: check the gauges.
					time.Sleep(500 * time.Millisecond)
					synctest.Wait()
					st := p.Stats()
					inICMP, inTCP := st.InFlight[config.ProbeICMP], st.InFlight[config.ProbeTCP]
					if inICMP+inTCP != tt.wantAll {
						t.Errorf("in flight = %d+%d, want %d in total", inICMP, inTCP, tt.wantAll)
					}
					if got := poolValue(t, p.types[config.ProbeICMP].inFlightGauge); int(got) != inICMP {
						t.Errorf("fleet_pool_in_flight{probe=icmp} = %v, want %d", got, inICMP)
					}
					if got, want := poolValue(t, p.types[config.ProbeTCP].waitingGauge), float64(tt.n-inTCP); got != want {
						t.Errorf("fleet_pool_waiting{probe=tcp} = %v, want %v", got, want)
					}

					time.Sleep(time.Duration(2*tt.n) * time.Second)
					synctest.Wait()
					stop()

					if got := len(sink.get()); got != 2*tt.n {
						t.Errorf("got %d results, want %d", got, 2*tt.n)
					}
					if got := all.peak(); got != tt.wantAll {
						t.Errorf("peak overall in flight = %d, want %d", got, tt.wantAll)
					}
					if tt.wantICMP > 0 {
						if got := icmp.local.peak(); got != tt.wantICMP {
							t.Errorf("peak icmp in flight = %d, want %d", got, tt.wantICMP)
						}
					}
					if tt.wantTCP > 0 {
						if got := tcp.local.peak(); got != tt.wantTCP {
							t.Errorf("peak tcp in flight = %d, want %d", got, tt.wantTCP)
						}
					}
					if st := p.Stats(); st.InFlight[config.ProbeICMP]+st.InFlight[config.ProbeTCP]+st.Waiting[config.ProbeICMP]+st.Waiting[config.ProbeTCP] != 0 {
						t.Errorf("Stats() after draining = %+v, want all zero", st)
					}
				})
			})
		}
	}
}

func TestPoolRateLimit(t *testing.T) {
	tests := []struct {
		name     string
		rate     float64
		burst    int
		n        int
		wantLast time.Duration // start of the last probe after the first
		wantAt0  int           // probes started at once
	}{
		{name: "10/s burst 5", rate: 10, burst: 5, n: 50, wantLast: 4500 * time.Millisecond, wantAt0: 5},
		{name: "2/s burst 0 acts as 1", rate: 2, burst: 0, n: 5, wantLast: 2 * time.Second, wantAt0: 1},
		{name: "unlimited", rate: 0, burst: 0, n: 50, wantLast: 0, wantAt0: 50},
	}
	for _, tt := range tests {
		for _, batch := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/batch=%v", tt.name, batch), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					fake := &schedFakeProber{}
					g := config.Global{Limits: config.ProbeLimits{ICMP: config.Limit{Rate: tt.rate, Burst: tt.burst}}}
					sink := &poolSink{}
					var pr probe.Prober = fake
					if batch {
						pr = &poolBatchFake{f: fake}
					}
					p, _ := poolNew(t, g, map[string]probe.Prober{config.ProbeICMP: pr}, sink)
					start := time.Now()
					poolSubmitAll(t, p, poolTargets(tt.n, config.ProbeICMP, time.Second))
					stop := testutil.Start(t, p.Run)
					time.Sleep(time.Duration(tt.n)*time.Second + time.Second)
					synctest.Wait()
					stop()

					starts := fake.startTimes()
					if len(starts) != tt.n {
						t.Fatalf("%d probes started, want %d", len(starts), tt.n)
					}
					at0 := 0
					for _, s := range starts {
						if s.Equal(start) {
							at0++
						}
					}
					if at0 != tt.wantAt0 {
						t.Errorf("%d probes started at once, want %d (burst)", at0, tt.wantAt0)
					}
					last := starts[len(starts)-1].Sub(start)
					if d := last - tt.wantLast; d < -time.Millisecond || d > time.Millisecond {
						t.Errorf("last probe started after %v, want %v", last, tt.wantLast)
					}
					if tt.rate > 0 {
						// No one-second window holds more than rate + burst starts.
						limit := int(tt.rate) + max(tt.burst, 1)
						for i := range starts {
							j := i
							for j < len(starts) && starts[j].Sub(starts[i]) < time.Second {
								j++
							}
							if j-i > limit {
								t.Fatalf("%d starts within 1s from %v, want <= %d", j-i, starts[i].Sub(start), limit)
							}
						}
					}
				})
			})
		}
	}
}

func TestPoolSlowTargetHoldsSlotAtMostTimeout(t *testing.T) {
	const timeout = 2 * time.Second
	tests := []struct {
		name string
		g    config.Global
		// fast is the type of the fast target; the slow one is ICMP.
		fast string
	}{
		{
			name: "same type, one slot",
			g:    config.Global{Concurrency: 10, Limits: config.ProbeLimits{ICMP: config.Limit{Concurrency: 1}}},
			fast: config.ProbeICMP,
		},
		{
			name: "other type, one global slot",
			g:    config.Global{Concurrency: 1},
			fast: config.ProbeTCP,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hold := func(tg *config.Target) time.Duration {
					if tg.Host == "slow" {
						return -1 // never answers
					}
					return 100 * time.Millisecond
				}
				icmp := &schedFakeProber{hold: hold}
				tcp := &schedFakeProber{hold: hold}
				sink := &poolSink{}
				p, _ := poolNew(t, tt.g, map[string]probe.Prober{config.ProbeICMP: icmp, config.ProbeTCP: tcp}, sink)
				start := time.Now()
				stop := testutil.Start(t, p.Run)
				poolSubmitAll(t, p, []*config.Target{poolTarget("slow", config.ProbeICMP, timeout)})
				synctest.Wait() // the slow probe holds the slot
				poolSubmitAll(t, p, []*config.Target{poolTarget("fast", tt.fast, timeout)})
				time.Sleep(time.Minute)
				synctest.Wait()
				stop()

				got := sink.byHost()
				slow, fast := got["slow"], got["fast"]
				if slow.Success || slow.Reason != probe.ReasonTimeout || slow.Duration != timeout {
					t.Errorf("slow result = {Success:%v Reason:%q Duration:%v}, want a %v timeout", slow.Success, slow.Reason, slow.Duration, timeout)
				}
				if !fast.Success {
					t.Errorf("fast target did not succeed: %+v", fast)
				}
				if got := fast.Start.Sub(start); got != timeout {
					t.Errorf("fast target started after %v, want %v (when the slow one timed out)", got, timeout)
				}
			})
		})
	}
}

func TestPoolSkipsBusyTarget(t *testing.T) {
	tests := []struct {
		name string
		// running starts the pool before the second submission, so the
		// first probe is running rather than queued.
		running     bool
		second      *config.Target
		wantAccept  bool
		wantSkipped float64
	}{
		{name: "still queued", second: poolTarget("a", config.ProbeSSH, time.Minute), wantSkipped: 1},
		{name: "still running", running: true, second: poolTarget("a", config.ProbeSSH, time.Minute), wantSkipped: 1},
		{name: "other host", running: true, second: poolTarget("b", config.ProbeSSH, time.Minute), wantAccept: true},
		{name: "other probe type", running: true, second: poolTarget("a", config.ProbeTCP, time.Minute), wantAccept: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := &schedFakeProber{hold: poolHold(10 * time.Second)}
				sink := &poolSink{}
				p, _ := poolNew(t, config.Global{}, map[string]probe.Prober{config.ProbeSSH: fake, config.ProbeTCP: fake}, sink)
				first := poolTarget("a", config.ProbeSSH, time.Minute)
				if !p.Submit(first, time.Now()) {
					t.Fatal("first Submit = false, want true")
				}
				var stop func()
				if tt.running {
					stop = testutil.Start(t, p.Run)
					synctest.Wait()
					if got := p.Stats().InFlight[config.ProbeSSH]; got != 1 {
						t.Fatalf("in flight = %d, want 1", got)
					}
				}
				if got := p.Submit(tt.second, time.Now()); got != tt.wantAccept {
					t.Errorf("second Submit = %v, want %v", got, tt.wantAccept)
				}
				got := poolValue(t, p.skipped.WithLabelValues(tt.second.Set, tt.second.Probe))
				if got != tt.wantSkipped {
					t.Errorf("fleet_probes_skipped_total{set=%q,probe=%q} = %v, want %v", tt.second.Set, tt.second.Probe, got, tt.wantSkipped)
				}
				if got := p.Stats().Skipped; got != uint64(tt.wantSkipped) {
					t.Errorf("Stats().Skipped = %d, want %v", got, tt.wantSkipped)
				}
				if stop == nil {
					stop = testutil.Start(t, p.Run)
				}
				// Once the probe finished, the target may be submitted again.
				time.Sleep(30 * time.Second)
				synctest.Wait()
				if !p.Submit(first, time.Now()) {
					t.Error("Submit after the probe finished = false, want true")
				}
				time.Sleep(30 * time.Second)
				synctest.Wait()
				stop()
			})
		})
	}
}

func TestPoolWithSchedulerSkipsOverlappingTurns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Every 1s turn; each probe takes 2.5s: of every three turns one
		// runs and two are skipped.
		fake := &schedFakeProber{hold: poolHold(2500 * time.Millisecond)}
		sink := &poolSink{}
		p, _ := poolNew(t, config.Global{}, map[string]probe.Prober{config.ProbeICMP: fake}, sink)
		tg := poolTarget("a", config.ProbeICMP, 10*time.Second)
		tg.Interval = time.Second
		s := NewScheduler(p.Submit, nil)
		s.Reconcile([]*config.Target{tg})
		stopPool := testutil.Start(t, p.Run)
		stopSched := testutil.Start(t, s.Run)
		// The first turn is within the first second; 9 more turns follow
		// within the 9.5s after it.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		stopSched()
		stopPool()

		if got := len(fake.startTimes()); got != 4 {
			t.Errorf("%d probes ran, want 4", got)
		}
		if got := poolValue(t, p.skipped.WithLabelValues("s", config.ProbeICMP)); got != 6 {
			t.Errorf("fleet_probes_skipped_total = %v, want 6", got)
		}
	})
}

func TestPoolRunCancelsInFlight(t *testing.T) {
	tests := []struct {
		name        string
		n           int
		concurrency int
	}{
		{name: "all running", n: 5, concurrency: 10},
		{name: "some queued", n: 8, concurrency: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := &schedFakeProber{hold: poolHold(-1)}
				sink := &poolSink{}
				p, _ := poolNew(t, config.Global{Concurrency: tt.concurrency}, map[string]probe.Prober{config.ProbeICMP: fake}, sink)
				poolSubmitAll(t, p, poolTargets(tt.n, config.ProbeICMP, time.Hour))
				stop := testutil.Start(t, p.Run)
				time.Sleep(time.Second)
				synctest.Wait()
				running := min(tt.n, tt.concurrency)
				if got := p.Stats().InFlight[config.ProbeICMP]; got != running {
					t.Fatalf("in flight = %d, want %d", got, running)
				}

				cancelled := time.Now()
				stop()
				if got := time.Since(cancelled); got != 0 {
					t.Errorf("Run took %v to return after cancel, want 0", got)
				}
				if got := fake.cancelledCount(); got != running {
					t.Errorf("%d probes saw their context cancelled, want %d", got, running)
				}
				if got := sink.get(); len(got) != 0 {
					t.Errorf("sink got %d results of cancelled probes, want none", len(got))
				}
				if st := p.Stats(); st.InFlight[config.ProbeICMP] != 0 || st.Waiting[config.ProbeICMP] != 0 {
					t.Errorf("Stats() after Run = %+v, want nothing in flight or waiting", st)
				}
				if got := poolValue(t, p.types[config.ProbeICMP].waitingGauge); got != 0 {
					t.Errorf("fleet_pool_waiting after Run = %v, want 0", got)
				}
			})
		})
	}
}

func TestPoolRunTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := poolNew(t, config.Global{}, map[string]probe.Prober{config.ProbeICMP: &schedFakeProber{}}, &poolSink{})
		stop := testutil.Start(t, p.Run)
		synctest.Wait()
		if err := p.Run(t.Context()); err == nil {
			t.Error("second concurrent Run() = nil, want an error")
		}
		stop()
	})
}

func TestPoolResultFields(t *testing.T) {
	tests := []struct {
		name         string
		lateBy       time.Duration
		setDuration  time.Duration
		wantDuration time.Duration
	}{
		{name: "pool measures duration", lateBy: 3 * time.Second, wantDuration: 700 * time.Millisecond},
		{name: "prober duration kept", lateBy: 0, setDuration: 123 * time.Millisecond, wantDuration: 123 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := &schedFakeProber{hold: poolHold(700 * time.Millisecond), setDuration: tt.setDuration}
				sink := &poolSink{}
				p, _ := poolNew(t, config.Global{}, map[string]probe.Prober{config.ProbeTCP: fake}, sink)
				stop := testutil.Start(t, p.Run)
				tg := poolTarget("web1:8080", config.ProbeTCP, 5*time.Second)
				now := time.Now()
				due := now.Add(-tt.lateBy)
				if !p.Submit(tg, due) {
					t.Fatal("Submit = false")
				}
				time.Sleep(time.Second)
				synctest.Wait()
				stop()

				want := []probe.Result{{Key: tg.Key(), KeyHash: tg.KeyHash(), Target: tg, Due: due, Start: now, Duration: tt.wantDuration, Success: true}}
				if diff := cmp.Diff(want, sink.get(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
					t.Errorf("results (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestPoolLagHistogram(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := &schedFakeProber{}
		sink := &poolSink{}
		p, reg := poolNew(t, config.Global{}, map[string]probe.Prober{config.ProbeICMP: fake}, sink)
		stop := testutil.Start(t, p.Run)
		now := time.Now()
		for i, late := range []time.Duration{0, 20 * time.Millisecond, 3 * time.Second, 90 * time.Second} {
			if !p.Submit(poolTarget(fmt.Sprint(i), config.ProbeICMP, time.Second), now.Add(-late)) {
				t.Fatal("Submit = false")
			}
		}
		synctest.Wait()
		stop()

		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var h *dto.Histogram
		for _, mf := range mfs {
			if mf.GetName() != "fleet_scheduler_lag_seconds" {
				continue
			}
			if got, want := mf.GetHelp(), "Time between when a probe was due and when it started, by probe type."; got != want {
				t.Errorf("help = %q, want %q", got, want)
			}
			for _, m := range mf.GetMetric() {
				if lp := m.GetLabel(); len(lp) == 1 && lp[0].GetName() == "probe" && lp[0].GetValue() == config.ProbeICMP {
					h = m.GetHistogram()
				}
			}
		}
		if h == nil {
			t.Fatal("no fleet_scheduler_lag_seconds{probe=\"icmp\"} histogram gathered")
		}
		// Cumulative counts per upper bound for lags 0, 20ms, 3s and 90s.
		want := map[float64]uint64{
			.001: 1, .0025: 1, .005: 1, .01: 1, .025: 2, .05: 2, .1: 2, .25: 2, .5: 2,
			1: 2, 2.5: 2, 5: 3, 10: 3, 30: 3, 60: 3,
		}
		got := make(map[float64]uint64)
		for _, b := range h.GetBucket() {
			got[b.GetUpperBound()] = b.GetCumulativeCount()
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("lag buckets (-want +got):\n%s", diff)
		}
		if h.GetSampleCount() != 4 || h.GetSampleSum() != 93.02 {
			t.Errorf("lag count, sum = %d, %v; want 4, 93.02", h.GetSampleCount(), h.GetSampleSum())
		}
	})
}

func TestPoolSetLimits(t *testing.T) {
	tests := []struct {
		name         string
		from, to     config.Global
		wantInFlight int // right after SetLimits
		wantLater    int // 9.5s later, after the first wave ended; 0 = not checked
	}{
		{
			name:         "raise type concurrency",
			from:         config.Global{Limits: config.ProbeLimits{SSH: config.Limit{Concurrency: 1}}},
			to:           config.Global{Limits: config.ProbeLimits{SSH: config.Limit{Concurrency: 4}}},
			wantInFlight: 4,
		},
		{
			name:         "raise global concurrency",
			from:         config.Global{Concurrency: 2},
			to:           config.Global{Concurrency: 5},
			wantInFlight: 5,
		},
		{
			name:         "lower concurrency lets running probes finish",
			from:         config.Global{Concurrency: 4},
			to:           config.Global{Concurrency: 1},
			wantInFlight: 4,
			wantLater:    1,
		},
		{
			name:         "lift a rate limit",
			from:         config.Global{Limits: config.ProbeLimits{SSH: config.Limit{Rate: 0.001, Burst: 2}}},
			to:           config.Global{},
			wantInFlight: 8,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := &schedFakeProber{hold: poolHold(10 * time.Second)}
				sink := &poolSink{}
				p, _ := poolNew(t, tt.from, map[string]probe.Prober{config.ProbeSSH: fake}, sink)
				poolSubmitAll(t, p, poolTargets(8, config.ProbeSSH, time.Minute))
				stop := testutil.Start(t, p.Run)
				time.Sleep(time.Second)
				synctest.Wait()
				p.SetLimits(tt.to)
				synctest.Wait()
				if got := p.Stats().InFlight[config.ProbeSSH]; got != tt.wantInFlight {
					t.Errorf("in flight after SetLimits = %d, want %d", got, tt.wantInFlight)
				}
				time.Sleep(9500 * time.Millisecond)
				synctest.Wait()
				if got := p.Stats().InFlight[config.ProbeSSH]; tt.wantLater > 0 && got != tt.wantLater {
					t.Errorf("in flight once the first wave ended = %d, want %d", got, tt.wantLater)
				}
				time.Sleep(2 * time.Minute)
				synctest.Wait()
				stop()
				if got := len(sink.get()); got != 8 {
					t.Errorf("%d results, want all 8 (no queued work dropped)", got)
				}
			})
		})
	}
}

// TestPoolReconcileCreatesSkippedAtZero checks that every configured (set,
// probe type) pair has its skipped counter from the start, at 0, and that
// a reload removes the series of pairs it dropped.
func TestPoolReconcileCreatesSkippedAtZero(t *testing.T) {
	fake := &schedFakeProber{}
	p, err := NewPool(config.Global{}, map[string]probe.Prober{config.ProbeICMP: fake, config.ProbeTCP: fake}, func(probe.Result) {}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Reconcile([]*config.Target{
		{Set: "a", Host: "h1", Probe: config.ProbeICMP},
		{Set: "a", Host: "h2", Probe: config.ProbeICMP},
		{Set: "b", Host: "h", Probe: config.ProbeTCP},
	})
	if got := poolSeries(p.skipped); got != 2 {
		t.Fatalf("%d fleet_probes_skipped_total series after the first reconcile, want 2", got)
	}
	for _, pair := range [][2]string{{"a", config.ProbeICMP}, {"b", config.ProbeTCP}} {
		if got := poolValue(t, p.skipped.WithLabelValues(pair[0], pair[1])); got != 0 {
			t.Errorf("skipped{%s,%s} = %v, want 0", pair[0], pair[1], got)
		}
	}
	p.Reconcile([]*config.Target{{Set: "b", Host: "h", Probe: config.ProbeTCP}})
	if got := poolSeries(p.skipped); got != 1 {
		t.Errorf("%d series after set a was removed, want 1", got)
	}
}

func TestPoolForget(t *testing.T) {
	tests := []struct {
		name      string
		keep      []string
		wantCount int
	}{
		{name: "keep all", keep: []string{"a", "b"}, wantCount: 3},
		{name: "drop one set", keep: []string{"a"}, wantCount: 1},
		{name: "drop all", wantCount: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &schedFakeProber{}
			p, err := NewPool(config.Global{}, map[string]probe.Prober{config.ProbeICMP: fake, config.ProbeTCP: fake}, func(probe.Result) {}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, tg := range []*config.Target{
				{Set: "a", Host: "h", Probe: config.ProbeICMP},
				{Set: "b", Host: "h", Probe: config.ProbeICMP},
				{Set: "b", Host: "h", Probe: config.ProbeTCP},
			} {
				// The pool is not running: the second submission is skipped.
				p.Submit(tg, time.Now())
				if p.Submit(tg, time.Now()) {
					t.Fatalf("duplicate Submit(%v) = true", tg.Key())
				}
			}
			p.forget(func(set, _ string) bool {
				for _, s := range tt.keep {
					if set == s {
						return true
					}
				}
				return false
			})
			if got := poolSeries(p.skipped); got != tt.wantCount {
				t.Errorf("%d fleet_probes_skipped_total series left, want %d", got, tt.wantCount)
			}
			if len(tt.keep) > 0 {
				if got := poolValue(t, p.skipped.WithLabelValues("a", config.ProbeICMP)); got != 1 {
					t.Errorf("kept series value = %v, want 1", got)
				}
			}
		})
	}
}

func BenchmarkPoolSubmit(b *testing.B) {
	fake := &schedFakeProber{}
	targets := poolTargets(100_000, config.ProbeICMP, time.Second)
	b.Run("accept", func(b *testing.B) {
		p, err := NewPool(config.Global{}, map[string]probe.Prober{config.ProbeICMP: fake}, func(probe.Result) {}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		pt := p.types[config.ProbeICMP]
		ctx := context.Background()
		now := time.Now()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tg := targets[i%len(targets)]
			i++
			if !p.Submit(tg, now) {
				b.Fatalf("Submit = false at %d", i)
			}
			// Take the job off the queue as the dispatcher would so the
			// queue and the active set stay small.
			job, _ := pt.next(ctx)
			pt.done(job.t)
		}
	})
	b.Run("skip", func(b *testing.B) {
		p, err := NewPool(config.Global{}, map[string]probe.Prober{config.ProbeICMP: fake}, func(probe.Result) {}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		p.Submit(targets[0], now)
		b.ReportAllocs()
		for b.Loop() {
			if p.Submit(targets[0], now) {
				b.Fatal("Submit = true")
			}
		}
	})
}

// BenchmarkPoolProbe measures the whole path of one probe through a running
// pool: Submit, dispatch, probe goroutine with its timeout context, sink.
func BenchmarkPoolProbe(b *testing.B) {
	targets := poolTargets(1000, config.ProbeICMP, time.Second)
	results := make(chan struct{}, len(targets))
	p, err := NewPool(config.Global{Concurrency: 64}, map[string]probe.Prober{config.ProbeICMP: &schedFakeProber{}},
		func(probe.Result) { results <- struct{}{} }, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tg := targets[i%len(targets)]
		i++
		// The key is released just after the sink returns, so a target
		// whose previous probe's goroutine was descheduled right after its
		// sink call may still be busy: retry instead of failing.
		for !p.Submit(tg, time.Now()) {
			runtime.Gosched()
		}
		<-results
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// TestPoolBatch runs a batch prober: jobs queued together start in one
// ProbeBatch call, results reach the batch sink stamped like any other,
// a target in flight is skipped, and Run's end cancels the probes in
// flight, waits for them and delivers none of their results.
func TestPoolBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := &poolBatchFake{f: &schedFakeProber{hold: poolHold(time.Second)}}
		var mu sync.Mutex
		var calls [][]probe.Result
		p, err := NewPool(config.Global{}, map[string]probe.Prober{config.ProbeICMP: fake},
			func(probe.Result) { t.Error("per-result sink called for a batch prober") }, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.SetBatchSink(func(rs []probe.Result) {
			mu.Lock()
			calls = append(calls, slices.Clone(rs)) // the pool reuses rs
			mu.Unlock()
		})
		targets := poolTargets(100, config.ProbeICMP, 5*time.Second)
		due := time.Now().Add(-time.Millisecond)
		for _, tg := range targets {
			if !p.Submit(tg, due) {
				t.Fatalf("Submit(%v) = false", tg.Key())
			}
		}
		stop := testutil.Start(t, p.Run)
		synctest.Wait()
		if got := fake.batchSizes(); !cmp.Equal(got, []int{100}) {
			t.Errorf("ProbeBatch sizes = %v, want one batch of 100", got)
		}
		if p.Submit(targets[0], time.Now()) {
			t.Error("Submit of a target in flight = true, want a skip")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		mu.Lock()
		n := 0
		for _, rs := range calls {
			for _, r := range rs {
				n++
				if r.Key.Set != "s" || !r.Due.Equal(due) || r.Start.IsZero() || r.Duration != time.Second || !r.Success {
					t.Errorf("result %+v: want key, due %v, start and duration 1s set, success", r, due)
				}
			}
		}
		mu.Unlock()
		if n != 100 {
			t.Errorf("batch sink got %d results, want 100", n)
		}
		if st := p.Stats(); st.InFlight[config.ProbeICMP] != 0 || st.Skipped != 1 {
			t.Errorf("Stats() = %+v, want nothing in flight and 1 skip", st)
		}

		// A second round is cut short by the end of Run.
		fake.f.hold = poolHold(-1)
		for _, tg := range targets[:10] {
			if !p.Submit(tg, time.Now()) {
				t.Fatalf("resubmit of %v = false", tg.Key())
			}
		}
		synctest.Wait()
		stop()
		if got := fake.f.cancelledCount(); got != 10 {
			t.Errorf("%d probes cancelled at the end of Run, want 10", got)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(calls) == 0 {
			t.Fatal("no batch delivered")
		}
		total := 0
		for _, rs := range calls {
			total += len(rs)
		}
		if total != 100 {
			t.Errorf("%d results delivered in all, want the 100 of the first round only", total)
		}
	})
}

// TestActiveSetCollisions drives the active set with every key on one
// hash, as a collision would put them: membership stays exact.
func TestActiveSetCollisions(t *testing.T) {
	a := newActiveSet()
	const h = 42
	a1, b, c := testutil.ICMPTarget("s", "a"), testutil.ICMPTarget("s", "b"), testutil.ICMPTarget("s", "c")
	for _, tg := range []*config.Target{a1, b, c} {
		if !a.addKey(h, tg) {
			t.Fatalf("%s refused on first add", tg.Host)
		}
	}
	for _, tg := range []*config.Target{a1, b, c} {
		if a.addKey(h, tg) {
			t.Fatalf("%s accepted while active", tg.Host)
		}
	}
	if a.len() != 3 {
		t.Fatalf("len %d, want 3", a.len())
	}
	// The hash holder leaves: a collided key takes its place, the others
	// stay active, and the one that left can come back.
	a.removeKey(h, a1)
	if a.len() != 2 || a.addKey(h, b) || a.addKey(h, c) {
		t.Fatalf("after removing the holder: len %d, b or c accepted again", a.len())
	}
	if !a.addKey(h, a1) {
		t.Fatal("a removed key cannot be added again")
	}
	a.removeKey(h, b)
	a.removeKey(h, c)
	a.removeKey(h, a1)
	if a.len() != 0 {
		t.Fatalf("len %d after removing all, want 0", a.len())
	}
}

// poolDues is targets due at due, as the scheduler hands a pass over.
func poolDues(targets []*config.Target, due time.Time) []Due {
	ds := make([]Due, len(targets))
	for i, tg := range targets {
		ds[i] = Due{Target: tg, At: due}
	}
	return ds
}

// TestPoolSubmitBatch checks that a pass submitted at once keeps Submit's
// rules: every type gets its targets in order, a target twice in the pass
// or of a type without prober is skipped and counted, and a batch type
// receives the pass as one ProbeBatch call.
func TestPoolSubmitBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		icmp := &poolBatchFake{f: &schedFakeProber{hold: poolHold(time.Second)}}
		tcp := &schedFakeProber{hold: poolHold(time.Second)}
		sink := &poolSink{}
		p, _ := poolNew(t, config.Global{}, map[string]probe.Prober{config.ProbeICMP: icmp, config.ProbeTCP: tcp}, sink)
		var mu sync.Mutex
		var batched []probe.Result
		p.SetBatchSink(func(rs []probe.Result) {
			mu.Lock()
			batched = append(batched, rs...)
			mu.Unlock()
		})
		pings := poolTargets(60, config.ProbeICMP, 5*time.Second)
		conns := poolTargets(10, config.ProbeTCP, 5*time.Second)
		due := time.Now().Add(-time.Millisecond)
		var ds []Due
		ds = append(ds, poolDues(pings[:30], due)...)
		ds = append(ds, poolDues(conns, due)...)
		ds = append(ds, poolDues(pings[30:], due)...)
		ds = append(ds, Due{Target: pings[0], At: due})                                      // twice in one pass
		ds = append(ds, Due{Target: poolTarget("h", config.ProbeSSH, time.Second), At: due}) // no prober
		p.SubmitBatch(ds)
		if st := p.Stats(); st.Waiting[config.ProbeICMP] != 60 || st.Waiting[config.ProbeTCP] != 10 || st.Skipped != 2 {
			t.Fatalf("after SubmitBatch: Stats() = %+v, want 60 and 10 waiting, 2 skipped", st)
		}
		stop := testutil.Start(t, p.Run)
		synctest.Wait()
		if got := icmp.batchSizes(); !cmp.Equal(got, []int{60}) {
			t.Errorf("ProbeBatch sizes = %v, want the pass as one batch of 60", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		stop()
		if len(batched) != 60 || len(sink.get()) != 10 {
			t.Errorf("%d ICMP and %d TCP results, want 60 and 10", len(batched), len(sink.get()))
		}
		got := map[config.Key]int{}
		for _, r := range batched {
			got[r.Key]++
			if r.Target == nil || r.Target.Key() != r.Key {
				t.Errorf("ICMP result of %v carries target %v, want the submitted one", r.Key, r.Target)
			}
			if !r.Due.Equal(due) {
				t.Errorf("ICMP result of %v: due %v, want %v", r.Key, r.Due, due)
			}
		}
		for _, tg := range pings {
			if got[tg.Key()] != 1 {
				t.Errorf("%v: %d results, want 1", tg.Key(), got[tg.Key()])
			}
		}
		if st := p.Stats(); st.Waiting[config.ProbeICMP] != 0 || st.InFlight[config.ProbeICMP] != 0 {
			t.Errorf("at the end: Stats() = %+v, want nothing waiting or in flight", st)
		}
	})
}

// poolBlockingBatch is a BatchProber whose ProbeBatch reports each call's
// size on entered and returns only once release is closed, completing
// every request: a dispatcher stuck in a long send.
type poolBlockingBatch struct {
	entered chan int
	release chan struct{}
}

func (b *poolBlockingBatch) Probe(context.Context, *config.Target) probe.Result {
	return probe.Result{Success: true}
}

func (b *poolBlockingBatch) ProbeBatch(_ context.Context, reqs []probe.Request, sink probe.BatchSink) {
	b.entered <- len(reqs)
	<-b.release
	cs := make([]probe.Completion, len(reqs))
	for i, r := range reqs {
		cs[i] = probe.Completion{Request: r, Result: probe.Result{Success: true}}
	}
	sink.ProbesDone(cs)
}

// TestPoolBatchDispatchersOverlap checks that a batch type's next pass is
// dispatched while an earlier ProbeBatch call has not returned, and that
// the type's concurrency limit still spans both calls.
func TestPoolBatchDispatchersOverlap(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	if n := batchDispatchers(); n < 2 {
		t.Fatalf("batchDispatchers() = %d with GOMAXPROCS 2, want 2", n)
	}
	synctest.Test(t, func(t *testing.T) {
		bp := &poolBlockingBatch{entered: make(chan int, 4), release: make(chan struct{})}
		g := config.Global{Limits: config.ProbeLimits{ICMP: config.Limit{Concurrency: 15}}}
		p, _ := poolNew(t, g, map[string]probe.Prober{config.ProbeICMP: bp}, &poolSink{})
		var results atomic.Int64
		p.SetBatchSink(func(rs []probe.Result) { results.Add(int64(len(rs))) })
		targets := poolTargets(20, config.ProbeICMP, 5*time.Second)
		p.SubmitBatch(poolDues(targets[:10], time.Now()))
		stop := testutil.Start(t, p.Run)
		if n := <-bp.entered; n != 10 {
			t.Errorf("first ProbeBatch took %d requests, want 10", n)
		}
		p.SubmitBatch(poolDues(targets[10:], time.Now()))
		synctest.Wait()
		select {
		case n := <-bp.entered:
			if n != 5 {
				t.Errorf("second ProbeBatch took %d requests, want the 5 slots left of 15", n)
			}
		default:
			t.Fatal("the second pass waited for the first ProbeBatch call to return")
		}
		close(bp.release)
		synctest.Wait()
		stop()
		if n := results.Load(); n != 20 {
			t.Errorf("%d results, want 20", n)
		}
	})
}
