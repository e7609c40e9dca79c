// Command fleet_exporter polls host sets with ICMP, TCP and SSH probes
// through a rate-limited, concurrency-bounded pool and exposes per-host
// reachability, SSH phase latency and command-output hashes to Prometheus.
package main
