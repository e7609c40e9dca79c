// Package promtest runs a real Prometheus server for tests: /usr/bin/prometheus
// on a loopback port with a temporary TSDB, scraping the given targets, and
// queries it through its HTTP API. A test on a machine without Prometheus
// skips, naming the package to install.
package promtest
