package dns

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

var (
	prefer4 = config.IPPolicy{Preferred: config.IP4, Fallback: true}
	prefer6 = config.IPPolicy{Preferred: config.IP6, Fallback: true}
	only4   = config.IPPolicy{Preferred: config.IP4}
	only6   = config.IPPolicy{Preferred: config.IP6}
)

// fakeExchange answers queries from a script per record type and counts
// them.
type fakeExchange struct {
	mu      sync.Mutex
	answers map[uint16]outcome
	calls   map[uint16]int
	// gate, when non-nil, blocks every call until it is closed.
	gate chan struct{}
	// entered receives one value per call, when non-nil.
	entered chan struct{}
}

func newFake(answers map[uint16]outcome) *fakeExchange {
	return &fakeExchange{answers: answers, calls: map[uint16]int{}}
}

func (f *fakeExchange) exchange(ctx context.Context, name string, qtype uint16) outcome {
	f.mu.Lock()
	f.calls[qtype]++
	o := f.answers[qtype]
	f.mu.Unlock()
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return outcome{err: ctx.Err()}
		}
	}
	return o
}

func (f *fakeExchange) set(qtype uint16, o outcome) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[qtype] = o
}

func (f *fakeExchange) count(qtype uint16) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[qtype]
}

// newTest returns a resolver with an empty hosts file, f as its
// nameservers and clock as its clock.
func newTest(t *testing.T, f *fakeExchange, clock *testutil.Clock, ttl config.DNS) *Resolver {
	t.Helper()
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := New(Options{Hosts: hosts, ResolvConf: filepath.Join(t.TempDir(), "resolv.conf"), TTL: ttl})
	r.exchange = f.exchange
	if clock != nil {
		r.now = clock.Now
	}
	return r
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

var (
	errTimeout = errors.New("i/o timeout")
	v4         = outcome{addrs: addrs("192.0.2.1", "192.0.2.2"), ttl: time.Minute}
	v6         = outcome{addrs: addrs("2001:db8::1"), ttl: time.Minute}
	negative   = outcome{negative: true}
	failed     = outcome{err: errTimeout}
)

func TestResolverLiterals(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want netip.Addr
	}{
		{name: "ipv4", in: "192.0.2.7", want: netip.MustParseAddr("192.0.2.7")},
		{name: "ipv6", in: "2001:db8::1", want: netip.MustParseAddr("2001:db8::1")},
		{name: "ipv6 loopback", in: "::1", want: netip.IPv6Loopback()},
		{name: "ipv6 with zone", in: "fe80::1%lo", want: netip.MustParseAddr("fe80::1%lo")},
		{name: "ipv4-mapped ipv6 is unmapped", in: "::ffff:192.0.2.1", want: netip.MustParseAddr("192.0.2.1")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(nil)
			r := newTest(t, f, nil, config.DNS{})
			// A literal is probed as written, whatever the policy.
			got, err := r.Lookup(t.Context(), tc.in, only4)
			if err != nil || got != tc.want {
				t.Fatalf("Lookup(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if n := f.count(mdns.TypeA) + f.count(mdns.TypeAAAA); n != 0 || r.cacheLen() != 0 {
				t.Errorf("literal caused %d queries, %d cache entries", n, r.cacheLen())
			}
		})
	}
}

func TestResolverRefusesWithoutQuery(t *testing.T) {
	for _, name := range []string{"", "x.invalid", "host.X.INVALID."} {
		f := newFake(nil)
		r := newTest(t, f, nil, config.DNS{})
		_, err := r.Lookup(t.Context(), name, prefer4)
		if !errors.Is(err, probe.ErrDNS) || probe.ReasonFor(err) != probe.ReasonDNS {
			t.Errorf("Lookup(%q) error = %v, want reason dns", name, err)
		}
		if n := f.count(mdns.TypeA); n != 0 {
			t.Errorf("Lookup(%q) sent %d queries", name, n)
		}
	}
}

func TestResolverHostsFile(t *testing.T) {
	clock := testutil.NewClock(time.Unix(1_700_000_000, 0))
	f := newFake(map[uint16]outcome{mdns.TypeA: v4, mdns.TypeAAAA: v6})
	r := newTest(t, f, clock, config.DNS{})
	hosts := r.hosts.path
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(hosts, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("# comment\n10.0.0.1 both.test Both2 # trailing\nfd00::1 both.test\nfd00::2 six.test\n10.0.0.3 four.test\nnot-an-ip junk.test\n")
	tests := []struct {
		name    string
		host    string
		pol     config.IPPolicy
		want    string
		wantErr bool
	}{
		{name: "prefer ip4", host: "both.test", pol: prefer4, want: "10.0.0.1"},
		{name: "prefer ip6", host: "both.test", pol: prefer6, want: "fd00::1"},
		{name: "case and root dot", host: "BOTH2.", pol: prefer4, want: "10.0.0.1"},
		{name: "ip6 only name falls back", host: "six.test", pol: prefer4, want: "fd00::2"},
		{name: "pinned ip4 without v4 in hosts fails, no DNS", host: "six.test", pol: only4, wantErr: true},
		{name: "pinned ip6", host: "six.test", pol: only6, want: "fd00::2"},
		{name: "ip4 only name pinned ip6", host: "four.test", pol: only6, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Lookup(t.Context(), tc.host, tc.pol)
			if tc.wantErr {
				if !errors.Is(err, probe.ErrDNS) {
					t.Fatalf("Lookup(%q) = %v, %v; want a dns error", tc.host, got, err)
				}
				return
			}
			if err != nil || got != netip.MustParseAddr(tc.want) {
				t.Fatalf("Lookup(%q) = %v, %v; want %s", tc.host, got, err, tc.want)
			}
		})
	}
	if n := f.count(mdns.TypeA) + f.count(mdns.TypeAAAA); n != 0 {
		t.Errorf("names in the hosts file caused %d DNS queries", n)
	}
	// A name not in the file goes to DNS.
	if got, err := r.Lookup(t.Context(), "dns.test", prefer4); err != nil || got != v4.addrs[0] {
		t.Errorf("Lookup(dns.test) = %v, %v; want %v from DNS", got, err, v4.addrs[0])
	}
	// An edit is seen once the recheck interval has passed.
	write("10.9.9.9 both.test\n")
	clock.Advance(recheck)
	if got, err := r.Lookup(t.Context(), "both.test", prefer4); err != nil || got != netip.MustParseAddr("10.9.9.9") {
		t.Errorf("after the edit Lookup = %v, %v; want 10.9.9.9", got, err)
	}
	if got := promtest.ToFloat64(r.lookups.WithLabelValues(ResultHosts)); got != 6 {
		t.Errorf("lookups{result=hosts} = %v, want 6", got)
	}
}

func TestResolverFamilies(t *testing.T) {
	tests := []struct {
		name      string
		answers   map[uint16]outcome
		pol       config.IPPolicy
		want      string // empty: an error
		wantNX    bool
		wantCalls [2]int // A, AAAA
	}{
		{name: "prefer ip4, both exist", answers: map[uint16]outcome{mdns.TypeA: v4, mdns.TypeAAAA: v6}, pol: prefer4, want: "192.0.2.1", wantCalls: [2]int{1, 0}},
		{name: "prefer ip6, both exist", answers: map[uint16]outcome{mdns.TypeA: v4, mdns.TypeAAAA: v6}, pol: prefer6, want: "2001:db8::1", wantCalls: [2]int{0, 1}},
		{name: "AAAA-only name falls back", answers: map[uint16]outcome{mdns.TypeA: negative, mdns.TypeAAAA: v6}, pol: prefer4, want: "2001:db8::1", wantCalls: [2]int{1, 1}},
		{name: "A-only name falls back", answers: map[uint16]outcome{mdns.TypeA: v4, mdns.TypeAAAA: negative}, pol: prefer6, want: "192.0.2.1", wantCalls: [2]int{1, 1}},
		{name: "preferred family failing falls back", answers: map[uint16]outcome{mdns.TypeA: failed, mdns.TypeAAAA: v6}, pol: prefer4, want: "2001:db8::1", wantCalls: [2]int{1, 1}},
		{name: "pinned ip4 does not fall back", answers: map[uint16]outcome{mdns.TypeA: negative, mdns.TypeAAAA: v6}, pol: only4, wantNX: true, wantCalls: [2]int{1, 0}},
		{name: "pinned ip6", answers: map[uint16]outcome{mdns.TypeA: v4, mdns.TypeAAAA: v6}, pol: only6, want: "2001:db8::1", wantCalls: [2]int{0, 1}},
		{name: "no address at all", answers: map[uint16]outcome{mdns.TypeA: negative, mdns.TypeAAAA: negative}, pol: prefer4, wantNX: true, wantCalls: [2]int{1, 1}},
		{name: "failure and negative is an error", answers: map[uint16]outcome{mdns.TypeA: failed, mdns.TypeAAAA: negative}, pol: prefer4, wantCalls: [2]int{1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(tc.answers)
			r := newTest(t, f, nil, config.DNS{})
			got, err := r.Lookup(t.Context(), "host.test", tc.pol)
			if tc.want != "" {
				if err != nil || got != netip.MustParseAddr(tc.want) {
					t.Fatalf("Lookup = %v, %v; want %s", got, err, tc.want)
				}
			} else if !errors.Is(err, probe.ErrDNS) || probe.ReasonFor(err) != probe.ReasonDNS {
				t.Fatalf("Lookup = %v, %v; want reason dns", got, err)
			}
			if calls := [2]int{f.count(mdns.TypeA), f.count(mdns.TypeAAAA)}; calls != tc.wantCalls {
				t.Errorf("queries (A, AAAA) = %v, want %v", calls, tc.wantCalls)
			}
			result := ResultSuccess
			switch {
			case tc.wantNX:
				result = ResultNXDomain
			case tc.want == "":
				result = ResultError
			}
			if n := promtest.ToFloat64(r.lookups.WithLabelValues(result)); n != 1 {
				t.Errorf("lookups{result=%q} = %v, want 1", result, n)
			}
		})
	}
}

// step advances the clock, looks host.test up and checks the answer and
// the number of A queries so far.
type step struct {
	advance   time.Duration
	set       *outcome // replaces the A answer before the lookup
	want      string   // empty: an error
	wantCalls int
	result    string
}

func runSteps(t *testing.T, ttl config.DNS, first outcome, steps []step) *Resolver {
	t.Helper()
	clock := testutil.NewClock(time.Unix(1_700_000_000, 0))
	f := newFake(map[uint16]outcome{mdns.TypeA: first})
	r := newTest(t, f, clock, ttl)
	for i, s := range steps {
		clock.Advance(s.advance)
		if s.set != nil {
			f.set(mdns.TypeA, *s.set)
		}
		before := promtest.ToFloat64(r.lookups.WithLabelValues(s.result))
		got, err := r.Lookup(t.Context(), "host.test", only4)
		if s.want == "" {
			if !errors.Is(err, probe.ErrDNS) {
				t.Fatalf("step %d: Lookup = %v, %v; want a dns error", i, got, err)
			}
		} else if err != nil || got != netip.MustParseAddr(s.want) {
			t.Fatalf("step %d: Lookup = %v, %v; want %s", i, got, err, s.want)
		}
		if calls := f.count(mdns.TypeA); calls != s.wantCalls {
			t.Errorf("step %d (+%v): queries = %d, want %d", i, s.advance, calls, s.wantCalls)
		}
		if after := promtest.ToFloat64(r.lookups.WithLabelValues(s.result)); after != before+1 {
			t.Errorf("step %d: lookups{result=%q} went from %v to %v", i, s.result, before, after)
		}
	}
	return r
}

func TestResolverTTLClamps(t *testing.T) {
	ttl := config.DNS{MinTTL: config.Duration(10 * time.Second), MaxTTL: config.Duration(time.Minute)}
	tests := []struct {
		name   string
		record time.Duration
		kept   time.Duration
	}{
		{name: "zero TTL is raised to min_ttl", record: 0, kept: 10 * time.Second},
		{name: "short TTL is raised to min_ttl", record: 3 * time.Second, kept: 10 * time.Second},
		{name: "TTL in range is honoured", record: 42 * time.Second, kept: 42 * time.Second},
		{name: "long TTL is cut to max_ttl", record: 24 * time.Hour, kept: time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, ttl, outcome{addrs: addrs("192.0.2.9"), ttl: tc.record}, []step{
				{want: "192.0.2.9", wantCalls: 1, result: ResultSuccess},
				{advance: tc.kept - time.Millisecond, want: "192.0.2.9", wantCalls: 1, result: ResultCached},
				{advance: time.Millisecond, want: "192.0.2.9", wantCalls: 2, result: ResultSuccess},
			})
		})
	}
	t.Run("defaults", func(t *testing.T) {
		r := New(Options{})
		d := r.ttl.Load()
		if d.MinTTL.D() != time.Second || d.MaxTTL.D() != 5*time.Minute || d.NegativeTTL.D() != 30*time.Second || d.MaxStale.D() != 5*time.Minute {
			t.Errorf("default settings = %+v", *d)
		}
	})
}

func TestResolverNegativeCache(t *testing.T) {
	ttl := config.DNS{NegativeTTL: config.Duration(30 * time.Second)}
	runSteps(t, ttl, negative, []step{
		{wantCalls: 1, result: ResultNXDomain},
		{advance: 29 * time.Second, wantCalls: 1, result: ResultNXDomain},
		// The name appears; the negative answer still holds until its TTL.
		{advance: 0, set: &v4, wantCalls: 1, result: ResultNXDomain},
		{advance: time.Second, want: "192.0.2.1", wantCalls: 2, result: ResultSuccess},
	})
}

func TestResolverStale(t *testing.T) {
	ttl := config.DNS{MinTTL: config.Duration(time.Second), MaxTTL: config.Duration(time.Minute), MaxStale: config.Duration(time.Minute)}
	r := runSteps(t, ttl, outcome{addrs: addrs("192.0.2.5"), ttl: 10 * time.Second}, []step{
		{want: "192.0.2.5", wantCalls: 1, result: ResultSuccess},
		// Expired and the nameserver fails: the stale answer is served.
		{advance: 10 * time.Second, set: &failed, want: "192.0.2.5", wantCalls: 2, result: ResultStale},
		// Within staleRetry no query is sent at all.
		{advance: staleRetry - time.Second, want: "192.0.2.5", wantCalls: 2, result: ResultStale},
		{advance: time.Second, want: "192.0.2.5", wantCalls: 3, result: ResultStale},
		// Up to max_stale after expiry (t=70s) the answer is still served...
		{advance: 54 * time.Second, want: "192.0.2.5", wantCalls: 4, result: ResultStale},
		// ...then it is gone and the probe fails.
		{advance: time.Second, wantCalls: 5, result: ResultError},
		// A failure is remembered briefly, then the recovered server is asked.
		{advance: time.Second, wantCalls: 5, result: ResultError},
		{advance: failureTTLMax, set: &v4, want: "192.0.2.1", wantCalls: 6, result: ResultSuccess},
	})
	if got := promtest.ToFloat64(r.stale); got != 4 {
		t.Errorf("fleet_dns_stale_answers_total = %v, want 4", got)
	}
}

func TestResolverStaleDoesNotWaitForHungServer(t *testing.T) {
	clock := testutil.NewClock(time.Unix(1_700_000_000, 0))
	f := newFake(map[uint16]outcome{mdns.TypeA: {addrs: addrs("192.0.2.6"), ttl: time.Second}})
	r := newTest(t, f, clock, config.DNS{})
	if _, err := r.Lookup(t.Context(), "host.test", only4); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	f.gate = make(chan struct{})
	defer close(f.gate)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	got, err := r.Lookup(ctx, "host.test", only4)
	if err != nil || got != netip.MustParseAddr("192.0.2.6") {
		t.Fatalf("Lookup = %v, %v; want the stale answer", got, err)
	}
	if d := time.Since(start); d > staleWait+time.Second {
		t.Errorf("stale answer took %v, want about %v", d, staleWait)
	}
}

func TestResolverSingleflight(t *testing.T) {
	const callers = 8
	f := newFake(map[uint16]outcome{mdns.TypeA: v4})
	f.gate, f.entered = make(chan struct{}), make(chan struct{}, callers)
	r := newTest(t, f, nil, config.DNS{})
	type answer struct {
		addr netip.Addr
		err  error
	}
	answers := make(chan answer, callers)
	for range callers {
		go func() {
			a, err := r.Lookup(context.Background(), "host.test", only4)
			answers <- answer{a, err}
		}()
	}
	// Wait until the one shared query is in flight, then give the others
	// time to queue up behind it. The sleep only makes the test stronger.
	<-f.entered
	time.Sleep(20 * time.Millisecond)
	close(f.gate)
	for range callers {
		if a := <-answers; a.err != nil || a.addr != v4.addrs[0] {
			t.Errorf("Lookup = %v, %v; want %v", a.addr, a.err, v4.addrs[0])
		}
	}
	if calls := f.count(mdns.TypeA); calls != 1 {
		t.Errorf("queries = %d, want 1", calls)
	}
}

func TestResolverCallerContext(t *testing.T) {
	f := newFake(map[uint16]outcome{mdns.TypeA: v4})
	f.gate, f.entered = make(chan struct{}), make(chan struct{}, 1)
	r := newTest(t, f, nil, config.DNS{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	_, err := r.Lookup(ctx, "host.test", only4)
	if !errors.Is(err, probe.ErrDNS) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lookup error = %v, want probe.ErrDNS and DeadlineExceeded", err)
	}
	// The shared query outlives the impatient caller and its answer is
	// cached for the next one.
	<-f.entered
	close(f.gate)
	var calls atomic.Int64
	for calls.Load() == 0 {
		if _, ok := r.cached(cacheKey{"host.test", mdns.TypeA}); ok {
			calls.Add(1)
		}
		time.Sleep(time.Millisecond)
	}
	got, err := r.Lookup(t.Context(), "host.test", only4)
	if err != nil || got != v4.addrs[0] {
		t.Fatalf("second Lookup = %v, %v", got, err)
	}
	if n := f.count(mdns.TypeA); n != 1 {
		t.Errorf("queries = %d, want 1", n)
	}
}

func TestResolverBoundedCache(t *testing.T) {
	clock := testutil.NewClock(time.Unix(1_700_000_000, 0))
	r := newTest(t, newFake(nil), clock, config.DNS{})
	e := entry{addrs: addrs("192.0.2.1"), expires: clock.Now().Add(time.Minute)}
	for i := range maxEntries {
		r.store(cacheKey{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(), mdns.TypeA}, e)
	}
	if n := r.cacheLen(); n != maxEntries {
		t.Fatalf("cache holds %d entries, want %d", n, maxEntries)
	}
	r.store(cacheKey{"one-more.test", mdns.TypeA}, e)
	if n := r.cacheLen(); n > maxEntries {
		t.Errorf("cache holds %d entries, more than the bound %d", n, maxEntries)
	}
	if _, ok := r.cached(cacheKey{"one-more.test", mdns.TypeA}); !ok {
		t.Errorf("newest entry was not kept")
	}
}
