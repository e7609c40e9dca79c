// Package schedule decides when each target is probed and runs the probes
// within limits. The Scheduler keeps every (host, probe) in one heap by its
// next due time, each at a phase derived from a hash of its key; the Pool
// runs what is due under a token bucket and concurrency limits per probe
// type, skipping (and counting) a turn whose previous probe still runs; the
// capacity model warns when the limits cannot cover the fleet within an
// interval; OneShot submits a fixed list once, for --once. Results leave
// through a sink function the caller supplies: this package knows neither
// the probers nor the store.
package schedule
