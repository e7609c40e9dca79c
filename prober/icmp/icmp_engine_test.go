//go:build linux

package icmp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/internal/dns/dnstest"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// netnsChildEnv is set in the test binary re-executed inside a fresh
// network namespace by TestICMPEngineUnprivilegedNetns.
const netnsChildEnv = "FLEET_ICMP_NETNS_CHILD"

// newTestEngine returns an engine that is closed when the test ends.
func newTestEngine(t testing.TB, mode Mode) *sharedEngine {
	t.Helper()
	e := newEngine(mode, slog.New(slog.DiscardHandler))
	t.Cleanup(e.close)
	return e
}

// newIPv4TestEngine is newTestEngine for a test that pings 127.0.0.1: it
// skips the test when mode has no IPv4 socket here.
func newIPv4TestEngine(t *testing.T, mode Mode) *sharedEngine {
	t.Helper()
	if !modeWorks(mode, "ip4") {
		t.Skipf("%s ICMP socket for ip4 not available", mode)
	}
	return newTestEngine(t, mode)
}

func TestICMPEnginePing(t *testing.T) {
	modes := modesOrSkip(t)
	tests := []struct {
		name     string
		addr     string
		count    int
		size     int
		wantRecv int
	}{
		{name: "127.0.0.1 three packets", addr: "127.0.0.1", count: 3, size: 56, wantRecv: 3},
		{name: "127.45.6.7", addr: "127.45.6.7", count: 1, size: 56, wantRecv: 1},
		{name: "tiny payload raised to the header", addr: "127.0.0.1", count: 2, size: 0, wantRecv: 2},
		{name: "large payload", addr: "127.0.0.1", count: 2, size: 1400, wantRecv: 2},
		{name: "::1 three packets", addr: "::1", count: 3, size: 56, wantRecv: 3},
		{name: "IPv4-mapped IPv6", addr: "::ffff:127.0.0.1", count: 1, size: 56, wantRecv: 1},
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			e := newTestEngine(t, mode)
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					addr := netip.MustParseAddr(tc.addr)
					family := "ip4"
					if !addr.Unmap().Is4() {
						family = "ip6"
					}
					if !modeWorks(mode, family) {
						t.Skipf("%s ICMP socket for %s not available", mode, family)
					}
					st, err := e.ping(t.Context(), roundSpec{
						addr: addr, count: tc.count, interval: 5 * time.Millisecond, size: tc.size, timeout: 2 * time.Second,
					})
					if err != nil {
						t.Fatalf("ping(%s) error = %v", tc.addr, err)
					}
					if st.sent != tc.count || st.recv != tc.wantRecv {
						t.Errorf("sent/received = %d/%d, want %d/%d", st.sent, st.recv, tc.count, tc.wantRecv)
					}
					if st.rttSum <= 0 || st.rttSum > time.Second {
						t.Errorf("RTT sum = %v, want in (0, 1s]", st.rttSum)
					}
				})
			}
		})
	}
}

// TestICMPEngineManyTargets runs 2,000 concurrent probes of three packets
// each against distinct 127/8 addresses (and a batch to ::1) over the one
// shared socket per family, and wants every reply back.
func TestICMPEngineManyTargets(t *testing.T) {
	modes := modesOrSkip(t)
	tests := []struct {
		name   string
		n      int
		addr   func(i int) string
		family string
	}{
		{name: "2000 IPv4 targets", n: 2000, addr: func(i int) string { return fmt.Sprintf("127.1.%d.%d", i/250, 1+i%250) }, family: "ip4"},
		{name: "200 probes to ::1", n: 200, addr: func(int) string { return "::1" }, family: "ip6"},
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					if !modeWorks(mode, tc.family) {
						t.Skipf("%s ICMP socket for %s not available", mode, tc.family)
					}
					p := NewProber(dnstest.Offline(t), mode, nil)
					defer p.Close()
					results := make([]probe.Result, tc.n)
					var wg sync.WaitGroup
					for i := range tc.n {
						wg.Go(func() {
							tg := testTarget(tc.addr(i), 3, 20*time.Millisecond)
							// Generous: all replies end the round at once; a loaded
							// machine with -race may take seconds for 6,000 packets.
							tg.Timeout = 20 * time.Second
							ctx, cancel := context.WithTimeout(t.Context(), tg.Timeout)
							defer cancel()
							results[i] = p.Probe(ctx, tg)
						})
					}
					wg.Wait()
					bad := 0
					for i, r := range results {
						if !r.Success || r.ICMP == nil || r.ICMP.Sent != 3 || r.ICMP.Received != 3 {
							if bad++; bad <= 5 {
								t.Errorf("target %d (%s): success %v reason %q err %v icmp %+v, want 3/3", i, tc.addr(i), r.Success, r.Reason, r.Err, r.ICMP)
							}
						}
					}
					if bad > 0 {
						t.Errorf("%d of %d probes did not get exactly 3/3", bad, tc.n)
					}
				})
			}
		})
	}
}

// testReply builds an echo reply as the engine would receive it: with an
// IPv4 header for raw IPv4 sockets, without one otherwise.
func testReply(raw bool, id uint16, seq uint16, cookie, token uint32) []byte {
	icmpPkt := make([]byte, 8+payloadHeader+8)
	icmpPkt[0] = icmpv4EchoReply
	binary.BigEndian.PutUint16(icmpPkt[4:6], id)
	binary.BigEndian.PutUint16(icmpPkt[6:8], seq)
	binary.BigEndian.PutUint32(icmpPkt[8:12], cookie)
	binary.BigEndian.PutUint32(icmpPkt[12:16], token)
	if !raw {
		return icmpPkt
	}
	ip := make([]byte, 20, 20+len(icmpPkt))
	ip[0] = 0x45
	return append(ip, icmpPkt...)
}

func testName(addr string) *unix.RawSockaddrInet6 {
	var name unix.RawSockaddrInet6
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&name))
	sa4.Family = unix.AF_INET
	sa4.Addr = netip.MustParseAddr(addr).As4()
	return &name
}

// TestICMPEngineDeliver feeds crafted datagrams to the demultiplexer: only
// the first reply to a sent packet of a registered probe, from its address,
// with our cookie (and in raw mode our ID) counts.
func TestICMPEngineDeliver(t *testing.T) {
	type step struct {
		name string
		// mutate adjusts the reply; fields are raw, id, seq, cookie, token, src.
		mutate   func(r *testReplySpec)
		wantRecv int
	}
	tests := []struct {
		name  string
		raw   bool
		steps []step
	}{
		{
			name: "raw",
			raw:  true,
			steps: []step{
				{name: "first reply counts", wantRecv: 1},
				{name: "duplicate ignored", wantRecv: 1},
				{name: "other id ignored", mutate: func(r *testReplySpec) { r.seq = 1; r.id++ }, wantRecv: 1},
				{name: "other cookie ignored", mutate: func(r *testReplySpec) { r.seq, r.cookie = 1, r.cookie+1 }, wantRecv: 1},
				{name: "unknown token ignored", mutate: func(r *testReplySpec) { r.seq, r.token = 1, r.token+1 }, wantRecv: 1},
				{name: "other source ignored", mutate: func(r *testReplySpec) { r.seq, r.src = 1, "127.0.0.10" }, wantRecv: 1},
				{name: "unsent sequence ignored", mutate: func(r *testReplySpec) { r.seq = 2 }, wantRecv: 1},
				{name: "echo request ignored", mutate: func(r *testReplySpec) { r.seq, r.typ = 1, icmpv4EchoRequest }, wantRecv: 1},
				{name: "truncated ignored", mutate: func(r *testReplySpec) { r.seq, r.trunc = 1, true }, wantRecv: 1},
				{name: "second packet counts", mutate: func(r *testReplySpec) { r.seq = 1 }, wantRecv: 2},
			},
		},
		{
			name: "unprivileged ignores the id",
			steps: []step{
				{name: "rewritten id counts", mutate: func(r *testReplySpec) { r.id += 7 }, wantRecv: 1},
				{name: "duplicate ignored", mutate: func(r *testReplySpec) { r.id += 7 }, wantRecv: 1},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mode := ModeUnprivileged
			if tc.raw {
				mode = ModePrivileged
			}
			e := newTestEngine(t, mode)
			sink := &countSink{}
			sock := &engineSocket{raw: tc.raw}
			e.pmu.Lock()
			w := e.newFlight(&startSpec{round: roundSpec{addr: netip.MustParseAddr("127.0.0.9"), count: 3, interval: time.Millisecond, size: 56, timeout: time.Second}},
				sock, sink, e.mono(time.Now()))
			w.sent = 2 // packets 0 and 1 are out, 2 is not
			w.sendAt[0] = time.Now().Add(-time.Millisecond).UnixNano()
			w.sendAt[1] = time.Now().Add(-time.Millisecond).UnixNano()
			e.pmu.Unlock()
			for _, s := range tc.steps {
				spec := testReplySpec{id: e.id, cookie: e.cookie, token: w.token, src: "127.0.0.9", typ: icmpv4EchoReply}
				if s.mutate != nil {
					s.mutate(&spec)
				}
				pkt := testReply(tc.raw, spec.id, spec.seq, spec.cookie, spec.token)
				off := 0
				if tc.raw {
					off = 20
				}
				pkt[off] = spec.typ
				if spec.trunc {
					pkt = pkt[:off+8+payloadHeader-1]
				}
				var out outcomes
				e.pmu.Lock()
				e.deliver(false, tc.raw, pkt, testName(spec.src), nil, time.Now(), &out)
				got := w.recv
				e.pmu.Unlock()
				out.flush()
				if got != s.wantRecv {
					t.Errorf("after %q: received = %d, want %d", s.name, got, s.wantRecv)
				}
			}
			e.pmu.Lock()
			rtt := w.rttSum
			e.pmu.Unlock()
			if rtt < time.Millisecond {
				t.Errorf("RTT sum = %v, want at least 1ms (sent 1ms before delivery)", rtt)
			}
			if n := sink.n.Load(); n != 0 {
				t.Errorf("round finished with fewer than count replies (%d outcomes)", n)
			}
		})
	}
}

// countSink counts the outcomes it is handed and keeps the last.
type countSink struct {
	n    atomic.Int64
	mu   sync.Mutex
	last []outcome
}

func (c *countSink) done(o []outcome) {
	c.n.Add(int64(len(o)))
	c.mu.Lock()
	c.last = append(c.last, o...)
	c.mu.Unlock()
}

// testReplySpec describes one crafted reply for TestICMPEngineDeliver.
type testReplySpec struct {
	id, seq       uint16
	cookie, token uint32
	src           string
	typ           byte
	trunc         bool
}

// TestICMPEngineForeignTraffic runs probes while another pinger (fping, when
// installed, and a raw-socket pinger that even reuses the engine's ICMP ID
// and sequence numbers) sends echo requests to the same addresses. A raw
// socket sees all those replies; none may be counted.
func TestICMPEngineForeignTraffic(t *testing.T) {
	if !modeWorks(ModePrivileged, "ip4") {
		t.Skip("raw ICMP sockets need CAP_NET_RAW; unprivileged ping sockets never see foreign replies")
	}
	p := NewProber(dnstest.Offline(t), ModePrivileged, nil)
	defer p.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if fping, err := exec.LookPath("fping"); err == nil {
		cmd := exec.CommandContext(ctx, fping, "-q", "-c", "200", "-p", "10", "-i", "1", "127.0.0.1", "127.0.0.2")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start fping: %v", err)
		}
		wg.Go(func() { _ = cmd.Wait() })
	} else {
		t.Log("fping not installed; only the in-test foreign pinger runs")
	}
	foreign, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		t.Fatalf("foreign raw socket: %v", err)
	}
	defer unix.Close(foreign)
	foreignSent := make(chan int, 1)
	wg.Go(func() {
		// Same ID and sequence numbers as the engine, random-looking payload:
		// only the cookie and token tell the replies apart.
		pkt := make([]byte, 8+payloadHeader+40)
		pkt[0] = icmpv4EchoRequest
		binary.BigEndian.PutUint16(pkt[4:6], p.engine.id)
		n := 0
		for ; n < 20000 && ctx.Err() == nil; n++ {
			binary.BigEndian.PutUint16(pkt[6:8], uint16(n%3))
			binary.BigEndian.PutUint32(pkt[8:12], uint32(n)*2654435761)
			binary.BigEndian.PutUint32(pkt[12:16], uint32(n))
			pkt[2], pkt[3] = 0, 0
			binary.BigEndian.PutUint16(pkt[2:4], checksum(pkt))
			dst := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, byte(1 + n%2)}}
			if unix.Sendto(foreign, pkt, 0, dst) != nil {
				break
			}
			if n%100 == 99 {
				time.Sleep(time.Millisecond) // pace the flood, this is not synchronisation
			}
		}
		foreignSent <- n
	})

	for round := range 20 {
		var pwg sync.WaitGroup
		results := make([]probe.Result, 50)
		for i := range results {
			pwg.Go(func() {
				tg := testTarget(fmt.Sprintf("127.0.0.%d", 1+i%2), 3, 5*time.Millisecond)
				results[i] = p.Probe(ctx, tg)
			})
		}
		pwg.Wait()
		for i, r := range results {
			if r.ICMP == nil || r.ICMP.Sent != 3 || r.ICMP.Received != 3 {
				t.Fatalf("round %d probe %d: success %v reason %q err %v icmp %+v, want exactly 3/3", round, i, r.Success, r.Reason, r.Err, r.ICMP)
			}
		}
	}
	cancel()
	if n := <-foreignSent; n == 0 {
		t.Errorf("foreign pinger sent nothing; the test proved nothing")
	}
}

// TestICMPEngineClose checks that Close ends probes in flight at once, makes
// later probes fail, and releases every goroutine and file descriptor.
func TestICMPEngineClose(t *testing.T) {
	modes := modesOrSkip(t)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			fdsBefore := openFDs(t)
			p := NewProber(dnstest.Offline(t), mode, nil)
			// Open both families.
			for _, addr := range []string{"127.0.0.1", "::1"} {
				family := map[bool]string{true: "ip4", false: "ip6"}[addr == "127.0.0.1"]
				if !modeWorks(mode, family) {
					continue
				}
				if r := p.Probe(t.Context(), testTarget(addr, 1, time.Millisecond)); !r.Success {
					t.Fatalf("Probe(%s): %s: %v", addr, r.Reason, r.Err)
				}
			}
			if got := openFDs(t); got <= fdsBefore {
				t.Errorf("open fds after probing = %d, want more than %d (shared sockets)", got, fdsBefore)
			}

			// A probe of 5 packets 1s apart is in flight when Close runs.
			inFlight := make(chan probe.Result, 1)
			go func() {
				tg := testTarget("127.0.0.1", 5, time.Second)
				tg.Timeout = 10 * time.Second
				inFlight <- p.Probe(context.Background(), tg)
			}()
			// Wait (bounded) until its first packet is out.
			for i := 0; ; i++ {
				p.engine.pmu.Lock()
				n := len(p.engine.pending)
				p.engine.pmu.Unlock()
				if n > 0 {
					break
				}
				if i > 5000 {
					t.Fatal("probe never registered")
				}
				time.Sleep(time.Millisecond)
			}
			start := time.Now()
			p.Close()
			p.Close() // idempotent
			r := <-inFlight
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("in-flight probe ended %v after Close, want promptly", d)
			}
			if r.Success || r.Reason != probe.ReasonError {
				t.Errorf("in-flight probe = success %v reason %q (err %v), want failure with reason %q", r.Success, r.Reason, r.Err, probe.ReasonError)
			}
			after := p.Probe(t.Context(), testTarget("127.0.0.1", 1, time.Millisecond))
			if after.Success || after.Reason != probe.ReasonError || after.ICMP.Sent != 0 {
				t.Errorf("probe after Close = success %v reason %q sent %d, want failure, reason %q, 0 sent", after.Success, after.Reason, after.ICMP.Sent, probe.ReasonError)
			}
			if got := openFDs(t); got != fdsBefore {
				t.Errorf("open fds after Close = %d, want %d", got, fdsBefore)
			}
		})
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(ents) - 1 // the directory's own descriptor
}

func TestICMPChecksum(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint16
	}{
		// RFC 1071 section 3 example: the one's complement sum is 0xddf2.
		{name: "rfc1071", in: []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, want: ^uint16(0xddf2)},
		{name: "odd length", in: []byte{0x01}, want: ^uint16(0x0100)},
		{name: "empty", in: nil, want: 0xffff},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := checksum(tc.in); got != tc.want {
				t.Errorf("checksum(% x) = %#04x, want %#04x", tc.in, got, tc.want)
			}
		})
	}
}

func TestICMPRxTime(t *testing.T) {
	stamp := func(sec, nsec int64) []byte {
		b := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS
		h.SetLen(unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))))
		ts := (*unix.Timespec)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
		*ts = unix.NsecToTimespec(sec*1e9 + nsec)
		return b
	}
	other := func() []byte {
		b := make([]byte, unix.CmsgSpace(4))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.SOL_IP, unix.IP_TTL
		h.SetLen(unix.CmsgLen(4))
		return b
	}
	tests := []struct {
		name   string
		oob    []byte
		want   int64
		wantOK bool
	}{
		{name: "timestamp", oob: stamp(1700000000, 123), want: 1700000000*1e9 + 123, wantOK: true},
		{name: "after another message", oob: append(other(), stamp(5, 6)...), want: 5e9 + 6, wantOK: true},
		{name: "none", oob: nil},
		{name: "other only", oob: other()},
		{name: "bad length", oob: bytes.Repeat([]byte{0xff}, unix.SizeofCmsghdr)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := rxTime(tc.oob)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("rxTime = %d, %v, want %d, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestICMPEngineUnprivilegedNetns re-runs the ICMP tests inside a fresh
// network namespace whose net.ipv4.ping_group_range allows ping sockets, so
// the unprivileged mode is tested even where the host forbids it. It needs
// root, unshare(1) and ip(8).
func TestICMPEngineUnprivilegedNetns(t *testing.T) {
	if os.Getenv(netnsChildEnv) != "" {
		t.Skip("already inside the test namespace")
	}
	if modeWorks(ModeUnprivileged, "ip4") {
		t.Skip("unprivileged ping sockets already work here; the other tests cover them")
	}
	if os.Geteuid() != 0 {
		t.Skip("creating a network namespace needs root")
	}
	unshare, err1 := exec.LookPath("unshare")
	ip, err2 := exec.LookPath("ip")
	if err1 != nil || err2 != nil {
		t.Skip("unshare(1) and ip(8) are needed (util-linux, iproute2)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	script := ip + ` link set lo up && echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range && exec "$0" "$@"`
	cmd := exec.CommandContext(ctx, unshare, "--net", "--", "/bin/sh", "-c", script, self,
		"-test.run", `^(TestICMPEnginePing|TestICMPEngineManyTargets|TestICMPEngineClose|TestICMPProbe|TestICMPProbeBatch|TestICMPEngineSocketErrorRecovers|TestICMPEngineLanes|TestICMPEngineSenderDrains)$`,
		"-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tests in the namespace failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"--- PASS: TestICMPEnginePing/unprivileged/127.0.0.1_three_packets",
		"--- PASS: TestICMPEnginePing/unprivileged/::1_three_packets",
		"--- PASS: TestICMPEngineManyTargets/unprivileged/2000_IPv4_targets",
		"--- PASS: TestICMPEngineClose/unprivileged",
		"--- PASS: TestICMPProbeBatch/unprivileged/100_probes_of_::1,_count_3",
		"--- PASS: TestICMPEngineSocketErrorRecovers/unprivileged",
		"--- PASS: TestICMPEngineLanes/unprivileged/127.0.0.1",
		"--- PASS: TestICMPEngineLanes/unprivileged/::1",
		"--- PASS: TestICMPEngineSenderDrains/unprivileged",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("namespace run lacks %q:\n%s", want, out)
		}
	}
}

// BenchmarkICMPShared measures one probe of one packet through the shared
// engine on loopback, with probes running in parallel as the pool runs
// them. cpu-ns/ping is the process's user+system CPU time per ping.
func BenchmarkICMPShared(b *testing.B) {
	mode, err := DetectMode(false)
	if err != nil {
		b.Skipf("no ICMP socket permitted (%v)", err)
	}
	p := NewProber(dns.New(dns.Options{}), mode, nil)
	defer p.Close()
	targets := make([]*config.Target, 256)
	for i := range targets {
		targets[i] = testTarget(fmt.Sprintf("127.2.0.%d", i+1), 1, time.Millisecond)
	}
	var before, after unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	var mu sync.Mutex
	next := 0
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		tg := targets[next%len(targets)]
		next++
		mu.Unlock()
		for pb.Next() {
			if r := p.Probe(context.Background(), tg); !r.Success {
				b.Errorf("probe failed: %s: %v", r.Reason, r.Err)
				return
			}
		}
	})
	b.StopTimer()
	_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() - before.Utime.Nano() + after.Stime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/ping")
}

// TestICMPEngineSourceAddress pings loopback with and without a source
// address: each (family, source) pair gets its own socket, bound to the
// source, and a source that cannot be bound fails the round without a
// fallback and without keeping a socket.
func TestICMPEngineSourceAddress(t *testing.T) {
	for _, mode := range modesOrSkip(t) {
		t.Run(mode.String(), func(t *testing.T) {
			e := newIPv4TestEngine(t, mode)
			target := netip.MustParseAddr("127.0.0.1")
			round := func(src string) (stats, error) {
				r := roundSpec{addr: target, count: 2, interval: 5 * time.Millisecond, size: 56, timeout: 2 * time.Second}
				if src != "" {
					r.src = netip.MustParseAddr(src)
				}
				return e.ping(t.Context(), r)
			}
			for _, src := range []string{"", "127.0.0.2", "127.0.0.3", "127.0.0.2"} {
				if st, err := round(src); err != nil || st.recv != 2 {
					t.Fatalf("ping from %q: received %d of 2, err %v", src, st.recv, err)
				}
			}
			// Bound sockets answer getsockname with their source.
			e.mu.Lock()
			got := map[string]string{}
			for k, s := range e.socks {
				var name string
				if err := s.rc.Control(func(fd uintptr) {
					sa, err := unix.Getsockname(int(fd))
					if sa4, ok := sa.(*unix.SockaddrInet4); ok && err == nil {
						name = netip.AddrFrom4(sa4.Addr).String()
					}
				}); err != nil {
					t.Error(err)
				}
				got[k.src.String()] = name
			}
			e.mu.Unlock()
			want := map[string]string{"invalid IP": "0.0.0.0", "127.0.0.2": "127.0.0.2", "127.0.0.3": "127.0.0.3"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("sockets by source -> bound address (-want +got):\n%s", diff)
			}

			// 192.0.2.0/24 is documentation space: no machine has it.
			_, err := round("192.0.2.1")
			if err == nil || errors.Is(err, errEngineUnavailable) || probe.ReasonFor(err) != probe.ReasonUnreachable {
				t.Errorf("ping from an address of no interface: err %v (reason %q), want a bind error, reason unreachable, no fallback", err, probe.ReasonFor(err))
			}
			if _, err := round("::1"); err == nil || !strings.Contains(err.Error(), "different families") {
				t.Errorf("IPv6 source for an IPv4 target: err %v, want a family mismatch", err)
			}
			e.mu.Lock()
			n := 0
			for k := range e.socks {
				if k.lane == 0 { // a send that overlapped another opened its lane's socket too
					n++
				}
			}
			e.mu.Unlock()
			if n != 3 {
				t.Errorf("%d sockets open after the failed rounds, want the 3 that worked", n)
			}
		})
	}
}

// TestICMPEngineLanes sends every packet through lane 1 (lane 0 is held
// busy) and wants every reply back, once: a ping socket of lane 1 reads
// its own replies, and a raw socket of lane 1 is send-only (it blocks every
// type, so nothing queues on it and no reply is seen twice) while lane 0's
// socket reads.
func TestICMPEngineLanes(t *testing.T) {
	for _, mode := range modesOrSkip(t) {
		for _, addr := range []string{"127.0.0.1", "::1"} {
			t.Run(mode.String()+"/"+addr, func(t *testing.T) {
				target := netip.MustParseAddr(addr)
				family := "ip4"
				if target.Is6() {
					family = "ip6"
				}
				if !modeWorks(mode, family) {
					t.Skipf("%s ICMP socket for %s not available", mode, family)
				}
				e := newTestEngine(t, mode)
				if len(e.lanes) < 2 {
					e.lanes = append(e.lanes, &lane{idx: 1})
				}
				e.lanes[0].mu.Lock()
				st, err := e.ping(t.Context(), roundSpec{addr: target, count: 3, interval: 5 * time.Millisecond, size: 56, timeout: 2 * time.Second})
				e.lanes[0].mu.Unlock()
				if err != nil || st.sent != 3 || st.recv != 3 {
					t.Fatalf("ping through lane 1: sent/received %d/%d, err %v; want 3/3", st.sent, st.recv, err)
				}
				if d := e.discardedReplies(); d != [discardReasons]uint64{} {
					t.Errorf("discarded replies %v, want none", d)
				}
				e.mu.Lock()
				defer e.mu.Unlock()
				var l0, l1 *engineSocket
				for k, s := range e.socks {
					switch k.lane {
					case 0:
						l0 = s
					case 1:
						l1 = s
					}
				}
				if l0 == nil || l1 == nil {
					t.Fatalf("sockets by lane: 0 %v, 1 %v; want both open", l0, l1)
				}
				if want := mode == ModePrivileged; l1.sendOnly != want || l0.sendOnly {
					t.Errorf("send-only: lane 0 %v, lane 1 %v; want false, %v", l0.sendOnly, l1.sendOnly, want)
				}
				if l1.sendOnly {
					var queued int
					if err := l1.rc.Control(func(fd uintptr) {
						queued, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
					}); err != nil {
						t.Fatal(err)
					}
					if err != nil || queued != 0 {
						t.Errorf("send-only raw socket has %d bytes queued (err %v), want 0", queued, err)
					}
				}
			})
		}
	}
}

// TestICMPEngineSenderDrains holds the reader off as a send in progress
// does and wants a round on loopback to complete anyway: the sender reads
// the replies its sendmmsg made arrive (drain), so the reader is not woken
// for them a few at a time. When the reply comes too late for the send's
// own drain, a later drain (the next send) takes it.
func TestICMPEngineSenderDrains(t *testing.T) {
	for _, mode := range modesOrSkip(t) {
		t.Run(mode.String(), func(t *testing.T) {
			e := newIPv4TestEngine(t, mode)
			spec := roundSpec{addr: netip.MustParseAddr("127.0.0.1"), count: 1, size: 56, timeout: 5 * time.Second}
			if st, err := e.ping(t.Context(), spec); err != nil || st.recv != 1 {
				t.Fatalf("first ping: received %d, err %v", st.recv, err)
			}
			e.mu.Lock()
			s := e.socks[sockKey{}]
			e.mu.Unlock()
			if s == nil {
				t.Fatal("no lane 0 socket after a ping")
			}
			s.sending.Add(1) // as a send in progress: the reader leaves the socket alone
			sink := &countSink{}
			e.start(t.Context(), []startSpec{{round: spec}}, sink)
			l := e.lanes[0]
			for deadline := time.Now().Add(2 * time.Second); sink.n.Load() == 0 && time.Now().Before(deadline); {
				var out outcomes
				l.mu.Lock()
				e.drain(s, l, &out)
				l.mu.Unlock()
				out.flush()
				time.Sleep(time.Millisecond)
			}
			s.sending.Add(-1)
			sink.mu.Lock()
			got := slices.Clone(sink.last)
			sink.mu.Unlock()
			if len(got) != 1 || got[0].st.recv != 1 || got[0].err != nil {
				t.Fatalf("with the reader held off: outcomes %+v, want one round with its reply", got)
			}
			// The reader serves the socket again once no send is in progress.
			if st, err := e.ping(t.Context(), spec); err != nil || st.recv != 1 {
				t.Errorf("ping after the sends: received %d, err %v", st.recv, err)
			}
		})
	}
}
