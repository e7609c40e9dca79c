package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/fleet-exporter/fleet_exporter/internal/fileload"
)

// Join retry timing: a member alone retries its peers quickly at first
// (peers of a fresh StatefulSet start within seconds of each other), then
// backs off; a member in a cluster looks for configured peers it does not
// see every rejoinInterval, which heals a partition after memberlist has
// forgotten the other side.
const (
	joinRetryFirst   = 500 * time.Millisecond
	joinRetryLongest = 15 * time.Second
	rejoinInterval   = 30 * time.Second
	// settle coalesces the membership events of one change (a join
	// announces several members at once) into one reconcile.
	settle = 200 * time.Millisecond
)

// gossip runs one memberlist instance and the join loop.
type gossip struct {
	cfg    *memberlist.Config
	peers  []string
	logger *slog.Logger
	events chan struct{}
	// joinRetryFirst and rejoin are the timings above; tests shorten them.
	joinRetryFirst, rejoin time.Duration

	// mu guards ml and peersSeen.
	mu sync.Mutex
	ml *memberlist.Memberlist
	// peersSeen is the number of peer addresses other than this member's
	// at the last join attempt.
	peersSeen int
}

// LoadSecret reads a gossip encryption key: a file holding the key in
// base64 (as `openssl rand -base64 32` prints it) or the raw 16, 24 or 32
// bytes. Surrounding whitespace is ignored. The file is read like the
// secrets the config names: a FIFO, a device or a file over 1 MiB is an
// error at once, not a read that blocks the start or exhausts memory.
func LoadSecret(path string) ([]byte, error) {
	b, err := fileload.Read(path, fileload.MaxSecretSize)
	if err != nil {
		return nil, err
	}
	// Text that is valid base64 is taken as base64: random raw bytes
	// almost never are, and a base64 key of the wrong length must not be
	// mistaken for a raw one.
	if key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b))); err == nil {
		if validKeyLen(len(key)) {
			return key, nil
		}
		return nil, fmt.Errorf("%s: base64 key decodes to %d bytes, want 16, 24 or 32 (generate one with `openssl rand -base64 32`)", path, len(key))
	}
	if validKeyLen(len(b)) {
		return b, nil
	}
	return nil, fmt.Errorf("%s: want a 16, 24 or 32 byte key, raw or base64 (generate one with `openssl rand -base64 32`)", path)
}

func validKeyLen(n int) bool { return n == 16 || n == 24 || n == 32 }

// splitHostPort parses HOST:PORT with a numeric port.
func splitHostPort(what, s string) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: %w", what, s, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%s %q: bad port", what, s)
	}
	return host, port, nil
}

func newGossip(opts Options, logger *slog.Logger) (*gossip, error) {
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = opts.Name
	host, port, err := splitHostPort("listen address", opts.ListenAddress)
	if err != nil {
		return nil, err
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("listen address %q: want an IP address, not a name", opts.ListenAddress)
	}
	cfg.BindAddr, cfg.BindPort = host, port
	if opts.AdvertiseAddress != "" {
		ahost, aport, err := splitHostPort("advertise address", opts.AdvertiseAddress)
		if err != nil {
			return nil, err
		}
		if net.ParseIP(ahost) == nil {
			return nil, fmt.Errorf("advertise address %q: want an IP address, not a name", opts.AdvertiseAddress)
		}
		cfg.AdvertiseAddr, cfg.AdvertisePort = ahost, aport
	}
	for _, p := range opts.Peers {
		if _, _, err := splitHostPort("peer", p); err != nil {
			return nil, err
		}
	}
	if len(opts.SecretKey) > 0 {
		if !validKeyLen(len(opts.SecretKey)) {
			return nil, fmt.Errorf("gossip key has %d bytes, want 16, 24 or 32", len(opts.SecretKey))
		}
		cfg.SecretKey = opts.SecretKey
	}
	// A member restarted under its name at a new address (a rescheduled
	// pod) takes its name back as soon as the old one is declared dead.
	cfg.DeadNodeReclaimTime = time.Second
	cfg.Logger = log.New(&memberlistLog{logger: logger}, "", 0)
	g := &gossip{
		cfg: cfg, peers: slices.Clone(opts.Peers), logger: logger,
		events:         make(chan struct{}, 1),
		joinRetryFirst: joinRetryFirst, rejoin: rejoinInterval,
	}
	if opts.joinRetryFirst > 0 {
		g.joinRetryFirst = opts.joinRetryFirst
	}
	if opts.rejoin > 0 {
		g.rejoin = opts.rejoin
	}
	cfg.Events = g
	return g, nil
}

// NotifyJoin implements memberlist.EventDelegate.
func (g *gossip) NotifyJoin(*memberlist.Node) { g.notify() }

// NotifyLeave implements memberlist.EventDelegate.
func (g *gossip) NotifyLeave(*memberlist.Node) { g.notify() }

// NotifyUpdate implements memberlist.EventDelegate.
func (g *gossip) NotifyUpdate(*memberlist.Node) { g.notify() }

// notify never blocks memberlist: one pending event stands for any number.
func (g *gossip) notify() {
	select {
	case g.events <- struct{}{}:
	default:
	}
}

// start creates the memberlist instance: it binds the gossip port.
func (g *gossip) start() error {
	ml, err := memberlist.Create(g.cfg)
	if err != nil {
		return fmt.Errorf("cluster: cannot start gossip on %s:%d: %w", g.cfg.BindAddr, g.cfg.BindPort, err)
	}
	g.mu.Lock()
	g.ml = ml
	g.mu.Unlock()
	local := ml.LocalNode()
	g.logger.Info("Gossip started", "name", local.Name, "address", local.Address(), "peers", strings.Join(g.peers, ","))
	return nil
}

// members returns the live members (suspect ones included, as memberlist
// does until they are declared dead).
func (g *gossip) members() []Member {
	g.mu.Lock()
	ml := g.ml
	g.mu.Unlock()
	if ml == nil {
		return nil
	}
	nodes := ml.Members()
	out := make([]Member, len(nodes))
	for i, n := range nodes {
		out[i] = Member{Name: n.Name, Address: n.Address()}
	}
	return out
}

// isolated reports whether this member sees no other member although
// peers other than itself are configured.
func (g *gossip) isolated() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ml != nil && g.ml.NumMembers() <= 1 && g.peersSeen > 0
}

// resolvePeers resolves every peer again (a headless Service lists the pods
// that exist now) and drops this member's own address and those of members
// it already sees.
func (g *gossip) resolvePeers(ctx context.Context, ml *memberlist.Memberlist) (missing []string, others int) {
	local := ml.LocalNode()
	self := map[string]bool{local.Address(): true}
	known := map[string]bool{}
	for _, n := range ml.Members() {
		known[n.Address()] = true
	}
	seen := map[string]bool{}
	for _, p := range g.peers {
		host, port, _ := net.SplitHostPort(p)
		if host == g.cfg.BindAddr && port == strconv.Itoa(g.cfg.BindPort) {
			continue
		}
		var ips []string
		if net.ParseIP(host) != nil {
			ips = []string{host}
		} else {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			addrs, err := net.DefaultResolver.LookupHost(rctx, host)
			cancel()
			if err != nil {
				g.logger.Debug("Cannot resolve a cluster peer", "peer", p, "err", err)
				continue
			}
			ips = addrs
		}
		for _, ip := range ips {
			a := net.JoinHostPort(ip, port)
			if self[a] || seen[a] {
				continue
			}
			seen[a] = true
			others++
			if !known[a] {
				missing = append(missing, a)
			}
		}
	}
	return missing, others
}

// joinLoop joins the configured peers until ctx ends. firstDone is called
// once, after the first attempt, whatever its outcome: a member whose peers
// are not up yet serves what it owns alone meanwhile.
func (g *gossip) joinLoop(ctx context.Context, firstDone func()) {
	ml := g.ml
	wait := g.joinRetryFirst
	first := true
	for {
		missing, others := g.resolvePeers(ctx, ml)
		g.mu.Lock()
		g.peersSeen = others
		g.mu.Unlock()
		if len(missing) > 0 {
			n, err := ml.Join(missing)
			switch {
			case err != nil && n == 0:
				g.logger.Warn("Cannot join any cluster peer yet; probing what this member owns in its own view", "peers", strings.Join(missing, ","), "members", ml.NumMembers(), "err", err)
			case err != nil:
				g.logger.Info("Joined some cluster peers", "joined", n, "members", ml.NumMembers(), "err", err)
			default:
				g.logger.Info("Joined cluster peers", "joined", n, "members", ml.NumMembers())
			}
		}
		if first {
			first = false
			firstDone()
		}
		next := g.rejoin
		if ml.NumMembers() <= 1 && others > 0 {
			next = wait
			wait = min(wait*2, joinRetryLongest)
		} else {
			wait = g.joinRetryFirst
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// stop leaves the cluster gracefully, so the others take over at once
// instead of after the failure-detection time, and releases the sockets.
func (g *gossip) stop() {
	g.mu.Lock()
	ml := g.ml
	g.mu.Unlock()
	if ml == nil {
		return
	}
	if err := ml.Leave(2 * time.Second); err != nil {
		g.logger.Warn("Cannot announce leaving the cluster", "err", err)
	}
	if err := ml.Shutdown(); err != nil {
		g.logger.Warn("Cannot stop gossip", "err", err)
	}
}

// memberlistLog turns memberlist's "[LEVEL] memberlist: text" lines into
// structured records at the matching level. Its errors are warnings here:
// they report a peer that cannot be reached, which the cluster survives.
type memberlistLog struct {
	logger *slog.Logger
}

func (w *memberlistLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelWarn} {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			level, line = l, strings.TrimSpace(rest)
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.logger.Log(context.Background(), level, "Gossip", "detail", line)
	return len(p), nil
}

var errNoName = errors.New("cluster: member name is empty (set --cluster.name)")
