package prober_test

// The batched ICMP path (probe.BatchProber) against a host namespace:
// nftables drops the echo requests of a known set of targets, the TUN
// responder delays its replies by a known time, and replies that come after
// their round ended must be counted as late, never credited to the next
// round of the same target.

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/internal/netnstest"
	kit "github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
	"github.com/fleet-exporter/fleet_exporter/prober/icmp"
)

// batchWait is a probe.BatchSink that waits for a number of completions.
type batchWait struct {
	mu   sync.Mutex
	got  []probe.Completion
	want int
	all  chan struct{}
}

func newBatchWait(want int) *batchWait { return &batchWait{want: want, all: make(chan struct{})} }

func (b *batchWait) ProbesDone(cs []probe.Completion) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, cs...)
	if len(b.got) == b.want {
		close(b.all)
	}
}

func (b *batchWait) wait(t *testing.T) []probe.Completion {
	t.Helper()
	select {
	case <-b.all:
	case <-time.After(30 * time.Second):
		t.Fatalf("completions did not all arrive")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.got
}

// netnsBatch runs one batch of reqs from inside the client namespace and
// waits for every completion.
func netnsBatch(t *testing.T, ns *netnstest.NS, p *icmp.Prober, reqs []probe.Request) []probe.Completion {
	t.Helper()
	sink := newBatchWait(len(reqs))
	if err := ns.InClient(func() { p.ProbeBatch(context.Background(), reqs, sink) }); err != nil {
		t.Fatal(err)
	}
	return sink.wait(t)
}

// netnsDiscarded returns fleet_icmp_replies_discarded_total{reason}.
func netnsDiscarded(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	ms := kit.Series(t, reg, "fleet_icmp_replies_discarded_total", map[string]string{"reason": reason})
	if len(ms) == 0 {
		t.Fatalf("no fleet_icmp_replies_discarded_total{reason=%q}", reason)
	}
	return ms[0].GetCounter().GetValue()
}

func TestNetnsICMPBatch(t *testing.T) {
	const delay = 50 * time.Millisecond
	ns := netnstest.New(t, netnstest.Options{EchoDelay: delay})
	echo := []netip.Addr{}
	for a := ns.EchoPrefix.Masked().Addr(); ns.EchoPrefix.Contains(a); a = a.Next() {
		echo = append(echo, a)
	}
	fast := []netip.Addr{ns.HostAddr, ns.AltAddr}
	addrs := append(append([]netip.Addr(nil), fast...), echo...)
	// A known fraction: one host address and one echo address are dropped.
	dropped := map[netip.Addr]bool{ns.AltAddr: true, echo[len(echo)-1]: true}
	const perAddr, count = 10, 3

	targets := func(set string, timeout time.Duration) []probe.Request {
		var reqs []probe.Request
		now := time.Now()
		for _, a := range addrs {
			for i := range perAddr {
				tg := &config.Target{
					Set: set, Host: fmt.Sprintf("%s-%d", a, i), Name: a.String(), Probe: config.ProbeICMP, Timeout: timeout,
					ICMP: &config.ICMPProbe{Count: count, PacketInterval: config.Duration(20 * time.Millisecond), Size: 56},
				}
				reqs = append(reqs, probe.Request{Target: tg, Due: now, Start: now, Timeout: timeout})
			}
		}
		return reqs
	}

	for _, mode := range []icmp.Mode{icmp.ModeUnprivileged, icmp.ModePrivileged} {
		t.Run(mode.String(), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			p := icmp.NewProber(dns.New(dns.Options{}), mode, nil)
			defer p.Close()
			reg.MustRegister(p)

			t.Run("loss of a known fraction", func(t *testing.T) {
				var drop []netip.Addr
				for a := range dropped {
					drop = append(drop, a)
				}
				ns.Blackhole(t, drop...)
				defer ns.Clear(t)
				got := netnsBatch(t, ns, p, targets("loss", time.Second))
				sent, recv, failed := 0, 0, 0
				for _, c := range got {
					r := c.Result
					addr := netip.MustParseAddr(c.Request.Target.Name)
					sent += r.ICMP.Sent
					recv += r.ICMP.Received
					if dropped[addr] {
						failed++
						if r.Success || r.Reason != probe.ReasonTimeout || r.ICMP.Sent != count || r.ICMP.Received != 0 {
							t.Errorf("%s (dropped): success %v reason %q icmp %+v, want a timeout with %d/0", c.Request.Target.Host, r.Success, r.Reason, r.ICMP, count)
						}
						continue
					}
					if !r.Success || r.ICMP.Sent != count || r.ICMP.Received != count {
						t.Errorf("%s: success %v reason %q icmp %+v, want %d/%d", c.Request.Target.Host, r.Success, r.Reason, r.ICMP, count, count)
						continue
					}
					if ns.EchoPrefix.Contains(addr) {
						// Replies never come before the responder's delay;
						// a burst of 30 requests queues in the responder.
						if r.ICMP.RTT < delay || r.ICMP.RTT > delay+500*time.Millisecond {
							t.Errorf("%s: RTT %v, want within [%v, %v]", c.Request.Target.Host, r.ICMP.RTT, delay, delay+500*time.Millisecond)
						}
					}
				}
				if want := len(dropped) * perAddr; failed != want {
					t.Errorf("%d rounds failed, want %d (the dropped targets)", failed, want)
				}
				if want := len(addrs) * perAddr * count; sent != want {
					t.Errorf("sent %d echo requests, want %d", sent, want)
				}
				if n := ns.Dropped(t); recv != sent-n || n != len(dropped)*perAddr*count {
					t.Errorf("received %d of %d with %d dropped by nft, want %d received and %d dropped", recv, sent, n, sent-n, len(dropped)*perAddr*count)
				}
			})

			t.Run("RTT within 1ms of the delay", func(t *testing.T) {
				// One request per echo address at a time, so the responder
				// does not queue them. Its timer may fire late on a loaded
				// machine (it is a goroutine), never early: the measured RTT
				// (kernel receive timestamps) must never be below the
				// delay, and in some of up to 50 rounds within 1 ms of it.
				best := time.Hour
				for round := 0; round < 50 && best > delay+time.Millisecond; round++ {
					var reqs []probe.Request
					for _, r := range targets("rtt", time.Second) {
						if a := netip.MustParseAddr(r.Target.Name); ns.EchoPrefix.Contains(a) && !dropped[a] && r.Target.Host == a.String()+"-0" {
							r.Target.ICMP = &config.ICMPProbe{Count: 1, Size: 56}
							reqs = append(reqs, r)
						}
					}
					for _, c := range netnsBatch(t, ns, p, reqs) {
						r := c.Result
						if !r.Success || r.ICMP.RTT < delay {
							t.Fatalf("%s: success %v RTT %v, want a reply no sooner than %v", c.Request.Target.Host, r.Success, r.ICMP.RTT, delay)
						}
						best = min(best, r.ICMP.RTT)
					}
				}
				if best > delay+time.Millisecond {
					t.Errorf("best RTT %v in 50 rounds, want within 1ms of the responder's %v", best, delay)
				}
				t.Logf("best RTT %v for a %v delay", best, delay)
			})

			t.Run("late replies", func(t *testing.T) {
				before := netnsDiscarded(t, reg, "late")
				// Rounds to the echo addresses end long before their
				// replies (5 ms timeout, 50 ms delay) ...
				var early []probe.Request
				for _, r := range targets("late", 5*time.Millisecond) {
					if ns.EchoPrefix.Contains(netip.MustParseAddr(r.Target.Name)) {
						early = append(early, r)
					}
				}
				got := netnsBatch(t, ns, p, early)
				sent, recv := 0, 0
				for _, c := range got {
					sent += c.Result.ICMP.Sent
					recv += c.Result.ICMP.Received
				}
				// ... and the next rounds of the same targets start at
				// once: the late replies must not count for them.
				for i := range early {
					early[i].Start = time.Now()
					early[i].Timeout = time.Second
					early[i].Target.Timeout = time.Second
				}
				for _, c := range netnsBatch(t, ns, p, early) {
					if r := c.Result; r.ICMP.Received != r.ICMP.Sent || r.ICMP.RTT < delay {
						t.Errorf("%s next round: icmp %+v, want every reply and RTT >= %v (no late reply of the previous round)", c.Request.Target.Host, r.ICMP, delay)
					}
				}
				if late := netnsDiscarded(t, reg, "late") - before; int(late) != sent-recv || sent-recv == 0 {
					t.Errorf("late replies counted = %v, want %d (sent %d, received in time %d)", late, sent-recv, sent, recv)
				}
			})
		})
	}
}
