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
	ReasonBastion     Reason = "bastion"      // a proxy_jump hop failed (connect, handshake, host key, auth) or dropped
	ReasonAuth        Reason = "auth"         // every authentication method was rejected
	ReasonSession     Reason = "session"      // session could not be opened, or the connection dropped
	ReasonPrompt      Reason = "prompt"       // shell mode: the device's prompt did not appear within the timeout
	ReasonCommand     Reason = "command"      // a command exited non-zero or by a signal
	ReasonOutputLimit Reason = "output_limit" // a command's stdout exceeded max_output_bytes
	ReasonConfig      Reason = "config"       // the probe's own settings are unusable (e.g. unreadable key file)
	ReasonError       Reason = "error"        // anything else; the log has the detail
)

// reasons lists every documented reason in documentation order.
var reasons = [...]Reason{
	ReasonDNS, ReasonRefused, ReasonTimeout, ReasonUnreachable, ReasonPermission,
	ReasonBanner, ReasonHandshake, ReasonHostKey, ReasonBastion, ReasonAuth, ReasonSession,
	ReasonPrompt, ReasonCommand, ReasonOutputLimit, ReasonConfig, ReasonError,
}

// Reasons returns every documented reason, for docs and tests. The slice is a
// fresh copy, so callers cannot change the set.
func Reasons() []Reason { return append([]Reason(nil), reasons[:]...) }

// Result is the outcome of one probe of one target.
type Result struct {
	Key config.Key
	// KeyHash is Key.Hash(), set by the pool from the target's own
	// (config.Target.KeyHash) so that the store and the scheduler find the
	// target without hashing its key; 0 in a result built by hand. Use
	// Hash.
	KeyHash uint64
	// Target is the configured target the result is for, set by the pool
	// with Key and KeyHash; nil in a result built by hand. The store and
	// the scheduler take their entry whose target it is without comparing
	// keys, which at 100,000 results a second was a cache miss each.
	Target *config.Target
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

// Hash returns the hash of the result's Key (see KeyHash).
func (r *Result) Hash() uint64 {
	if r.KeyHash != 0 {
		return r.KeyHash
	}
	return r.Key.Hash()
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
	// Conn describes the connection the probe used, from the handshake
	// that established it; nil when the probe had no connection.
	Conn *ConnInfo
	// HostKey is the key the server presented in this probe's handshake,
	// also when it was rejected; nil when the probe made no handshake (a
	// reused connection, or a failure before the key exchange).
	HostKey  *HostKey
	Commands []CommandResult
}

// HostKey is the host key a server presented.
type HostKey struct {
	// Type is the key type, e.g. "ssh-ed25519" or "ecdsa-sha2-nistp256";
	// for a host certificate the type of the certified key.
	Type string
	// FingerprintSHA256 is the key's fingerprint in OpenSSH's form
	// ("SHA256:" and unpadded base64), of the certified key for a
	// certificate, so a host keeps its fingerprint when its certificate
	// is renewed.
	FingerprintSHA256 string
	// Certificate is true when the server presented a host certificate.
	Certificate bool
	// CertificateExpiry is the certificate's valid-before time; zero for a
	// plain key or a certificate valid forever.
	CertificateExpiry time.Time
}

// ConnInfo is what the SSH handshake of a connection negotiated.
type ConnInfo struct {
	// ServerVersion is the server's version line (e.g.
	// "SSH-2.0-OpenSSH_9.2p1 Debian-2"), sanitised to printable text and
	// at most 128 bytes.
	ServerVersion string
	// KEX is the key exchange algorithm, HostKeyAlgorithm the host key
	// signature algorithm.
	KEX, HostKeyAlgorithm string
	// Cipher and MAC are the client-to-server cipher and MAC; MAC is
	// "<implicit>" for an AEAD cipher, as OpenSSH reports it.
	Cipher, MAC string
}

// CommandResult is one command's outcome.
type CommandResult struct {
	Name string
	// Ran is false when the command was never started (an earlier failure).
	Ran      bool
	Duration time.Duration
	// ExitStatus is -1 when the command was killed by a signal, timed out,
	// the connection dropped, the server closed the channel without an
	// exit status, or the command ran in a shell (mode: shell).
	ExitStatus int
	// Hash is SHA-256(output)'s first 8 bytes as a big-endian uint64
	// shifted right by 12, so it is exact in a float64. It is zero when no
	// complete output was read: the command timed out, the session or the
	// connection failed before the output ended, or the command was not
	// run. Output is stdout in exec mode, the text between the echoed
	// command line and the next prompt in shell mode; lines matching the
	// command's ignore_lines are left out (see README).
	Hash uint64
	// SHA256 is the full hex SHA-256 of the same output, empty exactly when
	// Hash is zero.
	SHA256 string
	// Value is the first line of the output (at most 128 bytes, sanitised)
	// when the command sets output_label, else empty.
	Value string
	// Bytes is the size of the hashed output.
	Bytes int64
	// StderrFirstLine is the first line of the command's stderr, at most
	// 256 bytes, with control characters and invalid UTF-8 replaced; empty
	// when stderr was empty (and always in shell mode, where a PTY merges
	// the two streams).
	StderrFirstLine string
	Reason          Reason
	Err             error
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
