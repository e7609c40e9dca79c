#!/usr/bin/env bash
# --once as a terminal tool, side by side with the tools it replaces, each
# run as an operator types it (wall time of the whole command, process
# start-up included), medians of several alternating runs in the same run:
#
#   icmp: a /24 of which 55 addresses are dead, `fping -a -q -g` against
#         `fleet_exporter --once --once.filter=up`. The /24 (192.0.2.0/24,
#         TEST-NET-1) lives in a temporary network namespace, reached over a
#         veth from a second one; nftables in the first drops everything to
#         192.0.2.146-200. Nothing leaves the two namespaces, which are
#         removed on exit.
#   ssh:  200 loopback hosts x one command on a real OpenSSH sshd,
#         `pdsh -f 32 | dshbak -c` against `--once --once.output=grouped`
#         (go run ./bench/sshbench once).
#
# Needs root, iproute2, nftables, fping, pdsh, openssh-server.
# Usage: bench/once.sh [runs]   (default 5); prints Markdown for BENCHMARKS.md.
set -euo pipefail

runs=${1:-5}
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "once.sh: needs root (network namespaces, nftables, sshd)" >&2
  exit 1
fi
for bin in fping pdsh dshbak ip nft; do
  command -v "$bin" >/dev/null || { echo "once.sh: $bin is missing" >&2; exit 1; }
done

tmp=$(mktemp -d)
nsc=fxonce-c-$$
nsh=fxonce-h-$$
cleanup() {
  ip netns del "$nsc" 2>/dev/null || true
  ip netns del "$nsh" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/fleet_exporter" .

ip netns add "$nsc"
ip netns add "$nsh"
ip link add fxoc0 netns "$nsc" type veth peer name fxoh0 netns "$nsh"
ip -n "$nsc" link set lo up
ip -n "$nsh" link set lo up
ip -n "$nsc" addr add 198.18.0.1/30 dev fxoc0
ip -n "$nsh" addr add 198.18.0.2/30 dev fxoh0
ip -n "$nsc" link set fxoc0 up
ip -n "$nsh" link set fxoh0 up
ip -n "$nsc" route add 192.0.2.0/24 via 198.18.0.2
# The host namespace answers for the whole /24 ...
ip -n "$nsh" route add local 192.0.2.0/24 dev lo
# ... but for 55 addresses, which drop every packet.
ip netns exec "$nsh" nft -f - <<'NFT'
table ip fxonce {
  chain pre {
    type filter hook prerouting priority -300; policy accept;
    ip daddr 192.0.2.146-192.0.2.200 drop
  }
}
NFT

# elapsed CMD... runs CMD in the client namespace, its stdout to
# $tmp/out, and prints its wall time in seconds.
elapsed() {
  local t0 t1
  t0=$(date +%s.%N)
  ip netns exec "$nsc" "$@" >"$tmp/out" 2>"$tmp/err" || true
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

fping_cmd=(fping -a -q -g 192.0.2.0/24)
ours_cmd=("$tmp/fleet_exporter" --once --once.filter=up 192.0.2.0/24)
# The timeout ICMP had before its own default: the global 10s.
old_cmd=("$tmp/fleet_exporter" --once --once.filter=up --once.timeout=10s 192.0.2.0/24)
# Warm-up, and a check that both find the same 199 live hosts.
elapsed "${fping_cmd[@]}" >/dev/null
fping_up=$(wc -l <"$tmp/out")
elapsed "${ours_cmd[@]}" >/dev/null
ours_up=$(($(wc -l <"$tmp/out") - 1))
if [ "$fping_up" != 199 ] || [ "$ours_up" != 199 ]; then
  echo "once.sh: live hosts: fping $fping_up, ours $ours_up, want 199" >&2
  cat "$tmp/err" >&2
  exit 1
fi
: >"$tmp/fping.t"
: >"$tmp/ours.t"
: >"$tmp/old.t"
for i in $(seq "$runs"); do
  if [ $((i % 2)) = 1 ]; then
    elapsed "${fping_cmd[@]}" >>"$tmp/fping.t"
    elapsed "${ours_cmd[@]}" >>"$tmp/ours.t"
    elapsed "${old_cmd[@]}" >>"$tmp/old.t"
  else
    elapsed "${old_cmd[@]}" >>"$tmp/old.t"
    elapsed "${ours_cmd[@]}" >>"$tmp/ours.t"
    elapsed "${fping_cmd[@]}" >>"$tmp/fping.t"
  fi
  echo "icmp run=$i fping=$(tail -1 "$tmp/fping.t")s ours=$(tail -1 "$tmp/ours.t")s ours-10s=$(tail -1 "$tmp/old.t")s load=$(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
f=$(median <"$tmp/fping.t")
o=$(median <"$tmp/ours.t")
old=$(median <"$tmp/old.t")
echo
echo "ICMP, 192.0.2.0/24 (254 hosts, 55 dead), $runs runs each, alternating; both report the same 199 live hosts:"
echo
echo "| command | wall s (median) | all runs |"
echo "| --- | --- | --- |"
echo "| \`fping -a -q -g 192.0.2.0/24\` | $f | $(tr '\n' ' ' <"$tmp/fping.t") |"
echo "| \`fleet_exporter --once --once.filter=up 192.0.2.0/24\` (ICMP default timeout 2s) | $o | $(tr '\n' ' ' <"$tmp/ours.t") |"
echo "| \`fleet_exporter --once --once.filter=up --once.timeout=10s 192.0.2.0/24\` (the former 10s) | $old | $(tr '\n' ' ' <"$tmp/old.t") |"
echo
echo "fping ÷ ours: $(awk -v a="$f" -v b="$o" 'BEGIN { printf "%.2f", a / b }')x"
echo

go run ./bench/sshbench --runs "$runs" --out "" once --bin "$tmp/fleet_exporter"
