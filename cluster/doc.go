// Package cluster decides which targets this member probes when several
// fleet_exporter processes share one fleet: ownership by rendezvous hashing
// of (set, host) over the live members with a replication factor, from a
// static shard assignment or from a gossip membership (hashicorp/memberlist).
// It owns the fleet_cluster_* metrics. It does not probe, schedule or store:
// the daemon hands its target list to Filter and reconciles what comes back.
package cluster
