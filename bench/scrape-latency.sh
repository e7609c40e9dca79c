#!/usr/bin/env bash
# Scrape latency of the real binary over HTTP: BIN on N loopback ICMP
# targets (10 s interval) inside a network namespace this script creates
# and removes, then ten scrapes per format (text 0.0.4, OpenMetrics 1.0,
# protobuf), plain and gzip, one after the other; prints the median and
# every time_total curl measured. Run it for two builds back to back to
# compare them.
#
# Usage: BIN=path bench/scrape-latency.sh [targets] [label]
# Needs root, curl and iproute2.
set -euo pipefail
n=${1:-100000}
label=${2:-$(basename "${BIN:?set BIN to the exporter binary}")}
[ "$(id -u)" -eq 0 ] || { echo "scrape-latency.sh: needs root" >&2; exit 1; }
tmp=$(mktemp -d)
ns=fleet-scrapelat-$$
pid=
cleanup() {
  [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" sysctl -qw net.ipv4.ping_group_range="0 2147483647"
{
  echo "global:"
  echo "  interval: 10s"
  echo "  timeout: 2s"
  echo "  max_targets_per_set: 1048576"
  echo "  limits:"
  echo "    icmp: {concurrency: 1048576}"
  echo "host_sets:"
  echo "  - name: bench"
  echo "    probes:"
  echo "      icmp: {}"
  echo "    hosts:"
  awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) { v = 16 * 65536 + i; printf "      - 127.%d.%d.%d\n", int(v / 65536), int(v / 256) % 256, v % 256 } }'
} >"$tmp/cfg.yml"
port=19990
ip netns exec "$ns" "$BIN" --config.file="$tmp/cfg.yml" --web.listen-address=127.0.0.1:$port --log.level=warn >"$tmp/log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port/metrics
for _ in $(seq 1 300); do
  ip netns exec "$ns" curl -sf -o /dev/null "http://127.0.0.1:$port/-/ready" && break
  sleep 0.1
done
sleep 15 # every target probed at least once
for fmt in "text/plain;version=0.0.4" "application/openmetrics-text;version=1.0.0" \
  "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"; do
  for enc in identity gzip; do
    ts=()
    for _ in $(seq 1 10); do
      ts+=("$(ip netns exec "$ns" curl -s -o /dev/null -H "Accept: $fmt" -H "Accept-Encoding: $enc" -w '%{time_total}' "$url")")
    done
    med=$(printf '%s\n' "${ts[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (a[5] + a[6]) / 2 }')
    echo "$label ${fmt%%;*} $enc median=${med}s all=${ts[*]}"
  done
done
