package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/cluster"
	"github.com/fleet-exporter/fleet_exporter/status"
)

// clusterOptions is what the --cluster.* flags decide.
type clusterOptions struct {
	replicationFactor int
	shard             string
	shardFromHostname bool
	shards            int
	listenAddress     string
	advertiseAddress  string
	peers             []string
	name              string
	secretFile        string
}

// enabled reports whether any clustering mode was asked for.
func (c clusterOptions) enabled() bool {
	return c.shard != "" || c.shardFromHostname || c.listenAddress != ""
}

// check rejects flag combinations that cannot work, before anything starts.
func (c clusterOptions) check() error {
	modes := 0
	for _, on := range []bool{c.shard != "", c.shardFromHostname, c.listenAddress != ""} {
		if on {
			modes++
		}
	}
	switch {
	case modes > 1:
		return fmt.Errorf("--cluster.shard, --cluster.shard-from-hostname and --cluster.listen-address exclude each other")
	case c.replicationFactor < 1:
		return fmt.Errorf("--cluster.replication-factor must be at least 1, got %d", c.replicationFactor)
	case c.shardFromHostname && c.shards < 1:
		return fmt.Errorf("--cluster.shard-from-hostname needs --cluster.shards=N")
	case c.shards > 0 && !c.shardFromHostname:
		return fmt.Errorf("--cluster.shards is only used with --cluster.shard-from-hostname")
	case c.listenAddress == "" && (len(c.peers) > 0 || c.advertiseAddress != "" || c.secretFile != ""):
		return fmt.Errorf("--cluster.peer, --cluster.advertise-address and --cluster.secret-file need --cluster.listen-address")
	case c.name == "" && c.enabled():
		return fmt.Errorf("--cluster.name is empty and the hostname is unknown")
	}
	if c.shard != "" {
		if _, _, err := cluster.ParseShard(c.shard); err != nil {
			return fmt.Errorf("--cluster.shard: %w", err)
		}
	}
	if c.shardFromHostname {
		i, err := cluster.OrdinalFromName(c.name)
		if err != nil {
			return fmt.Errorf("--cluster.shard-from-hostname: %w", err)
		}
		if i >= c.shards {
			return fmt.Errorf("--cluster.shard-from-hostname: ordinal %d of %q is not below --cluster.shards=%d", i, c.name, c.shards)
		}
	}
	return nil
}

// defaultMemberName is the hostname, the pod name in a StatefulSet.
func defaultMemberName() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return h
}

// clusterWait bounds the wait for the first membership view: memberlist's
// join of an unreachable peer gives up after its TCP timeout (10 s).
const clusterWait = 30 * time.Second

// startCluster builds the cluster the flags ask for and runs it until the
// returned stop is called. It returns once the first membership view is
// known, so the first reconcile already holds only owned targets; onChange
// runs on every later membership change. Without clustering it returns a
// nil cluster.
func startCluster(ctx context.Context, opts *options, logger *slog.Logger, reg prometheus.Registerer, onChange func()) (*cluster.Cluster, func(), error) {
	co := opts.cluster
	if !co.enabled() {
		return nil, func() {}, nil
	}
	copts := cluster.Options{
		Name: co.name, ReplicationFactor: co.replicationFactor,
		ListenAddress: co.listenAddress, AdvertiseAddress: co.advertiseAddress, Peers: co.peers,
		Logger: logger, Registerer: reg,
	}
	switch {
	case co.shard != "":
		copts.ShardIndex, copts.Shards, _ = cluster.ParseShard(co.shard)
	case co.shardFromHostname:
		copts.ShardIndex, _ = cluster.OrdinalFromName(co.name)
		copts.Shards = co.shards
	}
	if co.secretFile != "" {
		key, err := cluster.LoadSecret(co.secretFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--cluster.secret-file: %w", err)
		}
		copts.SecretKey = key
	}
	cl, err := cluster.New(copts)
	if err != nil {
		return nil, nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cl.Run(cctx, onChange) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			logger.Error("Clustering stopped", "err", err)
		}
	}
	t := time.NewTimer(clusterWait)
	defer t.Stop()
	select {
	case <-cl.Ready():
	case err := <-done:
		cancel()
		if err == nil {
			err = fmt.Errorf("cluster: stopped before its first membership view")
		}
		return nil, nil, err
	case <-ctx.Done():
	case <-t.C:
		logger.Warn("No membership view yet; starting with this member alone in its own view", "waited", clusterWait)
	}
	mode := "gossip"
	if cl.Static() {
		mode = "static"
	}
	v := cl.View()
	logger.Info("Cluster membership", "mode", mode, "name", cl.Self(), "members", v.Len(), "replication_factor", v.ReplicationFactor())
	return cl, stop, nil
}

// clusterSource adapts the cluster to the status package's view of it.
type clusterSource struct{ cl *cluster.Cluster }

func (s clusterSource) ClusterState() status.ClusterState {
	v := s.cl.View()
	st := status.ClusterState{
		Mode: "gossip", Self: s.cl.Self(), ReplicationFactor: v.ReplicationFactor(),
		Isolated: s.cl.Isolated(), OwnedTargets: s.cl.OwnedTargets(),
	}
	if s.cl.Static() {
		st.Mode = "static"
	}
	for _, m := range v.Members() {
		st.Members = append(st.Members, status.ClusterMember{Name: m.Name, Address: m.Address, Self: m.Name == st.Self})
	}
	return st
}

func (s clusterSource) Owners(set, host string) []string { return s.cl.Owners(set, host) }

// registerClusterPage adds /cluster behind the pages' in-flight bound.
func registerClusterPage(pageMux, mux *http.ServeMux, limited http.Handler, cl *cluster.Cluster, logger *slog.Logger) {
	page, err := status.NewClusterHandler(clusterSource{cl}, status.Info{Version: versionString()}, logger.With("component", "status"))
	if err != nil {
		logger.Error("Cannot build the cluster page", "err", err)
		return
	}
	page.Register(pageMux)
	for _, pattern := range status.ClusterPatterns() {
		mux.Handle(pattern, limited)
	}
}
