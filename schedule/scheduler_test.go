package schedule

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// schedFired is one call of the scheduler's submit function.
type schedFired struct {
	Key      config.Key
	Due, At  time.Time
	Accepted bool
}

// schedRecorder records submit calls. block, if set, is called (in the
// scheduler goroutine) before recording, to simulate a slow submit.
type schedRecorder struct {
	block func(n int) time.Duration

	mu    sync.Mutex
	fires []schedFired
}

func (r *schedRecorder) submit(t *config.Target, due time.Time) bool {
	r.mu.Lock()
	n := len(r.fires)
	r.fires = append(r.fires, schedFired{Key: t.Key(), Due: due, At: time.Now(), Accepted: true})
	r.mu.Unlock()
	if r.block != nil {
		time.Sleep(r.block(n))
	}
	return true
}

func (r *schedRecorder) byKey() map[config.Key][]schedFired {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[config.Key][]schedFired)
	for _, f := range r.fires {
		m[f.Key] = append(m[f.Key], f)
	}
	return m
}

// schedTarget returns a target probed every interval with half of it as
// timeout.
func schedTarget(set, host, probe string, interval time.Duration) *config.Target {
	return testutil.NewTarget(set, host, probe, testutil.WithInterval(interval), testutil.WithTimeout(interval/2))
}

// schedWantOffset is the phase of k inside interval, computed with the
// standard library so that it checks the scheduler's inline FNV-1a.
func schedWantOffset(t *testing.T, k config.Key, interval time.Duration) time.Duration {
	t.Helper()
	h := fnv.New64a()
	if _, err := h.Write([]byte(k.Set + "\x00" + k.Host + "\x00" + k.Probe)); err != nil {
		t.Fatal(err)
	}
	return time.Duration(h.Sum64() % uint64(interval))
}

// schedSlots lists the epoch-aligned slots of k in [from, to).
func schedSlots(t *testing.T, k config.Key, interval time.Duration, from, to time.Time) []time.Time {
	t.Helper()
	off := int64(schedWantOffset(t, k, interval))
	iv := int64(interval)
	n := from.UnixNano()
	first := n - ((n-off)%iv+iv)%iv
	if first < n {
		first += iv
	}
	var out []time.Time
	for x := first; x < to.UnixNano(); x += iv {
		out = append(out, time.Unix(0, x))
	}
	return out
}

// schedSleepUntil advances virtual time to at and lets every goroutine
// finish what is due at that instant.
func schedSleepUntil(at time.Time) {
	time.Sleep(time.Until(at))
	synctest.Wait()
}

func schedDues(fs []schedFired) []time.Time {
	out := make([]time.Time, len(fs))
	for i, f := range fs {
		out[i] = f.Due
	}
	return out
}

func TestSchedulerFiresOncePerIntervalAtOffset(t *testing.T) {
	tests := []struct {
		name    string
		targets []*config.Target
		run     time.Duration
	}{
		{
			name:    "one target",
			targets: []*config.Target{schedTarget("web", "web001", config.ProbeICMP, 10*time.Second)},
			run:     95 * time.Second,
		},
		{
			name: "mixed intervals and types",
			targets: []*config.Target{
				schedTarget("web", "web001", config.ProbeICMP, time.Second),
				schedTarget("web", "web001", config.ProbeTCP, 7*time.Second),
				schedTarget("db", "db1:2222", config.ProbeSSH, 60*time.Second),
				schedTarget("edge", "10.0.0.7", config.ProbeICMP, 250*time.Millisecond),
			},
			run: 181 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := &schedRecorder{}
				s := NewScheduler(rec.submit, nil)
				start := time.Now()
				s.Reconcile(tt.targets)
				if got, want := s.Len(), len(tt.targets); got != want {
					t.Errorf("Len() = %d, want %d", got, want)
				}
				stop := testutil.Start(t, s.Run)
				end := start.Add(tt.run)
				schedSleepUntil(end)
				stop()

				got := rec.byKey()
				for _, tg := range tt.targets {
					k := tg.Key()
					want := schedSlots(t, k, tg.Interval, start, end.Add(1))
					if diff := cmp.Diff(want, schedDues(got[k])); diff != "" {
						t.Errorf("%v: due times (-want +got):\n%s", k, diff)
					}
					for _, f := range got[k] {
						if !f.At.Equal(f.Due) {
							t.Errorf("%v: submitted at %v, want at its due time %v", k, f.At, f.Due)
						}
					}
				}
				if len(got) != len(tt.targets) {
					t.Errorf("fired %d distinct targets, want %d", len(got), len(tt.targets))
				}
			})
		})
	}
}

func TestSchedulerSpreadsTargets(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		interval  time.Duration
		bucket    time.Duration
		maxPerBin int
	}{
		{name: "1000 targets over 60s", n: 1000, interval: 60 * time.Second, bucket: time.Second, maxPerBin: 35},
		{name: "10000 targets over 10s", n: 10000, interval: 10 * time.Second, bucket: time.Second, maxPerBin: 1150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				targets := make([]*config.Target, tt.n)
				for i := range targets {
					targets[i] = schedTarget("fleet", fmt.Sprintf("host%05d.dc1", i), config.ProbeICMP, tt.interval)
				}
				rec := &schedRecorder{}
				s := NewScheduler(rec.submit, nil)
				start := time.Now()
				s.Reconcile(targets)
				stop := testutil.Start(t, s.Run)
				schedSleepUntil(start.Add(tt.interval - 1))
				stop()

				bins := make([]int, tt.interval/tt.bucket)
				seen := make(map[config.Key]int)
				for _, f := range rec.fires {
					bins[f.At.Sub(start)/tt.bucket]++
					seen[f.Key]++
				}
				for k, c := range seen {
					if c != 1 {
						t.Errorf("%v fired %d times in one interval, want 1", k, c)
					}
				}
				if len(seen) != tt.n {
					t.Errorf("%d targets fired in the first interval, want %d", len(seen), tt.n)
				}
				if m := slices.Max(bins); m > tt.maxPerBin {
					t.Errorf("busiest %v bucket has %d starts, want <= %d (bins %v)", tt.bucket, m, tt.maxPerBin, bins)
				}
				if bins[0] > tt.maxPerBin {
					t.Errorf("start-up burst: %d starts in the first %v", bins[0], tt.bucket)
				}
			})
		})
	}
}

func TestSchedulerPhaseStableAcrossRestarts(t *testing.T) {
	tests := []struct {
		name         string
		restartAfter time.Duration
	}{
		{name: "restart mid-interval", restartAfter: 37300 * time.Millisecond},
		{name: "restart after several intervals", restartAfter: 3*time.Minute + 11*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var targets []*config.Target
				for i := range 20 {
					targets = append(targets,
						schedTarget("a", fmt.Sprintf("h%d", i), config.ProbeICMP, 30*time.Second),
						schedTarget("b", fmt.Sprintf("h%d", i), config.ProbeSSH, 45*time.Second))
				}
				start := time.Now()
				end := start.Add(tt.restartAfter + 2*time.Minute)

				first := &schedRecorder{}
				s1 := NewScheduler(first.submit, nil)
				s1.Reconcile(targets)
				stop1 := testutil.Start(t, s1.Run)

				schedSleepUntil(start.Add(tt.restartAfter))
				restart := time.Now()
				second := &schedRecorder{}
				s2 := NewScheduler(second.submit, nil)
				reversed := slices.Clone(targets)
				slices.Reverse(reversed)
				s2.Reconcile(reversed)
				stop2 := testutil.Start(t, s2.Run)

				schedSleepUntil(end)
				stop1()
				stop2()

				got1, got2 := first.byKey(), second.byKey()
				for _, tg := range targets {
					k := tg.Key()
					var want []time.Time
					for _, d := range schedDues(got1[k]) {
						if !d.Before(restart) {
							want = append(want, d)
						}
					}
					if len(want) == 0 {
						t.Fatalf("%v: first scheduler did not fire after the restart", k)
					}
					if diff := cmp.Diff(want, schedDues(got2[k])); diff != "" {
						t.Errorf("%v: restarted scheduler due times differ (-first +second):\n%s", k, diff)
					}
				}
			})
		})
	}
}

func TestSchedulerReconcile(t *testing.T) {
	k := func(host string) config.Key { return config.Key{Set: "s", Host: host, Probe: config.ProbeTCP} }
	tests := []struct {
		name string
		// before and after give each host's interval; zero means absent.
		before, after map[string]time.Duration
		// changeFingerprint lists hosts whose fingerprint changes at the
		// update while the interval stays.
		changeFingerprint []string
	}{
		{
			name:   "unchanged targets keep their schedule",
			before: map[string]time.Duration{"a": 10 * time.Second, "b": 7 * time.Second},
			after:  map[string]time.Duration{"a": 10 * time.Second, "b": 7 * time.Second},
		},
		{
			name:   "removed target stops firing",
			before: map[string]time.Duration{"a": 10 * time.Second, "b": 7 * time.Second},
			after:  map[string]time.Duration{"a": 10 * time.Second},
		},
		{
			name:   "added target starts at its slot",
			before: map[string]time.Duration{"a": 10 * time.Second},
			after:  map[string]time.Duration{"a": 10 * time.Second, "c": 3 * time.Second},
		},
		{
			name:   "changed interval is re-timed",
			before: map[string]time.Duration{"a": 10 * time.Second, "b": 7 * time.Second},
			after:  map[string]time.Duration{"a": 25 * time.Second, "b": 7 * time.Second},
		},
		{
			name:              "changed fingerprint keeps the phase",
			before:            map[string]time.Duration{"a": 10 * time.Second},
			after:             map[string]time.Duration{"a": 10 * time.Second},
			changeFingerprint: []string{"a"},
		},
		{
			name:   "everything removed",
			before: map[string]time.Duration{"a": 10 * time.Second, "b": 7 * time.Second},
			after:  map[string]time.Duration{},
		},
	}
	build := func(m map[string]time.Duration, fp []string) []*config.Target {
		var out []*config.Target
		for host, iv := range m {
			tg := schedTarget("s", host, config.ProbeTCP, iv)
			if slices.Contains(fp, host) {
				tg.Fingerprint += "/changed"
			}
			out = append(out, tg)
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := &schedRecorder{}
				s := NewScheduler(rec.submit, nil)
				start := time.Now()
				s.Reconcile(build(tt.before, nil))
				stop := testutil.Start(t, s.Run)

				// Update while Run is active, at an instant that is no
				// target's slot.
				update := start.Add(31*time.Second + 123456789)
				schedSleepUntil(update)
				kept := make(map[config.Key]schedEntry)
				s.mu.Lock()
				s.byKey.Range(func(e *schedEntry) bool {
					kept[e.t.Key()] = *e
					return true
				})
				s.mu.Unlock()
				s.Reconcile(build(tt.after, tt.changeFingerprint))
				if got, want := s.Len(), len(tt.after); got != want {
					t.Errorf("Len() after Update = %d, want %d", got, want)
				}
				s.mu.Lock()
				for host, iv := range tt.after {
					e := s.entry(k(host))
					if old, ok := kept[k(host)]; ok && tt.before[host] == iv && !slices.Contains(tt.changeFingerprint, host) && e.due != old.due {
						t.Errorf("%s: due moved from %v to %v although the target is unchanged", host, time.Unix(0, old.due), time.Unix(0, e.due))
					}
				}
				s.mu.Unlock()

				end := update.Add(time.Minute)
				schedSleepUntil(end)
				stop()

				got := rec.byKey()
				hosts := make(map[string]bool)
				for h := range tt.before {
					hosts[h] = true
				}
				for h := range tt.after {
					hosts[h] = true
				}
				for h := range hosts {
					var want []time.Time
					if iv := tt.before[h]; iv > 0 {
						want = append(want, schedSlots(t, k(h), iv, start, update)...)
					}
					if iv := tt.after[h]; iv > 0 {
						want = append(want, schedSlots(t, k(h), iv, update, end.Add(1))...)
					}
					if diff := cmp.Diff(want, schedDues(got[k(h)])); diff != "" {
						t.Errorf("%s: due times (-want +got):\n%s", h, diff)
					}
				}
			})
		})
	}
}

func TestSchedulerReconcileKeepsDueOfUnchanged(t *testing.T) {
	tests := []struct {
		name     string
		change   func(tg *config.Target)
		wantKept bool
	}{
		{name: "unchanged", change: func(*config.Target) {}, wantKept: true},
		{name: "fingerprint changed", change: func(tg *config.Target) { tg.Fingerprint += "/new" }},
		{name: "interval changed", change: func(tg *config.Target) { tg.Interval = 15 * time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := NewScheduler(func(*config.Target, time.Time) bool { return true }, nil)
				old := schedTarget("s", "a", config.ProbeTCP, 10*time.Second)
				s.Reconcile([]*config.Target{old})
				s.mu.Lock()
				before := s.entry(old.Key()).due
				s.mu.Unlock()

				// Run is not active, so the entry is left behind and its
				// due time is now in the past: only a re-timed entry moves.
				time.Sleep(25 * time.Second)
				cur := *old
				tt.change(&cur)
				s.Reconcile([]*config.Target{&cur})

				s.mu.Lock()
				e := s.entry(old.Key())
				after, tgt := e.due, e.t
				s.mu.Unlock()
				if kept := after == before; kept != tt.wantKept {
					t.Errorf("due %v -> %v: kept = %v, want %v", time.Unix(0, before), time.Unix(0, after), kept, tt.wantKept)
				}
				if !tt.wantKept && time.Unix(0, after).Before(time.Now()) {
					t.Errorf("re-timed due %v is in the past", time.Unix(0, after))
				}
				if tgt != &cur {
					t.Error("entry still points at the old target")
				}
			})
		})
	}
}

func TestSchedulerReconcileIgnoresInvalid(t *testing.T) {
	tests := []struct {
		name    string
		targets []*config.Target
		wantLen int
	}{
		{
			name: "duplicate keys keep the first",
			targets: []*config.Target{
				schedTarget("s", "a", config.ProbeICMP, time.Second),
				schedTarget("s", "a", config.ProbeICMP, 2*time.Second),
				schedTarget("s", "a", config.ProbeTCP, time.Second),
			},
			wantLen: 2,
		},
		{
			name: "non-positive interval",
			targets: []*config.Target{
				schedTarget("s", "a", config.ProbeICMP, 0),
				schedTarget("s", "b", config.ProbeICMP, -time.Second),
				schedTarget("s", "c", config.ProbeICMP, time.Second),
			},
			wantLen: 1,
		},
		{name: "empty", wantLen: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewScheduler(func(*config.Target, time.Time) bool { return true }, nil)
			s.Reconcile(tt.targets)
			if got := s.Len(); got != tt.wantLen {
				t.Errorf("Len() = %d, want %d", got, tt.wantLen)
			}
			// A second identical Update must not change anything.
			s.Reconcile(tt.targets)
			if got := s.Len(); got != tt.wantLen {
				t.Errorf("Len() after second Update = %d, want %d", got, tt.wantLen)
			}
		})
	}
}

func TestSchedulerNoBacklog(t *testing.T) {
	const iv = 10 * time.Second
	tests := []struct {
		name  string
		block time.Duration // how long the first submit blocks the loop
		// want lists (due, at) offsets from the first slot.
		want [][2]time.Duration
	}{
		{
			name: "on time",
			want: [][2]time.Duration{{0, 0}, {iv, iv}, {2 * iv, 2 * iv}, {3 * iv, 3 * iv}, {4 * iv, 4 * iv}},
		},
		{
			name:  "behind by less than one interval fires late once",
			block: 15 * time.Second,
			want:  [][2]time.Duration{{0, 0}, {iv, 15 * time.Second}, {2 * iv, 2 * iv}, {3 * iv, 3 * iv}, {4 * iv, 4 * iv}},
		},
		{
			name:  "behind by several intervals fires the latest slot only",
			block: 35 * time.Second,
			want:  [][2]time.Duration{{0, 0}, {3 * iv, 35 * time.Second}, {4 * iv, 4 * iv}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := &schedRecorder{block: func(n int) time.Duration {
					if n == 0 {
						return tt.block
					}
					return 0
				}}
				s := NewScheduler(rec.submit, nil)
				tg := schedTarget("s", "slow", config.ProbeSSH, iv)
				start := time.Now()
				s.Reconcile([]*config.Target{tg})
				first := schedSlots(t, tg.Key(), iv, start, start.Add(iv))[0]
				stop := testutil.Start(t, s.Run)
				schedSleepUntil(first.Add(4*iv + iv/2))
				stop()

				var got [][2]time.Duration
				for _, f := range rec.fires {
					got = append(got, [2]time.Duration{f.Due.Sub(first), f.At.Sub(first)})
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("(due, at) offsets (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestSchedulerLateRunFiresOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &schedRecorder{}
		s := NewScheduler(rec.submit, nil)
		tg := schedTarget("s", "a", config.ProbeICMP, 5*time.Second)
		s.Reconcile([]*config.Target{tg})
		// Run starts three intervals after Update computed the first due.
		time.Sleep(16 * time.Second)
		runAt := time.Now()
		stop := testutil.Start(t, s.Run)
		synctest.Wait()
		stop()
		if len(rec.fires) != 1 {
			t.Fatalf("got %d submissions at Run start, want 1: %v", len(rec.fires), rec.fires)
		}
		f := rec.fires[0]
		if !f.At.Equal(runAt) || f.Due.After(runAt) || runAt.Sub(f.Due) >= tg.Interval {
			t.Errorf("late fire: due %v at %v, want at %v with due within one interval before", f.Due, f.At, runAt)
		}
	})
}

func TestSchedulerRunReturnsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewScheduler(func(*config.Target, time.Time) bool { return false }, nil)
		s.Reconcile([]*config.Target{schedTarget("s", "a", config.ProbeICMP, time.Hour)})
		ctx, cancel := context.WithTimeout(t.Context(), 90*time.Minute)
		defer cancel()
		start := time.Now()
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		if got := time.Since(start); got != 90*time.Minute {
			t.Errorf("Run returned after %v, want 90m", got)
		}
	})
}

func schedBenchTargets(n int) []*config.Target {
	targets := make([]*config.Target, n)
	for i := range targets {
		targets[i] = schedTarget(fmt.Sprintf("set%d", i%50), fmt.Sprintf("host%06d", i), config.ProbeICMP, time.Duration(1+i%60)*time.Second)
	}
	return targets
}

func BenchmarkSchedulerReconcile(b *testing.B) {
	targets := schedBenchTargets(100_000)
	noop := func(*config.Target, time.Time) bool { return true }
	b.Run("unchanged", func(b *testing.B) {
		s := NewScheduler(noop, nil)
		s.Reconcile(targets)
		b.ReportAllocs()
		for b.Loop() {
			s.Reconcile(targets)
		}
	})
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s := NewScheduler(noop, nil)
			s.Reconcile(targets)
		}
	})
}

func BenchmarkSchedulerFire(b *testing.B) {
	s := NewScheduler(func(*config.Target, time.Time) bool { return true }, nil)
	s.Reconcile(schedBenchTargets(100_000))
	b.ReportAllocs()
	// Each iteration is one scheduling event: fire everything due at the
	// earliest due time and reschedule it.
	for b.Loop() {
		s.fire(s.heap[0].due)
	}
}

// TestSchedulerRetriesFailures runs a target through the pool with a fake
// prober that fails (by timing out) during an outage, the scheduler
// observing every result as the daemon's sink does. The outage starts just
// before the target's second slot S1 and ends 30s after it; interval 60s,
// timeout 2s, so a failure is observed 2s after its start.
func TestSchedulerRetriesFailures(t *testing.T) {
	const (
		interval  = time.Minute
		timeout   = 2 * time.Second
		outageEnd = 30 * time.Second // after S1
	)
	tests := []struct {
		name  string
		retry time.Duration
		// reload, when set, is applied 5s after S1 (the first failure is
		// in, its retry not yet due) with this retry interval.
		reload *time.Duration
		// want are the probe starts from S1 on, as offsets from S1; the
		// run before S1 (at S1-interval) is checked for every case.
		want []time.Duration
	}{
		{
			name:  "no retry interval keeps the slots",
			retry: 0,
			want:  []time.Duration{0, interval, 2 * interval},
		},
		{
			name:  "retry interval equal to the interval keeps the slots",
			retry: interval,
			want:  []time.Duration{0, interval, 2 * interval},
		},
		{
			// Failures end at 2s, 14s, 26s: retries 10s after each; the
			// run at 36s succeeds and the next is the hashed slot S2.
			name:  "failures are retried after the retry interval until one succeeds",
			retry: 10 * time.Second,
			want:  []time.Duration{0, 12 * time.Second, 24 * time.Second, 36 * time.Second, interval, 2 * interval},
		},
		{
			// The first failure ends at 2s; the reload at 5s moves its
			// retry from 12s to 2s+20s.
			name:   "reload lengthens the retry interval of a failing target",
			retry:  10 * time.Second,
			reload: new(20 * time.Second),
			want:   []time.Duration{0, 22 * time.Second, 44 * time.Second, interval, 2 * interval},
		},
		{
			name:   "reload dropping the retry interval returns to the slots",
			retry:  10 * time.Second,
			reload: new(time.Duration(0)),
			want:   []time.Duration{0, interval, 2 * interval},
		},
		{
			// With no retry interval before, the reload still retries the
			// target that failed at 2s: 2s+10s.
			name:   "reload adding a retry interval retries a failing target",
			retry:  0,
			reload: new(10 * time.Second),
			want:   []time.Duration{0, 12 * time.Second, 24 * time.Second, 36 * time.Second, interval, 2 * interval},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tg := schedTarget("s", "a", config.ProbeTCP, interval)
				tg.Timeout, tg.RetryInterval = timeout, tt.retry
				start := time.Now()
				s0 := schedSlots(t, tg.Key(), interval, start, start.Add(interval))[0]
				s1 := s0.Add(interval)
				fake := &schedFakeProber{hold: func(*config.Target) time.Duration {
					if now := time.Now(); !now.Before(s1.Add(-time.Second)) && now.Before(s1.Add(outageEnd)) {
						return -1 // until the timeout: a failure
					}
					return 0
				}}
				var sched *Scheduler
				sink := &poolSink{observe: func(r probe.Result) { sched.Observe(r) }}
				p, _ := poolNew(t, config.Global{}, map[string]probe.Prober{config.ProbeTCP: fake}, sink)
				sched = NewScheduler(p.Submit, nil)
				sched.Reconcile([]*config.Target{tg})
				stopPool := testutil.Start(t, p.Run)
				stopSched := testutil.Start(t, sched.Run)
				if tt.reload != nil {
					schedSleepUntil(s1.Add(5 * time.Second))
					next := *tg
					next.RetryInterval = *tt.reload
					next.Fingerprint += fmt.Sprintf("/retry=%s", *tt.reload)
					sched.Reconcile([]*config.Target{&next})
				}
				schedSleepUntil(s1.Add(2*interval + time.Second))
				stopSched()
				stopPool()

				want := []time.Time{s0}
				for _, d := range tt.want {
					want = append(want, s1.Add(d))
				}
				if diff := cmp.Diff(want, fake.startTimes()); diff != "" {
					t.Errorf("probe starts (-want +got):\n%s", diff)
				}
				// Every run, retries included, went through the pool to
				// the sink, stamped with the due time it was submitted at.
				results := sink.get()
				if len(results) != len(want) {
					t.Fatalf("%d results, want %d", len(results), len(want))
				}
				for i, r := range results {
					if !r.Due.Equal(want[i]) {
						t.Errorf("result %d: due %v, want %v", i, r.Due, want[i])
					}
					inOutage := !want[i].Before(s1.Add(-time.Second)) && want[i].Before(s1.Add(outageEnd))
					if r.Success == inOutage {
						t.Errorf("result %d (start %v): success %v, want %v", i, want[i].Sub(s1), r.Success, !inOutage)
					}
				}
			})
		})
	}
}

// TestSchedulerObserveIgnoresUnknown checks that a result of a target that is
// not (or no longer) scheduled moves nothing.
func TestSchedulerObserveIgnoresUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewScheduler(func(*config.Target, time.Time) bool { return true }, nil)
		tg := schedTarget("s", "a", config.ProbeICMP, time.Minute)
		tg.RetryInterval = time.Second
		s.Reconcile([]*config.Target{tg})
		s.mu.Lock()
		before := s.entry(tg.Key()).due
		s.mu.Unlock()
		s.Observe(probe.Result{Key: config.Key{Set: "s", Host: "b", Probe: config.ProbeICMP}})
		s.Observe(probe.Result{Key: tg.Key(), Success: true})
		s.mu.Lock()
		after := s.entry(tg.Key()).due
		s.mu.Unlock()
		if after != before {
			t.Errorf("due moved from %v to %v", time.Unix(0, before), time.Unix(0, after))
		}
	})
}

// TestSchedulerCoalesce checks that with SetCoalesce every target still
// fires once per slot, at most the coalescing time late, and that the fires
// come in few passes rather than one per target. With SetSubmitBatch each
// pass is one call.
func TestSchedulerCoalesce(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const coalesce = 10 * time.Millisecond
				rec := &schedRecorder{}
				s := NewScheduler(rec.submit, nil)
				s.SetCoalesce(coalesce)
				calls := 0
				if batch {
					s.SetSubmitBatch(func(ds []Due) {
						calls++
						for _, d := range ds {
							rec.submit(d.Target, d.At)
						}
					})
				}
				var targets []*config.Target
				for i := range 1000 {
					targets = append(targets, schedTarget("s", fmt.Sprintf("h%04d", i), config.ProbeICMP, time.Second))
				}
				s.Reconcile(targets)
				stop := testutil.Start(t, s.Run)
				time.Sleep(3 * time.Second)
				synctest.Wait()
				stop()

				passes := map[time.Time]bool{}
				for k, fs := range rec.byKey() {
					if len(fs) < 2 || len(fs) > 4 {
						t.Errorf("%v fired %d times in 3s, want 2 to 4 (once per 1s slot)", k, len(fs))
					}
					for _, f := range fs {
						if late := f.At.Sub(f.Due); late < 0 || late > coalesce {
							t.Errorf("%v fired %v after its due time, want within [0, %v]", k, late, coalesce)
						}
						passes[f.At] = true
					}
				}
				// 3 s at one pass per 10 ms at most (plus the first).
				if n := len(passes); n > 301 {
					t.Errorf("fires happened at %d distinct instants, want at most 301 (coalesced)", n)
				}
				if batch && calls != len(passes) {
					t.Errorf("%d batch submissions for %d passes, want one each", calls, len(passes))
				}
			})
		})
	}
}

// TestSchedulerObserveBatch checks that a failure in a batch moves a target
// with a retry interval to the retry, as Observe does, and a success clears
// it.
//
// Results are found by key, by the target they carry (as the pool's do),
// and by key again when they carry the target of an earlier config.
func TestSchedulerObserveBatch(t *testing.T) {
	for _, carry := range []string{"none", "current", "earlier config"} {
		t.Run("target "+carry, func(t *testing.T) { testSchedulerObserveBatch(t, carry) })
	}
}

func testSchedulerObserveBatch(t *testing.T, carry string) {
	synctest.Test(t, func(t *testing.T) {
		rec := &schedRecorder{}
		s := NewScheduler(rec.submit, nil)
		newTarget := func(host string) *config.Target {
			return testutil.NewTarget("s", host, config.ProbeICMP, testutil.WithInterval(time.Minute), testutil.WithTimeout(time.Second))
		}
		tg := newTarget("h")
		tg.RetryInterval = 5 * time.Second
		ok := newTarget("ok")
		s.Reconcile([]*config.Target{tg, ok})
		stop := testutil.Start(t, s.Run)
		defer stop()
		synctest.Wait()
		observed := time.Now()
		failed := probe.Result{Key: tg.Key(), Success: false}
		switch carry {
		case "current":
			failed.Target = tg
		case "earlier config":
			failed.Target = newTarget("h")
		}
		s.ObserveBatch([]probe.Result{{Key: ok.Key(), Success: true}, failed, {Key: config.Key{Set: "gone"}}})
		time.Sleep(5*time.Second + time.Millisecond)
		synctest.Wait()
		retried := false
		for _, f := range rec.byKey()[tg.Key()] {
			retried = retried || f.At.Equal(observed.Add(5*time.Second))
		}
		if !retried {
			t.Fatalf("failed target not fired one retry interval after the failure: %v", rec.byKey()[tg.Key()])
		}
		if len(rec.byKey()[ok.Key()]) > 1 {
			t.Errorf("successful target fired %d times within 5s, want at most its slot", len(rec.byKey()[ok.Key()]))
		}
	})
}

// TestSchedOffsetPorts checks that the TCP ports of one host get phases of
// their own, and that a key without a port keeps the phase of the plain
// FNV-1a of set, host and probe.
func TestSchedOffsetPorts(t *testing.T) {
	const interval = int64(time.Hour)
	base := config.Key{Set: "edge", Host: "gw1", Probe: config.ProbeTCP}
	seen := map[int64]int{}
	for _, port := range []int{22, 23, 443, 8443} {
		k := base
		k.Port = port
		seen[schedOffset(k, interval)] = port
	}
	if len(seen) != 4 {
		t.Errorf("4 ports of one host share phases: %v", seen)
	}
	h := fnv.New64a()
	h.Write([]byte("edge\x00gw1\x00tcp"))
	if got, want := schedOffset(base, interval), int64(h.Sum64()%uint64(interval)); got != want {
		t.Errorf("schedOffset without a port = %d, want the FNV-1a phase %d", got, want)
	}
}

// TestSchedHeapInvariants drives the heap with random pushes, due changes
// and removals and checks after each step that every parent is due no later
// than its children and that every entry knows its slot.
func TestSchedHeapInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h schedHeap
	var live []*schedEntry
	check := func(step int) {
		t.Helper()
		for i := range h {
			if h[i].e.idx != i || h[i].due != h[i].e.due {
				t.Fatalf("step %d: slot %d holds idx %d due %d/%d", step, i, h[i].e.idx, h[i].due, h[i].e.due)
			}
			if i > 0 && h[(i-1)/schedArity].due > h[i].due {
				t.Fatalf("step %d: parent of %d is due later", step, i)
			}
		}
	}
	for step := range 5000 {
		switch op := rng.IntN(10); {
		case op < 5 || len(live) == 0:
			e := &schedEntry{due: rng.Int64N(1000)}
			h.push(e)
			live = append(live, e)
		case op < 8:
			e := live[rng.IntN(len(live))]
			e.due = rng.Int64N(1000)
			h.fix(e.idx)
		default:
			k := rng.IntN(len(live))
			e := live[k]
			h.remove(e.idx)
			if e.idx != -1 {
				t.Fatalf("step %d: removed entry keeps idx %d", step, e.idx)
			}
			live = append(live[:k], live[k+1:]...)
		}
		check(step)
	}
	// Popping the root in turn yields the due times in order.
	prev := int64(-1)
	for len(h) > 0 {
		if h[0].due < prev {
			t.Fatalf("due %d after %d", h[0].due, prev)
		}
		prev = h[0].due
		h.remove(0)
	}
}

// entry returns the scheduled entry of k, nil when none; callers hold s.mu.
func (s *Scheduler) entry(k config.Key) *schedEntry {
	e, _ := s.byKey.Get(k.Hash(), k, schedEntryKey)
	return e
}
