// Package discovery finds the hosts of a host set in Prometheus file_sd
// files and http_sd endpoints, maps their labels onto the set's host and
// label names with relabel_configs, and keeps each source's last good list
// when a read fails. Its Manager runs the sources of one config and
// signals on Changes whenever a set's discovered hosts changed; the daemon
// then rebuilds its target list from the config and Manager.Hosts and
// reconciles every component with it, as a reload does.
package discovery
