#!/usr/bin/env bash
# fleet_exporter benchmark suite; `make bench` runs it. Loopback
# only (127.0.0.0/8). Every scenario prints a table and appends a dated
# section, stamped with the machine (nproc, CPU, kernel, Go, load average),
# to BENCHMARKS.md. See BENCHMARKS.md for what each scenario measures.
#
# Usage: bench/run.sh [scenario...]
#   scenarios: fresh sshd reuse bastion scrape steady icmp   (default: all, in that order)
# Environment:
#   RUNS=3              measured runs per configuration (medians are reported)
#   STEADY_DURATION=4m  length of the steady-state run (at most 30m)
#   OUT=BENCHMARKS.md   results file ("" to only print)
#   BENCH_REV=          build the exporter and fleetsim from this git revision
#                       (git archive) instead of the working tree
# Needs root for sshd (a dedicated login user "fleetbench" is created if
# missing, and an nftables DNAT table exists while it runs), raw ICMP sockets
# and the icmp scenario; Debian packages openssh-server, pdsh, nftables
# (scripts/install-test-deps.sh installs them) and, for icmp, fping and
# prometheus-smokeping-prober.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
runs=${RUNS:-3}
steady_duration=${STEADY_DURATION:-4m}
out=${OUT-BENCHMARKS.md}
[ -n "$out" ] && out=$(realpath -m "$out")
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(fresh sshd reuse bastion scrape steady icmp)

tmp=$(mktemp -d /tmp/fleet-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

src=$root
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "${BENCH_REV:-}" ]; then
  mkdir "$tmp/src"
  git archive "$BENCH_REV" | tar -x -C "$tmp/src"
  src=$tmp/src
  rev=$(git rev-parse --short "$BENCH_REV")
elif [ -n "$(git status --porcelain -- '*.go' 2>/dev/null)" ]; then
  rev="$rev+dirty"
fi

echo "building from $src ($rev)"
(cd "$src" && CGO_ENABLED=0 go build -o "$tmp/fleet_exporter" . && go build -o "$tmp/fleetsim" ./cmd/fleetsim)
for b in sshbench scrape steady; do
  go build -o "$tmp/$b" "./bench/$b"
done

if [ -n "$out" ]; then
  [ -f "$out" ] || printf '# Benchmarks\n\n' >"$out"
  printf '## Run of %s, exporter built from %s\n\n' "$(date -u '+%F %H:%M UTC')" "$rev" >>"$out"
fi

for s in "${scenarios[@]}"; do
  echo "=== $s"
  case $s in
  fresh)  "$tmp/sshbench" --runs "$runs" --out "$out" --tmp "$tmp" fresh --fleetsim "$tmp/fleetsim" ;;
  sshd)   "$tmp/sshbench" --runs "$runs" --out "$out" sshd ;; # its own temp dir: sshd reads keys as the login user
  reuse)  "$tmp/sshbench" --runs "$((runs > 5 ? runs : 5))" --out "$out" --tmp "$tmp" reuse --fleetsim "$tmp/fleetsim" ;;
  bastion) "$tmp/sshbench" --runs "$runs" --out "$out" --tmp "$tmp" bastion --fleetsim "$tmp/fleetsim" ;;
  scrape) "$tmp/scrape" --runs "$((runs > 5 ? runs : 5))" --out "$out" ;;
  steady) "$tmp/steady" --exporter "$tmp/fleet_exporter" --fleetsim "$tmp/fleetsim" --duration "$steady_duration" \
            --tmp "$tmp" --out "$out" ;;
  icmp)
    if [ -x bench/icmp.sh ]; then
      bench/icmp.sh "$runs"
      res=bench/results/icmp-$(date +%F).md
      if [ -n "$out" ] && [ -f "$res" ]; then
        printf '### ICMP at scale (bench/icmp.sh, from %s)\n\n' "$res" >>"$out"
        cat "$res" >>"$out"
        printf '\n' >>"$out"
      fi
    else
      echo "bench/icmp.sh not present; skipping"
    fi
    ;;
  *) echo "unknown scenario $s (want fresh sshd reuse bastion scrape steady icmp)" >&2; exit 2 ;;
  esac
done
