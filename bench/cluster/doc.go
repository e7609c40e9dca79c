// Package main benchmarks fleet_exporter clusters of real processes on
// loopback, inside a network namespace bench/cluster.sh creates:
//
//   - gossip: N members with a one-target config; time until every member
//     sees all N (startup convergence), gossip CPU per member and gossip
//     bytes per second over a quiet window (nftables counters on the gossip
//     ports; the benchmark does not scrape during the window), and time
//     until the others drop a SIGKILLed member;
//   - million: 1,000,000 ICMP targets on 127.16.0.0-127.31.249.249 split
//     over 4 gossiping replicas at a 60 s interval: skipped turns, scheduler
//     lag p99, CPU, RSS, scrape time and size per replica over a window
//     after the first interval, then the same after one replica is
//     SIGKILLed and the other three absorb its quarter.
//
// Results are JSON lines on stdout.
package main
