//go:build linux

package icmp

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns/dnstest"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// batchCollector is a probe.BatchSink that gathers completions.
type batchCollector struct {
	mu    sync.Mutex
	calls int
	got   []probe.Completion
	// all is closed once want completions arrived.
	want int
	all  chan struct{}
}

func newBatchCollector(want int) *batchCollector {
	return &batchCollector{want: want, all: make(chan struct{})}
}

func (b *batchCollector) ProbesDone(cs []probe.Completion) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	b.got = append(b.got, cs...)
	if len(b.got) == b.want {
		close(b.all)
	}
}

// wait waits (bounded) for every completion and returns them.
func (b *batchCollector) wait(t *testing.T, d time.Duration) []probe.Completion {
	t.Helper()
	select {
	case <-b.all:
	case <-time.After(d):
		b.mu.Lock()
		n := len(b.got)
		b.mu.Unlock()
		t.Fatalf("%d of %d completions after %v", n, b.want, d)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]probe.Completion(nil), b.got...)
}

// batchRequests returns one request per address, started now.
func batchRequests(addrs []string, count int, interval, timeout time.Duration) []probe.Request {
	now := time.Now()
	reqs := make([]probe.Request, len(addrs))
	for i, a := range addrs {
		tg := testTarget(a, count, interval)
		tg.Timeout = timeout
		reqs[i] = probe.Request{Target: tg, Due: now, Start: now, Timeout: timeout}
	}
	return reqs
}

// TestICMPProbeBatch runs batches of IPv4 and IPv6 loopback targets, one
// and three packets each, through ProbeBatch: every request completes
// exactly once, with every reply, in fewer sink calls than requests.
func TestICMPProbeBatch(t *testing.T) {
	tests := []struct {
		name   string
		family string
		n      int
		count  int
		addr   func(i int) string
	}{
		{name: "1000 IPv4 targets, count 1", family: "ip4", n: 1000, count: 1, addr: func(i int) string { return fmt.Sprintf("127.3.%d.%d", i/250, 1+i%250) }},
		{name: "500 IPv4 targets, count 3", family: "ip4", n: 500, count: 3, addr: func(i int) string { return fmt.Sprintf("127.4.%d.%d", i/250, 1+i%250) }},
		{name: "100 probes of ::1, count 3", family: "ip6", n: 100, count: 3, addr: func(int) string { return "::1" }},
		{name: "IPv4-mapped IPv6", family: "ip4", n: 10, count: 1, addr: func(i int) string { return fmt.Sprintf("::ffff:127.5.0.%d", i+1) }},
	}
	for _, mode := range modesOrSkip(t) {
		t.Run(mode.String(), func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					if !modeWorks(mode, tc.family) {
						t.Skipf("%s ICMP socket for %s not available", mode, tc.family)
					}
					p := NewProber(dnstest.Offline(t), mode, nil)
					defer p.Close()
					addrs := make([]string, tc.n)
					for i := range addrs {
						addrs[i] = tc.addr(i)
					}
					reqs := batchRequests(addrs, tc.count, 20*time.Millisecond, 5*time.Second)
					sink := newBatchCollector(tc.n)
					p.ProbeBatch(t.Context(), reqs, sink)
					got := sink.wait(t, 20*time.Second)
					seen := map[*config.Target]int{}
					bad := 0
					for _, c := range got {
						seen[c.Request.Target]++
						r := c.Result
						if !r.Success || r.ICMP == nil || r.ICMP.Sent != tc.count || r.ICMP.Received != tc.count || r.ICMP.RTT <= 0 {
							if bad++; bad <= 5 {
								t.Errorf("%s: success %v reason %q err %v icmp %+v, want %d/%d with an RTT", c.Request.Target.Name, r.Success, r.Reason, r.Err, r.ICMP, tc.count, tc.count)
							}
						}
						if want := netip.MustParseAddr(c.Request.Target.Name).Unmap(); r.Addr != want {
							t.Errorf("%s: addr %v, want %v", c.Request.Target.Name, r.Addr, want)
						}
					}
					for _, rq := range reqs {
						if seen[rq.Target] != 1 {
							t.Errorf("%s completed %d times, want once", rq.Target.Name, seen[rq.Target])
						}
					}
					if tc.n >= 100 && sink.calls >= tc.n {
						t.Errorf("%d completions came in %d sink calls, want batches", tc.n, sink.calls)
					}
				})
			}
		})
	}
}

// TestICMPProbeBatchTimeoutAndCancel checks the ways a batched round ends
// before all its packets are out: at its timeout, within about a wheel
// tick, and at the end of the batch's context, at once for every round in
// flight.
func TestICMPProbeBatchTimeoutAndCancel(t *testing.T) {
	for _, mode := range modesOrSkip(t) {
		t.Run(mode.String(), func(t *testing.T) {
			if !modeWorks(mode, "ip4") {
				t.Skipf("%s ICMP socket for ip4 not available", mode)
			}
			p := NewProber(dnstest.Offline(t), mode, nil)
			defer p.Close()

			// Five packets 1 s apart within a 200 ms timeout: only the
			// first goes out, and the round ends at its timeout.
			reqs := batchRequests([]string{"127.0.0.1"}, 5, time.Second, 200*time.Millisecond)
			sink := newBatchCollector(1)
			start := time.Now()
			p.ProbeBatch(t.Context(), reqs, sink)
			c := sink.wait(t, 5*time.Second)[0]
			if d := time.Since(start); d < 200*time.Millisecond-wheelTick || d > 200*time.Millisecond+time.Second {
				t.Errorf("round ended after %v, want about its 200ms timeout", d)
			}
			if r := c.Result; !r.Success || r.ICMP.Sent != 1 || r.ICMP.Received != 1 {
				t.Errorf("timed-out round: success %v icmp %+v, want success with 1/1", r.Success, r.ICMP)
			}

			ctx, cancel := context.WithCancel(t.Context())
			reqs = batchRequests([]string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, 5, time.Second, 10*time.Second)
			sink = newBatchCollector(3)
			p.ProbeBatch(ctx, reqs, sink)
			time.Sleep(50 * time.Millisecond) // first packets answered; this is not synchronisation
			start = time.Now()
			cancel()
			for _, c := range sink.wait(t, 5*time.Second) {
				if c.Result.ICMP.Sent != 1 || c.Result.ICMP.Received != 1 {
					t.Errorf("cancelled round %s: icmp %+v, want the 1/1 it had", c.Request.Target.Name, c.Result.ICMP)
				}
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("cancelled rounds ended %v after the cancel, want at once", d)
			}
			p.engine.pmu.Lock()
			n := len(p.engine.pending)
			p.engine.pmu.Unlock()
			if n != 0 {
				t.Errorf("%d rounds still pending", n)
			}
		})
	}
}

// TestICMPEngineLateAndDuplicate feeds replies to a finished round and
// duplicates to a round in flight: they are counted by reason and never
// credited to the round that now owns the target.
func TestICMPEngineLateAndDuplicate(t *testing.T) {
	e := newTestEngine(t, ModePrivileged)
	sink := &countSink{}
	sock := &engineSocket{raw: true}
	addr := netip.MustParseAddr("127.0.0.9")
	spec := &startSpec{round: roundSpec{addr: addr, count: 2, interval: time.Millisecond, size: 56, timeout: time.Second}}
	reply := func(token uint32, seq uint16) {
		var out outcomes
		e.pmu.Lock()
		e.deliver(false, true, testReply(true, e.id, seq, e.cookie, token), testName("127.0.0.9"), nil, time.Now(), &out)
		e.pmu.Unlock()
		out.flush()
	}
	e.pmu.Lock()
	old := e.newFlight(spec, sock, sink, e.mono(time.Now()))
	old.sent = 2
	old.sendAt[0], old.sendAt[1] = time.Now().UnixNano(), time.Now().UnixNano()
	oldToken := old.token
	e.pmu.Unlock()
	reply(oldToken, 0)
	reply(oldToken, 1) // complete: the round finishes
	if n := sink.n.Load(); n != 1 {
		t.Fatalf("%d outcomes after both replies, want 1", n)
	}

	// The next round of the same target is in flight with one packet out.
	e.pmu.Lock()
	cur := e.newFlight(spec, sock, sink, e.mono(time.Now()))
	cur.sent = 1
	cur.sendAt[0] = time.Now().Add(-5 * time.Millisecond).UnixNano()
	e.pmu.Unlock()
	reply(oldToken, 0) // late: the previous round's token
	reply(oldToken, 1)
	reply(cur.token, 0)
	reply(cur.token, 0) // duplicate
	reply(cur.token, 1) // not sent yet
	e.pmu.Lock()
	recv, rtt := cur.recv, cur.rttSum
	e.pmu.Unlock()
	if recv != 1 || rtt < 5*time.Millisecond {
		t.Errorf("current round: received %d (RTT %v), want 1 with the RTT of its own packet (>= 5ms)", recv, rtt)
	}
	d := e.discardedReplies()
	if d[discardLate] != 2 || d[discardDuplicate] != 1 || d[discardMismatched] != 1 {
		t.Errorf("discarded late/duplicate/mismatched = %d/%d/%d, want 2/1/1", d[discardLate], d[discardDuplicate], d[discardMismatched])
	}
}

// TestICMPEngineSocketErrorRecovers closes the shared socket under the
// engine while rounds run: rounds in flight on it end (they may lose
// their replies), the reader goes, and the next rounds open a fresh socket
// and get every reply, so no target is lost.
func TestICMPEngineSocketErrorRecovers(t *testing.T) {
	for _, mode := range modesOrSkip(t) {
		t.Run(mode.String(), func(t *testing.T) {
			if !modeWorks(mode, "ip4") {
				t.Skipf("%s ICMP socket for ip4 not available", mode)
			}
			p := NewProber(dnstest.Offline(t), mode, nil)
			defer p.Close()
			addrs := make([]string, 200)
			for i := range addrs {
				addrs[i] = fmt.Sprintf("127.6.0.%d", 1+i%250)
			}
			round := func(timeout time.Duration) []probe.Completion {
				sink := newBatchCollector(len(addrs))
				p.ProbeBatch(t.Context(), batchRequests(addrs, 2, 10*time.Millisecond, timeout), sink)
				return sink.wait(t, timeout+10*time.Second)
			}
			for _, c := range round(2 * time.Second) {
				if c.Result.ICMP.Received != 2 {
					t.Fatalf("before the error: %s received %d of 2", c.Request.Target.Name, c.Result.ICMP.Received)
				}
			}
			p.engine.mu.Lock()
			var broken *engineSocket
			for _, s := range p.engine.socks {
				broken = s
			}
			p.engine.mu.Unlock()
			// The error: the descriptor goes away under the reader.
			_ = broken.f.Close()
			round(500 * time.Millisecond) // rounds caught by the error end, one way or another
			for i := 0; ; i++ {
				p.engine.mu.Lock()
				again := p.engine.socks[broken.key] == broken
				p.engine.mu.Unlock()
				if !again {
					break
				}
				if i > 5000 {
					t.Fatal("the broken socket is still in use")
				}
				time.Sleep(time.Millisecond)
			}
			for _, c := range round(2 * time.Second) {
				if r := c.Result; !r.Success || r.ICMP.Received != 2 {
					t.Errorf("after the error: %s success %v received %d of 2 (%v)", c.Request.Target.Name, r.Success, r.ICMP.Received, r.Err)
				}
			}
		})
	}
}

// TestICMPWheel checks the timeout wheel: entries fire at their tick, not
// before; entries a turn or more ahead wait for their turn; an entry added
// for now while a slot is processed fires at the next advance.
func TestICMPWheel(t *testing.T) {
	tick := int64(wheelTick)
	var w wheel
	var fired []int64
	fn := func(en wheelEntry) { fired = append(fired, en.at) }
	w.add(wheelEntry{at: 3 * tick})
	w.add(wheelEntry{at: 3*tick + wheelSlots*tick}) // same slot, next turn
	w.add(wheelEntry{at: tick / 2})
	w.advance(2*tick, fn)
	if len(fired) != 1 || fired[0] != tick/2 {
		t.Fatalf("fired by tick 2: %v, want only the entry at tick 0", fired)
	}
	fired = nil
	w.advance(3*tick, func(en wheelEntry) {
		fired = append(fired, en.at)
		w.add(wheelEntry{at: 3 * tick, send: true}) // due now: next advance
	})
	if len(fired) != 1 || fired[0] != 3*tick {
		t.Fatalf("fired at tick 3: %v, want the entry at tick 3 only", fired)
	}
	fired = nil
	w.advance(4*tick, fn)
	if len(fired) != 1 {
		t.Fatalf("entry added while processing: fired %v at the next tick, want once", fired)
	}
	fired = nil
	w.advance(3*tick+(wheelSlots-1)*tick, fn)
	if len(fired) != 0 {
		t.Fatalf("next-turn entry fired early: %v", fired)
	}
	w.advance(3*tick+wheelSlots*tick, fn)
	if len(fired) != 1 || fired[0] != 3*tick+wheelSlots*tick {
		t.Fatalf("next-turn entry: fired %v, want it at its tick", fired)
	}
}

// TestICMPWheelArrays checks that the wheel's memory follows the entries
// pending, not the busiest turn of every slot: after two turns of 100
// entries a tick, each due five ticks later, the arrays held by slots and
// spares cover about the six slots in use.
func TestICMPWheelArrays(t *testing.T) {
	tick := int64(wheelTick)
	var w wheel
	const perTick, ahead = 100, 5
	fired := 0
	for k := int64(0); k < 2*wheelSlots; k++ {
		for range perTick {
			w.add(wheelEntry{at: (k + ahead) * tick})
		}
		w.advance(k*tick, func(wheelEntry) { fired++ })
	}
	if want := (2*wheelSlots - ahead) * perTick; fired != want {
		t.Fatalf("fired %d entries, want %d", fired, want)
	}
	held := 0
	for i := range w.slots {
		held += cap(w.slots[i])
	}
	for _, s := range w.spare {
		held += cap(s)
	}
	if limit := 4 * (ahead + 1) * perTick; held > limit {
		t.Fatalf("wheel holds arrays for %d entries with %d pending, want at most %d", held, (ahead+1)*perTick, limit)
	}
}
