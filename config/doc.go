// Package config owns fleet_exporter's configuration: the YAML schema and its
// defaults, strict parsing with errors that name file, line and field,
// cross-field validation, and the expansion of host entries (names, addresses,
// CIDR blocks, numeric ranges) into concrete probe targets.
//
// A loaded *Config is immutable; callers replace it wholesale on reload.
package config
