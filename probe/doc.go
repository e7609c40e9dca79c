// Package probe defines what every prober produces and the scheduler, pool,
// store and pages consume: the Result of one probe, the fixed Reason set and
// the Prober interface. It imports only config, so packages that read results
// never pull in SSH, ICMP or TCP code.
package probe
