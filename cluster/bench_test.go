package cluster

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// millionTargets is 1,000,000 ICMP targets of one set.
func millionTargets() []*config.Target {
	ts := make([]*config.Target, 1_000_000)
	for i := range ts {
		ts[i] = &config.Target{Set: "fleet", Host: fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), Probe: config.ProbeICMP}
	}
	return ts
}

// BenchmarkFilterMillion30Members is the work of one membership change at
// 30 members: deciding ownership of every target of a 1,000,000-target
// fleet.
func BenchmarkFilterMillion30Members(b *testing.B) {
	ts := millionTargets()
	v := NewView("m7", names(30, "m"), 1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if n := len(v.Filter(ts)); n < 25000 || n > 42000 {
			b.Fatalf("owned %d of 1,000,000 at 30 members", n)
		}
	}
}

// BenchmarkFilterMillion30MembersK2 is the same with a replication factor
// of 2.
func BenchmarkFilterMillion30MembersK2(b *testing.B) {
	ts := millionTargets()
	v := NewView("m7", names(30, "m"), 2)
	b.ResetTimer()
	for b.Loop() {
		if n := len(v.Filter(ts)); n < 55000 || n > 80000 {
			b.Fatalf("owned %d of 1,000,000 at 30 members, K=2", n)
		}
	}
}

// hashmod is Prometheus' hashmod relabel action: the low 8 bytes of the
// MD5 of the value, modulo the shard count.
func hashmod(s string, n uint64) uint64 {
	sum := md5.Sum([]byte(s))
	return binary.BigEndian.Uint64(sum[8:]) % n
}

// BenchmarkHashmodMillion is the peer: deciding shard membership of the
// same targets with Prometheus' hashmod (one MD5 per target), which is
// cheaper per decision but moves almost every target when N changes (see
// the reported moved fraction).
func BenchmarkHashmodMillion(b *testing.B) {
	ts := millionTargets()
	moved := 0
	for _, t := range ts {
		if hashmod(t.Set+";"+t.Host, 3) != hashmod(t.Set+";"+t.Host, 4) {
			moved++
		}
	}
	b.ResetTimer()
	for b.Loop() {
		n := 0
		for _, t := range ts {
			if hashmod(t.Set+";"+t.Host, 30) == 7 {
				n++
			}
		}
		if n < 25000 || n > 42000 {
			b.Fatalf("shard 7 of 30 has %d", n)
		}
	}
	b.ReportMetric(float64(moved)/float64(len(ts)), "moved_3to4")
}

// BenchmarkRendezvousMoved reports the fraction of 200,000 targets that
// change owner when a fourth member joins three: about 1/4. It measures
// a property, not speed.
func BenchmarkRendezvousMoved(b *testing.B) {
	ts := millionTargets()[:200_000]
	three, four := NewView("", names(3, "m"), 1), NewView("", names(4, "m"), 1)
	for b.Loop() {
		moved := 0
		for _, t := range ts {
			if three.Owners(t.Set, t.Host)[0] != four.Owners(t.Set, t.Host)[0] {
				moved++
			}
		}
		b.ReportMetric(float64(moved)/float64(len(ts)), "moved_3to4")
	}
}
