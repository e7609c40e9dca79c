#!/usr/bin/env bash
# Cluster benchmarks: real fleet_exporter processes gossiping on loopback
# inside a network namespace this script creates (and removes on exit):
#   gossip:  membership convergence, gossip CPU and bandwidth (nftables
#            counters on the gossip ports) and dead-member detection at 3,
#            10 and 30 members, RUNS times each;
#   million: 1,000,000 ICMP targets over 4 replicas at a 60 s interval,
#            then one replica SIGKILLed (skip with MILLION=0).
# Needs root, ip and nft. Raw JSON lines go to bench/results/cluster-<date>.jsonl.
#
# Usage: bench/cluster.sh [runs] [window]   (defaults: 3 30s)
set -euo pipefail

runs=${1:-3}
window=${2:-30s}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "cluster.sh: needs root (a network namespace)" >&2
  exit 1
fi
for bin in ip nft; do
  command -v "$bin" >/dev/null || { echo "cluster.sh: $bin is missing" >&2; exit 1; }
done

date=$(date +%F)
jsonl=bench/results/cluster-$date.jsonl
tmp=$(mktemp -d)
ns=fleet-cluster-bench-$$
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/fleet_exporter" .
go build -o "$tmp/clusterbench" ./bench/cluster

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" sysctl -qw net.ipv4.ping_group_range="0 2147483647"
ip netns exec "$ns" nft -f - <<'NFT'
table inet clusterbench {
  chain out {
    type filter hook output priority 0;
    udp dport 21000-21099 counter
    tcp dport 21000-21099 counter
    tcp sport 21000-21099 counter
  }
}
NFT

: >>"$jsonl"
if [ "${GOSSIP:-1}" != 0 ]; then
  for n in 3 10 30; do
    for _ in $(seq "$runs"); do
      ip netns exec "$ns" "$tmp/clusterbench" --exporter "$tmp/fleet_exporter" --tmp "$tmp" gossip --members "$n" --window "$window" | tee -a "$jsonl"
    done
  done
fi
if [ "${MILLION:-1}" != 0 ]; then
  ip netns exec "$ns" "$tmp/clusterbench" --exporter "$tmp/fleet_exporter" --tmp "$tmp" million \
    --steady "${STEADY:-4m}" --after-kill "${AFTER:-2m}" | tee -a "$jsonl"
fi
