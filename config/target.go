package config

import (
	"cmp"
	"hash/maphash"
	"net/netip"
	"strconv"
	"time"
)

// Target is one (host, probe) pair of a host set after expansion: the unit
// the scheduler runs once per interval.
type Target struct {
	// Set is the host set name (the `set` label).
	Set string
	// Host is the expanded host entry as shown in the `host` label, e.g.
	// "web001.dc1", "10.0.0.7", "db1:2222" or "[2001:db8::1]:22".
	Host string
	// Name is the DNS name or IP literal to contact, without port or brackets.
	Name string
	// Port is the port given in the host entry, 0 when none was given; probes
	// fall back to their own configured port. For a TCP target it is the
	// port probed: the host entry's, else one of the probe's ports (one
	// target per port), 0 only when neither gives one.
	Port int
	// Probe is one of ProbeICMP, ProbeTCP, ProbeSSH.
	Probe string
	// Interval and Timeout are the effective values after defaults and set
	// and probe overrides.
	Interval time.Duration
	Timeout  time.Duration
	// RetryInterval is the time from a failed probe to the next one, until
	// a probe succeeds. It equals Interval unless the set shortens it.
	RetryInterval time.Duration
	// SourceAddress is the local address the probe sends from; the zero
	// Addr leaves the choice to the kernel.
	SourceAddress netip.Addr
	// Labels are the set's static labels (shared, never mutated).
	Labels map[string]string
	// IP is the set's address family rule for Name.
	IP IPPolicy
	// ICMP, TCP, SSH point at the set's probe configuration; exactly the one
	// matching Probe is non-nil.
	ICMP *ICMPProbe
	TCP  *TCPProbe
	SSH  *SSHProbe
	// Fingerprint changes whenever anything that affects how this target is
	// probed or labelled changes; reload compares it to decide whether a
	// running target must be restarted. It is opaque: 16 raw bytes of a
	// digest from the expansion, any string in a target built by hand;
	// compare it, never show it.
	Fingerprint string
	// Hash is Key().Hash(), set by the expansion so that hot paths
	// (the pool's skip rule) need not hash the key's strings; 0 in a
	// target built by hand, for which KeyHash computes it. Use KeyHash.
	Hash uint64
}

// PortLabel returns the value of the `port` label of the target's series:
// the probed port of a TCP target, "" for the other probe types (and for a
// TCP target without a port).
func (t *Target) PortLabel() string {
	if t.Probe != ProbeTCP || t.Port == 0 {
		return ""
	}
	return strconv.Itoa(t.Port)
}

// Key identifies a target across reloads.
type Key struct {
	Set, Host, Probe string
	// Port is the probed port of a TCP target (a host has one TCP target
	// per port) and 0 for the other probe types.
	Port int
}

// KeyHash returns a hash of the target's Key for maps on hot paths: equal
// keys have equal hashes within one process; different keys collide
// rarely, so users compare keys on a match. The expansion sets it once per
// target; a target built by hand has it computed on every call.
func (t *Target) KeyHash() uint64 {
	if t.Hash != 0 {
		return t.Hash
	}
	return t.Key().Hash()
}

// keySeed seeds Key.Hash for the life of the process.
var keySeed = maphash.MakeSeed()

// Hash returns the key's hash (see Target.KeyHash); never 0.
func (k Key) Hash() uint64 {
	return maphash.Comparable(keySeed, k) | 1
}

// Key returns the target's identity.
func (t *Target) Key() Key {
	k := Key{Set: t.Set, Host: t.Host, Probe: t.Probe}
	if t.Probe == ProbeTCP {
		k.Port = t.Port
	}
	return k
}

// Compare orders keys by set, host, probe and port.
func (k Key) Compare(o Key) int {
	return cmp.Or(
		cmp.Compare(k.Set, o.Set),
		cmp.Compare(k.Host, o.Host),
		cmp.Compare(k.Probe, o.Probe),
		cmp.Compare(k.Port, o.Port),
	)
}
