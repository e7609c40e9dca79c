#!/usr/bin/env bash
# Installs the real components the integration tests run against, when they
# are missing: OpenSSH (sshd, ssh-keygen), Prometheus (prometheus, promtool),
# fping, pdsh, nftables, iproute2, Alertmanager (amtool), Chromium (status
# page browser test) and dnsmasq (the DNS tests' nameserver). Needs root on
# Debian/Ubuntu; elsewhere it says what is missing and the tests that need
# it skip with that message.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have sshd       || need+=(openssh-server)
have ssh-keygen || need+=(openssh-client)
have prometheus || need+=(prometheus)
have promtool   || need+=(prometheus)
have fping      || need+=(fping)
have pdsh       || need+=(pdsh)
have nft        || need+=(nftables)
have ip         || need+=(iproute2)
have amtool     || need+=(prometheus-alertmanager)
have chromium   || need+=(chromium)
have dnsmasq    || need+=(dnsmasq)

# A current Prometheus for the test that selects each exposition format with
# scrape_protocols (Prometheus 2.49 and later; Debian 12 ships 2.42). It is
# built from the Go module proxy at a pinned version, once, into its own
# directory: the other tests keep running against the Debian package.
PROMETHEUS_MODERN_VERSION=v0.316.0 # Prometheus 3.16
PROMETHEUS_MODERN_DIR=/usr/local/lib/fleet_exporter-test
install_modern_prometheus() {
  local want="$PROMETHEUS_MODERN_DIR/prometheus-$PROMETHEUS_MODERN_VERSION"
  [ -x "$want" ] && return 0
  if ! command -v go >/dev/null 2>&1 || ! mkdir -p "$PROMETHEUS_MODERN_DIR" 2>/dev/null; then
    echo "install-test-deps: cannot build Prometheus $PROMETHEUS_MODERN_VERSION (no go or $PROMETHEUS_MODERN_DIR not writable); the scrape_protocols test will skip" >&2
    return 0
  fi
  echo "install-test-deps: building Prometheus $PROMETHEUS_MODERN_VERSION from the Go module proxy (a few minutes, once)" >&2
  local gobin
  gobin=$(mktemp -d)
  if GOFLAGS= GOBIN="$gobin" go install "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODERN_VERSION"; then
    mv "$gobin/prometheus" "$want"
    ln -sf "$(basename "$want")" "$PROMETHEUS_MODERN_DIR/prometheus"
  else
    echo "install-test-deps: building Prometheus $PROMETHEUS_MODERN_VERSION failed; the scrape_protocols test will skip" >&2
  fi
  rm -rf "$gobin"
}
install_modern_prometheus

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
# Deduplicate.
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: missing packages: ${need[*]} (not root or no apt-get; tests needing them will skip)" >&2
  exit 0
fi
echo "install-test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian packages start services on install; the tests start their own
# instances on loopback ports or in namespaces, so stop the system ones
# (dnsmasq would answer on port 53 of the machine).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl stop dnsmasq 2>/dev/null || true
elif [ -s /run/dnsmasq/dnsmasq.pid ]; then
  kill "$(cat /run/dnsmasq/dnsmasq.pid)" 2>/dev/null || true
fi
