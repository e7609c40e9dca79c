package ssh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

const (
	// defaultPort is used when neither the host entry nor the probe
	// configuration gives a port.
	defaultPort = 22
	// defaultMaxOutputBytes caps a command's stdout when the probe sets no
	// max_output_bytes.
	defaultMaxOutputBytes = 1 << 20
	// clientVersion is the version line we send; it names the exporter in
	// the server's logs.
	clientVersion = "SSH-2.0-fleet_exporter"
	// minBackoff is the first reconnect backoff of a pooled connection.
	minBackoff = time.Second
	// backoffMaxDefault caps the backoff when the target has no interval.
	backoffMaxDefault = time.Minute
	// idleDefault is how long a pooled connection may go without a
	// completed session before it is checked with a keepalive, when the
	// target has no interval.
	idleDefault = time.Minute
	// copyBufSize is the buffer command output is streamed through: the
	// largest data packet x/crypto/ssh delivers.
	copyBufSize = 32 << 10
)

// Prober logs in to a target over SSH and runs its commands, timing the
// TCP connect, the SSH handshake (banner, key exchange, host key check), the
// authentication and every command separately.
//
// Key, password and known_hosts files are parsed once per file version and
// cached. With reuse_connections one authenticated connection per target is
// kept between probes. It is checked with a keepalive before use only when
// it has not completed a session within the target's interval (or the
// probe runs no command); otherwise a dead connection shows when the first
// session cannot be opened, and the probe reconnects once. After a failed
// (re)connect the target backs off (1s doubling up to its interval) and its
// probes fail fast with the last reason meanwhile. Close releases the
// pooled connections. An Prober is safe for concurrent use.
type Prober struct {
	res    *dns.Resolver
	logger *slog.Logger
	files  authCallbacks

	// fileHook is OnFileChange's function.
	fileHook atomic.Pointer[func(paths []string, err error)]

	// opened counts TCP connections established for SSH.
	opened atomic.Uint64
	// keepalives counts keepalive requests sent to check pooled
	// connections.
	keepalives atomic.Uint64

	// now is the clock for reconnect backoff and connection idleness; tests
	// replace it. epoch is the origin of clientConn.usedAt.
	now   func() time.Time
	epoch time.Time

	// bufs holds *[copyBufSize]byte for streaming command output. With
	// plain io.Copy every command allocated 32 KiB, 80 % of the bytes a
	// poll on a reused connection allocates, and the GC work that went with
	// it.
	bufs sync.Pool

	// mu guards closed, pool, warned, jumps and bastionLimit.
	mu     sync.Mutex
	closed bool
	pool   map[config.Key]*pooledTarget
	warned map[config.Key]bool
	// jumps holds the bastions of the proxy_jump chains in use, by
	// chainKey; bastionLimit is global.limits.bastion.
	jumps        map[string]*jumpHost
	bastionLimit config.Limit
}

// pooledTarget is the reused connection of one target and its reconnect state.
type pooledTarget struct {
	// dial serialises the connection checks and (re)connects of one target.
	// It may be held while taking Prober.mu, never the other way round.
	dial sync.Mutex

	// The fields below are guarded by Prober.mu.
	conn        *clientConn
	fingerprint string
	removed     bool
	failures    int
	retryAt     time.Time
	lastReason  probe.Reason
	lastErr     error
	// failedFingerprint is the target's Fingerprint at the failures above:
	// a reload that changes the target's settings ends the backoff.
	failedFingerprint string
}

// clientConn is one authenticated SSH connection.
type clientConn struct {
	client *ssh.Client
	nc     net.Conn
	// addr is the address the connection went to, so a pooled connection
	// is replaced once the name resolves elsewhere.
	addr netip.Addr
	// info is what the handshake negotiated.
	info *probe.ConnInfo
	// dead is closed once the connection has ended.
	dead chan struct{}
	// usedAt is when a probe last completed sessions on the connection
	// with no sign of a connection failure, in nanoseconds since
	// Prober.epoch, or neverUsed.
	usedAt atomic.Int64
}

// neverUsed is clientConn.usedAt of a connection without a completed
// session since its last failure.
const neverUsed = math.MinInt64

// newConn wraps client and starts the watcher that closes dead; the
// watcher ends with the connection.
func newConn(client *ssh.Client, nc net.Conn) *clientConn {
	c := &clientConn{client: client, nc: nc, dead: make(chan struct{})}
	c.usedAt.Store(neverUsed)
	go func() {
		_ = client.Wait()
		close(c.dead)
	}()
	return c
}

// isDead reports whether the connection has ended.
func (c *clientConn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// close closes the connection and waits until its watcher is gone, so that
// a closed connection leaves no goroutine of ours behind.
func (c *clientConn) close() {
	_ = c.client.Close()
	<-c.dead
}

// alive checks a pooled connection with an OpenSSH keepalive request. Any
// reply, even a refusal, proves the connection works.
func (c *clientConn) alive(ctx context.Context) bool {
	if c.isDead() {
		return false
	}
	stop := context.AfterFunc(ctx, func() { _ = c.client.Close() })
	defer stop()
	_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
	return err == nil && ctx.Err() == nil
}

// NewProber returns an Prober that resolves names through res and logs
// to logger. It starts no goroutines.
func NewProber(res *dns.Resolver, logger *slog.Logger) *Prober {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Prober{
		res:    res,
		logger: logger.With("component", "ssh_prober"),
		now:    time.Now,
		epoch:  time.Now(),
		pool:   make(map[config.Key]*pooledTarget),
		warned: make(map[config.Key]bool),
	}
	p.files.logger = p.logger
	p.files.changed = p.fileChanged
	p.files.keys.changed = p.fileChanged
	p.files.passwords.changed = p.fileChanged
	p.files.knownHosts.changed = p.fileChanged
	return p
}

// OnFileChange sets f to hear of every reread of a key, certificate,
// password or known_hosts file that changed since it last loaded: err nil
// when the new version is in use, else why the last good version stays in
// use. f must not block; nil removes it.
func (p *Prober) OnFileChange(f func(paths []string, err error)) {
	if f == nil {
		p.fileHook.Store(nil)
		return
	}
	p.fileHook.Store(&f)
}

// fileChanged logs a reread of a changed file and tells the hook.
func (p *Prober) fileChanged(paths []string, err error) {
	files := strings.Join(paths, ", ")
	if err != nil {
		p.logger.Error("Changed file does not load; the last good version stays in use", "files", files, "err", err)
	} else {
		p.logger.Info("Changed file reloaded", "files", files)
	}
	if f := p.fileHook.Load(); f != nil {
		(*f)(paths, err)
	}
}

// ConnectionsOpened returns how many TCP connections the prober has
// established, over all targets and whether pooled or not.
func (p *Prober) ConnectionsOpened() uint64 { return p.opened.Load() }

// Close closes every pooled connection. Probes running at the same time see
// their connection fail; later probes still work but no longer pool their
// connections.
func (p *Prober) Close() {
	p.mu.Lock()
	p.closed = true
	conns := p.takeLocked(func(config.Key) bool { return false })
	jumps := p.reconcileJumpsLocked(nil)
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	for _, j := range jumps {
		j.close()
	}
}

// Reconcile takes the configured target list after a reload: it closes and
// drops the pooled connections (and insecure-mode warning state) of every
// target no longer in targets.
func (p *Prober) Reconcile(targets []*config.Target) {
	configured := make(map[config.Key]struct{})
	for _, t := range targets {
		// Only SSH targets have connections; a large ICMP fleet would
		// make this map for nothing.
		if t.Probe == config.ProbeSSH {
			configured[t.Key()] = struct{}{}
		}
	}
	p.forget(func(k config.Key) bool { _, ok := configured[k]; return ok })
	p.mu.Lock()
	gone := p.reconcileJumpsLocked(targets)
	p.mu.Unlock()
	for _, j := range gone {
		j.close()
	}
	srcs := map[string]bool{}
	for _, t := range targets {
		if s := t.SSH; s != nil {
			srcs[s.Shell.Prompt], srcs[s.Shell.Pager] = true, true
			for _, c := range s.Commands {
				for _, re := range c.IgnoreLines {
					srcs[re] = true
				}
			}
			for _, ki := range s.KeyboardInteractive {
				srcs[ki.Prompt] = true
			}
		}
	}
	p.files.patterns.keep(srcs)
}

// forget closes and drops the pooled connections of every target for which
// keep returns false.
func (p *Prober) forget(keep func(config.Key) bool) {
	p.mu.Lock()
	conns := p.takeLocked(keep)
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// takeLocked removes the pool entries and insecure-mode warnings not kept
// and returns the pooled connections. Targets without reuse_connections have
// a warning but no pool entry, so both maps are walked. p.mu must be held.
func (p *Prober) takeLocked(keep func(config.Key) bool) []*clientConn {
	var conns []*clientConn
	for k, e := range p.pool {
		if keep(k) {
			continue
		}
		delete(p.pool, k)
		e.removed = true
		if e.conn != nil {
			conns = append(conns, e.conn)
			e.conn = nil
		}
	}
	for k := range p.warned {
		if !keep(k) {
			delete(p.warned, k)
		}
	}
	return conns
}

// Probe runs one SSH probe of t under ctx, additionally bounded by
// t.Timeout. See the package documentation of probe.Result for the fields set.
func (p *Prober) Probe(ctx context.Context, t *config.Target) probe.Result {
	start := time.Now()
	// The pool already bounds ctx by t.Timeout; another timer context
	// would only cost CPU on every poll.
	if dl, ok := ctx.Deadline(); t.Timeout > 0 && (!ok || dl.After(start.Add(t.Timeout))) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.Timeout)
		defer cancel()
	}
	res := p.probe(ctx, t)
	res.Duration = time.Since(start)
	if !res.Success {
		// A host key that does not match known_hosts may be a man in
		// the middle (or a reinstalled host): worth a warning, unlike an
		// ordinary failure.
		level := slog.LevelDebug
		if res.Reason == probe.ReasonHostKey {
			level = slog.LevelWarn
		}
		p.logger.Log(ctx, level, "ssh probe failed", "set", t.Set, "host", t.Host,
			"reason", string(res.Reason), "err", res.Err)
	}
	return res
}

// probe does the work of Probe.
func (p *Prober) probe(ctx context.Context, t *config.Target) probe.Result {
	sr := &probe.SSHResult{}
	res := probe.Result{SSH: sr}
	cfg := t.SSH
	if cfg == nil {
		res.Reason, res.Err = probe.ReasonConfig, fmt.Errorf("%w: target %s has no ssh settings", errConfig, t.Host)
		return res
	}
	if cfg.InsecureSkipHostKeyVerification {
		p.warnInsecure(t)
	}
	// Resolved on every probe, also one that reuses a connection: the
	// answer is cached, and a name that moved must not keep its probes on
	// the old address.
	// Behind a bastion the last hop resolves the name, as with OpenSSH's
	// ProxyJump: the hosts behind it are often in a DNS the exporter
	// cannot see.
	var ip netip.Addr
	var err error
	if len(cfg.ProxyJump) == 0 {
		ip, err = p.res.Lookup(ctx, t.Name, t.IP)
	} else if a, perr := netip.ParseAddr(t.Name); perr == nil {
		ip = a
	}
	if err != nil {
		if !errors.Is(err, probe.ErrDNS) {
			err = fmt.Errorf("%w: %w", probe.ErrDNS, withContext(ctx, err))
		}
		skipCommands(sr, cfg.Commands, 0)
		res.Reason, res.Err = probe.ReasonDNS, err
		return res
	}
	res.Addr = ip

	var (
		conn   *clientConn
		owned  bool // close conn after the probe
		reused bool // conn was established by an earlier probe
		reason probe.Reason
	)
	for attempt := 0; ; attempt++ {
		if cfg.ReuseConnections {
			conn, owned, reused, reason, err = p.pooledConn(ctx, t, ip, sr)
		} else {
			conn, reason, err = p.connect(ctx, t, ip, sr)
			owned = true
		}
		if err != nil {
			skipCommands(sr, cfg.Commands, 0)
			res.Reason, res.Err = reason, err
			return res
		}
		sr.Conn = conn.info
		// A reused connection that cannot open a session is dead: drop it and
		// reconnect within this probe, once.
		retry := reused && attempt == 0
		reason, err = p.runCommands(ctx, conn, cfg, sr, retry)
		if errors.Is(err, errRetry) {
			p.discard(t.Key(), conn)
			continue
		}
		break
	}
	if owned || conn.isDead() || expired(ctx) {
		// A connection that ended, or was in use when the deadline struck, is
		// in an unknown state; the next probe starts over.
		if !owned {
			p.discard(t.Key(), conn)
		}
		conn.close()
	}
	res.Success = err == nil
	res.Reason, res.Err = reason, err
	return res
}

// warnInsecure logs once per target that its host key is not verified.
func (p *Prober) warnInsecure(t *config.Target) {
	k := t.Key()
	p.mu.Lock()
	warned := p.warned[k]
	p.warned[k] = true
	p.mu.Unlock()
	if !warned {
		p.logger.Warn("host key verification disabled by insecure_skip_host_key_verification",
			"set", t.Set, "host", t.Host)
	}
}

// discard removes conn from the pool entry of k if it is still there.
func (p *Prober) discard(k config.Key, conn *clientConn) {
	p.mu.Lock()
	if e := p.pool[k]; e != nil && e.conn == conn {
		e.conn = nil
	}
	p.mu.Unlock()
	conn.close()
}

// pooledConn returns the target's pooled connection, checking that it is
// alive, or establishes a new one unless the target is in reconnect backoff.
// owned is true when the connection could not be pooled (the prober is
// closed or the target was forgotten) and the caller must close it.
func (p *Prober) pooledConn(ctx context.Context, t *config.Target, ip netip.Addr, sr *probe.SSHResult) (conn *clientConn, owned, reused bool, reason probe.Reason, err error) {
	k := t.Key()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		conn, reason, err = p.connect(ctx, t, ip, sr)
		return conn, true, false, reason, err
	}
	e := p.pool[k]
	if e == nil {
		e = &pooledTarget{}
		p.pool[k] = e
	}
	p.mu.Unlock()

	e.dial.Lock()
	defer e.dial.Unlock()

	p.mu.Lock()
	old, fp := e.conn, e.fingerprint
	p.mu.Unlock()
	if old != nil {
		if fp == t.Fingerprint && old.addr == ip && p.usable(ctx, old, t) {
			return old, false, true, probe.ReasonNone, nil
		}
		p.discard(k, old)
	}

	p.mu.Lock()
	retryAt, lastReason, lastErr := e.retryAt, e.lastReason, e.lastErr
	if e.failedFingerprint != t.Fingerprint {
		retryAt = time.Time{}
	}
	p.mu.Unlock()
	start := p.now()
	if start.Before(retryAt) {
		return nil, false, false, lastReason, fmt.Errorf("reconnect backoff for %s: %w",
			retryAt.Sub(start).Round(time.Millisecond), lastErr)
	}

	conn, reason, err = p.connect(ctx, t, ip, sr)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if reason != probe.ReasonConfig {
			if e.failedFingerprint != t.Fingerprint {
				e.failures = 0
			}
			e.failures++
			// Counted from the attempt's start, so that at the cap (the
			// interval) the next turn of a dead host connects again
			// instead of failing on the backoff every other interval.
			e.retryAt = start.Add(backoff(e.failures, backoffCap(t)))
			e.lastReason, e.lastErr, e.failedFingerprint = reason, err, t.Fingerprint
		}
		return nil, false, false, reason, err
	}
	if e.removed || p.closed {
		return conn, true, false, probe.ReasonNone, nil
	}
	e.failures, e.retryAt, e.lastReason, e.lastErr, e.failedFingerprint = 0, time.Time{}, probe.ReasonNone, nil, ""
	e.conn, e.fingerprint = conn, t.Fingerprint
	return conn, false, false, probe.ReasonNone, nil
}

// usable reports whether the pooled connection c can serve the next probe
// of t. A keepalive round trip before every poll cost as much client CPU as
// the session itself, so it is sent only when it is the sole
// evidence: when c has not completed a session within t's interval (it may
// have been cut by a NAT timeout or a server restart meanwhile), or when
// the probe runs no command that would show a dead connection. A recently
// used connection that died anyway fails to open the first session, and
// the probe reconnects (errRetry).
func (p *Prober) usable(ctx context.Context, c *clientConn, t *config.Target) bool {
	if c.isDead() {
		return false
	}
	idle := t.Interval
	if idle <= 0 {
		idle = idleDefault
	}
	if used := c.usedAt.Load(); used != neverUsed && len(t.SSH.Commands) > 0 &&
		p.now().Sub(p.epoch)-time.Duration(used) < idle {
		return true
	}
	return p.keepalive(ctx, c)
}

// keepalive checks c with a keepalive request and counts it.
func (p *Prober) keepalive(ctx context.Context, c *clientConn) bool {
	p.keepalives.Add(1)
	return c.alive(ctx)
}

// backoff returns the reconnect backoff after n consecutive failures:
// 1s doubling per failure, capped at the target's interval.
func backoff(n int, interval time.Duration) time.Duration {
	limit := interval
	if limit <= 0 {
		limit = backoffMaxDefault
	}
	d := minBackoff << min(n-1, 30)
	return min(d, limit)
}

// backoffCap is the longest reconnect backoff of t: the time to its next
// run after a failure, which is its retry interval when the set has one
// shorter than the interval. A longer backoff would fail those retries
// without trying to connect.
func backoffCap(t *config.Target) time.Duration {
	if r := t.RetryInterval; r > 0 && r < t.Interval {
		return r
	}
	return t.Interval
}

// targetPort returns the port to connect to: the host entry's, else the
// probe's, else 22.
func targetPort(t *config.Target) int {
	switch {
	case t.Port != 0:
		return t.Port
	case t.SSH != nil && t.SSH.Port != 0:
		return t.SSH.Port
	default:
		return defaultPort
	}
}

// connect resolves, dials and authenticates a new connection to t, recording
// the Connect, Handshake and Auth phases in sr. The returned connection has
// no deadline when the target reuses connections, else ctx's deadline.
func (p *Prober) connect(ctx context.Context, t *config.Target, ip netip.Addr, sr *probe.SSHResult) (*clientConn, probe.Reason, error) {
	cfg := t.SSH
	port := targetPort(t)
	if port <= 0 || port > 65535 {
		return nil, probe.ReasonConfig, fmt.Errorf("%w: no valid port for %s: %d", errConfig, t.Host, port)
	}
	kh, err := p.files.hostKey(cfg)
	if err != nil {
		return nil, probe.ReasonConfig, err
	}
	auth, err := p.files.auth(ctx, cfg)
	if err != nil {
		return nil, probe.ReasonConfig, err
	}
	defer auth.close()

	// knownhosts matches on the name as configured, with the port
	// (knownhosts.Normalize rules), not on the resolved address.
	hostport := net.JoinHostPort(t.Name, strconv.Itoa(port))
	raddr := hostport
	// The knownhosts callback needs an address even when only the
	// bastion knows it.
	var remote net.Addr = &net.TCPAddr{}
	if ip.IsValid() {
		ap := netip.AddrPortFrom(ip, uint16(port))
		raddr, remote = ap.String(), net.TCPAddrFromAddrPort(ap)
	}

	t0 := time.Now()
	var nc net.Conn
	if len(cfg.ProxyJump) > 0 {
		var reason probe.Reason
		nc, reason, err = p.dialJump(ctx, t, raddr)
		sr.Connect = time.Since(t0)
		if err != nil {
			return nil, reason, err
		}
	} else {
		var d net.Dialer
		if src := t.SourceAddress; src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice(), Zone: src.Zone()}
		}
		nc, err = d.DialContext(ctx, "tcp", raddr)
		sr.Connect = time.Since(t0)
		if err != nil {
			err = withContext(ctx, err)
			return nil, probe.ReasonFor(err), fmt.Errorf("connect %s: %w", raddr, err)
		}
	}
	p.opened.Add(1)
	sr.NewConnection = true

	t1 := time.Now()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	// Deadlines bound every read and write; closing on ctx.Done covers a
	// cancellation without deadline.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	bc := &bannerConn{Conn: nc}
	hs := &handshake{check: kh.Check}
	ccfg := &ssh.ClientConfig{
		User:            cfg.User,
		Auth:            auth.methods(hs.markAuth),
		HostKeyCallback: hs.hostKey,
		ClientVersion:   clientVersion,
	}
	setAlgorithms(ccfg, &cfg.Algorithms, kh.HostKeyAlgorithms(hostport, remote))
	c, chans, reqs, err := ssh.NewClientConn(bc, hostport, ccfg)
	end := time.Now()
	stopped := stop()
	sr.HostKey = hs.presentedKey()
	if authStart := hs.authStart(); authStart.IsZero() {
		sr.Handshake = end.Sub(t1)
	} else {
		sr.Handshake = authStart.Sub(t1)
		sr.Auth = end.Sub(authStart)
	}
	if err == nil && !stopped {
		// ctx ended just as the handshake finished and closed the socket.
		_ = c.Close()
		err = withContext(ctx, net.ErrClosed)
	}
	if err != nil {
		_ = nc.Close()
		reason, err := hs.classify(ctx, bc, err)
		return nil, reason, fmt.Errorf("ssh %s: %w", hostport, err)
	}
	if cfg.ReuseConnections {
		// A pooled connection idles between probes; each probe bounds its
		// use with its own context instead.
		_ = nc.SetDeadline(time.Time{})
	}
	cc := newConn(ssh.NewClient(c, chans, reqs), nc)
	cc.addr = ip
	cc.info = connInfo(c)
	return cc, probe.ReasonNone, nil
}

// withContext makes sure an error caused by ctx ending says so: a socket
// closed by context.AfterFunc or cut by its deadline reports only
// "use of closed network connection" or "i/o timeout".
func withContext(ctx context.Context, err error) error {
	ctxErr := ctx.Err()
	if ctxErr == nil && expired(ctx) {
		ctxErr = context.DeadlineExceeded
	}
	if ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%w (%w)", err, ctxErr)
	}
	return err
}

// expired reports whether ctx is done or its deadline has passed. The
// socket deadline and ctx's own timer are separate timers, so an I/O error
// caused by the deadline can be seen a moment before ctx.Err is set.
func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// errHostKey marks a host key rejected by known_hosts.
var errHostKey = errors.New("host key verification failed")

// handshake tracks how far the SSH handshake of one connection got, so a
// failure can be attributed to its phase. The host key callback runs on the
// transport's goroutine, the auth callbacks on the dialling one.
type handshake struct {
	check ssh.HostKeyCallback

	// mu guards presented, hostKeyErr, hostKeyOK and authAt.
	mu         sync.Mutex
	presented  *probe.HostKey
	hostKeyErr error
	hostKeyOK  bool
	authAt     time.Time
}

// presentedKey returns the host key the server presented, or nil.
func (h *handshake) presentedKey() *probe.HostKey {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.presented
}

// describeHostKey returns what the metrics say about key.
func describeHostKey(key ssh.PublicKey) *probe.HostKey {
	hk := &probe.HostKey{}
	if cert, ok := key.(*ssh.Certificate); ok {
		hk.Certificate = true
		if cert.ValidBefore != ssh.CertTimeInfinity && cert.ValidBefore <= math.MaxInt64 {
			hk.CertificateExpiry = time.Unix(int64(cert.ValidBefore), 0)
		}
		key = cert.Key
	}
	hk.Type = key.Type()
	hk.FingerprintSHA256 = ssh.FingerprintSHA256(key)
	return hk
}

// hostKey is the ssh.HostKeyCallback: it delegates to check and records the
// outcome. Rejecting the key aborts the handshake before any auth message
// is sent.
func (h *handshake) hostKey(hostname string, remote net.Addr, key ssh.PublicKey) error {
	err := h.check(hostname, remote, key)
	presented := describeHostKey(key)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.presented = presented
	if err != nil {
		h.hostKeyErr = fmt.Errorf("%w: %w", errHostKey, err)
		return h.hostKeyErr
	}
	h.hostKeyOK = true
	return nil
}

// markAuth records the first invocation of an auth method.
func (h *handshake) markAuth() {
	h.mu.Lock()
	if h.authAt.IsZero() {
		h.authAt = time.Now()
	}
	h.mu.Unlock()
}

// authStart returns when authentication began, or zero.
func (h *handshake) authStart() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.authAt
}

// classify maps a failed ssh.NewClientConn to its probe.Reason by the phase that
// was reached: no banner line, key exchange, host key, or authentication.
func (h *handshake) classify(ctx context.Context, bc *bannerConn, err error) (probe.Reason, error) {
	h.mu.Lock()
	hostKeyErr, hostKeyOK, authStarted := h.hostKeyErr, h.hostKeyOK, !h.authAt.IsZero()
	h.mu.Unlock()
	err = withContext(ctx, err)
	switch {
	case hostKeyErr != nil:
		if !errors.Is(err, errHostKey) {
			err = fmt.Errorf("%w: %w", hostKeyErr, err)
		}
		return probe.ReasonHostKey, err
	case !bc.sawBanner():
		return probe.ReasonBanner, fmt.Errorf("no SSH version line received: %w", err)
	case !hostKeyOK:
		return probe.ReasonHandshake, explainNegotiation(err)
	case authStarted:
		if probe.ReasonFor(err) == probe.ReasonTimeout {
			return probe.ReasonTimeout, err
		}
		return probe.ReasonAuth, err
	case strings.Contains(err.Error(), "ssh: unable to authenticate"):
		// The server rejected "none" and we had no method it accepts. The
		// library returns an untyped error for this.
		return probe.ReasonAuth, err
	case strings.Contains(err.Error(), "ssh: unexpected message type 51 "):
		// A keyboard-interactive request answered by USERAUTH_FAILURE
		// without a single question (OpenSSH without PAM does that): the
		// server refused the method, an authentication failure. The
		// library returns an untyped error for this too.
		return probe.ReasonAuth, err
	default:
		return probe.ReasonHandshake, err
	}
}

// bannerConn watches the start of the stream for a complete line that
// begins with "SSH-", the server's version line. Everything before it is
// allowed by RFC 4253 section 4.2; a connection that never delivers it
// (tarpit, other protocol, garbage) failed at the banner.
type bannerConn struct {
	net.Conn

	seen atomic.Bool
	// Line state, only touched by Read until seen is set; the SSH client
	// reads the version exchange from one goroutine.
	prefix [4]byte
	n      int
}

// Read implements net.Conn.
func (c *bannerConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if !c.seen.Load() {
		for _, ch := range b[:n] {
			if ch == '\n' {
				if c.n >= len(c.prefix) && string(c.prefix[:]) == "SSH-" {
					c.seen.Store(true)
					break
				}
				c.n = 0
				continue
			}
			if c.n < len(c.prefix) {
				c.prefix[c.n] = ch
			}
			c.n++
		}
	}
	return n, err
}

// sawBanner reports whether a full "SSH-" line has been read.
func (c *bannerConn) sawBanner() bool { return c.seen.Load() }

// errRetry asks probe to reconnect: the first session on a reused
// connection could not be opened.
var errRetry = errors.New("session open failed on reused connection")

// skipCommands records cmds[from:] as not run.
func skipCommands(sr *probe.SSHResult, cmds []config.Command, from int) {
	if sr.Commands == nil && len(cmds) > 0 {
		sr.Commands = make([]probe.CommandResult, len(cmds))
	}
	for i := from; i < len(cmds); i++ {
		sr.Commands[i] = probe.CommandResult{Name: commandName(cmds[i]), ExitStatus: -1}
	}
}

// commandName is the command's name, or its command line when unnamed.
func commandName(c config.Command) string {
	if c.Name != "" {
		return c.Name
	}
	return c.Run
}
