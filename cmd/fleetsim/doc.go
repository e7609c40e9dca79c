// Package main is fleetsim, a test and benchmark tool that simulates a fleet
// of SSH hosts on loopback addresses (127.x.y.z, one address per host) for
// fleet_exporter. It owns the simulated hosts' behaviour: deterministic host
// keys, command output, drift, faulty host classes and per-phase delays.
//
// "fleetsim gen" writes known_hosts, a client key pair, a ready fleet.yml and
// classes.json; "fleetsim serve" serves the same fleet, optionally split over
// worker processes. Both derive everything from the seed, the addresses and
// the fractions, so they agree without talking to each other.
package main
