package tcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/internal/dns/dnstest"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// iPv6Loopback reports whether ::1 can be listened on.
func iPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

// testTarget returns a TCP target of the set "test" for host, with port
// (0: none) in the host entry and probePort (0: none) in the probe config.
func testTarget(host string, port, probePort int) *config.Target {
	if port != 0 {
		host = net.JoinHostPort(host, strconv.Itoa(port))
	}
	return testutil.TCPTarget("test", host, testutil.WithTCPPort(probePort))
}

func TestTCPProbe(t *testing.T) {
	open4 := testutil.TCPListener(t, "127.0.0.1")
	closed4 := testutil.FreePort(t, "127.0.0.1")

	tests := []struct {
		name       string
		target     *config.Target
		needIPv6   bool
		wantOK     bool
		wantReason probe.Reason
	}{
		{name: "open port from host entry", target: testTarget("127.0.0.1", open4, 1), wantOK: true},
		{name: "open port from probe config", target: testTarget("127.0.0.1", 0, open4), wantOK: true},
		{name: "open port via localhost", target: testTarget("localhost", open4, 0), wantOK: true},
		{name: "closed port", target: testTarget("127.0.0.1", closed4, 0), wantReason: probe.ReasonRefused},
		{name: "unresolvable name", target: testTarget("host.invalid", open4, 0), wantReason: probe.ReasonDNS},
		{name: "no port at all", target: testTarget("127.0.0.1", 0, 0), wantReason: probe.ReasonConfig},
		{name: "port out of range", target: testTarget("127.0.0.1", 70000, 0), wantReason: probe.ReasonConfig},
		{name: "ipv6 open port", target: nil, needIPv6: true, wantOK: true},
		{name: "ipv6 closed port", target: nil, needIPv6: true, wantReason: probe.ReasonRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target
			if tc.needIPv6 {
				if !iPv6Loopback() {
					t.Skip("IPv6 loopback ::1 unavailable; enable IPv6 on lo to run this case")
				}
				if tc.wantOK {
					target = testTarget("::1", testutil.TCPListener(t, "::1"), 0)
				} else {
					target = testTarget("::1", testutil.FreePort(t, "::1"), 0)
				}
			}
			p := NewProber(dnstest.Offline(t))
			ctx, cancel := context.WithTimeout(t.Context(), target.Timeout)
			defer cancel()
			got := p.Probe(ctx, target)
			if got.Success != tc.wantOK || got.Reason != tc.wantReason {
				t.Fatalf("Probe(%s port %d/%d) = success %v reason %q (err %v), want success %v reason %q",
					target.Name, target.Port, target.TCP.Port, got.Success, got.Reason, got.Err, tc.wantOK, tc.wantReason)
			}
			if got.Success && got.Err != nil {
				t.Errorf("successful probe carries error %v", got.Err)
			}
			if !got.Success && got.Err == nil {
				t.Errorf("failed probe carries no error")
			}
			if got.Duration <= 0 {
				t.Errorf("Duration = %v, want > 0", got.Duration)
			}
			if got.ICMP != nil || got.SSH != nil {
				t.Errorf("TCP result has type-specific parts: %+v", got)
			}
		})
	}
}

func TestTCPProbeContextDone(t *testing.T) {
	open4 := testutil.TCPListener(t, "127.0.0.1")
	tests := []struct {
		name       string
		ctx        func() (context.Context, context.CancelFunc)
		wantReason probe.Reason
	}{
		{
			name: "deadline already passed",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			},
			wantReason: probe.ReasonTimeout,
		},
		{
			name: "cancelled",
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
			wantReason: probe.ReasonError,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			got := NewProber(dnstest.Offline(t)).Probe(ctx, testTarget("127.0.0.1", open4, 0))
			if got.Success || got.Reason != tc.wantReason {
				t.Errorf("Probe = success %v reason %q (err %v), want failure %q", got.Success, got.Reason, got.Err, tc.wantReason)
			}
		})
	}
}

// timeoutError is a net.Error that says it timed out.
type timeoutError struct{}

func (timeoutError) Error() string   { return "fake timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestReasonFor(t *testing.T) {
	opErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	tests := []struct {
		name string
		err  error
		want probe.Reason
	}{
		{name: "nil", err: nil, want: probe.ReasonNone},
		{name: "probe.ErrDNS", err: probe.ErrDNS, want: probe.ReasonDNS},
		{name: "wrapped probe.ErrDNS", err: fmt.Errorf("lookup: %w", probe.ErrDNS), want: probe.ReasonDNS},
		{name: "probe.ErrDNS wrapping a deadline", err: fmt.Errorf("%w: %w", probe.ErrDNS, context.DeadlineExceeded), want: probe.ReasonDNS},
		{name: "net.DNSError", err: &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, want: probe.ReasonDNS},
		{name: "ECONNREFUSED", err: syscall.ECONNREFUSED, want: probe.ReasonRefused},
		{name: "ECONNREFUSED in OpError", err: opErr(syscall.ECONNREFUSED), want: probe.ReasonRefused},
		{name: "context deadline", err: context.DeadlineExceeded, want: probe.ReasonTimeout},
		{name: "wrapped context deadline", err: fmt.Errorf("probe: %w", context.DeadlineExceeded), want: probe.ReasonTimeout},
		{name: "os deadline", err: os.ErrDeadlineExceeded, want: probe.ReasonTimeout},
		{name: "ETIMEDOUT", err: opErr(syscall.ETIMEDOUT), want: probe.ReasonTimeout},
		{name: "net.Error timeout", err: &net.OpError{Op: "read", Err: timeoutError{}}, want: probe.ReasonTimeout},
		{name: "EHOSTUNREACH", err: opErr(syscall.EHOSTUNREACH), want: probe.ReasonUnreachable},
		{name: "ENETUNREACH", err: opErr(syscall.ENETUNREACH), want: probe.ReasonUnreachable},
		{name: "EADDRNOTAVAIL", err: opErr(syscall.EADDRNOTAVAIL), want: probe.ReasonUnreachable},
		{name: "EPERM", err: opErr(syscall.EPERM), want: probe.ReasonPermission},
		{name: "EACCES", err: &net.OpError{Op: "listen", Err: os.NewSyscallError("socket", syscall.EACCES)}, want: probe.ReasonPermission},
		{name: "os.ErrPermission", err: os.ErrPermission, want: probe.ReasonPermission},
		{name: "context cancelled", err: context.Canceled, want: probe.ReasonError},
		{name: "ECONNRESET", err: opErr(syscall.ECONNRESET), want: probe.ReasonError},
		{name: "other", err: errors.New("boom"), want: probe.ReasonError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := probe.ReasonFor(tc.err); got != tc.want {
				t.Errorf("probe.ReasonFor(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

func BenchmarkTCPProbe(b *testing.B) {
	port := testutil.TCPListener(b, "127.0.0.1")
	p := NewProber(dns.New(dns.Options{}))
	target := testTarget("127.0.0.1", port, 0)
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
