// Package exposition serves fleet_exporter's /metrics endpoint. Its Handler
// writes the self-metrics registry (Go, process, build info, pool, reload,
// promhttp) and the per-target families of one store snapshot per scrape, in
// the format the scraper's Accept header negotiates: Prometheus text 0.0.4,
// OpenMetrics 1.0 text or delimited protobuf, each optionally gzipped.
//
// The text formats are written by collector.TextWriter straight from the
// snapshot; protobuf is encoded by expfmt from the dto families of a
// collector.Gatherer. BENCHMARKS.md ("Exposition roads") has the figures
// behind that choice. The package imports collector and never probes.
package exposition
