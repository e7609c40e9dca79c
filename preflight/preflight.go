package preflight

import (
	"fmt"
	"log/slog"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/prober/ssh"
	"github.com/fleet-exporter/fleet_exporter/schedule"
)

// Warning is one thing an operator should know about a config that is valid.
type Warning struct {
	// Message is a constant description, the log message.
	Message string
	// Set names the host set concerned; empty for the whole config.
	Set string
	// Detail is the variable part.
	Detail string
}

// String renders w for --config.check.
func (w Warning) String() string {
	s := w.Message
	if w.Set != "" {
		s = fmt.Sprintf("host set %q: %s", w.Set, s)
	}
	if w.Detail != "" {
		s += ": " + w.Detail
	}
	return s
}

// Log logs w at warning level.
func (w Warning) Log(logger *slog.Logger, file string) {
	args := []any{"file", file}
	if w.Set != "" {
		args = append(args, "set", w.Set)
	}
	if w.Detail != "" {
		args = append(args, "detail", w.Detail)
	}
	logger.Warn(w.Message, args...) //nolint:sloglint // Message is always one of the constant strings Check sets
}

// Report is what a passing check yields.
type Report struct {
	// Targets is the expanded target list.
	Targets []*config.Target
	// Warnings are in a fixed order: expansion, per set, then capacity.
	Warnings []Warning
}

// Log logs every warning of r.
func (r *Report) Log(logger *slog.Logger, file string) {
	for _, w := range r.Warnings {
		w.Log(logger, file)
	}
}

// Check expands cfg into targets and checks that every SSH credential and
// known_hosts file it names is usable, so that a config that would only fail
// at probe time is refused at load and reload. An error means the config
// must not run; warnings do not.
func Check(cfg *config.Config) (*Report, error) {
	targets, expansion, err := cfg.Targets()
	if err != nil {
		return nil, err
	}
	if err := ssh.CheckFiles(cfg); err != nil {
		return nil, err
	}
	r := &Report{Targets: targets}
	for _, w := range expansion {
		r.Warnings = append(r.Warnings, Warning{Message: "Host set expansion", Detail: w})
	}
	for _, hs := range cfg.HostSets {
		s := hs.Probes.SSH
		if s == nil {
			continue
		}
		if s.InsecureSkipHostKeyVerification {
			r.Warnings = append(r.Warnings, Warning{Message: "Host key verification is disabled; any machine can impersonate these hosts", Set: hs.Name})
		}
		if s.PrivateKeyFile != "" {
			if err := ssh.CheckKeyFilePermissions(s.PrivateKeyFile); err != nil {
				r.Warnings = append(r.Warnings, Warning{Message: "Private key file permissions are too open", Set: hs.Name, Detail: err.Error()})
			}
		}
	}
	for _, w := range schedule.CapacityWarnings(cfg.Global, targets) {
		r.Warnings = append(r.Warnings, Warning{Message: "Pool limits cannot cover the fleet within one interval", Detail: w})
	}
	return r, nil
}
