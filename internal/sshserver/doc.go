// Package sshserver is the project's one in-process SSH server, built on
// golang.org/x/crypto/ssh. It owns the serving mechanics that cmd/fleetsim
// and the tests of the SSH prober and its bastions share: accept loops that
// survive EMFILE, a handshake deadline, session channels with exactly one
// exec request each, exit status and exit signal replies, direct-tcpip
// channels for a jump host (Host.DirectTCPIP), cutting connections, and a
// shutdown that closes every listener and connection and waits for every
// goroutine it started.
//
// Server with one Host per listener is the general form: the Host decides
// the SSH configuration, what happens before the handshake (a tarpit, a
// banner delay) and what each command does. StartTest builds a single-user
// server on a loopback port with the command table of Builtin, for tests;
// internal/testutil wraps it with test cleanup. RawServer serves connections
// that are not SSH at all (tarpits, garbage, a banner followed by silence).
package sshserver
