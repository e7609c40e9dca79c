// Package dnstest gives tests a dns.Resolver that resolves names from
// /etc/hosts for real but never sends a DNS packet, so no test can query the
// machine's (non-loopback) nameserver.
package dnstest
