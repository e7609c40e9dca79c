// Package exposition serves fleet_exporter's /metrics endpoint. Its Handler
// writes the self-metrics registry (Go, process, build info, pool, reload,
// promhttp) and the per-target families of one store snapshot per scrape, in
// the format the scraper's Accept header negotiates: Prometheus text 0.0.4,
// OpenMetrics 1.0 text or delimited protobuf, each optionally gzipped.
//
// Every format of the store's families is written by a collector.TextWriter
// straight from the snapshot, byte for byte what expfmt writes for a
// registry holding collector.NewCollector; the self-metrics go through
// expfmt's encoders. NewTransactionalHandler is the other road, promhttp
// over a collector.Gatherer, kept as the reference the tests and benchmarks
// compare with; BENCHMARKS.md ("Exposition roads") has the figures behind
// the choice. The package imports collector and never probes.
package exposition
