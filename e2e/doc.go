// Package e2e holds fleet_exporter's end-to-end tests. They build the
// exporter and the cmd/fleetsim SSH fleet simulator, run them as subprocesses
// on loopback addresses next to a real Prometheus (Debian package
// prometheus) and a headless Chromium (Debian package chromium), and check
// what an operator would see: series and their labels through the Prometheus
// HTTP API, the shipped alerting and recording rules and Grafana dashboard
// queries evaluated on live data, `promtool check metrics` on a real scrape,
// and the status pages as a browser renders them.
//
// The package has no non-test code; the harness is in harness_test.go. Every
// address the tests use is in 127.0.0.0/8: no test sends traffic off the host
// or resolves a real DNS name. See docs/e2e.md.
package e2e
