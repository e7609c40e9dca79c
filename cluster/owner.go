package cluster

import (
	"cmp"
	"slices"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// Member is one member of the cluster as the ownership function sees it.
// Ownership depends on Name only: a member that comes back under the same
// name, at whatever address, owns the same targets again.
type Member struct {
	Name    string
	Address string
}

// View is one immutable membership view: the live members, this member's
// name and the replication factor. Ownership of a target is decided by
// rendezvous (highest-random-weight) hashing of its (set, host) over the
// member names: each member scores the target, the K highest scores own it.
// A member joining takes from every other member about 1/N of their
// targets, one leaving hands its targets to the runners-up, and nothing
// else moves. Every probe of a host goes to the same members, so a host's
// ICMP, TCP and SSH series are exported side by side.
type View struct {
	self    string
	k       int
	members []Member // sorted by name
	hashes  []uint64 // hashes[i] belongs to members[i]
	selfIdx int      // index of self in members, -1 when self is not a member
}

// NewView builds a view. Members are deduplicated by name; self need not be
// among them (a view seen from outside, e.g. by a test or the status page
// of a member that has left). k below 1 is taken as 1.
func NewView(self string, members []Member, k int) *View {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	ms = slices.CompactFunc(ms, func(a, b Member) bool { return a.Name == b.Name })
	v := &View{self: self, k: max(k, 1), members: ms, hashes: make([]uint64, len(ms)), selfIdx: -1}
	for i, m := range ms {
		v.hashes[i] = mix(fnvString(fnvOffset, m.Name))
		if m.Name == self {
			v.selfIdx = i
		}
	}
	return v
}

// Self returns the name of the member this view belongs to.
func (v *View) Self() string { return v.self }

// Members returns the view's members sorted by name, as a fresh slice.
func (v *View) Members() []Member { return slices.Clone(v.members) }

// Len returns the number of members.
func (v *View) Len() int { return len(v.members) }

// ReplicationFactor returns K, the number of members that own each target
// (fewer when fewer are alive).
func (v *View) ReplicationFactor() int { return v.k }

// sameMembers reports whether v and o decide ownership alike.
func (v *View) sameMembers(o *View) bool {
	if v.self != o.self || v.k != o.k || len(v.members) != len(o.members) {
		return false
	}
	for i := range v.members {
		if v.members[i].Name != o.members[i].Name {
			return false
		}
	}
	return true
}

// Owns reports whether this view's member owns (set, host): fewer than K
// members outscore it. It costs one hash of the key and one mix per member,
// with no allocation, so a million targets over 30 members take tens of
// milliseconds.
func (v *View) Owns(set, host string) bool {
	if v.selfIdx < 0 {
		return false
	}
	if len(v.members) <= v.k {
		return true
	}
	key := keyHash(set, host)
	mine := mix(key ^ v.hashes[v.selfIdx])
	above := 0
	for i, h := range v.hashes {
		if i == v.selfIdx {
			continue
		}
		s := mix(key ^ h)
		// A tie (never seen with 64-bit scores, but possible) goes to the
		// smaller name, which is the smaller index.
		if s > mine || (s == mine && i < v.selfIdx) {
			above++
			if above >= v.k {
				return false
			}
		}
	}
	return true
}

// Owners returns the names of the members owning (set, host), highest
// score first: the K members (or all, when fewer) with the highest scores.
func (v *View) Owners(set, host string) []string {
	key := keyHash(set, host)
	type scored struct {
		score uint64
		idx   int
	}
	all := make([]scored, len(v.members))
	for i, h := range v.hashes {
		all[i] = scored{mix(key ^ h), i}
	}
	slices.SortFunc(all, func(a, b scored) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	n := min(v.k, len(all))
	out := make([]string, n)
	for i := range n {
		out[i] = v.members[all[i].idx].Name
	}
	return out
}

// Filter returns the targets this view's member owns, in their order.
// Targets of one host share their owners.
func (v *View) Filter(targets []*config.Target) []*config.Target {
	out := make([]*config.Target, 0, len(targets)/max(1, len(v.members))*v.k+16)
	var lastSet, lastHost string
	var last, have bool
	for _, t := range targets {
		// Probes of one host are usually adjacent: decide once per run.
		if !have || t.Set != lastSet || t.Host != lastHost {
			lastSet, lastHost, last, have = t.Set, t.Host, v.Owns(t.Set, t.Host), true
		}
		if last {
			out = append(out, t)
		}
	}
	return out
}

// moved counts the targets whose ownership by this member differs between
// views a and b.
func moved(a, b *View, targets []*config.Target) int {
	n := 0
	for _, t := range targets {
		if a.Owns(t.Set, t.Host) != b.Owns(t.Set, t.Host) {
			n++
		}
	}
	return n
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// fnvString continues an FNV-1a 64 hash over s. Written out rather than
// through hash/fnv so that hashing a key allocates nothing.
func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// keyHash hashes (set, host) with a separator no set name contains, so
// ("ab", "c") and ("a", "bc") differ.
func keyHash(set, host string) uint64 {
	h := fnvString(fnvOffset, set)
	h ^= 0xff
	h *= fnvPrime
	return mix(fnvString(h, host))
}

// mix is the splitmix64 finalizer: FNV alone leaves the high bits of
// similar strings (host001, host002) correlated, which would bias the
// scores; after mixing, every input bit flips each output bit with
// probability one half.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
