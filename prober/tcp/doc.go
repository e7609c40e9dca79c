// Package tcp is the TCP connect prober: a probe succeeds when the
// three-way handshake completes within the timeout, and a refusal, an
// unreachable network or a timeout map to their own reasons.
package tcp
