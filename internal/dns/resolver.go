package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/fleet-exporter/fleet_exporter/probe"
)

// negativeTTLMax caps how long a failed lookup is cached, so a name
// that was briefly missing comes back soon after it is fixed.
const negativeTTLMax = 5 * time.Second

// maxEntries bounds the cache. When a store would exceed it, expired
// entries are dropped first and, if that is not enough, the whole cache.
// Clearing wholesale is crude but O(n) once per 200k inserts, and a fleet
// that large re-resolves each name at most once more.
const maxEntries = 200_000

// entry is one cached answer: an address or the error of a failed
// lookup, valid until expires.
type entry struct {
	addr    netip.Addr
	err     error
	expires time.Time
}

// Resolver is a small DNS cache shared by the probers. Names are resolved at
// probe time, so a DNS failure is a failed probe, not a failed reload.
// Successful answers are kept for the TTL given to NewResolver, failures for
// at most five seconds. Concurrent lookups of the same name share one query.
// The zero value is not usable; use NewResolver.
type Resolver struct {
	ttl    time.Duration
	negTTL time.Duration

	// lookup performs the real query; tests replace it.
	lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// now is the clock; tests replace it.
	now func() time.Time

	group singleflight.Group

	// mu guards cache.
	mu    sync.Mutex
	cache map[string]entry
}

// NewResolver returns a Resolver that caches successful answers for ttl and
// failures for min(ttl, 5s). A ttl of zero or less disables caching, but
// concurrent lookups of one name are still collapsed.
func NewResolver(ttl time.Duration) *Resolver {
	return NewResolverWith(ttl, net.DefaultResolver)
}

// NewResolverWith is NewResolver with the lookups going to nr instead of
// the default resolver: a resolver with its own Dial pins the nameserver,
// or, in tests, keeps every query off the network.
func NewResolverWith(ttl time.Duration, nr *net.Resolver) *Resolver {
	ttl = max(ttl, 0)
	return &Resolver{
		ttl:    ttl,
		negTTL: min(ttl, negativeTTLMax),
		lookup: nr.LookupNetIP,
		now:    time.Now,
		cache:  make(map[string]entry),
	}
}

// Lookup returns the address to probe for name. IP literals (also IPv6 with a
// zone) are returned as they are, without a query. Names are resolved
// preferring IPv4: the first IPv4 address if there is one, else the first
// address. Names under the reserved TLD "invalid" fail without a query. Every error for a name that did not resolve wraps probe.ErrDNS; if ctx
// ends first, the error also wraps ctx.Err().
func (r *Resolver) Lookup(ctx context.Context, name string) (netip.Addr, error) {
	if addr, err := netip.ParseAddr(name); err == nil {
		return addr.Unmap(), nil
	}
	if name == "" {
		return netip.Addr{}, fmt.Errorf("%w: empty name", probe.ErrDNS)
	}
	if isInvalid(name) {
		return netip.Addr{}, fmt.Errorf("%w: %s: reserved .invalid name (RFC 6761)", probe.ErrDNS, name)
	}
	if e, ok := r.cached(name); ok {
		return e.addr, e.err
	}

	// The shared query runs under a context that is not cancelled when the
	// first caller gives up, so one short caller deadline does not fail (and
	// negatively cache) the lookup for everyone waiting on it. It is bounded
	// so a hung resolver cannot pin the goroutine forever.
	ch := r.group.DoChan(name, func() (any, error) {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queryTimeout)
		defer cancel()
		e := r.query(qctx, name)
		r.store(name, e)
		return e, nil
	})
	select {
	case res := <-ch:
		e := res.Val.(entry)
		return e.addr, e.err
	case <-ctx.Done():
		return netip.Addr{}, fmt.Errorf("%w: %s: %w", probe.ErrDNS, name, ctx.Err())
	}
}

// queryTimeout bounds one shared query. The system resolver's own
// default (5s per try, a few tries) is of the same order.
const queryTimeout = 15 * time.Second

// isInvalid reports whether name is under the special-use TLD
// "invalid", which RFC 6761 section 6.4 says resolver libraries should answer
// negatively without sending a query. Go's resolver does send one.
func isInvalid(name string) bool {
	name = strings.TrimSuffix(name, ".")
	const tld = "invalid"
	if len(name) < len(tld) || !strings.EqualFold(name[len(name)-len(tld):], tld) {
		return false
	}
	return len(name) == len(tld) || name[len(name)-len(tld)-1] == '.'
}

// query runs one lookup and turns its outcome into a cache entry.
func (r *Resolver) query(ctx context.Context, name string) entry {
	addrs, err := r.lookup(ctx, "ip", name)
	now := r.now()
	if err != nil {
		return entry{err: fmt.Errorf("%w: %s: %w", probe.ErrDNS, name, err), expires: now.Add(r.negTTL)}
	}
	if len(addrs) == 0 {
		return entry{err: fmt.Errorf("%w: %s: no addresses", probe.ErrDNS, name), expires: now.Add(r.negTTL)}
	}
	addr := addrs[0].Unmap()
	for _, a := range addrs {
		if a.Unmap().Is4() {
			addr = a.Unmap()
			break
		}
	}
	return entry{addr: addr, expires: now.Add(r.ttl)}
}

// cached returns the unexpired cache entry for name, if any.
func (r *Resolver) cached(name string) (entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[name]
	if !ok {
		return entry{}, false
	}
	if !r.now().Before(e.expires) {
		delete(r.cache, name)
		return entry{}, false
	}
	return e, true
}

// store caches e for name unless its lifetime is zero, keeping the cache
// within maxEntries.
func (r *Resolver) store(name string, e entry) {
	now := r.now()
	if !now.Before(e.expires) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache[name]; !ok && len(r.cache) >= maxEntries {
		for k, v := range r.cache {
			if !now.Before(v.expires) {
				delete(r.cache, k)
			}
		}
		if len(r.cache) >= maxEntries {
			clear(r.cache)
		}
	}
	r.cache[name] = e
}

// cacheLen returns the number of cached entries, for tests.
func (r *Resolver) cacheLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}
