// Package main is the scrape benchmark of fleet_exporter (scenario 5): it
// fills a collector.Store with synthetic results (no probing) for 10,000
// hosts with ICMP and SSH (one command) and for 100,000 ICMP-only hosts,
// serves /metrics over loopback HTTP, and measures scrape time, body size
// and CPU, plain and gzip, in each exposition format (text 0.0.4,
// OpenMetrics 1.0, delimited protobuf), for three roads: the registry
// (prometheus.Registry + NewCollector + promhttp), the transactional road
// (exposition.NewTransactionalHandler) and the daemon's handler
// (exposition.NewHandler).
package main
