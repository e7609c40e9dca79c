package prober

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/probe"
	"github.com/fleet-exporter/fleet_exporter/prober/icmp"
	"github.com/fleet-exporter/fleet_exporter/prober/ssh"
	"github.com/fleet-exporter/fleet_exporter/prober/tcp"
)

// Options chooses how the probers are built.
type Options struct {
	// ICMPPrivileged forces raw ICMP sockets instead of detecting the mode.
	ICMPPrivileged bool
	// QuietICMP leaves the detected ICMP socket mode unlogged, for a run
	// without ICMP targets (--once of SSH or TCP probes).
	QuietICMP bool
	// DNS holds the resolver's TTL settings (global.dns).
	DNS config.DNS
	// BastionLimits is global.limits.bastion.
	BastionLimits config.Limit
	// Registerer, if not nil, gets the resolver's, the ICMP engine's and
	// the bastions' metrics.
	Registerer prometheus.Registerer
}

// Set is one prober per probe type, sharing a DNS cache.
type Set struct {
	res  *dns.Resolver
	icmp *icmp.Prober
	tcp  *tcp.Prober
	ssh  *ssh.Prober
}

// Open detects the ICMP socket mode (logging it, or why ICMP probes will
// fail with reason permission) and builds the probers. Sockets are opened
// lazily by the probers; Close releases them.
func Open(opts Options, logger *slog.Logger) *Set {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mode, err := icmp.DetectMode(opts.ICMPPrivileged)
	switch {
	case opts.QuietICMP:
	case err != nil:
		logger.Error("ICMP sockets are not permitted; ICMP probes will fail with reason permission", "err", err)
	default:
		logger.Info("ICMP socket mode", "mode", mode.String())
	}
	res := dns.New(dns.Options{TTL: opts.DNS, Registerer: opts.Registerer})
	s := &Set{
		res:  res,
		icmp: icmp.NewProber(res, mode, logger.With("component", "icmp")),
		tcp:  tcp.NewProber(res),
		ssh:  ssh.NewProber(res, logger.With("component", "ssh")),
	}
	s.ssh.SetBastionLimits(opts.BastionLimits)
	if opts.Registerer != nil {
		// The ICMP engine's discarded-reply counters.
		if err := opts.Registerer.Register(s.icmp); err != nil {
			logger.Warn("Cannot register the ICMP prober's metrics", "err", err)
		}
		// The fleet_ssh_bastion_* families.
		if err := opts.Registerer.Register(s.ssh); err != nil {
			logger.Warn("Cannot register the SSH prober's bastion metrics", "err", err)
		}
	}
	return s
}

// Probers returns the probers keyed by probe type, as the pool takes them.
func (s *Set) Probers() map[string]probe.Prober {
	return map[string]probe.Prober{
		config.ProbeICMP: s.icmp,
		config.ProbeTCP:  s.tcp,
		config.ProbeSSH:  s.ssh,
	}
}

// Reconcile hands the configured target list to the probers that keep
// per-target state (pooled SSH connections).
func (s *Set) Reconcile(targets []*config.Target) {
	s.ssh.Reconcile(targets)
}

// SetBastionLimits applies reloaded global.limits.bastion settings.
func (s *Set) SetBastionLimits(l config.Limit) { s.ssh.SetBastionLimits(l) }

// OnFileChange sets f to hear of every reread of a changed credential or
// known_hosts file (see ssh.Prober.OnFileChange).
func (s *Set) OnFileChange(f func(paths []string, err error)) { s.ssh.OnFileChange(f) }

// Bastions returns the state of the SSH prober's bastions.
func (s *Set) Bastions() []ssh.BastionStatus { return s.ssh.Bastions() }

// SetDNS applies reloaded global.dns settings to the shared resolver.
func (s *Set) SetDNS(d config.DNS) { s.res.SetTTL(d) }

// SSHConnectionsOpened counts the SSH connections the SSH prober opened.
func (s *Set) SSHConnectionsOpened() uint64 { return s.ssh.ConnectionsOpened() }

// Close releases the probers' sockets and pooled connections.
func (s *Set) Close() {
	s.ssh.Close()
	s.icmp.Close()
}
