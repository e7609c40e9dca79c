// Package main is devicebench: shell mode against exec mode of the SSH
// prober on a fleet of simulated IOS-class devices (cmd/fleetsim serve
// --device), each measured as one `fleet_exporter --once` pass over the
// whole fleet, next to a bare x/crypto/ssh loop running the same command
// over exec in the same run. It reports the median wall time of a pass and
// the client CPU per command (user + system of the exporter process, or of
// this process for the bare loop), and the simulator's CPU per command.
//
// It only talks to 127.0.0.0/8; every pass is bounded by --pass-timeout.
package main
