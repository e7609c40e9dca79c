package ssh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
	"github.com/fleet-exporter/fleet_exporter/prober/ssh/bastion"
)

// jumpHost is one bastion.Bastion the prober keeps for a proxy_jump chain,
// shared by every target configured with the same chain, limits and source
// address.
type jumpHost struct {
	b    *bastion.Bastion
	name string
	// stop ends the Run goroutine, which closes done.
	stop context.CancelFunc
	done chan struct{}
	// targets counts the SSH targets using the chain by set, as of the
	// last Reconcile; guarded by Prober.mu.
	targets map[string]int
}

// close stops the keepalive loop and closes every connection through the
// chain.
func (j *jumpHost) close() {
	j.stop()
	<-j.done
	_ = j.b.Close()
}

// chainKey identifies the bastion a target uses: everything that changes
// how its connections are made.
func chainKey(t *config.Target, lim config.Limit) string {
	b, err := json.Marshal(struct {
		Hops   []config.ProxyJump
		Limit  config.Limit
		Source netip.Addr
		IP     config.IPPolicy
	}{t.SSH.ProxyJump, lim, t.SourceAddress, t.IP})
	if err != nil {
		// Plain data always encodes; fall back to something unique.
		return fmt.Sprintf("%p", t.SSH)
	}
	return string(b)
}

// chainName is the bastion label of a chain: user@host:port of each hop,
// comma separated as in ssh -J.
func chainName(hops []config.ProxyJump) string {
	names := make([]string, len(hops))
	for i := range hops {
		names[i] = hops[i].User + "@" + hops[i].HostPort()
	}
	return strings.Join(names, ",")
}

// SetBastionLimits sets global.limits.bastion for the chains used from now
// on. A chain whose limits change gets a new bastion on its next use (or
// Reconcile); the old one is closed by the next Reconcile.
func (p *Prober) SetBastionLimits(l config.Limit) {
	p.mu.Lock()
	p.bastionLimit = l
	p.mu.Unlock()
}

// jumpFor returns the bastion of t's chain, starting it on first use.
func (p *Prober) jumpFor(t *config.Target) (*jumpHost, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, bastion.ErrClosed
	}
	key := chainKey(t, p.bastionLimit)
	if j := p.jumps[key]; j != nil {
		return j, nil
	}
	return p.startJumpLocked(key, t)
}

// startJumpLocked creates and starts the bastion of t's chain under key.
// p.mu must be held.
func (p *Prober) startJumpLocked(key string, t *config.Target) (*jumpHost, error) {
	hops := t.SSH.ProxyJump
	name := chainName(hops)
	// Two chains through the same hops with other credentials or limits
	// are told apart in the bastion label.
	for n := 2; slices.ContainsFunc(p.jumpList(), func(j *jumpHost) bool { return j.name == name }); n++ {
		name = fmt.Sprintf("%s#%d", chainName(hops), n)
	}
	opts := bastion.Options{
		Name:        name,
		Connections: hops[0].Connections,
		Concurrency: p.bastionLimit.Concurrency,
		Rate:        p.bastionLimit.Rate,
		Burst:       p.bastionLimit.Burst,
		Logger:      p.logger,
	}
	opts.Dial = p.firstHopDialer(t.SourceAddress, t.IP)
	for i := range hops {
		hop := hops[i]
		opts.Hops = append(opts.Hops, bastion.Hop{Addr: hop.HostPort(), Configure: p.hopConfig(hop)})
	}
	b, err := bastion.New(opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	j := &jumpHost{b: b, name: name, stop: cancel, done: make(chan struct{}), targets: map[string]int{}}
	go func() {
		defer close(j.done)
		_ = b.Run(ctx)
	}()
	if p.jumps == nil {
		p.jumps = map[string]*jumpHost{}
	}
	p.jumps[key] = j
	return j, nil
}

// firstHopDialer returns the dial of a chain's first hop: its name is
// resolved as a direct target's is, by the exporter's resolver under the
// set's address family rule, and the connection leaves from src when it is
// valid. The hops after it are resolved by the hop before them.
func (p *Prober) firstHopDialer(src netip.Addr, pol config.IPPolicy) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice(), Zone: src.Zone()}
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ip, err := p.res.Lookup(ctx, host, pol)
		if err != nil {
			return nil, err
		}
		return d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
	}
}

// jumpList returns the bastions in no particular order. p.mu must be held.
func (p *Prober) jumpList() []*jumpHost {
	out := make([]*jumpHost, 0, len(p.jumps))
	for _, j := range p.jumps {
		out = append(out, j)
	}
	return out
}

// hopConfig returns the per-attempt client config of one hop: credentials
// and host keys come from the same caches as the targets', so a changed
// key or known_hosts file is used at the next connection.
func (p *Prober) hopConfig(hop config.ProxyJump) func(context.Context) (*ssh.ClientConfig, func(), error) {
	cfg := hop.Auth()
	hostport := hop.HostPort()
	return func(ctx context.Context) (*ssh.ClientConfig, func(), error) {
		kh, err := p.files.hostKey(cfg)
		if err != nil {
			return nil, nil, err
		}
		creds, err := p.files.auth(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		cc := &ssh.ClientConfig{
			User:            cfg.User,
			Auth:            creds.methods(func() {}),
			HostKeyCallback: kh.Check,
			ClientVersion:   clientVersion,
		}
		setAlgorithms(cc, &cfg.Algorithms, kh.HostKeyAlgorithms(hostport, hopAddr(hostport)))
		return cc, creds.close, nil
	}
}

// hopAddr is the address the knownhosts matchers see for a hop: its own
// when it is an IP literal, else the zero address (the name is matched).
func hopAddr(hostport string) net.Addr {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return &net.TCPAddr{}
}

// reconcileJumps counts the targets of each chain, starts the bastions of
// new chains and returns those no target uses any more, for the caller to
// close outside p.mu. p.mu must be held.
func (p *Prober) reconcileJumpsLocked(targets []*config.Target) []*jumpHost {
	used := map[string]bool{}
	for _, j := range p.jumps {
		clear(j.targets)
	}
	if !p.closed {
		for _, t := range targets {
			if t.SSH == nil || len(t.SSH.ProxyJump) == 0 || t.Probe != config.ProbeSSH {
				continue
			}
			key := chainKey(t, p.bastionLimit)
			j := p.jumps[key]
			if j == nil {
				var err error
				if j, err = p.startJumpLocked(key, t); err != nil {
					p.logger.Error("Cannot set up bastion", "set", t.Set, "bastion", chainName(t.SSH.ProxyJump), "err", err)
					continue
				}
			}
			used[key] = true
			j.targets[t.Set]++
		}
	}
	var gone []*jumpHost
	for key, j := range p.jumps {
		if !used[key] {
			delete(p.jumps, key)
			gone = append(gone, j)
		}
	}
	return gone
}

// dialJump opens the target's connection through its bastion. A failure of
// the chain itself is reason bastion; a target the last hop cannot reach
// gets the reason it would have directly.
func (p *Prober) dialJump(ctx context.Context, t *config.Target, raddr string) (net.Conn, probe.Reason, error) {
	j, err := p.jumpFor(t)
	if err != nil {
		return nil, probe.ReasonBastion, fmt.Errorf("bastion %s: %w", chainName(t.SSH.ProxyJump), err)
	}
	nc, err := j.b.DialContext(ctx, "tcp", raddr)
	if err == nil {
		return nc, probe.ReasonNone, nil
	}
	err = withContext(ctx, err)
	var he *bastion.HopError
	var oce *ssh.OpenChannelError
	switch {
	case errors.As(err, &he):
		return nil, probe.ReasonBastion, err
	case errors.As(err, &oce):
		return nil, channelReason(oce), fmt.Errorf("connect %s: %w", raddr, err)
	case expired(ctx):
		// Waiting for a channel slot, a rate token or the chain's
		// connection: the bastion is saturated or still connecting.
		return nil, probe.ReasonTimeout, fmt.Errorf("connect %s: %w", raddr, err)
	default:
		return nil, probe.ReasonBastion, err
	}
}

// channelReason maps the last hop's refusal of a direct-tcpip channel to
// the reason a direct connection would have failed with. OpenSSH words
// the cause in the message ("Connection refused", "No route to host",
// "Connection timed out", getaddrinfo's "Name or service not known"); a
// refusal by policy (AllowTcpForwarding no, PermitOpen) is the bastion's.
func channelReason(oce *ssh.OpenChannelError) probe.Reason {
	msg := strings.ToLower(oce.Message)
	switch {
	case oce.Reason == ssh.Prohibited:
		return probe.ReasonBastion
	case strings.Contains(msg, "refused"):
		return probe.ReasonRefused
	case strings.Contains(msg, "name or service") || strings.Contains(msg, "name resolution") ||
		strings.Contains(msg, "nodename nor servname") || strings.Contains(msg, "no address associated"):
		// getaddrinfo's words: the bastion could not resolve the name.
		return probe.ReasonDNS
	case strings.Contains(msg, "timed out"):
		return probe.ReasonTimeout
	case strings.Contains(msg, "no route") || strings.Contains(msg, "unreachable"):
		return probe.ReasonUnreachable
	case oce.Reason == ssh.ConnectionFailed:
		return probe.ReasonUnreachable
	default:
		return probe.ReasonBastion
	}
}

// Bastion metric descriptors.
var (
	bastionUpDesc = prometheus.NewDesc("fleet_ssh_bastion_up",
		"Whether at least one authenticated connection through the proxy_jump chain works (1) or not (0).",
		[]string{"bastion"}, nil)
	bastionConnectionsDesc = prometheus.NewDesc("fleet_ssh_bastion_connections",
		"Authenticated connections through the proxy_jump chain that work now.",
		[]string{"bastion"}, nil)
	bastionChannelsDesc = prometheus.NewDesc("fleet_ssh_bastion_channels",
		"Channels to targets open through the proxy_jump chain now.",
		[]string{"bastion"}, nil)
	bastionConnectsDesc = prometheus.NewDesc("fleet_ssh_bastion_connects_total",
		"Connection attempts through the proxy_jump chain, by result: success or the stage that failed (connect, handshake, hostkey, auth, config, lost).",
		[]string{"bastion", "result"}, nil)
	bastionTargetsDesc = prometheus.NewDesc("fleet_ssh_bastion_targets",
		"SSH targets of the set reached through the proxy_jump chain.",
		[]string{"bastion", "set"}, nil)
)

// connectResults are the result label values exported from the start, so
// that rate() sees the first failure.
var connectResults = []string{
	bastion.ResultSuccess, bastion.StageConnect, bastion.StageHandshake,
	bastion.StageHostKey, bastion.StageAuth, bastion.StageConfig, bastion.StageLost,
}

// Describe implements prometheus.Collector.
func (p *Prober) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{bastionUpDesc, bastionConnectionsDesc, bastionChannelsDesc, bastionConnectsDesc, bastionTargetsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the state of every bastion in
// use.
func (p *Prober) Collect(ch chan<- prometheus.Metric) {
	type jumpState struct {
		name    string
		b       *bastion.Bastion
		targets map[string]int
	}
	p.mu.Lock()
	jumps := make([]jumpState, 0, len(p.jumps))
	for _, j := range p.jumps {
		jumps = append(jumps, jumpState{name: j.name, b: j.b, targets: maps(j.targets)})
	}
	p.mu.Unlock()
	for _, j := range jumps {
		st := j.b.Stats()
		up := 0.0
		if st.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(bastionUpDesc, prometheus.GaugeValue, up, j.name)
		ch <- prometheus.MustNewConstMetric(bastionConnectionsDesc, prometheus.GaugeValue, float64(st.Connections), j.name)
		ch <- prometheus.MustNewConstMetric(bastionChannelsDesc, prometheus.GaugeValue, float64(st.Channels), j.name)
		for _, r := range connectResults {
			ch <- prometheus.MustNewConstMetric(bastionConnectsDesc, prometheus.CounterValue, float64(st.Connects[r]), j.name, r)
		}
		for set, n := range j.targets {
			ch <- prometheus.MustNewConstMetric(bastionTargetsDesc, prometheus.GaugeValue, float64(n), j.name, set)
		}
	}
}

// maps copies m.
func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// BastionStatus is one bastion's state, for the status pages and tests.
type BastionStatus struct {
	Name    string
	Targets map[string]int
	bastion.Stats
}

// Bastions returns the state of every bastion in use, by name.
func (p *Prober) Bastions() []BastionStatus {
	p.mu.Lock()
	jumps := p.jumpList()
	out := make([]BastionStatus, 0, len(jumps))
	for _, j := range jumps {
		out = append(out, BastionStatus{Name: j.name, Targets: maps(j.targets)})
	}
	p.mu.Unlock()
	for i, j := range jumps {
		out[i].Stats = j.b.Stats()
	}
	slices.SortFunc(out, func(a, b BastionStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}
