package cluster

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseShard parses "I/N" (0-based I, 0 <= I < N), as --cluster.shard
// takes it.
func ParseShard(s string) (index, count int, err error) {
	is, ns, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("shard %q: want I/N, e.g. 2/5 (0-based)", s)
	}
	index, err1 := strconv.Atoi(strings.TrimSpace(is))
	count, err2 := strconv.Atoi(strings.TrimSpace(ns))
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("shard %q: I and N must be integers", s)
	}
	if count < 1 || index < 0 || index >= count {
		return 0, 0, fmt.Errorf("shard %q: want 0 <= I < N and N >= 1", s)
	}
	return index, count, nil
}

// OrdinalFromName returns the number after the last '-' of name, as a
// StatefulSet names its pods ("fleet-exporter-2" is ordinal 2). A domain
// suffix ("fleet-exporter-2.example") is ignored.
func OrdinalFromName(name string) (int, error) {
	short, _, _ := strings.Cut(name, ".")
	i := strings.LastIndexByte(short, '-')
	if i < 0 || i == len(short)-1 {
		return 0, fmt.Errorf("name %q does not end in -<ordinal>", name)
	}
	n, err := strconv.Atoi(short[i+1:])
	if err != nil || n < 0 || strings.HasPrefix(short[i+1:], "+") {
		return 0, fmt.Errorf("name %q does not end in -<ordinal>", name)
	}
	return n, nil
}

// ShardName is the member name of shard i in static mode. Static members
// are named by index, so the ownership of static shard i equals that of a
// dynamic member with that name, and growing N moves only about 1/N.
func ShardName(i int) string { return "shard-" + strconv.Itoa(i) }

// StaticMembers returns the members of a static cluster of n shards.
func StaticMembers(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Name: ShardName(i)}
	}
	return ms
}
