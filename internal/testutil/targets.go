package testutil

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// Test defaults of the targets built here: short enough that a probe of a
// dead loopback peer ends quickly, long enough for the race detector.
const (
	// DefaultInterval is a built target's Interval.
	DefaultInterval = time.Minute
	// DefaultTimeout is a built target's Timeout.
	DefaultTimeout = 5 * time.Second
	// DefaultICMPPacketInterval is a built ICMP target's packet interval,
	// far below config's default so multi-packet rounds stay fast.
	DefaultICMPPacketInterval = 10 * time.Millisecond
)

// TargetOption changes a target that NewTarget, ICMPTarget, TCPTarget or
// SSHTarget builds.
type TargetOption func(*config.Target)

// NewTarget returns a target of set for the host entry host ("name",
// "name:port" or "[v6]:port", as in a host set) and the probe type probe,
// as config's expansion would build it: Name and Port come from host, the
// probe's configuration is the test default of its type (see ICMPTarget,
// TCPTarget, SSHTarget), Interval and Timeout are DefaultInterval and
// DefaultTimeout. opts apply in order; unless one sets it, Fingerprint is
// derived from everything else afterwards, so two targets that differ in
// anything have different fingerprints.
func NewTarget(set, host, probe string, opts ...TargetOption) *config.Target {
	t := &config.Target{
		Set: set, Host: host, Name: host, Probe: probe,
		Interval: DefaultInterval, Timeout: DefaultTimeout,
	}
	if name, port, err := net.SplitHostPort(host); err == nil {
		if p, err := strconv.Atoi(port); err == nil {
			t.Name, t.Port = name, p
		}
	}
	switch probe {
	case config.ProbeICMP:
		t.ICMP = &config.ICMPProbe{
			Count: config.DefaultICMPCount, PacketInterval: config.Duration(DefaultICMPPacketInterval),
			Size: config.DefaultICMPSize,
		}
	case config.ProbeTCP:
		t.TCP = &config.TCPProbe{}
	case config.ProbeSSH:
		t.SSH = &config.SSHProbe{Port: config.DefaultSSHPort, MaxOutputBytes: config.DefaultMaxOutputBytes}
	}
	for _, o := range opts {
		o(t)
	}
	if t.Fingerprint == "" {
		t.Fingerprint = fingerprint(t)
	}
	return t
}

// ICMPTarget returns an ICMP target: one echo request of
// config.DefaultICMPSize bytes, DefaultICMPPacketInterval apart when
// WithICMP asks for more.
func ICMPTarget(set, host string, opts ...TargetOption) *config.Target {
	return NewTarget(set, host, config.ProbeICMP, opts...)
}

// TCPTarget returns a TCP target. Its probe has no port of its own: give the
// port in host, or with WithTCPPort.
func TCPTarget(set, host string, opts ...TargetOption) *config.Target {
	return NewTarget(set, host, config.ProbeTCP, opts...)
}

// SSHTarget returns an SSH target whose probe uses port 22 and config's
// output limit, and has no user, credentials or commands: add them with
// WithSSH or WithCommands.
func SSHTarget(set, host string, opts ...TargetOption) *config.Target {
	return NewTarget(set, host, config.ProbeSSH, opts...)
}

// WithLabels sets the set's static labels.
func WithLabels(labels map[string]string) TargetOption {
	return func(t *config.Target) { t.Labels = labels }
}

// WithInterval sets the interval.
func WithInterval(d time.Duration) TargetOption {
	return func(t *config.Target) { t.Interval = d }
}

// WithRetryInterval sets the time from a failed probe to the next one.
func WithRetryInterval(d time.Duration) TargetOption {
	return func(t *config.Target) { t.RetryInterval = d }
}

// WithSourceAddress sets the local address the probe sends from.
func WithSourceAddress(a netip.Addr) TargetOption {
	return func(t *config.Target) { t.SourceAddress = a }
}

// WithTimeout sets the timeout.
func WithTimeout(d time.Duration) TargetOption {
	return func(t *config.Target) { t.Timeout = d }
}

// WithFingerprint sets the fingerprint instead of deriving it.
func WithFingerprint(fp string) TargetOption {
	return func(t *config.Target) { t.Fingerprint = fp }
}

// WithICMP sets the echo request count and the time between two requests of
// an ICMP target.
func WithICMP(count int, packetInterval time.Duration) TargetOption {
	return func(t *config.Target) {
		t.ICMP.Count, t.ICMP.PacketInterval = count, config.Duration(packetInterval)
	}
}

// WithTCPPort sets the TCP probe's own port, used when host has none.
func WithTCPPort(port int) TargetOption {
	return func(t *config.Target) { t.TCP.Port = port }
}

// WithSSH replaces an SSH target's probe configuration.
func WithSSH(cfg *config.SSHProbe) TargetOption {
	return func(t *config.Target) { t.SSH = cfg }
}

// WithCommands adds one command per command line to an SSH target's probe,
// each named after its line.
func WithCommands(lines ...string) TargetOption {
	return func(t *config.Target) {
		for _, l := range lines {
			t.SSH.Commands = append(t.SSH.Commands, config.Command{Name: l, Run: l})
		}
	}
}

// fingerprint renders every field a test can set, labels sorted by name.
func fingerprint(t *config.Target) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s/%s/%s/%d/%s/%s/%s/%s", t.Set, t.Host, t.Probe, t.Name, t.Port, t.Interval, t.Timeout, t.RetryInterval, t.SourceAddress)
	for _, k := range slices.Sorted(maps.Keys(t.Labels)) {
		fmt.Fprintf(&b, "/%s=%s", k, t.Labels[k])
	}
	switch {
	case t.ICMP != nil:
		fmt.Fprintf(&b, "/%+v", *t.ICMP)
	case t.TCP != nil:
		fmt.Fprintf(&b, "/%+v", *t.TCP)
	case t.SSH != nil:
		fmt.Fprintf(&b, "/%+v", *t.SSH)
	}
	return b.String()
}
