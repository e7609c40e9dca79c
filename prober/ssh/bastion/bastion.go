package bastion

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/time/rate"
)

// Defaults of Options fields left zero.
const (
	DefaultConnections       = 1
	DefaultConnectTimeout    = 10 * time.Second
	DefaultKeepaliveInterval = 30 * time.Second
	DefaultMinBackoff        = time.Second
	DefaultMaxBackoff        = time.Minute
)

// Stages of a hop at which a connection attempt fails; HopError.Stage and
// the result label of Stats.Connects.
const (
	StageConnect   = "connect"
	StageHandshake = "handshake"
	StageHostKey   = "hostkey"
	StageAuth      = "auth"
	// StageConfig is a hop whose Configure failed: its credentials or
	// known_hosts file cannot be used.
	StageConfig = "config"
	// StageLost is a working connection that broke (bastion restarted,
	// keepalive unanswered) while a dial needed it.
	StageLost = "lost"
)

// ResultSuccess is the result label of Stats.Connects for an established
// connection.
const ResultSuccess = "success"

// Hop is one jump host of a chain.
type Hop struct {
	// Addr is the hop's host:port. The first hop is dialled over TCP, each
	// later one through the previous hop.
	Addr string
	// Config authenticates to the hop: user, auth methods, host key
	// callback and algorithms. Its Timeout is ignored; Options.ConnectTimeout
	// and the dial's context bound the handshake.
	Config *ssh.ClientConfig
	// Configure, when set, replaces Config: it is called at every
	// connection attempt, so credentials and known_hosts read from files
	// follow the files. release, when not nil, is called once the hop's
	// handshake is over (it may close an agent connection). An error fails
	// the attempt at StageConfig.
	Configure func(ctx context.Context) (cfg *ssh.ClientConfig, release func(), err error)
}

// Options configures a Bastion.
type Options struct {
	// Name identifies the chain in errors, logs and metrics; empty means
	// the address of the last hop.
	Name string
	// Hops are the jump hosts in order; targets are reached from the last.
	Hops []Hop
	// Connections is how many authenticated connections through the chain
	// are kept; channels are spread over them. 0 means DefaultConnections.
	Connections int
	// Concurrency bounds the channels open at once over all connections;
	// 0 means no bound. A dial waits for a free channel.
	Concurrency int
	// Rate bounds channel opens per second with bursts of Burst (at least
	// 1); 0 means no bound. A dial waits for its turn.
	Rate  float64
	Burst int
	// ConnectTimeout bounds one connection attempt through every hop.
	ConnectTimeout time.Duration
	// KeepaliveInterval is how often Run checks each connection with an
	// OpenSSH keepalive request and re-establishes missing ones.
	KeepaliveInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed connection
	// attempts, doubling from one to the other.
	MinBackoff, MaxBackoff time.Duration
	// Dial opens the TCP connection to the first hop; nil means net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// HopError is a failure of the chain itself, not of the target behind it.
type HopError struct {
	// Bastion is Options.Name, Hop the address of the hop that failed.
	Bastion, Hop string
	// Stage is one of the Stage constants.
	Stage string
	Err   error
}

func (e *HopError) Error() string {
	return fmt.Sprintf("bastion %s: hop %s: %s: %v", e.Bastion, e.Hop, e.Stage, e.Err)
}

func (e *HopError) Unwrap() error { return e.Err }

// ErrClosed is returned by dials on a closed Bastion.
var ErrClosed = errors.New("bastion closed")

// Stats is a Bastion's state for its metrics.
type Stats struct {
	// Up is true while at least one connection through the chain works.
	Up bool
	// Connections is how many connections work now.
	Connections int
	// Channels is how many channels are open now.
	Channels int
	// Connects counts connection attempts by result: ResultSuccess or the
	// Stage that failed.
	Connects map[string]uint64
	// LastError is the most recent connection failure; nil after a success.
	LastError error
}

// Bastion keeps connections through one chain of hops and dials targets
// through them. It is safe for concurrent use.
type Bastion struct {
	opts    Options
	logger  *slog.Logger
	sem     chan struct{} // nil: no concurrency bound
	limiter *rate.Limiter // nil: no rate bound

	mu       sync.Mutex
	slots    []*slot
	changed  chan struct{} // closed and replaced when a slot changes
	closed   bool
	connects map[string]uint64
	lastErr  error
	channels int

	// base ends with Close, cutting connection attempts in flight.
	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // connect attempts and connection watchers
}

// slot is one of the Options.Connections connections.
type slot struct {
	chain      *chain // nil while not connected
	connecting bool
	failures   int
	retryAt    time.Time
	lastErr    *HopError
}

// chain is one established connection through every hop.
type chain struct {
	clients []*ssh.Client // one per hop; the last reaches the targets
	inUse   atomic.Int64
	dead    chan struct{} // closed when the connection has ended
}

func (c *chain) target() *ssh.Client { return c.clients[len(c.clients)-1] }

func (c *chain) close() {
	for i := len(c.clients) - 1; i >= 0; i-- {
		_ = c.clients[i].Close()
	}
}

func (c *chain) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// New checks opts and returns a Bastion. It connects nowhere and starts no
// goroutines: the first dial (or Run) connects.
func New(opts Options) (*Bastion, error) {
	if len(opts.Hops) == 0 {
		return nil, errors.New("bastion: no hops")
	}
	for i, h := range opts.Hops {
		if h.Config == nil && h.Configure == nil {
			return nil, fmt.Errorf("bastion: hop %d (%s): no client config", i+1, h.Addr)
		}
		if _, _, err := net.SplitHostPort(h.Addr); err != nil {
			return nil, fmt.Errorf("bastion: hop %d: %w", i+1, err)
		}
	}
	if opts.Name == "" {
		opts.Name = opts.Hops[len(opts.Hops)-1].Addr
	}
	if opts.Connections <= 0 {
		opts.Connections = DefaultConnections
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.KeepaliveInterval <= 0 {
		opts.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.Dial == nil {
		var d net.Dialer
		opts.Dial = d.DialContext
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	base, cancel := context.WithCancel(context.Background())
	b := &Bastion{
		base:     base,
		cancel:   cancel,
		opts:     opts,
		logger:   logger.With("bastion", opts.Name),
		changed:  make(chan struct{}),
		connects: map[string]uint64{},
	}
	if opts.Concurrency > 0 {
		b.sem = make(chan struct{}, opts.Concurrency)
	}
	if opts.Rate > 0 {
		b.limiter = rate.NewLimiter(rate.Limit(opts.Rate), max(opts.Burst, 1))
	}
	b.slots = make([]*slot, opts.Connections)
	for i := range b.slots {
		b.slots[i] = &slot{}
	}
	return b, nil
}

// Name is the chain's name (Options.Name or the last hop's address).
func (b *Bastion) Name() string { return b.opts.Name }

// DialContext opens a connection to addr from the last hop (a direct-tcpip
// channel). It waits for a channel slot and a rate token, then for a
// working connection through the chain, all within ctx. A failure of the
// chain is a *HopError; a target the last hop cannot reach is the
// server's channel-open error, wrapped with the bastion's name.
func (b *Bastion) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if b.sem != nil {
		select {
		case b.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("bastion %s: waiting for a channel: %w", b.opts.Name, ctx.Err())
		}
	}
	release := func() {
		if b.sem != nil {
			<-b.sem
		}
	}
	if b.limiter != nil {
		if err := b.limiter.Wait(ctx); err != nil {
			release()
			return nil, fmt.Errorf("bastion %s: waiting for a channel open: %w", b.opts.Name, err)
		}
	}
	// A connection can turn out dead only when a channel is opened on it;
	// then the next one (or a fresh one) gets a second chance.
	for attempt := 0; ; attempt++ {
		c, err := b.acquire(ctx)
		if err != nil {
			release()
			return nil, err
		}
		nc, err := c.target().DialContext(ctx, network, addr)
		if err == nil {
			b.mu.Lock()
			b.channels++
			b.mu.Unlock()
			return &channel{Conn: nc, done: func() {
				c.inUse.Add(-1)
				b.mu.Lock()
				b.channels--
				b.mu.Unlock()
				release()
			}}, nil
		}
		c.inUse.Add(-1)
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) || ctx.Err() != nil {
			release()
			return nil, fmt.Errorf("bastion %s: %w", b.opts.Name, err)
		}
		// The connection itself failed: drop it and try once more.
		b.drop(c, err)
		if attempt > 0 {
			release()
			return nil, &HopError{Bastion: b.opts.Name, Hop: b.opts.Hops[0].Addr, Stage: StageLost, Err: err}
		}
	}
}

// acquire returns a working chain with one more channel counted on it,
// connecting one when none works.
func (b *Bastion) acquire(ctx context.Context) (*chain, error) {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, ErrClosed
		}
		b.startDueLocked(time.Now())
		var best *chain
		var pending bool
		var lastErr *HopError
		for _, s := range b.slots {
			switch {
			case s.chain != nil && !s.chain.isDead():
				if best == nil || s.chain.inUse.Load() < best.inUse.Load() {
					best = s.chain
				}
			case s.connecting:
				pending = true
			case s.lastErr != nil:
				if lastErr == nil {
					lastErr = s.lastErr
				}
			}
		}
		if best != nil {
			best.inUse.Add(1)
			b.mu.Unlock()
			return best, nil
		}
		if !pending {
			b.mu.Unlock()
			if lastErr == nil {
				lastErr = &HopError{Bastion: b.opts.Name, Hop: b.opts.Hops[0].Addr, Stage: StageConnect, Err: errors.New("no connection")}
			}
			return nil, lastErr
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			// The chain did not come up within the dial's deadline (a
			// blackholed or stalling hop): the chain's failure, not the
			// target's.
			return nil, &HopError{
				Bastion: b.opts.Name, Hop: b.opts.Hops[0].Addr, Stage: StageConnect,
				Err: fmt.Errorf("still connecting through the chain when the dial's deadline came: %w", ctx.Err()),
			}
		}
	}
}

// startDueLocked starts a connection attempt for every empty slot whose
// backoff has passed. Callers hold mu.
func (b *Bastion) startDueLocked(now time.Time) {
	for _, s := range b.slots {
		if s.chain != nil && s.chain.isDead() {
			s.chain = nil
		}
		if s.chain != nil || s.connecting || now.Before(s.retryAt) {
			continue
		}
		s.connecting = true
		b.wg.Add(1)
		go b.connectSlot(s)
	}
}

// connectSlot establishes s's connection and records the outcome.
func (b *Bastion) connectSlot(s *slot) {
	defer b.wg.Done()
	ctx, cancel := context.WithTimeout(b.base, b.opts.ConnectTimeout)
	c, herr := b.connect(ctx)
	cancel()

	b.mu.Lock()
	defer b.mu.Unlock()
	s.connecting = false
	defer b.notifyLocked()
	if herr != nil {
		s.failures++
		s.retryAt = time.Now().Add(b.backoff(s.failures))
		s.lastErr = herr
		b.connects[herr.Stage]++
		b.lastErr = herr
		b.logger.Warn("Bastion connection failed", "hop", herr.Hop, "stage", herr.Stage, "retry_in", b.backoff(s.failures), "err", herr.Err)
		return
	}
	if b.closed {
		c.close()
		return
	}
	if s.failures > 0 {
		b.logger.Info("Bastion connection re-established", "after_failures", s.failures)
	}
	s.chain, s.failures, s.lastErr, s.retryAt = c, 0, nil, time.Time{}
	b.connects[ResultSuccess]++
	b.lastErr = nil
	b.wg.Add(1)
	go b.watch(s, c)
}

// watch empties s when c ends, so the next dial or Run reconnects it. The
// last hop's connection runs inside the others, so it ends when any does.
func (b *Bastion) watch(s *slot, c *chain) {
	defer b.wg.Done()
	_ = c.target().Wait()
	c.close()
	close(c.dead)
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.chain == c {
		s.chain = nil
		// A connection that worked is retried at once; the backoff starts
		// if that fails.
		s.retryAt = time.Time{}
	}
	b.notifyLocked()
}

// drop closes c after a channel open on it failed.
func (b *Bastion) drop(c *chain, err error) {
	b.logger.Warn("Bastion connection lost", "err", err)
	c.close()
	<-c.dead
}

func (b *Bastion) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *Bastion) backoff(failures int) time.Duration {
	d := b.opts.MinBackoff
	for i := 1; i < failures && d < b.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, b.opts.MaxBackoff)
}

// connect establishes one connection through every hop within ctx.
func (b *Bastion) connect(ctx context.Context) (*chain, *HopError) {
	c := &chain{dead: make(chan struct{})}
	fail := func(hop, stage string, err error) (*chain, *HopError) {
		c.close()
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, &HopError{Bastion: b.opts.Name, Hop: hop, Stage: stage, Err: err}
	}
	for i, h := range b.opts.Hops {
		var nc net.Conn
		var err error
		if i == 0 {
			nc, err = b.opts.Dial(ctx, "tcp", h.Addr)
		} else {
			nc, err = c.clients[i-1].DialContext(ctx, "tcp", h.Addr)
		}
		if err != nil {
			return fail(h.Addr, StageConnect, err)
		}
		if dl, ok := ctx.Deadline(); ok && i == 0 {
			_ = nc.SetDeadline(dl)
		}
		hc, release := h.Config, func() {}
		if h.Configure != nil {
			var rel func()
			if hc, rel, err = h.Configure(ctx); err != nil {
				_ = nc.Close()
				return fail(h.Addr, StageConfig, err)
			}
			if rel != nil {
				release = rel
			}
		}
		stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
		cfg := *hc
		var hostKeyErr error
		if cb := hc.HostKeyCallback; cb != nil {
			cfg.HostKeyCallback = func(hostname string, remote net.Addr, key ssh.PublicKey) error {
				hostKeyErr = cb(hostname, remote, key)
				return hostKeyErr
			}
		}
		sc, chans, reqs, err := ssh.NewClientConn(nc, h.Addr, &cfg)
		stopped := stop()
		release()
		if err == nil && !stopped {
			_ = sc.Close()
			err = ctx.Err()
		}
		if err != nil {
			_ = nc.Close()
			switch {
			case hostKeyErr != nil:
				return fail(h.Addr, StageHostKey, err)
			case isAuthError(err):
				return fail(h.Addr, StageAuth, err)
			default:
				return fail(h.Addr, StageHandshake, err)
			}
		}
		if i == 0 {
			_ = nc.SetDeadline(time.Time{})
		}
		c.clients = append(c.clients, ssh.NewClient(sc, chans, reqs))
	}
	return c, nil
}

// isAuthError reports whether a handshake ended because every offered
// method was refused.
func isAuthError(err error) bool {
	// x/crypto/ssh has no error type for it on the client side.
	return strings.Contains(err.Error(), "ssh: unable to authenticate")
}

// Run keeps the connections healthy until ctx ends: every
// KeepaliveInterval it sends each one an OpenSSH keepalive request (a
// connection that does not answer within the interval is closed) and
// re-establishes missing ones whose backoff has passed. Dials work
// without Run; Run makes Stats tell the truth between them. It returns nil
// when ctx ends.
func (b *Bastion) Run(ctx context.Context) error {
	t := time.NewTicker(b.opts.KeepaliveInterval)
	defer t.Stop()
	b.mu.Lock()
	b.startDueLocked(time.Now())
	b.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		b.mu.Lock()
		var live []*chain
		for _, s := range b.slots {
			if s.chain != nil && !s.chain.isDead() {
				live = append(live, s.chain)
			}
		}
		b.mu.Unlock()
		for _, c := range live {
			b.keepalive(ctx, c)
		}
		b.mu.Lock()
		if !b.closed {
			b.startDueLocked(time.Now())
		}
		b.mu.Unlock()
	}
}

// keepalive checks c on its first and last hop and closes it when either
// does not answer in time.
func (b *Bastion) keepalive(ctx context.Context, c *chain) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.KeepaliveInterval)
	defer cancel()
	stop := context.AfterFunc(ctx, c.close)
	defer stop()
	for _, cl := range []*ssh.Client{c.clients[0], c.target()} {
		if _, _, err := cl.SendRequest("keepalive@openssh.com", true, nil); err != nil {
			b.logger.Warn("Bastion keepalive failed", "err", err)
			c.close()
			return
		}
	}
}

// Stats returns the current state.
func (b *Bastion) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := Stats{Channels: b.channels, Connects: make(map[string]uint64, len(b.connects)), LastError: b.lastErr}
	for k, v := range b.connects {
		st.Connects[k] = v
	}
	for _, s := range b.slots {
		if s.chain != nil && !s.chain.isDead() {
			st.Connections++
		}
	}
	st.Up = st.Connections > 0
	return st
}

// Close closes every connection, which ends the channels open on them, and
// waits for the attempts and watchers in flight. Later dials fail with
// ErrClosed.
func (b *Bastion) Close() error {
	b.mu.Lock()
	b.closed = true
	var chains []*chain
	for _, s := range b.slots {
		if s.chain != nil {
			chains = append(chains, s.chain)
		}
	}
	b.notifyLocked()
	b.mu.Unlock()
	b.cancel()
	for _, c := range chains {
		c.close()
	}
	b.wg.Wait()
	return nil
}

// channel is a target connection through the chain; closing it frees its
// channel slot once.
type channel struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *channel) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
}
