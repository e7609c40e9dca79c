package cluster

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// Options configures a Cluster. Exactly one mode applies: static when
// Shards is positive, gossip when ListenAddress is set.
type Options struct {
	// Name is this member's name; the ownership function hashes it. It
	// must be unique in the cluster and stable across restarts (a
	// StatefulSet pod name).
	Name string
	// ReplicationFactor is the number of members that probe each target.
	ReplicationFactor int

	// Shards and ShardIndex select static mode: this member is shard
	// ShardIndex of Shards.
	Shards, ShardIndex int

	// ListenAddress (HOST:PORT, an IP address) selects gossip mode.
	ListenAddress string
	// AdvertiseAddress is the address other members reach this one at;
	// empty lets memberlist pick (the listen address, or a private address
	// of this host when listening on all).
	AdvertiseAddress string
	// Peers are HOST:PORT addresses of members to join, names resolved
	// again on every attempt. This member's own address may be among them.
	Peers []string
	// SecretKey encrypts gossip (16, 24 or 32 bytes for AES-128/192/256).
	SecretKey []byte

	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// joinRetryFirst and rejoin shorten the join timing in tests.
	joinRetryFirst, rejoin time.Duration
}

// Cluster is this member's membership and the ownership decided from it.
type Cluster struct {
	self   string
	k      int
	logger *slog.Logger
	gossip *gossip // nil in static mode
	ready  chan struct{}
	once   sync.Once

	owned      prometheus.Gauge
	changes    prometheus.Counter
	ownedCount atomic.Int64

	// mu guards latest, inForce and isolatedLogged.
	mu sync.Mutex
	// latest is the newest membership view; inForce the one the last
	// Filter applied, to count what a membership change moves.
	latest, inForce *View
	isolatedLogged  bool
}

// New validates opts and builds a Cluster. Nothing runs, and no port is
// bound, until Run.
func New(opts Options) (*Cluster, error) {
	if opts.Name == "" {
		return nil, errNoName
	}
	if opts.ReplicationFactor < 1 {
		return nil, errors.New("cluster: replication factor must be at least 1")
	}
	static := opts.Shards > 0
	if static == (opts.ListenAddress != "") {
		return nil, errors.New("cluster: choose either static shards or a gossip listen address")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{self: opts.Name, k: opts.ReplicationFactor, logger: logger, ready: make(chan struct{})}
	if static {
		if opts.ShardIndex < 0 || opts.ShardIndex >= opts.Shards {
			return nil, errors.New("cluster: shard index out of range")
		}
		c.self = ShardName(opts.ShardIndex)
		c.latest = NewView(c.self, StaticMembers(opts.Shards), c.k)
	} else {
		g, err := newGossip(opts, logger)
		if err != nil {
			return nil, err
		}
		c.gossip = g
		// Until gossip starts, this member is alone in its own view.
		c.latest = NewView(c.self, []Member{{Name: c.self}}, c.k)
	}
	c.owned = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fleet_cluster_owned_targets",
		Help: "Targets this cluster member owns and probes.",
	})
	c.changes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fleet_cluster_ownership_changes_total",
		Help: "Targets this member started or stopped owning because the membership changed.",
	})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(c.owned); err != nil {
			return nil, err
		}
		if err := opts.Registerer.Register(c.changes); err != nil {
			return nil, err
		}
		if err := opts.Registerer.Register(membersCollector{c}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Self returns this member's name in the ownership function.
func (c *Cluster) Self() string { return c.self }

// Static reports whether the membership is a fixed shard assignment.
func (c *Cluster) Static() bool { return c.gossip == nil }

// Ready is closed once the first membership view is known: at once in
// static mode, after the first join attempt with gossip.
func (c *Cluster) Ready() <-chan struct{} { return c.ready }

// View returns the newest membership view.
func (c *Cluster) View() *View {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.latest
}

// Isolated reports whether this member sees only itself although it has
// peers to join: it probes everything it owns in its own view, which may
// overlap what other members probe.
func (c *Cluster) Isolated() bool { return c.gossip != nil && c.gossip.isolated() }

// Filter returns the targets this member owns in the newest view and puts
// that view in force. When the view's members differ from the one in force
// before, the targets whose ownership changed are counted.
func (c *Cluster) Filter(targets []*config.Target) []*config.Target {
	c.mu.Lock()
	v, prev := c.latest, c.inForce
	c.inForce = v
	c.mu.Unlock()
	owned := v.Filter(targets)
	if prev != nil && !prev.sameMembers(v) {
		c.changes.Add(float64(moved(prev, v, targets)))
	}
	c.owned.Set(float64(len(owned)))
	c.ownedCount.Store(int64(len(owned)))
	return owned
}

// Pending reports whether the membership changed since the last Filter,
// so that filtering again would decide differently.
func (c *Cluster) Pending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inForce == nil || !c.inForce.sameMembers(c.latest)
}

// OwnedTargets returns the number of targets the last Filter kept.
func (c *Cluster) OwnedTargets() int { return int(c.ownedCount.Load()) }

// Run keeps the membership view current until ctx ends and calls onChange
// (never concurrently) whenever it changed, so the caller filters and
// reconciles again. In gossip mode it binds the gossip port, joins the
// peers and leaves the cluster when ctx ends.
func (c *Cluster) Run(ctx context.Context, onChange func()) error {
	if c.gossip == nil {
		c.once.Do(func() { close(c.ready) })
		<-ctx.Done()
		return nil
	}
	g := c.gossip
	if err := g.start(); err != nil {
		return err
	}
	defer g.stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	firstDone := make(chan struct{})
	wg.Go(func() { g.joinLoop(jctx, func() { close(firstDone) }) })

	update := func() {
		v := NewView(c.self, g.members(), c.k)
		c.mu.Lock()
		old := c.latest
		c.latest = v
		changed := !old.sameMembers(v)
		c.mu.Unlock()
		if changed {
			c.logger.Info("Cluster membership changed", "members", v.Len(), "before", old.Len())
			onChange()
		}
		c.logIsolation()
	}
	update()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-firstDone:
			firstDone = nil
			update()
			c.once.Do(func() { close(c.ready) })
		case <-g.events:
			// Let the events of one change arrive, then act once.
			t := time.NewTimer(settle)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			update()
		}
	}
}

// logIsolation logs when this member becomes or stops being alone.
func (c *Cluster) logIsolation() {
	iso := c.Isolated()
	c.mu.Lock()
	changed := iso != c.isolatedLogged
	c.isolatedLogged = iso
	c.mu.Unlock()
	switch {
	case changed && iso:
		c.logger.Warn("This member sees no other cluster member; it probes every target it owns in its own view")
	case changed:
		c.logger.Info("This member sees other cluster members again")
	}
}

// Owners returns the members owning (set, host) in the newest view.
func (c *Cluster) Owners(set, host string) []string { return c.View().Owners(set, host) }

var (
	descMembers = prometheus.NewDesc("fleet_cluster_members",
		"Members in this member's view of the cluster, itself included.", nil, nil)
	descMemberInfo = prometheus.NewDesc("fleet_cluster_member_info",
		"One series per member in this member's view of the cluster; the value is always 1.", []string{"name", "address"}, nil)
	descIsolated = prometheus.NewDesc("fleet_cluster_isolated",
		"1 when this member sees no other member although it has peers to join: it probes what it owns alone.", nil, nil)
	descReplication = prometheus.NewDesc("fleet_cluster_replication_factor",
		"Members that probe each target (fewer while fewer are alive).", nil, nil)
)

// membersCollector reads the membership at scrape time.
type membersCollector struct{ c *Cluster }

func (m membersCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMembers
	ch <- descMemberInfo
	ch <- descIsolated
	ch <- descReplication
}

func (m membersCollector) Collect(ch chan<- prometheus.Metric) {
	v := m.c.View()
	ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(v.Len()))
	for _, mem := range v.members {
		ch <- prometheus.MustNewConstMetric(descMemberInfo, prometheus.GaugeValue, 1, mem.Name, mem.Address)
	}
	iso := 0.0
	if m.c.Isolated() {
		iso = 1
	}
	ch <- prometheus.MustNewConstMetric(descIsolated, prometheus.GaugeValue, iso)
	ch <- prometheus.MustNewConstMetric(descReplication, prometheus.GaugeValue, float64(m.c.k))
}
