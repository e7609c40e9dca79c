// Package main is sshbench, the SSH benchmark suite of fleet_exporter. It
// owns these scenarios, each printing a table and appending a
// dated section to BENCHMARKS.md:
//
//   - fresh: a fresh connection per probe against cmd/fleetsim in a separate
//     process, the exporter's pool and SSH prober next to a minimal
//     x/crypto/ssh loop;
//   - sshd: a real OpenSSH sshd on 200 loopback addresses, the exporter's
//     pool and prober next to pdsh -R ssh;
//   - reuse: persistent connections (reuse_connections), client CPU per poll
//     in steady state and RSS per connected host;
//   - once: fleet_exporter --once against pdsh | dshbak -c on real sshd;
//   - bastion: fleetsim hosts through one real OpenSSH sshd bastion
//     (proxy_jump) next to the same hosts directly, with bastion logins and
//     sshd CPU, and OpenSSH's ProxyJump on a sample.
//
// It only talks to 127.0.0.0/8. Every pass is bounded by --pass-timeout.
package main
