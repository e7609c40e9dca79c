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
