package cluster

import (
	"fmt"
	"slices"
	"testing"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m)
}

func names(n int, prefix string) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Name: fmt.Sprintf("%s%d", prefix, i)}
	}
	return ms
}

// hosts builds n ICMP targets of two sets, plus a TCP probe on every
// third host, so one host appears with two probes.
func hosts(n int) []*config.Target {
	var ts []*config.Target
	for i := range n {
		set := "web"
		if i%2 == 1 {
			set = "db"
		}
		h := fmt.Sprintf("host%05d.dc1", i)
		ts = append(ts, testutil.ICMPTarget(set, h))
		if i%3 == 0 {
			ts = append(ts, testutil.TCPTarget(set, h))
		}
	}
	return ts
}

// owners maps every (set, host) to its owners, asked through Owns of each
// member's own view.
func owners(members []Member, k int, ts []*config.Target) map[[2]string][]string {
	out := map[[2]string][]string{}
	for _, m := range members {
		v := NewView(m.Name, members, k)
		for _, t := range v.Filter(ts) {
			key := [2]string{t.Set, t.Host}
			if !slices.Contains(out[key], m.Name) {
				out[key] = append(out[key], m.Name)
			}
		}
	}
	return out
}

func TestOwnershipExactlyK(t *testing.T) {
	ts := hosts(3000)
	for _, tc := range []struct {
		name     string
		members  int
		k, wantK int
	}{
		{"one member", 1, 1, 1},
		{"three K=1", 3, 1, 1},
		{"three K=2", 3, 2, 2},
		{"five K=3", 5, 3, 3},
		{"two K=3 fewer alive", 2, 3, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := names(tc.members, "m")
			got := owners(ms, tc.k, ts)
			if len(got) != 3000 {
				t.Fatalf("%d hosts owned, want 3000", len(got))
			}
			for key, os := range got {
				if len(os) != tc.wantK {
					t.Fatalf("%v owned by %v, want %d owners", key, os, tc.wantK)
				}
				want := NewView("x", ms, tc.k).Owners(key[0], key[1])
				slices.Sort(want)
				slices.Sort(os)
				if !slices.Equal(want, os) {
					t.Fatalf("%v: Owns says %v, Owners says %v", key, os, want)
				}
			}
		})
	}
}

func TestOwnershipBalanced(t *testing.T) {
	ts := hosts(12000)
	ms := names(3, "fleet-exporter-")
	for _, m := range ms {
		n := len(NewView(m.Name, ms, 1).Filter(ts))
		// 16000 targets (12000 ICMP + 4000 TCP); each member should get
		// a third, within 7 % (six standard deviations).
		if n < 16000/3*93/100 || n > 16000/3*107/100 {
			t.Errorf("%s owns %d of 16000 targets, want about a third", m.Name, n)
		}
	}
}

// TestOwnershipMovesOnlyWhatMust checks the rendezvous property: a joining
// member takes about 1/N from the others and nothing moves between the
// others; a leaving member's targets go to the survivors and nothing else
// moves.
func TestOwnershipMovesOnlyWhatMust(t *testing.T) {
	ts := hosts(12000)
	for _, k := range []int{1, 2} {
		t.Run(fmt.Sprintf("K=%d", k), func(t *testing.T) {
			three := names(3, "r")
			four := names(4, "r")
			before := owners(three, k, ts)
			after := owners(four, k, ts)
			moved := 0
			for key, b := range before {
				a := after[key]
				if slices.Equal(a, b) {
					continue
				}
				moved++
				// The new member took a slot; every old owner it did not
				// displace kept it.
				if !slices.Contains(a, "r3") {
					t.Fatalf("%v moved from %v to %v without the new member", key, b, a)
				}
				for _, o := range a {
					if o != "r3" && !slices.Contains(b, o) {
						t.Fatalf("%v moved from %v to %v: an old member gained it", key, b, a)
					}
				}
			}
			frac := float64(moved) / float64(len(before))
			// Expected K/4 of the hosts change an owner.
			if want := float64(k) / 4; frac < want*0.9 || frac > want*1.1 {
				t.Errorf("adding a fourth member moved %.3f of the hosts, want about %.2f", frac, want)
			}
			if k == 1 && frac > 0.30 {
				t.Errorf("adding a fourth member moved %.3f > 30%%", frac)
			}
			// Remove r1: only its slots move.
			without := []Member{{Name: "r0"}, {Name: "r2"}, {Name: "r3"}}
			gone := owners(without, k, ts)
			for key, a := range after {
				g := gone[key]
				if !slices.Contains(a, "r1") && !slices.Equal(a, g) {
					t.Fatalf("%v changed from %v to %v though r1 did not own it", key, a, g)
				}
			}
		})
	}
}

func TestOwnsWithoutSelf(t *testing.T) {
	v := NewView("gone", names(3, "m"), 1)
	if v.Owns("web", "host1") || len(v.Filter(hosts(10))) != 0 {
		t.Error("a member not in the view owns targets")
	}
}

func TestNewViewDeduplicates(t *testing.T) {
	v := NewView("a", []Member{{Name: "b"}, {Name: "a", Address: "1"}, {Name: "a", Address: "2"}}, 0)
	if v.Len() != 2 || v.ReplicationFactor() != 1 {
		t.Errorf("Len %d, K %d; want 2 members and K 1", v.Len(), v.ReplicationFactor())
	}
}

func TestMoved(t *testing.T) {
	ts := hosts(1000)
	a := NewView("m0", names(2, "m"), 1)
	b := NewView("m0", names(1, "m"), 1)
	want := len(ts) - len(a.Filter(ts))
	if got := moved(a, b, ts); got != want {
		t.Errorf("moved = %d, want %d (what m0 gains when m1 leaves)", got, want)
	}
}

func TestParseShard(t *testing.T) {
	for _, tc := range []struct {
		in      string
		i, n    int
		wantErr bool
	}{
		{"0/1", 0, 1, false},
		{"2/5", 2, 5, false},
		{"5/5", 0, 0, true},
		{"-1/5", 0, 0, true},
		{"1/0", 0, 0, true},
		{"2", 0, 0, true},
		{"a/b", 0, 0, true},
	} {
		i, n, err := ParseShard(tc.in)
		if (err != nil) != tc.wantErr || i != tc.i || n != tc.n {
			t.Errorf("ParseShard(%q) = %d, %d, %v; want %d, %d, error %v", tc.in, i, n, err, tc.i, tc.n, tc.wantErr)
		}
	}
}

func TestOrdinalFromName(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"fleet-exporter-0", 0, false},
		{"fleet-exporter-12", 12, false},
		{"fleet-exporter-2.fleet-exporter.monitoring.svc", 2, false},
		{"fleet-exporter", 0, true},
		{"fleet-exporter-", 0, true},
		{"web-+1", 0, true},
		{"host", 0, true},
	} {
		got, err := OrdinalFromName(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("OrdinalFromName(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestStaticShardsPartition checks static mode: the shards partition the
// fleet, and shard i owns what a gossip member named ShardName(i) would.
func TestStaticShardsPartition(t *testing.T) {
	ts := hosts(2000)
	total := 0
	for i := range 5 {
		c, err := New(Options{Name: "ignored", ReplicationFactor: 1, Shards: 5, ShardIndex: i})
		if err != nil {
			t.Fatal(err)
		}
		got := c.Filter(ts)
		total += len(got)
		if c.OwnedTargets() != len(got) || c.Self() != ShardName(i) || !c.Static() {
			t.Errorf("shard %d: OwnedTargets %d, Self %q", i, c.OwnedTargets(), c.Self())
		}
	}
	if total != len(ts) {
		t.Errorf("5 static shards own %d targets, want %d", total, len(ts))
	}
	c, err := New(Options{Name: "x", ReplicationFactor: 1, Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Pending() {
		t.Error("a view never applied is not pending")
	}
	c.Filter(ts)
	if c.Pending() {
		t.Error("the view just applied is pending")
	}
}
