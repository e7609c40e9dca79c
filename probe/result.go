package probe

import (
	"context"
	"net/netip"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// Reason is why a probe failed. The set is fixed and documented in the README;
// error text goes to logs only, never to labels.
type Reason string

// The documented failure reasons.
const (
	ReasonNone        Reason = ""
	ReasonDNS         Reason = "dns"          // the name did not resolve
	ReasonRefused     Reason = "refused"      // TCP connection refused (RST)
	ReasonTimeout     Reason = "timeout"      // no answer within the timeout (connect, ICMP, command)
	ReasonUnreachable Reason = "unreachable"  // no route, host or network unreachable
	ReasonPermission  Reason = "permission"   // the kernel refused the socket (ICMP without privilege)
	ReasonBanner      Reason = "banner"       // TCP connected but no valid SSH banner arrived
	ReasonHandshake   Reason = "handshake"    // SSH key exchange failed or stalled
	ReasonHostKey     Reason = "hostkey"      // host key unknown or not matching known_hosts
	ReasonAuth        Reason = "auth"         // every authentication method was rejected
	ReasonSession     Reason = "session"      // session could not be opened, or the connection dropped
	ReasonCommand     Reason = "command"      // a command exited non-zero or by a signal
	ReasonOutputLimit Reason = "output_limit" // a command's stdout exceeded max_output_bytes
	ReasonConfig      Reason = "config"       // the probe's own settings are unusable (e.g. unreadable key file)
	ReasonError       Reason = "error"        // anything else; the log has the detail
)

// reasons lists every documented reason in documentation order.
var reasons = [...]Reason{
	ReasonDNS, ReasonRefused, ReasonTimeout, ReasonUnreachable, ReasonPermission,
	ReasonBanner, ReasonHandshake, ReasonHostKey, ReasonAuth, ReasonSession,
	ReasonCommand, ReasonOutputLimit, ReasonConfig, ReasonError,
}

// Reasons returns every documented reason, for docs and tests. The slice is a
// fresh copy, so callers cannot change the set.
func Reasons() []Reason { return append([]Reason(nil), reasons[:]...) }

// Result is the outcome of one probe of one target.
type Result struct {
	Key config.Key
	// Due is when the scheduler wanted the probe to start, Start when it did.
	Due, Start time.Time
	// Duration is the probe's wall time.
	Duration time.Duration
	Success  bool
	// Reason is set when Success is false.
	Reason Reason
	// Err is the underlying error, for logs only.
	Err error
	// Addr is the address the probe went to; invalid when the name did
	// not resolve (or the probe failed before resolving it).
	Addr netip.Addr

	ICMP *ICMPResult
	SSH  *SSHResult
}

// End is when the probe finished.
func (r *Result) End() time.Time { return r.Start.Add(r.Duration) }

// ICMPResult holds what one ICMP round measured.
type ICMPResult struct {
	Sent, Received int
	// RTT is the mean round-trip time of the replies; zero when none came.
	RTT time.Duration
}

// SSHResult holds the phase timings and command results of one SSH probe.
// A phase that was not reached is zero; for a probe on a reused connection the
// connect/handshake/auth phases are zero unless the connection was
// (re)established by this probe (NewConnection).
type SSHResult struct {
	Connect, Handshake, Auth time.Duration
	// NewConnection is true when this probe opened the TCP/SSH connection.
	NewConnection bool
	Commands      []CommandResult
}

// CommandResult is one command's outcome.
type CommandResult struct {
	Name string
	// Ran is false when the command was never started (an earlier failure).
	Ran      bool
	Duration time.Duration
	// ExitStatus is -1 when the command was killed by a signal, timed out or
	// the connection dropped.
	ExitStatus int
	// Hash is SHA-256(stdout)'s first 8 bytes as a big-endian uint64 shifted
	// right by 12, so it is exact in a float64.
	Hash   uint64
	Bytes  int64
	Reason Reason
	Err    error
	// StderrFirstLine is the first line the command wrote to stderr, at
	// most 256 bytes, with control characters and invalid UTF-8 replaced;
	// empty when it wrote none.
	StderrFirstLine string
	// Output holds the first SSHProbe.KeepOutputBytes bytes of stdout; nil
	// unless the probe's configuration asks for it (--once does).
	Output []byte
}

// Prober runs one probe of one target. The context carries the timeout;
// a Prober never outlives it and never retries on its own. The returned
// Result has Success, Reason, Err, Duration and the type-specific part set;
// the pool fills in Key, Due and Start.
type Prober interface {
	Probe(ctx context.Context, t *config.Target) Result
}

// Reconciler is a component that holds state per target. After every
// (re)load each one is handed the complete new target list, in the same
// shape: it keeps the state of targets that are still there, drops that of
// removed ones and starts on added ones.
type Reconciler interface {
	Reconcile(targets []*config.Target)
}
