// Package deploy owns the Prometheus ecosystem artefacts shipped with
// fleet_exporter: the Prometheus rule files and their unit tests, an example
// Prometheus and Alertmanager configuration, the Grafana dashboard and the
// hardened systemd unit, all under this directory.
//
// The Go code is test support only: it extracts the PromQL expressions from
// the dashboard and the rule files so that tests (here and end-to-end against
// a real Prometheus) can check every expression the artefacts ship.
package deploy
