package config

// KeyIndex maps target keys to values by the keys' hashes (Key.Hash,
// Target.KeyHash), for the per-target maps on the probe path. Compared with
// a map keyed by Key it holds 8 bytes of key per entry instead of 56, hashes
// nothing on lookup, and, for a value type without pointers, is a map the
// garbage collector never scans: at 100,000 targets that is several MB and
// part of every collection saved per map.
//
// Two keys with one hash are rare but possible; the second is kept in a
// small map keyed by Key. Every method therefore takes keyOf, which returns
// the key a stored value belongs to, to check a hash match. The zero
// KeyIndex is empty and ready to use.
type KeyIndex[V any] struct {
	byHash map[uint64]V
	// collided holds the keys whose hash another key holds in byHash.
	collided map[Key]collidedValue[V]
}

// collidedValue is a value kept by Key, with its key's hash.
type collidedValue[V any] struct {
	hash uint64
	v    V
}

// MakeKeyIndex returns an empty KeyIndex with room for n keys.
func MakeKeyIndex[V any](n int) KeyIndex[V] {
	return KeyIndex[V]{byHash: make(map[uint64]V, n)}
}

// Get returns the value of k, whose hash is h.
func (x *KeyIndex[V]) Get(h uint64, k Key, keyOf func(V) Key) (V, bool) {
	if v, ok := x.byHash[h]; ok && keyOf(v) == k {
		return v, true
	}
	if len(x.collided) > 0 {
		if c, ok := x.collided[k]; ok {
			return c.v, true
		}
	}
	var zero V
	return zero, false
}

// Peek returns the value stored under hash h without comparing keys: the
// caller must confirm it is the value of the key it wants (by an identity
// the key follows from) and fall back to Get when it cannot.
func (x *KeyIndex[V]) Peek(h uint64) (V, bool) {
	v, ok := x.byHash[h]
	return v, ok
}

// Put sets the value of k, whose hash is h.
func (x *KeyIndex[V]) Put(h uint64, k Key, v V, keyOf func(V) Key) {
	if x.byHash == nil {
		x.byHash = make(map[uint64]V)
	}
	if old, ok := x.byHash[h]; ok && keyOf(old) != k {
		if x.collided == nil {
			x.collided = make(map[Key]collidedValue[V])
		}
		x.collided[k] = collidedValue[V]{hash: h, v: v}
		return
	}
	x.byHash[h] = v
}

// Delete removes k, whose hash is h, if present.
func (x *KeyIndex[V]) Delete(h uint64, k Key, keyOf func(V) Key) {
	v, ok := x.byHash[h]
	if !ok || keyOf(v) != k {
		delete(x.collided, k)
		return
	}
	delete(x.byHash, h)
	// A key that collided with k takes its place.
	for ck, c := range x.collided {
		if c.hash == h {
			x.byHash[h] = c.v
			delete(x.collided, ck)
			return
		}
	}
}

// Len returns the number of keys.
func (x *KeyIndex[V]) Len() int { return len(x.byHash) + len(x.collided) }

// Range calls fn for every value until fn returns false. fn may Delete the
// value's key, as in a range over a map.
func (x *KeyIndex[V]) Range(fn func(V) bool) {
	for _, v := range x.byHash {
		if !fn(v) {
			return
		}
	}
	for _, c := range x.collided {
		if !fn(c.v) {
			return
		}
	}
}
