package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// Default paths of the files the system resolver reads.
const (
	DefaultResolvConf = "/etc/resolv.conf"
	DefaultHosts      = "/etc/hosts"
)

// maxEntries bounds the cache. When a store would exceed it, entries past
// any use (expired and beyond max_stale) are dropped first and, if that is
// not enough, the whole cache. Clearing wholesale is crude but O(n) once per
// 200k inserts, and a fleet that large re-resolves each name at most once
// more.
const maxEntries = 200_000

// failureTTLMax caps how long a failed query (no stale answer to fall back
// on) is remembered, so that a dead nameserver costs one timeout per name
// every few seconds rather than one per probe, yet a fixed one is noticed
// soon.
const failureTTLMax = 5 * time.Second

// staleRetry is how long, after a failed refresh, a stale answer is served
// without asking the nameservers again. RFC 8767 suggests 30s; probes run
// every few seconds to minutes, so a shorter wait notices a recovered
// server within about one probe interval.
const staleRetry = 5 * time.Second

// staleWait is how long a lookup that has a stale answer to fall back on
// waits for the refresh before answering stale, so a hung nameserver does
// not eat the probe's timeout. RFC 8767 section 5 suggests 1.8s.
const staleWait = 1800 * time.Millisecond

// queryTimeout bounds one shared query over all nameservers, search names
// and attempts. The system resolver's own worst case is of the same order.
const queryTimeout = 15 * time.Second

// Lookup results, the values of the result label of fleet_dns_lookups_total.
const (
	ResultHosts    = "hosts"    // answered from the hosts file
	ResultCached   = "cached"   // answered from an unexpired cache entry
	ResultSuccess  = "success"  // answered by the nameservers just now
	ResultStale    = "stale"    // nameservers failed; the last good answer, past its TTL, was used
	ResultNXDomain = "nxdomain" // no address of an allowed family (NXDOMAIN or NODATA, fresh or cached)
	ResultError    = "error"    // nameservers failed and no answer was left to use
)

// Options configures a Resolver. Zero durations take the config defaults.
type Options struct {
	// ResolvConf is the resolv.conf naming the nameservers, search list and
	// timeouts; empty means DefaultResolvConf.
	ResolvConf string
	// Hosts is the hosts file consulted before DNS; empty means
	// DefaultHosts.
	Hosts string
	// TTL holds the TTL clamps, negative TTL and max stale.
	TTL config.DNS
	// Dial opens the connection to a nameserver. nil means a plain
	// net.Dialer; tests use it to keep queries inside a network namespace,
	// or off the network.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Registerer, if not nil, gets the resolver's metrics.
	Registerer prometheus.Registerer
}

// entry is one cached answer for one (name, record type): addresses, a
// negative answer, or the error of a failed query, valid until expires.
// A positive entry is served stale for max_stale past expires while the
// nameservers fail; retryAt then spaces out the refreshes.
type entry struct {
	addrs    []netip.Addr
	negative bool
	err      error
	expires  time.Time
	retryAt  time.Time
}

// outcome is what one query of the nameservers found.
type outcome struct {
	addrs []netip.Addr
	// ttl is the smallest TTL of the answer's records.
	ttl time.Duration
	// negative: every name of the search list was NXDOMAIN or NODATA.
	negative bool
	// err: the nameservers failed (timeout, SERVFAIL, REFUSED, unreachable).
	err error
}

type cacheKey struct {
	name  string
	qtype uint16
}

// Resolver resolves target names for every prober: from the hosts file
// first, then from the nameservers of resolv.conf, keeping answers for their
// TTL (clamped), negative answers for the negative TTL, and serving the last
// good answer for up to max_stale while the nameservers fail. Concurrent
// lookups of the same name and record type share one query. The zero value
// is not usable; use New.
type Resolver struct {
	ttl atomic.Pointer[config.DNS]

	hosts      *watched[hostsTable]
	resolvConf *watched[*mdns.ClientConfig]
	dial       func(ctx context.Context, network, address string) (net.Conn, error)

	// exchange queries the nameservers; tests replace it.
	exchange func(ctx context.Context, name string, qtype uint16) outcome
	// now is the clock; tests replace it.
	now func() time.Time

	lookups  *prometheus.CounterVec
	duration prometheus.Histogram
	stale    prometheus.Counter

	group singleflight.Group

	// mu guards cache.
	mu    sync.Mutex
	cache map[cacheKey]entry
}

// New returns a Resolver configured by opts. It reads no file until the
// first lookup of a name.
func New(opts Options) *Resolver {
	r := &Resolver{
		now:   time.Now,
		cache: make(map[cacheKey]entry),
		dial:  opts.Dial,
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleet_dns_lookups_total",
			Help: "Name lookups of the probers, by result: hosts, cached, success, stale, nxdomain, error.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fleet_dns_lookup_duration_seconds",
			Help:    "Time one query of the nameservers took, over every server, search name and attempt it needed.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleet_dns_stale_answers_total",
			Help: "Lookups answered with an expired answer because the nameservers failed.",
		}),
	}
	for _, res := range []string{ResultHosts, ResultCached, ResultSuccess, ResultStale, ResultNXDomain, ResultError} {
		r.lookups.WithLabelValues(res)
	}
	if r.dial == nil {
		var d net.Dialer
		r.dial = d.DialContext
	}
	r.exchange = r.query
	r.SetTTL(opts.TTL)
	hostsPath := opts.Hosts
	if hostsPath == "" {
		hostsPath = DefaultHosts
	}
	confPath := opts.ResolvConf
	if confPath == "" {
		confPath = DefaultResolvConf
	}
	r.hosts = &watched[hostsTable]{path: hostsPath, parse: readHosts}
	r.resolvConf = &watched[*mdns.ClientConfig]{path: confPath, parse: readResolvConf}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(r.lookups, r.duration, r.stale)
	}
	return r
}

// SetTTL replaces the TTL settings; zero fields take the config defaults.
// Entries already cached keep the lifetime they were stored with.
func (r *Resolver) SetTTL(d config.DNS) {
	def := func(v config.Duration, dflt time.Duration) config.Duration {
		if v <= 0 {
			return config.Duration(dflt)
		}
		return v
	}
	d.MinTTL = def(d.MinTTL, config.DefaultDNSMinTTL)
	d.MaxTTL = max(def(d.MaxTTL, config.DefaultDNSMaxTTL), d.MinTTL)
	d.NegativeTTL = def(d.NegativeTTL, config.DefaultDNSNegativeTTL)
	d.MaxStale = def(d.MaxStale, config.DefaultDNSMaxStale)
	r.ttl.Store(&d)
}

// clampTTL bounds a record TTL by min_ttl and max_ttl.
func clampTTL(ttl time.Duration, d *config.DNS) time.Duration {
	return min(max(ttl, d.MinTTL.D()), d.MaxTTL.D())
}

// Lookup returns the address to probe for name under pol. IP literals (also
// IPv6 with a zone) are returned as they are, without a query, whatever pol
// says. A name in the hosts file is answered from it alone, as the system
// resolver does; other names are asked of the nameservers, the preferred
// family first and, if pol allows the fallback, the other one when the name
// has no address of the preferred family (or its query failed). Names under
// the reserved TLD "invalid" fail without a query. Every error for a name
// that did not resolve wraps probe.ErrDNS; if ctx ends first, the error also
// wraps ctx.Err().
func (r *Resolver) Lookup(ctx context.Context, name string, pol config.IPPolicy) (netip.Addr, error) {
	if addr, err := netip.ParseAddr(name); err == nil {
		return addr.Unmap(), nil
	}
	if name == "" {
		return netip.Addr{}, fmt.Errorf("%w: empty name", probe.ErrDNS)
	}
	if isInvalid(name) {
		return netip.Addr{}, fmt.Errorf("%w: %s: reserved .invalid name (RFC 6761)", probe.ErrDNS, name)
	}
	families := familyOrder(pol)

	if hosts, _ := r.hosts.get(r.now()); hosts != nil {
		if addrs, ok := hosts[hostsKey(name)]; ok {
			for _, qt := range families {
				for _, a := range addrs {
					if a.Is4() == (qt == mdns.TypeA) {
						r.lookups.WithLabelValues(ResultHosts).Inc()
						return a, nil
					}
				}
			}
			r.lookups.WithLabelValues(ResultNXDomain).Inc()
			return netip.Addr{}, fmt.Errorf("%w: %s: no address of an allowed family in %s", probe.ErrDNS, name, r.hosts.path)
		}
	}

	var errs []error
	allNegative := true
	for _, qt := range families {
		addrs, result, err := r.resolve(ctx, name, qt)
		if len(addrs) > 0 {
			r.lookups.WithLabelValues(result).Inc()
			if result == ResultStale {
				r.stale.Inc()
			}
			return addrs[0], nil
		}
		errs = append(errs, err)
		if result != ResultNXDomain {
			allNegative = false
		}
		if ctx.Err() != nil {
			break
		}
	}
	if allNegative {
		r.lookups.WithLabelValues(ResultNXDomain).Inc()
	} else {
		r.lookups.WithLabelValues(ResultError).Inc()
	}
	return netip.Addr{}, fmt.Errorf("%w: %s: %w", probe.ErrDNS, name, errors.Join(errs...))
}

// familyOrder returns the record types to ask for, in order.
func familyOrder(pol config.IPPolicy) []uint16 {
	first, second := mdns.TypeA, mdns.TypeAAAA
	if pol.Preferred == config.IP6 {
		first, second = second, first
	}
	if !pol.Fallback {
		return []uint16{first}
	}
	return []uint16{first, second}
}

// errNoRecords is the error of a negative answer.
var errNoRecords = errors.New("no such name or no record of this type")

// resolve answers one (name, record type) from the cache or the
// nameservers. It returns addresses and how they were found, or no
// addresses, ResultNXDomain or ResultError, and why.
func (r *Resolver) resolve(ctx context.Context, name string, qtype uint16) ([]netip.Addr, string, error) {
	k := cacheKey{strings.ToLower(name), qtype}
	typ := mdns.TypeToString[qtype]
	now := r.now()
	ttl := r.ttl.Load()
	e, ok := r.cached(k)
	if ok && now.Before(e.expires) {
		switch {
		case e.err != nil:
			return nil, ResultError, e.err
		case e.negative:
			return nil, ResultNXDomain, fmt.Errorf("%s: %w", typ, errNoRecords)
		default:
			return e.addrs, ResultCached, nil
		}
	}
	var stale []netip.Addr
	if ok && len(e.addrs) > 0 && now.Before(e.expires.Add(ttl.MaxStale.D())) {
		stale = e.addrs
		if now.Before(e.retryAt) {
			return stale, ResultStale, nil
		}
	}

	// The shared query runs under a context that is not cancelled when the
	// first caller gives up, so one short caller deadline does not fail the
	// lookup for everyone waiting on it. It is bounded so a hung nameserver
	// cannot pin the goroutine forever.
	ch := r.group.DoChan(k.name+"/"+typ, func() (any, error) {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queryTimeout)
		defer cancel()
		t0 := time.Now()
		o := r.exchange(qctx, name, qtype)
		r.duration.Observe(time.Since(t0).Seconds())
		r.settle(k, o)
		return o, nil
	})
	var wait <-chan time.Time
	if stale != nil {
		t := time.NewTimer(staleWait)
		defer t.Stop()
		wait = t.C
	}
	select {
	case res := <-ch:
		o := res.Val.(outcome)
		switch {
		case o.err != nil && stale != nil:
			return stale, ResultStale, nil
		case o.err != nil:
			return nil, ResultError, fmt.Errorf("%s: %w", typ, o.err)
		case o.negative:
			return nil, ResultNXDomain, fmt.Errorf("%s: %w", typ, errNoRecords)
		default:
			return o.addrs, ResultSuccess, nil
		}
	case <-wait:
		return stale, ResultStale, nil
	case <-ctx.Done():
		if stale != nil {
			return stale, ResultStale, nil
		}
		return nil, ResultError, fmt.Errorf("%s: %w", typ, ctx.Err())
	}
}

// settle stores the outcome of a query. A failure keeps a positive entry
// that may still be served stale, and only marks when to try again.
func (r *Resolver) settle(k cacheKey, o outcome) {
	now := r.now()
	ttl := r.ttl.Load()
	switch {
	case o.err == nil && !o.negative:
		r.store(k, entry{addrs: o.addrs, expires: now.Add(clampTTL(o.ttl, ttl))})
	case o.negative:
		r.store(k, entry{negative: true, expires: now.Add(ttl.NegativeTTL.D())})
	default:
		r.mu.Lock()
		e, ok := r.cache[k]
		if ok && len(e.addrs) > 0 && now.Before(e.expires.Add(ttl.MaxStale.D())) {
			e.retryAt = now.Add(staleRetry)
			r.cache[k] = e
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		r.store(k, entry{err: o.err, expires: now.Add(min(failureTTLMax, ttl.NegativeTTL.D()))})
	}
}

// isInvalid reports whether name is under the special-use TLD
// "invalid", which RFC 6761 section 6.4 says resolver libraries should answer
// negatively without sending a query.
func isInvalid(name string) bool {
	name = strings.TrimSuffix(name, ".")
	const tld = "invalid"
	if len(name) < len(tld) || !strings.EqualFold(name[len(name)-len(tld):], tld) {
		return false
	}
	return len(name) == len(tld) || name[len(name)-len(tld)-1] == '.'
}

// cached returns the cache entry for k, if any, expired or not.
func (r *Resolver) cached(k cacheKey) (entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[k]
	return e, ok
}

// store caches e for k, keeping the cache within maxEntries.
func (r *Resolver) store(k cacheKey, e entry) {
	now := r.now()
	maxStale := r.ttl.Load().MaxStale.D()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache[k]; !ok && len(r.cache) >= maxEntries {
		for kk, v := range r.cache {
			if !now.Before(v.expires.Add(maxStale)) {
				delete(r.cache, kk)
			}
		}
		if len(r.cache) >= maxEntries {
			clear(r.cache)
		}
	}
	r.cache[k] = e
}

// cacheLen returns the number of cached entries, for tests.
func (r *Resolver) cacheLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}
