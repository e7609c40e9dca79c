// Package main is the steady-state benchmark of fleet_exporter:
// one real exporter process probing a simulated SSH fleet
// (cmd/fleetsim) and a large ICMP fleet on 127/8 loopback addresses at a
// fixed interval for several minutes. It samples the exporter's CPU
// (/proc/PID/stat) and RSS (/proc/PID/status) and scrapes its /metrics for
// scheduler lag, skipped turns and probe counts, takes a CPU profile in the
// middle of the run, and checks lag, skips and that the load is spread over
// the interval without a start-up burst.
package main
