// Package config owns fleet_exporter's configuration: the YAML schema and its
// defaults, strict parsing with errors that name file, line and field,
// cross-field validation, and the expansion of host entries (names, addresses,
// CIDR blocks, numeric ranges) into concrete probe targets.
//
// A loaded *Config is immutable; callers replace it wholesale on reload.
package config

import (
	"time"
)

// Probe type names, used as the `probe` label and as keys of the per-type pool
// limits.
const (
	ProbeICMP = "icmp"
	ProbeTCP  = "tcp"
	ProbeSSH  = "ssh"
)

// ProbeTypes lists every probe type in a stable order.
var ProbeTypes = []string{ProbeICMP, ProbeTCP, ProbeSSH}

// Config is the whole configuration file.
type Config struct {
	Global   Global    `yaml:"global"`
	HostSets []HostSet `yaml:"host_sets"`

	// Hash is the hex SHA-256 of the bytes the config was parsed from. It is
	// set by Load/Parse and never read from YAML.
	Hash string `yaml:"-"`
	// Filename is the file the config came from ("<embedded>" for the
	// built-in default).
	Filename string `yaml:"-"`
}

// Global holds the defaults and the pool limits.
type Global struct {
	// Interval is the default time between two runs of the same probe.
	Interval Duration `yaml:"interval"`
	// Timeout is the default per-probe timeout.
	Timeout Duration `yaml:"timeout"`
	// Concurrency bounds the probes in flight over all types.
	Concurrency int `yaml:"concurrency"`
	// MaxTargetsPerSet caps the expansion of one host set.
	MaxTargetsPerSet int `yaml:"max_targets_per_set"`
	// Limits holds per probe type concurrency and start rate.
	Limits ProbeLimits `yaml:"limits"`
}

// ProbeLimits holds one Limit per probe type.
type ProbeLimits struct {
	ICMP Limit `yaml:"icmp"`
	TCP  Limit `yaml:"tcp"`
	SSH  Limit `yaml:"ssh"`
}

// For returns the limit of the named probe type.
func (l ProbeLimits) For(probe string) Limit {
	switch probe {
	case ProbeICMP:
		return l.ICMP
	case ProbeTCP:
		return l.TCP
	default:
		return l.SSH
	}
}

// Limit bounds one probe type: at most Concurrency in flight and at most Rate
// starts per second (token bucket with Burst). A zero Rate means unlimited.
type Limit struct {
	Concurrency int     `yaml:"concurrency"`
	Rate        float64 `yaml:"rate"`
	Burst       int     `yaml:"burst"`
}

// HostSet is a named group of hosts probed the same way.
type HostSet struct {
	Name     string            `yaml:"name"`
	Hosts    []string          `yaml:"hosts"`
	Interval Duration          `yaml:"interval"`
	Timeout  Duration          `yaml:"timeout"`
	Labels   map[string]string `yaml:"labels"`
	Probes   Probes            `yaml:"probes"`
}

// Probes lists the probes enabled for a set; a nil pointer means disabled.
type Probes struct {
	ICMP *ICMPProbe `yaml:"icmp"`
	TCP  *TCPProbe  `yaml:"tcp"`
	SSH  *SSHProbe  `yaml:"ssh"`
}

// ICMPProbe configures an ICMP echo round.
type ICMPProbe struct {
	// Count is the number of echo requests per probe.
	Count int `yaml:"count"`
	// PacketInterval is the time between two echo requests of one probe.
	PacketInterval Duration `yaml:"packet_interval"`
	// Size is the ICMP payload size in bytes.
	Size int `yaml:"size"`
	// Timeout overrides the set timeout for this probe.
	Timeout Duration `yaml:"timeout"`
}

// TCPProbe configures a TCP connect probe.
type TCPProbe struct {
	// Port is used for hosts that carry no port of their own.
	Port int `yaml:"port"`
	// Timeout overrides the set timeout for this probe.
	Timeout Duration `yaml:"timeout"`
}

// SSHProbe configures an SSH login and the commands it runs.
type SSHProbe struct {
	Port                            int       `yaml:"port"`
	User                            string    `yaml:"user"`
	PrivateKeyFile                  string    `yaml:"private_key_file"`
	PassphraseFile                  string    `yaml:"passphrase_file"`
	CertificateFile                 string    `yaml:"certificate_file"`
	PasswordFile                    string    `yaml:"password_file"`
	Agent                           bool      `yaml:"agent"`
	KnownHostsFile                  string    `yaml:"known_hosts_file"`
	InsecureSkipHostKeyVerification bool      `yaml:"insecure_skip_host_key_verification"`
	Commands                        []Command `yaml:"commands"`
	MaxOutputBytes                  int64     `yaml:"max_output_bytes"`
	Timeout                         Duration  `yaml:"timeout"`
	// ReuseConnections keeps one authenticated connection per host and opens
	// a new session on it per poll.
	ReuseConnections bool `yaml:"reuse_connections"`
}

// Command is one command run by the SSH probe, in its own session.
type Command struct {
	Name    string   `yaml:"name"`
	Run     string   `yaml:"run"`
	Timeout Duration `yaml:"timeout"`
}

// Duration is a time.Duration that reads Prometheus-style strings ("90s",
// "5m", "1h30m", "1d") from YAML.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
