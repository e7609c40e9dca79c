// Package dnstest gives tests a dns.Resolver that resolves names from
// /etc/hosts for real but never sends a DNS packet, so no test can query the
// machine's nameserver, and a launcher of Debian's dnsmasq inside a test
// network namespace for tests against a real nameserver.
package dnstest
