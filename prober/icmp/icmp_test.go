package icmp

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/internal/dns/dnstest"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// modeWorks reports whether a socket of mode can be opened for the
// address family of network ("ip4" or "ip6").
func modeWorks(mode Mode, network string) bool {
	var proto, laddr string
	switch {
	case mode == ModeUnprivileged && network == "ip4":
		proto, laddr = "udp4", "0.0.0.0"
	case mode == ModeUnprivileged:
		proto, laddr = "udp6", "::"
	case network == "ip4":
		proto, laddr = "ip4:icmp", "0.0.0.0"
	default:
		proto, laddr = "ip6:ipv6-icmp", "::"
	}
	c, err := icmp.ListenPacket(proto, laddr)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// modesOrSkip returns the ICMP modes this process may use, skipping the
// test when there is none.
func modesOrSkip(t *testing.T) []Mode {
	t.Helper()
	var modes []Mode
	for _, m := range []Mode{ModeUnprivileged, ModePrivileged} {
		if modeWorks(m, "ip4") {
			modes = append(modes, m)
		}
	}
	if len(modes) == 0 {
		t.Skip("no ICMP socket permitted: grant CAP_NET_RAW or set sysctl net.ipv4.ping_group_range to include this group")
	}
	return modes
}

// testTarget returns an ICMP target of the set "test": count echo requests
// to name, interval apart.
func testTarget(name string, count int, interval time.Duration) *config.Target {
	return testutil.ICMPTarget("test", name, testutil.WithICMP(count, interval))
}

func TestICMPModeString(t *testing.T) {
	tests := []struct {
		mode Mode
		want string
	}{
		{ModeUnprivileged, "unprivileged"},
		{ModePrivileged, "privileged (raw socket)"},
		{Mode(7), "Mode(7)"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.mode.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDetectICMPMode(t *testing.T) {
	dgram := modeWorks(ModeUnprivileged, "ip4")
	raw := modeWorks(ModePrivileged, "ip4")
	tests := []struct {
		name     string
		force    bool
		wantMode Mode
		wantErr  bool
	}{
		{
			name: "auto", force: false,
			wantMode: map[bool]Mode{true: ModeUnprivileged, false: ModePrivileged}[dgram],
			wantErr:  !dgram && !raw,
		},
		{name: "force privileged", force: true, wantMode: ModePrivileged, wantErr: !raw},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mode, err := DetectMode(tc.force)
			if (err != nil) != tc.wantErr {
				t.Fatalf("DetectMode(%v) error = %v, want error %v (dgram ok %v, raw ok %v)", tc.force, err, tc.wantErr, dgram, raw)
			}
			if err != nil {
				for _, hint := range []string{"CAP_NET_RAW", "ping_group_range"} {
					if !strings.Contains(err.Error(), hint) {
						t.Errorf("error %q does not mention %s", err, hint)
					}
				}
				if probe.ReasonFor(err) != probe.ReasonPermission {
					t.Errorf("probe.ReasonFor(%v) = %q, want %q", err, probe.ReasonFor(err), probe.ReasonPermission)
				}
				return
			}
			if mode != tc.wantMode {
				t.Errorf("DetectMode(%v) = %v, want %v (dgram ok %v, raw ok %v)", tc.force, mode, tc.wantMode, dgram, raw)
			}
		})
	}
}

func TestICMPProbe(t *testing.T) {
	modes := modesOrSkip(t)
	tests := []struct {
		name       string
		target     *config.Target
		family     string
		wantOK     bool
		wantReason probe.Reason
		wantSent   int
		wantRecv   int
	}{
		{name: "127.0.0.1 three packets", target: testTarget("127.0.0.1", 3, 10*time.Millisecond), family: "ip4", wantOK: true, wantSent: 3, wantRecv: 3},
		{name: "127.0.0.2", target: testTarget("127.0.0.2", 2, 10*time.Millisecond), family: "ip4", wantOK: true, wantSent: 2, wantRecv: 2},
		{name: "127.45.6.7", target: testTarget("127.45.6.7", 1, 10*time.Millisecond), family: "ip4", wantOK: true, wantSent: 1, wantRecv: 1},
		{name: "localhost by name", target: testTarget("localhost", 1, 10*time.Millisecond), family: "ip4", wantOK: true, wantSent: 1, wantRecv: 1},
		{name: "::1", target: testTarget("::1", 3, 10*time.Millisecond), family: "ip6", wantOK: true, wantSent: 3, wantRecv: 3},
		{
			name: "large payload",
			target: func() *config.Target {
				tg := testTarget("127.0.0.1", 1, 10*time.Millisecond)
				tg.ICMP.Size = 1400
				return tg
			}(),
			family: "ip4", wantOK: true, wantSent: 1, wantRecv: 1,
		},
		{
			name: "tiny payload is raised to pro-bing's minimum",
			target: func() *config.Target {
				tg := testTarget("127.0.0.1", 1, 10*time.Millisecond)
				tg.ICMP.Size = 1
				return tg
			}(),
			family: "ip4", wantOK: true, wantSent: 1, wantRecv: 1,
		},
		{name: "unresolvable name", target: testTarget("x.invalid", 3, 10*time.Millisecond), family: "ip4", wantReason: probe.ReasonDNS},
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					if !modeWorks(mode, tc.family) {
						t.Skipf("%s ICMP socket for %s not available (IPv6 loopback disabled?)", mode, tc.family)
					}
					p := NewProber(dnstest.Offline(t), mode, slog.New(slog.DiscardHandler))
					defer p.Close()
					ctx, cancel := context.WithTimeout(t.Context(), tc.target.Timeout)
					defer cancel()
					got := p.Probe(ctx, tc.target)
					if got.Success != tc.wantOK || got.Reason != tc.wantReason {
						t.Fatalf("Probe(%s) = success %v reason %q (err %v), want success %v reason %q",
							tc.target.Name, got.Success, got.Reason, got.Err, tc.wantOK, tc.wantReason)
					}
					if got.ICMP == nil {
						t.Fatalf("probe.Result.ICMP is nil")
					}
					if got.ICMP.Sent != tc.wantSent || got.ICMP.Received != tc.wantRecv {
						t.Errorf("sent/received = %d/%d, want %d/%d", got.ICMP.Sent, got.ICMP.Received, tc.wantSent, tc.wantRecv)
					}
					if tc.wantRecv > 0 && got.ICMP.RTT <= 0 {
						t.Errorf("RTT = %v, want > 0", got.ICMP.RTT)
					}
					if tc.wantRecv == 0 && got.ICMP.RTT != 0 {
						t.Errorf("RTT = %v with no reply, want 0", got.ICMP.RTT)
					}
					if got.Duration <= 0 {
						t.Errorf("Duration = %v, want > 0", got.Duration)
					}
				})
			}
		})
	}
}

func TestICMPProbeStopsWithContext(t *testing.T) {
	modes := modesOrSkip(t)
	tests := []struct {
		name       string
		ctx        func() (context.Context, context.CancelFunc)
		wantOK     bool
		wantReason probe.Reason
		wantSent   int
	}{
		{
			// Five packets a second apart would take four seconds; the
			// deadline ends the round after the first reply.
			name: "deadline mid-round",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 100*time.Millisecond)
			},
			wantOK: true, wantSent: 1,
		},
		{
			name: "deadline already passed",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			},
			wantReason: probe.ReasonTimeout,
		},
		{
			name: "cancelled before start",
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
			wantReason: probe.ReasonError,
		},
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					p := NewProber(dnstest.Offline(t), mode, nil)
					defer p.Close()
					target := testTarget("127.0.0.1", 5, time.Second)
					target.Timeout = 10 * time.Second
					ctx, cancel := tc.ctx()
					defer cancel()
					start := time.Now()
					got := p.Probe(ctx, target)
					if elapsed := time.Since(start); elapsed > 900*time.Millisecond {
						t.Errorf("Probe took %v, did not stop with the context", elapsed)
					}
					if got.Success != tc.wantOK || got.Reason != tc.wantReason {
						t.Fatalf("Probe = success %v reason %q (err %v), want success %v reason %q",
							got.Success, got.Reason, got.Err, tc.wantOK, tc.wantReason)
					}
					if got.ICMP == nil || got.ICMP.Sent != tc.wantSent {
						t.Errorf("ICMP = %+v, want %d sent", got.ICMP, tc.wantSent)
					}
				})
			}
		})
	}
}

// TestICMPProbeTimeoutBoundsRound checks that the target's timeout, not only
// the context, ends a round: packets that were never sent are not counted.
func TestICMPProbeTimeoutBoundsRound(t *testing.T) {
	modes := modesOrSkip(t)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			p := NewProber(dnstest.Offline(t), mode, nil)
			defer p.Close()
			target := testTarget("127.0.0.1", 10, 200*time.Millisecond)
			target.Timeout = 300 * time.Millisecond
			got := p.Probe(t.Context(), target)
			if !got.Success {
				t.Fatalf("Probe failed: %s: %v", got.Reason, got.Err)
			}
			if got.ICMP.Sent < 1 || got.ICMP.Sent > 3 {
				t.Errorf("sent %d packets in a 300ms round at 200ms spacing, want 1..3", got.ICMP.Sent)
			}
			if got.ICMP.Received != got.ICMP.Sent {
				t.Errorf("received %d of %d on loopback", got.ICMP.Received, got.ICMP.Sent)
			}
		})
	}
}

// TestICMPProbePermission probes in a mode the kernel refuses and expects a
// permission failure rather than a crash.
func TestICMPProbePermission(t *testing.T) {
	var denied []Mode
	for _, m := range []Mode{ModeUnprivileged, ModePrivileged} {
		if !modeWorks(m, "ip4") {
			denied = append(denied, m)
		}
	}
	if len(denied) == 0 {
		t.Skip("every ICMP socket mode is permitted here; narrow net.ipv4.ping_group_range (e.g. \"1 0\") to exercise the denied path")
	}
	for _, mode := range denied {
		t.Run(mode.String(), func(t *testing.T) {
			p := NewProber(dnstest.Offline(t), mode, nil)
			defer p.Close()
			got := p.Probe(t.Context(), testTarget("127.0.0.1", 1, 10*time.Millisecond))
			if got.Success || got.Reason != probe.ReasonPermission {
				t.Fatalf("Probe = success %v reason %q (err %v), want reason %q", got.Success, got.Reason, got.Err, probe.ReasonPermission)
			}
			if got.ICMP == nil || got.ICMP.Sent != 0 {
				t.Errorf("ICMP = %+v, want 0 sent", got.ICMP)
			}
		})
	}
}

func TestICMPLogger(t *testing.T) {
	tests := []struct {
		name      string
		call      func(l proBingLogger)
		level     slog.Level
		wantLines []string
	}{
		{
			name:      "fatal goes to debug",
			call:      func(l proBingLogger) { l.Fatalf("sending packet: %s", "boom") },
			level:     slog.LevelDebug,
			wantLines: []string{`level=DEBUG msg="pro-bing message" host=h1 pro_bing_level=fatal detail="sending packet: boom"`},
		},
		{
			name:      "warn goes to debug",
			call:      func(l proBingLogger) { l.Warnf("x=%d", 3) },
			level:     slog.LevelDebug,
			wantLines: []string{`level=DEBUG msg="pro-bing message" host=h1 pro_bing_level=warn detail="x=3"`},
		},
		{
			name: "all levels",
			call: func(l proBingLogger) {
				l.Errorf("e")
				l.Infof("i")
				l.Debugf("d")
			},
			level: slog.LevelDebug,
			wantLines: []string{
				`level=DEBUG msg="pro-bing message" host=h1 pro_bing_level=error detail=e`,
				`level=DEBUG msg="pro-bing message" host=h1 pro_bing_level=info detail=i`,
				`level=DEBUG msg="pro-bing message" host=h1 pro_bing_level=debug detail=d`,
			},
		},
		{
			name:  "silent above debug",
			call:  func(l proBingLogger) { l.Fatalf("boom") },
			level: slog.LevelInfo,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
				Level: tc.level,
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				},
			})
			tc.call(proBingLogger{logger: slog.New(h), host: "h1"})
			got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			if buf.Len() == 0 {
				got = nil
			}
			if strings.Join(got, "\n") != strings.Join(tc.wantLines, "\n") {
				t.Errorf("log lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.wantLines, "\n"))
			}
		})
	}
}

func TestICMPTimeout(t *testing.T) {
	tests := []struct {
		name     string
		target   config.Target
		deadline time.Duration // 0: no deadline
		want     time.Duration
		approx   bool
	}{
		{name: "target timeout", target: config.Target{Timeout: 3 * time.Second}, want: 3 * time.Second},
		{name: "icmp timeout when target has none", target: config.Target{ICMP: &config.ICMPProbe{Timeout: config.Duration(4 * time.Second)}}, want: 4 * time.Second},
		{name: "default", target: config.Target{}, want: defaultTimeout},
		{name: "context deadline is shorter", target: config.Target{Timeout: time.Hour}, deadline: time.Minute, want: time.Minute, approx: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			got := roundTimeout(ctx, &tc.target)
			if tc.approx {
				if got > tc.want || got < tc.want-time.Second {
					t.Errorf("roundTimeout = %v, want about %v", got, tc.want)
				}
				return
			}
			if got != tc.want {
				t.Errorf("roundTimeout = %v, want %v", got, tc.want)
			}
		})
	}
}

func BenchmarkICMPProbe(b *testing.B) {
	mode, err := DetectMode(false)
	if err != nil {
		b.Skipf("no ICMP socket permitted (%v)", err)
	}
	p := NewProber(dns.New(dns.Options{}), mode, nil)
	defer p.Close()
	target := testTarget(netip.MustParseAddr("127.0.0.1").String(), 1, 10*time.Millisecond)
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), target.Timeout)
		r := p.Probe(ctx, target)
		cancel()
		if !r.Success {
			b.Fatalf("probe failed: %s: %v", r.Reason, r.Err)
		}
	}
}
