// Package dns resolves target names at probe time for every prober, with a
// small cache, collapsed concurrent lookups of one name and a bound on how
// long a lookup may take, so that a DNS failure is one failed probe rather
// than a failed reload.
package dns
