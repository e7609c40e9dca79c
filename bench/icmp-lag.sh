#!/usr/bin/env bash
# ICMP scheduler lag second by second, with and without a full scrape: the
# real binary on N loopback targets every second, inside a network
# namespace this script creates and removes. Every second it reads only
# fleet_scheduler_lag_seconds (/metrics?name[]=..., a small answer), and at
# the seconds given in SCRAPES it also takes one full /metrics page, as a
# Prometheus scrape would. It prints, per second, the probes started and
# the share of them that started within 10, 50, 100 and 250 ms of their
# due time, then the p99 bucket over the seconds within 3 s after a full
# scrape and over the others.
#
# Usage: bench/icmp-lag.sh [targets] [seconds]
#   SCRAPES="10 25" (default): seconds at which a full scrape is taken
#   BIN=path to skip the build; MODE=privileged for raw sockets
# Needs root, curl and iproute2.
set -euo pipefail
n=${1:-100000}
secs=${2:-40}
scrapes=${SCRAPES:-"10 25"}
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "icmp-lag.sh: needs root" >&2; exit 1; }
tmp=$(mktemp -d)
ns=fleet-icmplag-$$
pid=
cleanup() {
  [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
bin=${BIN:-}
if [ -z "$bin" ]; then
  bin=$tmp/fleet_exporter
  go build -o "$bin" .
fi
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" sysctl -qw net.ipv4.ping_group_range="0 2147483647"
awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) { v = 16 * 65536 + i; printf "127.%d.%d.%d\n", int(v / 65536), int(v / 256) % 256, v % 256 } }' >"$tmp/targets"
{
  echo "global:"
  echo "  interval: 1s"
  echo "  timeout: 900ms"
  echo "  concurrency: 1048576"
  echo "  max_targets_per_set: 1048576"
  echo "  limits:"
  echo "    icmp: {concurrency: 1048576}"
  echo "host_sets:"
  echo "  - name: bench"
  echo "    probes:"
  echo "      icmp: {count: 1, size: 56}"
  echo "    hosts:"
  sed 's/^/      - /' "$tmp/targets"
} >"$tmp/cfg.yml"
flag=()
[ "${MODE:-}" = privileged ] && flag=(--icmp.privileged)
port=19870
ip netns exec "$ns" "$bin" --config.file="$tmp/cfg.yml" --web.listen-address=127.0.0.1:$port --log.level=warn "${flag[@]}" >"$tmp/log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port/metrics
for _ in $(seq 1 300); do
  ip netns exec "$ns" curl -sf -o /dev/null "http://127.0.0.1:$port/-/ready" && break
  sleep 0.1
done
sleep 5 # warm-up: the first intervals start every target at once
echo "# icmp-lag: rev $(git describe --always --dirty 2>/dev/null || echo unknown), $n targets every 1s, ${MODE:-unprivileged}, $(nproc) CPUs, start load $(cut -d' ' -f1-3 /proc/loadavg)"
lag() {
  ip netns exec "$ns" curl -s "$url?name[]=fleet_scheduler_lag_seconds" -H 'Accept: text/plain;version=0.0.4' |
    awk '/^fleet_scheduler_lag_seconds_bucket\{.*probe="icmp"/ { match($0, /le="[^"]*"/); printf "%s=%s ", substr($0, RSTART + 4, RLENGTH - 5), $NF } END { print "" }'
}
for s in $(seq 0 "$secs"); do
  full=0
  for x in $scrapes; do [ "$x" = "$s" ] && full=1; done
  echo "$s $full $(lag)"
  if [ "$full" = 1 ]; then
    ip netns exec "$ns" curl -s -o /dev/null "$url"
  fi
  sleep 1
done | awk '
  BEGIN { last = -1 }
  { n = 0; delete cur; for (i = 3; i <= NF; i++) { split($i, kv, "="); cur[kv[1]] = kv[2]; les[++n] = kv[1] }
    after = last >= 0 && $1 - last <= 3
    if (NR > 1) {
      tot = cur["+Inf"] - prev["+Inf"]
      line = sprintf("second %3d%s started %7d", $1, (after ? " after a full scrape" : "                    "), tot)
      split("0.01 0.05 0.1 0.25", show, " ")
      for (k = 1; k <= 4; k++) line = line sprintf("  <=%sms %.3f", show[k] * 1000, tot ? (cur[show[k]] - prev[show[k]]) / tot : 0)
      print line
      g = after ? "with" : "without"
      for (i = 1; i <= n; i++) acc[g, les[i]] += cur[les[i]] - prev[les[i]]
      seen[g] = 1
    }
    for (i = 1; i <= n; i++) prev[les[i]] = cur[les[i]]
    if ($2 == 1) last = $1
  }
  END {
    for (g in seen) {
      tot = acc[g, "+Inf"]
      for (i = 1; i <= n; i++) if (acc[g, les[i]] >= 0.99 * tot) { printf "p99 lag over the seconds %s a full scrape in the 3 s before: <= %s s (%d probes)\n", g, les[i], tot; break }
    }
  }'
