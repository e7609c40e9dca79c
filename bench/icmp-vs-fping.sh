#!/usr/bin/env bash
# ICMP side by side: the whole exporter process (the real binary: scheduler,
# pool, ICMP engine, store, HTTP server) against `fping -l` on the same
# target file at the same packet rate, CPU of each process from
# /proc/PID/stat over the same window. Everything runs inside a network
# namespace this script creates (loopback only: targets are 127.16.0.1
# upwards on the namespace's own lo) and removes on exit.
#
# Matrix: 16,382 targets every 4 s and 100,000 targets every 1 s, count 1
# and count 3 (3 echo requests 100 ms apart per probe; fping then runs at a
# third of the period so both send the same packets per second), with the
# exporter in unprivileged (ping socket) and raw-socket (--icmp.privileged)
# mode. fping runs as root and so always uses a raw socket. Each cell runs
# RUNS times, exporter and fping back to back in every run; the report
# gives medians and the ratio exporter/fping per run, and the load average.
#
# Usage: bench/icmp-vs-fping.sh [runs] [window-seconds] [cells...]
#   cells: 16382:4:1 16382:4:3 100000:1:1 100000:1:3 (targets:interval_s:count)
#   MODES="unprivileged privileged" (default both); BIN=path to skip the build
#   PPROF=dir: take a CPU profile of the exporter over the window of the
#   first run of each cell into dir.
# Needs root, fping, curl and iproute2.
set -euo pipefail

runs=${1:-3}
window=${2:-20}
shift $(($# < 2 ? $# : 2))
cells=("$@")
[ ${#cells[@]} -gt 0 ] || cells=(16382:4:1 100000:1:1 16382:4:3 100000:1:3)
modes=${MODES:-"unprivileged privileged"}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "icmp-vs-fping.sh: needs root (network namespace, raw sockets)" >&2
  exit 1
fi
for b in fping curl ip; do
  command -v "$b" >/dev/null || { echo "icmp-vs-fping.sh: $b is missing" >&2; exit 1; }
done

tmp=$(mktemp -d)
ns=fleet-icmpvs-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

bin=${BIN:-}
if [ -z "$bin" ]; then
  bin=$tmp/fleet_exporter
  go build -o "$bin" .
fi
rev=$(git describe --always --dirty 2>/dev/null || echo unknown)

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" sysctl -qw net.ipv4.ping_group_range="0 2147483647"
nsx() { ip netns exec "$ns" "$@"; }

clk=$(getconf CLK_TCK)
# cpu_ticks PID...: utime+stime of the processes in clock ticks, read in
# one pass so that every process is sampled at about the same instant.
cpu_ticks() {
  local files=()
  for p in "$@"; do files+=("/proc/$p/stat"); done
  awk '{sub(/^.*\) /, ""); t += $12 + $13} END {print t}' "${files[@]}"
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# targets N: the first N addresses from 127.16.0.1 upwards.
targets() {
  awk -v n="$1" 'BEGIN { for (i = 1; i <= n; i++) { v = 16 * 65536 + i; printf "127.%d.%d.%d\n", int(v / 65536), int(v / 256) % 256, v % 256 } }'
}

# config N INTERVAL COUNT FILE: an exporter config for the target file.
config() {
  local n=$1 iv=$2 count=$3 file=$4 timeout
  timeout=$(awk -v iv="$iv" 'BEGIN { t = iv * 900; if (t > 3000) t = 3000; printf "%dms", t }')
  {
    echo "global:"
    echo "  interval: ${iv}s"
    echo "  timeout: $timeout"
    echo "  concurrency: 1048576"
    echo "  max_targets_per_set: 1048576"
    echo "  limits:"
    echo "    icmp: {concurrency: 1048576}"
    echo "host_sets:"
    echo "  - name: bench"
    echo "    probes:"
    echo "      icmp: {count: $count, packet_interval: 100ms, size: 56}"
    echo "    hosts:"
    sed 's/^/      - /' "$file"
  } >"$tmp/cfg-$n-$iv-$count.yml"
  echo "$tmp/cfg-$n-$iv-$count.yml"
}

# metric TEXT NAME [LABEL-FILTER]: sum of the samples of NAME in TEXT.
metric() { awk -v name="$2" -v f="${3:-}" '$1 ~ "^"name"({|$)" && index($1, f) { s += $NF } END { printf "%.0f\n", s }' "$1"; }

# lagp99 BEFORE AFTER: p99 of fleet_scheduler_lag_seconds{probe="icmp"} from
# the bucket deltas between two scrapes (upper bound of the bucket).
lagp99() {
  awk '
    FNR == 1 { f++ }
    /^fleet_scheduler_lag_seconds_bucket\{.*probe="icmp"/ {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      if (f == 1) b[le] = $NF; else { a[le] = $NF; order[++n] = le }
    }
    END {
      tot = a["+Inf"] - b["+Inf"]; if (tot <= 0) { print "n/a"; exit }
      for (i = 1; i <= n; i++) { le = order[i]; if ((a[le] - b[le]) >= 0.99 * tot) { print le; exit } }
    }' "$1" "$2"
}

port=19800
out=$tmp/rows.tsv
: >"$out"
echo "# icmp-vs-fping: rev $rev, $(nproc) CPUs, $(uname -r), $(fping --version 2>&1 | head -1), window ${window}s, runs $runs, start load $(loadavg)" >&2

for cell in "${cells[@]}"; do
  IFS=: read -r n iv count <<<"$cell"
  tf=$tmp/targets-$n
  [ -f "$tf" ] || targets "$n" >"$tf"
  cfg=$(config "$n" "$iv" "$count" "$tf")
  fp=$((iv * 1000 / count))
  for mode in $modes; do
    flag=()
    [ "$mode" = privileged ] && flag=(--icmp.privileged)
    for run in $(seq 1 "$runs"); do
      load=$(loadavg)
      port=$((port + 1))
      url=http://127.0.0.1:$port/metrics
      # Exporter: warm up two intervals (and the load), then the window.
      ip netns exec "$ns" "$bin" --config.file="$cfg" --web.listen-address=127.0.0.1:$port --web.enable-pprof \
        "${flag[@]}" --log.level=warn >"$tmp/exp.log" 2>&1 &
      epid=$!
      pids+=("$epid")
      for _ in $(seq 1 300); do
        nsx curl -sf -o /dev/null "http://127.0.0.1:$port/-/ready" && break
        sleep 0.1
      done
      sleep $((2 * iv + 3))
      # RSS of the probing process before any scrape has built a /metrics
      # page; the later figure includes one.
      rss0=$(rss_kb "$epid")
      tm0=$(date +%s.%N)
      # Only the families the report needs (name[]), so that the window
      # measures probing: a full scrape of 100,000 targets is a second of
      # CPU whose effect on the lag is measured on its own (BENCHMARKS.md).
      nsx curl -s "$url?name[]=fleet_scheduler_lag_seconds&name[]=fleet_probes_skipped_total&name[]=fleet_probes_total" \
        | grep -E '^fleet_(scheduler_lag|probes_skipped|probes_total|pool_)' >"$tmp/m0" || true
      sleep 1
      prof=()
      if [ -n "${PPROF:-}" ] && [ "$run" = 1 ]; then
        mkdir -p "$PPROF"
        nsx curl -s -o "$PPROF/cpu-$n-$iv-$count-$mode.pprof" "http://127.0.0.1:$port/debug/pprof/profile?seconds=$window" &
        prof=($!)
      fi
      c0=$(cpu_ticks "$epid")
      t0=$(date +%s.%N)
      sleep "$window"
      c1=$(cpu_ticks "$epid")
      t1=$(date +%s.%N)
      rss=$(rss_kb "$epid")
      [ ${#prof[@]} -eq 0 ] || wait "${prof[@]}"
      tm1=$(date +%s.%N)
      nsx curl -s "$url" >"$tmp/m1full"
      # RSS after the process has built one full /metrics page.
      rss=$(rss_kb "$epid")
      grep -E '^fleet_(scheduler_lag|probes_skipped|probes_total|pool_)' "$tmp/m1full" >"$tmp/m1" || true
      kill -INT "$epid"
      wait "$epid" || true
      probes0=$(metric "$tmp/m0" fleet_probes_total 'set="bench"')
      probes1=$(metric "$tmp/m1" fleet_probes_total 'set="bench"')
      skipped=$(metric "$tmp/m1" fleet_probes_skipped_total)
      sent=$(metric "$tmp/m1full" fleet_icmp_packets_sent_total)
      recv=$(metric "$tmp/m1full" fleet_icmp_packets_received_total)
      lag=$(lagp99 "$tmp/m0" "$tmp/m1")
      # Pings in the window: the probe rate between the two scrapes (which
      # enclose the CPU window) times count times the window.
      epings=$(awk -v p0="$probes0" -v p1="$probes1" -v c="$count" -v a="$tm0" -v b="$tm1" -v t0="$t0" -v t1="$t1" \
        'BEGIN { printf "%.0f", (p1 - p0) / (b - a) * c * (t1 - t0) }')
      ecpu=$(awk -v a="$c0" -v b="$c1" -v k="$clk" 'BEGIN { printf "%.3f", (b - a) / k }')

      # fping on the same file and packet rate, same namespace. fping 5.1
      # draws every ping from one 16-bit sequence space that it recycles
      # only after 10 s, so one process sends at most about 6,500 pings/s
      # ("not enough sequence numbers available"); faster fleets are split
      # over processes of at most 5,000 pings/s each, whose CPU is added up.
      rm -f "$tmp"/fchunk-*
      split -l $((5 * fp)) -d -a 3 "$tf" "$tmp/fchunk-"
      fpids=()
      fstart=$(date +%s.%N)
      for chunk in "$tmp"/fchunk-*; do
        ip netns exec "$ns" fping -l -q -p "$fp" -i 0 -f "$chunk" >/dev/null 2>"$chunk.err" &
        fpids+=($!)
        pids+=($!)
      done
      sleep $((2 * iv + 3))
      d0=$(cpu_ticks "${fpids[@]}")
      s0=$(date +%s.%N)
      sleep "$window"
      d1=$(cpu_ticks "${fpids[@]}")
      s1=$(date +%s.%N)
      frss=0
      for f in "${fpids[@]}"; do frss=$((frss + $(rss_kb "$f"))); done
      fend=$(date +%s.%N)
      for f in "${fpids[@]}"; do kill -INT "$f"; done
      for f in "${fpids[@]}"; do wait "$f" || true; done
      # fping's per-target summary: "addr : xmt/rcv/%loss = 12/12/0%, ..."
      nfp=${#fpids[@]}
      read -r fxmt frcv < <(cat "$tmp"/fchunk-*.err | awk -F'[=/,]' '/xmt\/rcv/ { x += $4; r += $5 } END { print x + 0, r + 0 }')
      # Pings in the window: what fping itself counts as sent over its whole
      # run, scaled to the window (it falls behind its period when starved).
      fpings=$(awk -v x="$fxmt" -v a="$s0" -v b="$s1" -v u="$fstart" -v v="$fend" 'BEGIN { printf "%.0f", x * (b - a) / (v - u) }')
      fcpu=$(awk -v a="$d0" -v b="$d1" -v k="$clk" 'BEGIN { printf "%.3f", (b - a) / k }')

      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$mode" "$n" "$iv" "$count" "$run" "$ecpu" "$epings" "$fcpu" "$fpings" \
        "$skipped" "$((sent - recv))" "$lag" "$rss" "$frss" "$((fxmt - frcv))" "$load" "$(loadavg)" "$nfp" "$rss0" | tee -a "$out" >&2
    done
  done
done

# Report: per cell and mode, medians over the runs.
echo "Exporter built from $rev; $(nproc) CPUs, $(uname -r), $(fping --version 2>&1 | head -1); window ${window}s after a warm-up of two intervals + 3 s; $runs runs, medians."
echo
echo "| mode | targets | interval | count | exporter µs/ping | fping µs/ping (processes) | ratio | exporter CPU % | fping CPU % | skipped | replies lost (exporter, fping) | lag p99 ≤ | RSS/target (before / after a scrape) | load avg (start of runs) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
awk -F'\t' -v w="$window" '
  function median(s,   a, k, i, j, t) {
    k = split(s, a, " ")
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  {
    key = $1 "\t" $2 "\t" $3 "\t" $4
    if (!(key in seen)) { seen[key] = 1; keys[++nk] = key }
    eu = $7 > 0 ? $6 * 1e6 / $7 : 0; fu = $9 > 0 ? $8 * 1e6 / $9 : 0
    E[key] = E[key] " " eu; F[key] = F[key] " " fu; R[key] = R[key] " " (fu > 0 ? eu / fu : 0)
    EP[key] = EP[key] " " $6 * 100 / w; FP[key] = FP[key] " " $8 * 100 / w
    S[key] += $10; L[key] = L[key] " " $11; FL[key] = FL[key] " " $15
    if ($12 == "n/a" || $12 > LAG[key]) LAG[key] = $12
    RSS[key] = RSS[key] " " $13 * 1024 / $2; LOAD[key] = LOAD[key] ($5 > 1 ? "; " : "") $16; NFP[key] = $18; RSS0[key] = RSS0[key] " " $19 * 1024 / $2
  }
  END {
    for (i = 1; i <= nk; i++) {
      k = keys[i]; split(k, f, "\t")
      printf "| %s | %d | %ss | %d | %.2f | %.2f (%d) | %.2f× | %.1f | %.1f | %d | %s / %s | %s s | %.0f / %.0f B | %s |\n",
        f[1], f[2], f[3], f[4], median(E[k]), median(F[k]), NFP[k], median(R[k]), median(EP[k]), median(FP[k]),
        S[k], L[k], FL[k], LAG[k], median(RSS0[k]), median(RSS[k]), LOAD[k]
    }
  }' "$out"
echo
echo "Raw rows (mode targets interval count run exporter_cpu_s exporter_pings fping_cpu_s fping_pings skipped exporter_lost lag_p99 exporter_rss_kb fping_rss_kb fping_lost load_start load_end fping_processes exporter_rss_kb_before_first_scrape):"
echo
echo '```'
cat "$out"
echo '```'
