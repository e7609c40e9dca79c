package config

import (
	"testing"
)

// TestKeyIndexCollisions drives KeyIndex with hashes chosen to collide:
// every key is found by its own hash and value, a key sharing a hash with
// another is kept apart, and deleting either leaves the other reachable,
// including the collided key promoted into the freed hash.
func TestKeyIndexCollisions(t *testing.T) {
	keys := []Key{
		{Set: "s", Host: "a", Probe: ProbeICMP},
		{Set: "s", Host: "b", Probe: ProbeICMP},
		{Set: "s", Host: "c", Probe: ProbeICMP},
		{Set: "s", Host: "d", Probe: ProbeTCP, Port: 22},
	}
	// a, b and c share hash 7; d has its own.
	hash := map[Key]uint64{keys[0]: 7, keys[1]: 7, keys[2]: 7, keys[3]: 9}
	keyOf := func(i int) Key { return keys[i] }
	var x KeyIndex[int]
	for i, k := range keys {
		x.Put(hash[k], k, i, keyOf)
	}
	check := func(present ...int) {
		t.Helper()
		if x.Len() != len(present) {
			t.Errorf("Len = %d, want %d", x.Len(), len(present))
		}
		want := map[int]bool{}
		for _, i := range present {
			want[i] = true
		}
		for i, k := range keys {
			v, ok := x.Get(hash[k], k, keyOf)
			if ok != want[i] || (ok && v != i) {
				t.Errorf("Get(%v) = %d, %v; want %d, %v", k.Host, v, ok, i, want[i])
			}
		}
		seen := map[int]bool{}
		x.Range(func(v int) bool { seen[v] = true; return true })
		if len(seen) != len(present) {
			t.Errorf("Range saw %v, want %v", seen, present)
		}
	}
	check(0, 1, 2, 3)
	// Re-putting a collided key replaces its value in place.
	x.Put(7, keys[1], 1, keyOf)
	check(0, 1, 2, 3)
	// Deleting the key that holds the hash promotes a collided one.
	x.Delete(7, keys[0], keyOf)
	check(1, 2, 3)
	x.Delete(7, keys[2], keyOf)
	check(1, 3)
	// A key never put, with a held hash, deletes nothing.
	x.Delete(7, Key{Set: "s", Host: "z"}, keyOf)
	check(1, 3)
	x.Delete(7, keys[1], keyOf)
	x.Delete(9, keys[3], keyOf)
	check()
}

// TestKeyIndexRealHashes checks KeyIndex with Key.Hash on many keys.
func TestKeyIndexRealHashes(t *testing.T) {
	const n = 10000
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{Set: "s", Host: string(rune('a'+i%26)) + string(rune(i)), Probe: ProbeICMP}
	}
	keyOf := func(i int32) Key { return keys[i] }
	x := MakeKeyIndex[int32](n)
	for i, k := range keys {
		x.Put(k.Hash(), k, int32(i), keyOf)
	}
	if x.Len() != n {
		t.Fatalf("Len = %d, want %d", x.Len(), n)
	}
	for i, k := range keys {
		if v, ok := x.Get(k.Hash(), k, keyOf); !ok || v != int32(i) {
			t.Fatalf("Get(%d) = %d, %v", i, v, ok)
		}
	}
	x.Range(func(v int32) bool {
		x.Delete(keys[v].Hash(), keys[v], keyOf)
		return true
	})
	if x.Len() != 0 {
		t.Errorf("Len after deleting every key in Range = %d", x.Len())
	}
}

func TestKeyIndexPeek(t *testing.T) {
	var x KeyIndex[string]
	k := Key{Set: "s", Host: "h", Probe: ProbeICMP}
	if _, ok := x.Peek(k.Hash()); ok {
		t.Error("Peek on an empty index found a value")
	}
	x.Put(k.Hash(), k, "v", func(string) Key { return k })
	if v, ok := x.Peek(k.Hash()); !ok || v != "v" {
		t.Errorf("Peek = %q, %v; want v, true", v, ok)
	}
}
