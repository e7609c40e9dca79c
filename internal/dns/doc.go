// Package dns resolves target names at probe time for every prober, so that
// a DNS failure is one failed probe rather than a failed reload. It answers
// from the hosts file first and otherwise asks the nameservers of
// resolv.conf itself (Go's resolver hides record TTLs), keeps answers for
// their TTL within configured bounds, remembers names that do not exist,
// serves the last good answer for a while when the nameservers fail,
// applies a host set's address family policy and collapses concurrent
// lookups of one name.
package dns
