package preflight

import (
	"fmt"
	"log/slog"
	"strings"

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

// Options are the facts about the running process a check weighs the
// config against.
type Options struct {
	// HTTPConnections is how many client connections the HTTP server may
	// hold (--web.max-connections); 0 means unbounded, counted as
	// unboundedHTTPConnections.
	HTTPConnections int
	// FDLimit is the soft RLIMIT_NOFILE; 0 reads it from the process.
	FDLimit uint64
	// Discovered holds each set's hosts from its discovery sources, which
	// join its hosts under the same caps.
	Discovered map[string][]config.DiscoveredHost
}

// fdBaseline is what the process holds open besides probes and HTTP
// clients: standard streams, listeners, ICMP and netlink sockets, the log.
const fdBaseline = 64

// unboundedHTTPConnections is what an unbounded HTTP server is assumed to
// need when weighing the fd limit.
const unboundedHTTPConnections = 1024

// Check expands cfg, with the discovered hosts of opts, into targets and checks that every SSH credential and
// known_hosts file it names is usable, so that a config that would only fail
// at probe time is refused at load and reload. An error means the config
// must not run; warnings do not.
func Check(cfg *config.Config, opts Options) (*Report, error) {
	targets, expansion, err := cfg.TargetsWith(opts.Discovered)
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
		if weak := s.WeakAlgorithms(); len(weak) > 0 {
			r.Warnings = append(r.Warnings, Warning{
				Message: "Weak SSH algorithms are enabled (SHA-1, CBC, RC4 or DSA)", Set: hs.Name,
				Detail: cfg.Where(hs.Name, "algorithms") + ": " + strings.Join(weak, ", "),
			})
		}
		if s.PrivateKeyFile != "" {
			if err := ssh.CheckKeyFilePermissions(s.PrivateKeyFile); err != nil {
				r.Warnings = append(r.Warnings, Warning{Message: "Private key file permissions are too open", Set: hs.Name, Detail: err.Error()})
			}
		}
		for i := range s.ProxyJump {
			hop := &s.ProxyJump[i]
			where := fmt.Sprintf("%s: proxy_jump[%d] (%s)", cfg.Where(hs.Name, "proxy_jump"), i, hop.Host)
			if hop.InsecureSkipHostKeyVerification {
				r.Warnings = append(r.Warnings, Warning{Message: "Host key verification of a bastion is disabled; any machine can impersonate it and see every target's login", Set: hs.Name, Detail: where})
			}
			if weak := hop.Auth().WeakAlgorithms(); len(weak) > 0 {
				r.Warnings = append(r.Warnings, Warning{Message: "Weak SSH algorithms are enabled for a bastion (SHA-1, CBC, RC4 or DSA)", Set: hs.Name, Detail: where + ": " + strings.Join(weak, ", ")})
			}
			if hop.PrivateKeyFile != "" && hop.PrivateKeyFile != s.PrivateKeyFile {
				if err := ssh.CheckKeyFilePermissions(hop.PrivateKeyFile); err != nil {
					r.Warnings = append(r.Warnings, Warning{Message: "Private key file permissions are too open", Set: hs.Name, Detail: err.Error()})
				}
			}
		}
	}
	for _, w := range schedule.CapacityWarnings(cfg.Global, targets) {
		r.Warnings = append(r.Warnings, Warning{Message: "Pool limits cannot cover the fleet within one interval", Detail: w})
	}
	if w, ok := fdWarning(cfg, targets, opts); ok {
		r.Warnings = append(r.Warnings, w)
	}
	return r, nil
}

// fdDemand estimates the file descriptors the config can hold open at once:
// one per TCP or SSH probe in flight (ICMP probes share a socket per address
// family), one per kept SSH connection, the HTTP clients and a baseline.
func fdDemand(cfg *config.Config, targets []*config.Target, httpConns int) int {
	g := cfg.Global
	inFlight := min(g.Concurrency, g.Limits.TCP.Concurrency+g.Limits.SSH.Concurrency)
	kept := 0
	for _, t := range targets {
		if t.Probe == config.ProbeSSH && t.SSH != nil && t.SSH.ReuseConnections {
			kept++
		}
	}
	if httpConns <= 0 {
		httpConns = unboundedHTTPConnections
	}
	return inFlight + kept + httpConns + fdBaseline
}

// fdWarning warns when RLIMIT_NOFILE cannot cover fdDemand: probes would
// then fail with reason error (EMFILE) and scrapes be refused, with nothing
// in the config to blame.
func fdWarning(cfg *config.Config, targets []*config.Target, opts Options) (Warning, bool) {
	limit := opts.FDLimit
	if limit == 0 {
		var err error
		if limit, err = softFDLimit(); err != nil || limit == 0 {
			return Warning{}, false
		}
	}
	need := fdDemand(cfg, targets, opts.HTTPConnections)
	if uint64(need) <= limit {
		return Warning{}, false
	}
	return Warning{
		Message: "The open-files limit cannot cover the configured concurrency",
		Detail: fmt.Sprintf("RLIMIT_NOFILE is %d, but probes in flight, kept SSH connections and --web.max-connections may need %d; "+
			"raise it (ulimit -n, systemd LimitNOFILE=) or lower global.concurrency and limits.*.concurrency", limit, need),
	}, true
}
