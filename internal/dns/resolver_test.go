package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// errTestNoDNS is what offline's DNS dialer returns: tests
// must never send a query to the (non-loopback) nameserver of the host.
var errTestNoDNS = errors.New("test: DNS traffic is not allowed")

// offline returns a Resolver that uses Go's own resolver with
// /etc/hosts but whose DNS dialer always fails, so tests resolve "localhost"
// for real yet never put a DNS packet on the wire.
func offline(t testing.TB, ttl time.Duration) *Resolver {
	t.Helper()
	return NewResolverWith(ttl, &net.Resolver{
		PreferGo: true,
		Dial: func(context.Context, string, string) (net.Conn, error) {
			return nil, errTestNoDNS
		},
	})
}

// fakeLookup is a scripted lookup function that counts its calls.
type fakeLookup struct {
	calls atomic.Int64
	addrs []netip.Addr
	err   error
	// gate, when non-nil, blocks every call until it is closed.
	gate chan struct{}
	// entered receives one value per call, when non-nil.
	entered chan struct{}
}

func (f *fakeLookup) lookup(ctx context.Context, network, host string) ([]netip.Addr, error) {
	f.calls.Add(1)
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return f.addrs, f.err
}

func TestResolverLiterals(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want netip.Addr
	}{
		{name: "ipv4", in: "192.0.2.7", want: netip.MustParseAddr("192.0.2.7")},
		{name: "ipv4 loopback", in: "127.45.6.7", want: netip.MustParseAddr("127.45.6.7")},
		{name: "ipv6", in: "2001:db8::1", want: netip.MustParseAddr("2001:db8::1")},
		{name: "ipv6 loopback", in: "::1", want: netip.IPv6Loopback()},
		{name: "ipv6 with zone", in: "fe80::1%lo", want: netip.MustParseAddr("fe80::1%lo")},
		{name: "ipv4-mapped ipv6 is unmapped", in: "::ffff:192.0.2.1", want: netip.MustParseAddr("192.0.2.1")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewResolver(time.Minute)
			r.lookup = func(context.Context, string, string) ([]netip.Addr, error) {
				t.Errorf("lookup called for literal %q", tc.in)
				return nil, errors.New("unexpected lookup")
			}
			got, err := r.Lookup(t.Context(), tc.in)
			if err != nil {
				t.Fatalf("Lookup(%q) error: %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("Lookup(%q) = %v, want %v", tc.in, got, tc.want)
			}
			if n := r.cacheLen(); n != 0 {
				t.Errorf("literal was cached: %d entries", n)
			}
		})
	}
}

func TestResolverRealLookup(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantErr  error
		wantLoop bool
	}{
		{name: "localhost from hosts file", in: "localhost", wantLoop: true},
		{name: "invalid TLD", in: "x.invalid", wantErr: probe.ErrDNS},
		{name: "invalid TLD uppercase with root dot", in: "host.X.INVALID.", wantErr: probe.ErrDNS},
		{name: "empty name", in: "", wantErr: probe.ErrDNS},
		// Not in /etc/hosts, so the resolver would ask DNS; the test dialer
		// refuses, which is how a dead nameserver looks.
		{name: "name needing DNS", in: "no-such-host.fleet-exporter.test", wantErr: probe.ErrDNS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := offline(t, time.Minute)
			got, err := r.Lookup(t.Context(), tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Lookup(%q) error = %v, want errors.Is %v", tc.in, err, tc.wantErr)
				}
				if reason := probe.ReasonFor(err); reason != probe.ReasonDNS {
					t.Errorf("probe.ReasonFor(%v) = %q, want %q", err, reason, probe.ReasonDNS)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lookup(%q) error: %v", tc.in, err)
			}
			if tc.wantLoop && !got.IsLoopback() {
				t.Errorf("Lookup(%q) = %v, want a loopback address", tc.in, got)
			}
		})
	}
}

func TestResolverPrefersIPv4(t *testing.T) {
	tests := []struct {
		name  string
		addrs []netip.Addr
		want  netip.Addr
	}{
		{
			name:  "v6 first, v4 second",
			addrs: []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")},
			want:  netip.MustParseAddr("192.0.2.1"),
		},
		{
			name:  "only v6",
			addrs: []netip.Addr{netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::3")},
			want:  netip.MustParseAddr("2001:db8::2"),
		},
		{
			name:  "mapped v4 counts as v4",
			addrs: []netip.Addr{netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("::ffff:192.0.2.9")},
			want:  netip.MustParseAddr("192.0.2.9"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeLookup{addrs: tc.addrs}
			r := NewResolver(time.Minute)
			r.lookup = f.lookup
			got, err := r.Lookup(t.Context(), "host.example")
			if err != nil {
				t.Fatalf("Lookup error: %v", err)
			}
			if got != tc.want {
				t.Errorf("Lookup = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestResolverCacheAndTTL(t *testing.T) {
	addr := netip.MustParseAddr("192.0.2.10")
	errLookup := errors.New("server failure")
	tests := []struct {
		name    string
		ttl     time.Duration
		addrs   []netip.Addr
		err     error
		wantErr error
		// steps advance the clock and say whether a new lookup is expected.
		steps []struct {
			advance   time.Duration
			wantCalls int64
		}
	}{
		{
			name: "positive answer kept for ttl", ttl: time.Minute, addrs: []netip.Addr{addr},
			steps: []struct {
				advance   time.Duration
				wantCalls int64
			}{{0, 1}, {0, 1}, {59 * time.Second, 1}, {time.Second, 2}, {30 * time.Second, 2}},
		},
		{
			name: "negative answer kept for at most 5s", ttl: time.Minute, err: errLookup, wantErr: probe.ErrDNS,
			steps: []struct {
				advance   time.Duration
				wantCalls int64
			}{{0, 1}, {4 * time.Second, 1}, {time.Second, 2}, {4 * time.Second, 2}},
		},
		{
			name: "negative ttl follows a short positive ttl", ttl: 2 * time.Second, err: errLookup, wantErr: probe.ErrDNS,
			steps: []struct {
				advance   time.Duration
				wantCalls int64
			}{{0, 1}, {time.Second, 1}, {time.Second, 2}},
		},
		{
			name: "empty answer is a failure", ttl: time.Minute, wantErr: probe.ErrDNS,
			steps: []struct {
				advance   time.Duration
				wantCalls int64
			}{{0, 1}, {0, 1}},
		},
		{
			name: "zero ttl disables the cache", ttl: 0, addrs: []netip.Addr{addr},
			steps: []struct {
				advance   time.Duration
				wantCalls int64
			}{{0, 1}, {0, 2}, {0, 3}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := testutil.NewClock(time.Unix(1_700_000_000, 0))
			f := &fakeLookup{addrs: tc.addrs, err: tc.err}
			r := NewResolver(tc.ttl)
			r.lookup, r.now = f.lookup, clock.Now
			for i, s := range tc.steps {
				clock.Advance(s.advance)
				got, err := r.Lookup(t.Context(), "host.example")
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("step %d: error = %v, want errors.Is %v", i, err, tc.wantErr)
					}
					if tc.err != nil && !errors.Is(err, tc.err) {
						t.Errorf("step %d: error = %v does not wrap the lookup error", i, err)
					}
				} else if err != nil || got != addr {
					t.Fatalf("step %d: Lookup = %v, %v; want %v, nil", i, got, err, addr)
				}
				if calls := f.calls.Load(); calls != s.wantCalls {
					t.Errorf("step %d (after +%v): lookups = %d, want %d", i, s.advance, calls, s.wantCalls)
				}
			}
		})
	}
}

func TestResolverSingleflight(t *testing.T) {
	const callers = 8
	addr := netip.MustParseAddr("192.0.2.20")
	f := &fakeLookup{
		addrs:   []netip.Addr{addr},
		gate:    make(chan struct{}),
		entered: make(chan struct{}, callers),
	}
	r := NewResolver(time.Minute)
	r.lookup = f.lookup

	type answer struct {
		addr netip.Addr
		err  error
	}
	answers := make(chan answer, callers)
	var started sync.WaitGroup
	for range callers {
		started.Add(1)
		go func() {
			started.Done()
			a, err := r.Lookup(context.Background(), "host.example")
			answers <- answer{a, err}
		}()
	}
	started.Wait()
	// Wait until the one shared query is in flight, then give the others
	// time to queue up behind it before letting it answer. The sleep only
	// makes the test stronger: with no sleep it still must not fail.
	<-f.entered
	time.Sleep(20 * time.Millisecond)
	close(f.gate)
	for range callers {
		a := <-answers
		if a.err != nil || a.addr != addr {
			t.Errorf("Lookup = %v, %v; want %v, nil", a.addr, a.err, addr)
		}
	}
	// Callers that arrived after the answer was cached hit the cache, so the
	// shared query must be the only one whatever the interleaving.
	if calls := f.calls.Load(); calls != 1 {
		t.Errorf("lookups = %d, want 1", calls)
	}
}

func TestResolverCallerContext(t *testing.T) {
	f := &fakeLookup{
		addrs:   []netip.Addr{netip.MustParseAddr("192.0.2.30")},
		gate:    make(chan struct{}),
		entered: make(chan struct{}, 1),
	}
	r := NewResolver(time.Minute)
	r.lookup = f.lookup

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	_, err := r.Lookup(ctx, "host.example")
	if !errors.Is(err, probe.ErrDNS) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lookup error = %v, want probe.ErrDNS and DeadlineExceeded", err)
	}
	// The shared query outlives the impatient caller and its answer is
	// cached for the next one.
	<-f.entered
	close(f.gate)
	got, err := r.Lookup(t.Context(), "host.example")
	if err != nil || got != netip.MustParseAddr("192.0.2.30") {
		t.Fatalf("second Lookup = %v, %v", got, err)
	}
	if calls := f.calls.Load(); calls != 1 {
		t.Errorf("lookups = %d, want 1", calls)
	}
}

func TestResolverBoundedCache(t *testing.T) {
	clock := testutil.NewClock(time.Unix(1_700_000_000, 0))
	r := NewResolver(time.Minute)
	r.now = clock.Now
	e := entry{addr: netip.MustParseAddr("192.0.2.1"), expires: clock.Now().Add(time.Minute)}
	for i := range maxEntries {
		r.store(string(rune('a'+i%26))+netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(), e)
	}
	if n := r.cacheLen(); n != maxEntries {
		t.Fatalf("cache holds %d entries, want %d", n, maxEntries)
	}
	r.store("one-more.example", e)
	if n := r.cacheLen(); n > maxEntries {
		t.Errorf("cache holds %d entries, more than the bound %d", n, maxEntries)
	}
	if _, ok := r.cached("one-more.example"); !ok {
		t.Errorf("newest entry was not kept")
	}
}
