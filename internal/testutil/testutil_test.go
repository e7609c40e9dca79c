package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleet-exporter/fleet_exporter/config"
)

func TestFreePort(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "127.0.0.3"} {
		t.Run(ip, func(t *testing.T) {
			port := FreePort(t, ip)
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				t.Fatalf("port %d from FreePort is not free: %v", port, err)
			}
			_ = ln.Close()
		})
	}
}

func TestTCPListener(t *testing.T) {
	port := TCPListener(t, "127.0.0.1")
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		t.Fatalf("dial listener: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(time.Second))
	// The listener closes every connection: the read ends with EOF, not a
	// timeout.
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("read from a closed connection succeeded")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("read = %v, want the connection closed by the listener", err)
	}
	_ = c.Close()
}

func TestNewTarget(t *testing.T) {
	tests := []struct {
		name string
		got  *config.Target
		want config.Target
	}{
		{
			name: "icmp",
			got:  ICMPTarget("s", "10.0.0.1", WithICMP(3, time.Millisecond), WithFingerprint("fp")),
			want: config.Target{
				Set: "s", Host: "10.0.0.1", Name: "10.0.0.1", Probe: config.ProbeICMP,
				Interval: DefaultInterval, Timeout: DefaultTimeout, Fingerprint: "fp",
				ICMP: &config.ICMPProbe{Count: 3, PacketInterval: config.Duration(time.Millisecond), Size: config.DefaultICMPSize},
			},
		},
		{
			name: "tcp with port in host",
			got:  TCPTarget("s", "127.0.0.1:8080", WithTCPPort(80), WithLabels(map[string]string{"dc": "fra"}), WithFingerprint("fp")),
			want: config.Target{
				Set: "s", Host: "127.0.0.1:8080", Name: "127.0.0.1", Port: 8080, Probe: config.ProbeTCP,
				Interval: DefaultInterval, Timeout: DefaultTimeout, Labels: map[string]string{"dc": "fra"},
				TCP: &config.TCPProbe{Port: 80}, Fingerprint: "fp",
			},
		},
		{
			name: "ssh on v6 with commands",
			got: SSHTarget("s", "[::1]:2222", WithCommands("uptime", "id"), WithInterval(time.Second),
				WithTimeout(time.Millisecond), WithFingerprint("fp")),
			want: config.Target{
				Set: "s", Host: "[::1]:2222", Name: "::1", Port: 2222, Probe: config.ProbeSSH,
				Interval: time.Second, Timeout: time.Millisecond, Fingerprint: "fp",
				SSH: &config.SSHProbe{
					Port: config.DefaultSSHPort, MaxOutputBytes: config.DefaultMaxOutputBytes,
					Commands: []config.Command{{Name: "uptime", Run: "uptime"}, {Name: "id", Run: "id"}},
				},
			},
		},
		{
			name: "ssh with own config",
			got:  SSHTarget("s", "h", WithSSH(&config.SSHProbe{Port: 22, User: "u"}), WithFingerprint("fp")),
			want: config.Target{
				Set: "s", Host: "h", Name: "h", Probe: config.ProbeSSH,
				Interval: DefaultInterval, Timeout: DefaultTimeout, Fingerprint: "fp",
				SSH: &config.SSHProbe{Port: 22, User: "u"},
			},
		},
		{
			name: "other probe type has no probe config",
			got:  NewTarget("s", "h", "fake", WithFingerprint("fp")),
			want: config.Target{
				Set: "s", Host: "h", Name: "h", Probe: "fake",
				Interval: DefaultInterval, Timeout: DefaultTimeout, Fingerprint: "fp",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, *tt.got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("target mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFingerprintDerived(t *testing.T) {
	base := TCPTarget("s", "h:1")
	if base.Fingerprint == "" {
		t.Fatal("no fingerprint derived")
	}
	tests := []struct {
		name  string
		other *config.Target
		same  bool
	}{
		{"identical", TCPTarget("s", "h:1"), true},
		{"labels", TCPTarget("s", "h:1", WithLabels(map[string]string{"a": "b"})), false},
		{"interval", TCPTarget("s", "h:1", WithInterval(time.Second)), false},
		{"probe port", TCPTarget("s", "h:1", WithTCPPort(2)), false},
		{"host", TCPTarget("s", "h:2"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if same := tt.other.Fingerprint == base.Fingerprint; same != tt.same {
				t.Errorf("fingerprints %q and %q: same = %v, want %v", base.Fingerprint, tt.other.Fingerprint, same, tt.same)
			}
		})
	}
}

func TestClock(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	c := NewClock(start)
	steps := []struct {
		advance time.Duration
		want    time.Time
	}{
		{0, start},
		{time.Second, start.Add(time.Second)},
		{time.Hour, start.Add(time.Hour + time.Second)},
		{-time.Second, start.Add(time.Hour)},
	}
	for i, s := range steps {
		c.Advance(s.advance)
		if got := c.Now(); !got.Equal(s.want) {
			t.Errorf("step %d: Now() = %v, want %v", i, got, s.want)
		}
	}
}

func TestStart(t *testing.T) {
	started := make(chan struct{})
	var sawCancel bool
	stop := Start(t, func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		sawCancel = true
		return nil
	})
	<-started
	stop()
	if !sawCancel {
		t.Error("stop returned before run saw its context end")
	}

	// A run that fails is reported by stop.
	ft := &fakeTB{TB: t}
	Start(ft, func(context.Context) error { return errors.New("boom") })()
	if !ft.failed {
		t.Error("stop did not report run's error")
	}
}

// fakeTB records Errorf instead of failing the test.
type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Errorf(string, ...any) { f.failed = true }

// TestBuffer writes from several goroutines while reading (the race
// detector watches), then checks that every write arrived whole and that
// Reset empties the buffer.
func TestBuffer(t *testing.T) {
	var b Buffer
	const writers, lines = 4, 200
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for range lines {
				_, _ = fmt.Fprintf(&b, "writer %d\n", i)
			}
		})
	}
	wg.Go(func() {
		for range lines {
			_ = b.String()
		}
	})
	wg.Wait()
	got := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines, want %d", len(got), writers*lines)
	}
	for _, l := range got {
		if !strings.HasPrefix(l, "writer ") || len(l) != len("writer 0") {
			t.Fatalf("torn line %q", l)
		}
	}
	b.Reset()
	if s := b.String(); s != "" {
		t.Errorf("after Reset: %q, want empty", s)
	}
}

func TestSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fx_test_total", Help: "Test."}, []string{"set", "result"})
	reg.MustRegister(c, prometheus.NewGauge(prometheus.GaugeOpts{Name: "fx_other", Help: "Other."}))
	c.WithLabelValues("a", "ok").Add(1)
	c.WithLabelValues("a", "fail").Add(2)
	c.WithLabelValues("b", "ok").Add(3)
	sum := func(ms []*dto.Metric) (n float64) {
		for _, m := range ms {
			n += m.GetCounter().GetValue()
		}
		return n
	}
	tests := []struct {
		name   string
		family string
		labels map[string]string
		want   int
		sum    float64
	}{
		{"every series", "fx_test_total", nil, 3, 6},
		{"one label", "fx_test_total", map[string]string{"set": "a"}, 2, 3},
		{"two labels", "fx_test_total", map[string]string{"set": "a", "result": "fail"}, 1, 2},
		{"no match", "fx_test_total", map[string]string{"set": "c"}, 0, 0},
		{"empty value matches a missing label", "fx_test_total", map[string]string{"port": ""}, 3, 6},
		{"missing family", "fx_none", nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Series(t, reg, tt.family, tt.labels)
			if len(got) != tt.want || sum(got) != tt.sum {
				t.Errorf("Series(%s, %v): %d series summing to %v, want %d summing to %v", tt.family, tt.labels, len(got), sum(got), tt.want, tt.sum)
			}
		})
	}
}
