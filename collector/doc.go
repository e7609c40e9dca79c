// Package collector owns the results store of fleet_exporter and the ways
// its snapshots become metrics. The Store is the single source of truth for
// what the probers measured: the last result of every configured target, its
// failure streak, cumulative counters, per-command output history and the
// last SSH host key with the time it changed (logged through SetLogger).
//
// Every family the store is exported as is defined once, in the table of
// families.go (see Families). From it come NewCollector, a
// prometheus.Collector; Gatherer, a prometheus.TransactionalGatherer that
// builds dto families from a snapshot without a registry; and TextWriter,
// which writes a snapshot straight into the text 0.0.4, OpenMetrics 1.0 or
// delimited protobuf exposition, byte for byte what client_golang's encoders
// write for NewCollector.
//
// The package imports probe for the result types only and never runs a
// probe; the pool hands results to Store.Update through a sink that main
// wires up.
package collector
