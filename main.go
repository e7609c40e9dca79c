package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/discovery"
	"github.com/fleet-exporter/fleet_exporter/preflight"
)

const exporterName = "fleet_exporter"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options is everything the command line decides.
type options struct {
	configFile             string
	configCheck            bool
	once                   bool
	onceFormat             string
	onceCLI                onceFlags
	icmpPrivileged         bool
	enablePprof            bool
	disableExporterMetrics bool
	maxRequests            int
	maxScrapePause         time.Duration
	storagePath            string
	snapshotInterval       time.Duration
	web                    webLimits
	cluster                clusterOptions
	webFlags               *web.FlagConfig
	logConfig              *promslog.Config
	// quietICMP leaves the ICMP socket mode unlogged: --once without ICMP
	// targets has no use for it.
	quietICMP bool
}

// run parses args, runs the requested mode until SIGINT/SIGTERM and returns
// the process exit code. It is main without os.Exit, so every path is testable.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, args, stdout, stderr)
}

// runContext is run with the lifetime given by ctx instead of signals.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runContextIn(ctx, args, os.Stdin, stdout, stderr)
}

// runContextIn is runContext reading a --config.file=- config from stdin.
func runContextIn(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	opts, code, done := parseFlags(args, stdout, stderr)
	if done {
		return code
	}
	logger := promslog.New(opts.logConfig)

	var (
		cfg *config.Config
		err error
	)
	if len(opts.onceCLI.hosts) > 0 {
		cfg, err = opts.onceCLI.config()
	} else {
		cfg, err = loadConfig(opts.configFile, stdin)
	}
	var (
		report *preflight.Report
		// discVersion is the discovery state the first target list is
		// built from; the daemon rebuilds only after it moves on.
		discVersion uint64
	)
	// Every discovery source is read once before the first target list
	// is built, so that a restored state snapshot and the first scrape
	// already cover the discovered hosts.
	disc := discovery.NewManager(discovery.Options{Logger: logger.With("component", "discovery")})
	defer disc.Close()
	if err == nil {
		err = disc.ApplyConfig(ctx, cfg)
	}
	if err == nil {
		discVersion = disc.Version()
		report, err = preflight.Check(cfg, preflight.Options{HTTPConnections: opts.web.maxConnections, Discovered: disc.Hosts()})
	}
	if err != nil {
		switch {
		case opts.configCheck:
			fmt.Fprintf(stderr, "config check failed: %v\n", err)
		case opts.once:
			// A terminal tool: the error as is, not quoted in a log line.
			fmt.Fprintf(stderr, "%s: invalid configuration: %v\n", exporterName, err)
		default:
			logger.Error("Invalid configuration", "err", err)
		}
		return 1
	}
	if opts.configCheck {
		// Every warning a start would log, and still exit 0: only errors
		// fail the check.
		for _, w := range report.Warnings {
			fmt.Fprintf(stderr, "warning: %s\n", w)
		}
		printConfigSummary(stdout, cfg, report.Targets)
		printDiscoverySummary(stdout, stderr, cfg, disc.Status())
		return 0
	}
	report.Log(logger, cfg.Filename)

	if opts.once {
		opts.quietICMP = !slices.ContainsFunc(report.Targets, func(t *config.Target) bool { return t.Probe == config.ProbeICMP })
		return runOnce(ctx, opts, cfg, report.Targets, stdout, stderr, logger)
	}
	return runDaemon(ctx, opts, cfg, report.Targets, disc, discVersion, logger)
}

// parseFlags builds a local kingpin application. done reports that the
// process should exit with code (help, version or a flag error).
func parseFlags(args []string, stdout, stderr io.Writer) (opts *options, code int, done bool) {
	opts = &options{logConfig: &promslog.Config{Writer: stderr}}
	app := kingpin.New(exporterName, "Polls host sets with ICMP, TCP and SSH probes and exposes the results to Prometheus.")
	app.Flag("config.file", "Configuration file; - reads it from stdin (it cannot be reloaded then). Without it an embedded default watches localhost.").
		PlaceHolder("FILE").StringVar(&opts.configFile)
	app.Flag("config.check", "Validate the configuration, read every discovery source once, print a summary of sets, target counts and hosts per discovery source, and exit.").
		BoolVar(&opts.configCheck)
	app.Flag("once", "Run every probe once, print the results and exit; exit code 1 if any probe failed.").
		BoolVar(&opts.once)
	app.Flag("once.format", "Output format of --once: table or json.").
		Default("table").EnumVar(&opts.onceFormat, "table", "json")
	opts.onceCLI.addFlags(app)
	app.Flag("icmp.privileged", "Force raw ICMP sockets (needs CAP_NET_RAW) instead of unprivileged datagram sockets.").
		BoolVar(&opts.icmpPrivileged)
	app.Flag("web.enable-pprof", "Expose /debug/pprof (off by default).").BoolVar(&opts.enablePprof)
	app.Flag("web.disable-exporter-metrics", "Exclude the Go runtime and process metrics from /metrics.").
		BoolVar(&opts.disableExporterMetrics)
	app.Flag("web.max-requests", "Maximum number of parallel scrape requests; 0 disables the limit.").
		Default("40").IntVar(&opts.maxRequests)
	app.Flag("web.max-scrape-pause", "Longest time in all one scrape may pause so that probes waiting for a CPU run first (at most half the scrape timeout Prometheus sends); 0 never pauses.").
		Default("5s").DurationVar(&opts.maxScrapePause)
	app.Flag("web.max-page-requests", "Maximum number of status pages rendered at once (503 beyond); 0 disables the limit.").
		Default("8").IntVar(&opts.web.maxPageRequests)
	app.Flag("web.max-connections", "Maximum number of open HTTP client connections; further ones are closed on accept. 0 disables the limit.").
		Default("256").IntVar(&opts.web.maxConnections)
	app.Flag("web.read-header-timeout", "Time a client may take to send its request headers.").
		Default("10s").DurationVar(&opts.web.readHeaderTimeout)
	app.Flag("web.write-timeout", "Time a response (a scrape, a page) may go without the client taking any of it; a client that stops reading is cut off after it, one that keeps reading a large scrape is not.").
		Default("60s").DurationVar(&opts.web.writeTimeout)
	app.Flag("web.idle-timeout", "Time an idle keep-alive connection is kept open.").
		Default("2m").DurationVar(&opts.web.idleTimeout)
	app.Flag("storage.path", "Directory for the state snapshot, so last results, failure streaks and output-change times survive restarts; empty keeps state in memory only.").
		PlaceHolder("DIR").StringVar(&opts.storagePath)
	app.Flag("storage.snapshot-interval", "Time between two state snapshots with --storage.path; one more is written at clean shutdown.").
		Default("60s").DurationVar(&opts.snapshotInterval)
	app.Flag("cluster.replication-factor", "Cluster members that probe each target (fewer only while fewer are alive).").
		Default("1").IntVar(&opts.cluster.replicationFactor)
	app.Flag("cluster.shard", "Static sharding: this instance is shard I of N (0-based), e.g. 2/5.").
		PlaceHolder("I/N").StringVar(&opts.cluster.shard)
	app.Flag("cluster.shard-from-hostname", "Static sharding: take I from the number at the end of --cluster.name (a StatefulSet pod name) and N from --cluster.shards.").
		BoolVar(&opts.cluster.shardFromHostname)
	app.Flag("cluster.shards", "Number of static shards for --cluster.shard-from-hostname.").
		PlaceHolder("N").IntVar(&opts.cluster.shards)
	app.Flag("cluster.listen-address", "Gossip address (IP:PORT); enables dynamic clustering with memberlist.").
		PlaceHolder("HOST:PORT").StringVar(&opts.cluster.listenAddress)
	app.Flag("cluster.peer", "Gossip address of a member to join (repeatable; names are resolved again on every attempt, this member's own address may be listed).").
		PlaceHolder("HOST:PORT").StringsVar(&opts.cluster.peers)
	app.Flag("cluster.advertise-address", "Gossip address other members reach this one at (IP:PORT); defaults to the listen address or, listening on all, a private address of this host.").
		PlaceHolder("HOST:PORT").StringVar(&opts.cluster.advertiseAddress)
	app.Flag("cluster.name", "This member's name: unique in the cluster and stable across restarts. Ownership hashes it.").
		Default(defaultMemberName()).StringVar(&opts.cluster.name)
	app.Flag("cluster.secret-file", "File with the gossip encryption key: 16, 24 or 32 bytes, raw or base64 (`openssl rand -base64 32`).").
		PlaceHolder("FILE").StringVar(&opts.cluster.secretFile)
	opts.webFlags = kingpinflag.AddFlags(app, ":9922")
	promslogflag.AddFlags(app, opts.logConfig)
	showVersion := app.Flag("version", "Show the version and exit.").Bool()
	app.HelpFlag.Short('h')
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	exited := -1
	app.Terminate(func(c int) {
		if exited < 0 {
			exited = c
		}
	})
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintf(stderr, "%s: error: %v, try --help\n", exporterName, err)
		return nil, 2, true
	}
	if exited >= 0 {
		return nil, exited, true
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Print(exporterName))
		return nil, 0, true
	}
	if err := opts.onceCLI.check(opts.once, opts.configFile); err != nil {
		fmt.Fprintf(stderr, "%s: error: %v, try --help\n", exporterName, err)
		return nil, 2, true
	}
	for name, d := range map[string]time.Duration{
		"web.read-header-timeout":   opts.web.readHeaderTimeout,
		"web.write-timeout":         opts.web.writeTimeout,
		"web.idle-timeout":          opts.web.idleTimeout,
		"storage.snapshot-interval": opts.snapshotInterval,
	} {
		if d <= 0 {
			fmt.Fprintf(stderr, "%s: error: --%s must be positive, got %v\n", exporterName, name, d)
			return nil, 2, true
		}
	}
	if opts.maxScrapePause < 0 {
		fmt.Fprintf(stderr, "%s: error: --web.max-scrape-pause must not be negative, got %v\n", exporterName, opts.maxScrapePause)
		return nil, 2, true
	}
	if err := opts.cluster.check(); err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", exporterName, err)
		return nil, 2, true
	}
	return opts, 0, false
}

// stdinConfig is the --config.file value that reads the config from
// stdin, and the name its errors carry.
const (
	stdinConfig     = "-"
	stdinConfigName = "<stdin>"
)

// loadConfig reads the file (stdin for "-"), or returns the embedded
// default. A config from stdin has its relative paths resolved against the
// working directory.
func loadConfig(filename string, stdin io.Reader) (*config.Config, error) {
	switch filename {
	case "":
		return config.Default(), nil
	case stdinConfig:
		data, err := io.ReadAll(io.LimitReader(stdin, config.MaxConfigSize+1))
		if err != nil {
			return nil, fmt.Errorf("read config from stdin: %w", err)
		}
		if len(data) > config.MaxConfigSize {
			return nil, fmt.Errorf("%s: config is larger than %d bytes", stdinConfigName, config.MaxConfigSize)
		}
		return config.Parse(data, stdinConfigName)
	}
	return config.Load(filename)
}

// printConfigSummary prints one line per set with its target counts.
func printConfigSummary(w io.Writer, cfg *config.Config, targets []*config.Target) {
	type counts struct{ hosts, icmp, tcp, ssh int }
	per := make(map[string]*counts, len(cfg.HostSets))
	hostsSeen := make(map[[2]string]bool)
	for _, t := range targets {
		c := per[t.Set]
		if c == nil {
			c = &counts{}
			per[t.Set] = c
		}
		if k := [2]string{t.Set, t.Host}; !hostsSeen[k] {
			hostsSeen[k] = true
			c.hosts++
		}
		switch t.Probe {
		case config.ProbeICMP:
			c.icmp++
		case config.ProbeTCP:
			c.tcp++
		case config.ProbeSSH:
			c.ssh++
		}
	}
	fmt.Fprintf(w, "configuration %s is valid (%d host sets, %d targets)\n", cfg.Filename, len(cfg.HostSets), len(targets))
	tw := newTable(w, "SET", "HOSTS", "ICMP", "TCP", "SSH", "INTERVAL", "TIMEOUT")
	for _, hs := range cfg.HostSets {
		c := per[hs.Name]
		if c == nil {
			c = &counts{}
		}
		tw.row(hs.Name, c.hosts, c.icmp, c.tcp, c.ssh, hs.Interval.D(), hs.Timeout.D())
	}
	tw.flush()
}

// printDiscoverySummary prints one line per discovery source with the
// hosts its read yielded; a failed read is a warning, not a failed check:
// the daemon runs without that source's hosts until it answers.
func printDiscoverySummary(w, warn io.Writer, cfg *config.Config, sources []discovery.SourceStatus) {
	if len(sources) == 0 {
		return
	}
	tw := newTable(w, "SET", "SOURCE", "HOSTS", "STATUS")
	for _, s := range sources {
		status := "ok"
		if s.Err != nil {
			status = "failed"
			// The source is "file_sd:<glob>" or "http_sd:<url>": point at
			// the set's key that lists it.
			key, _, _ := strings.Cut(s.Source, ":")
			fmt.Fprintf(warn, "warning: %s: host set %q: discovery source %s failed: %v\n", cfg.Where(s.Set, key), s.Set, s.Source, s.Err)
		}
		tw.row(s.Set, s.Source, s.Hosts, status)
	}
	tw.flush()
}

// logStartup logs the version, build context and config an operator wants
// to see once; newFleet logs the ICMP socket mode.
func logStartup(logger *slog.Logger, cfg *config.Config) {
	logger.Info("Starting "+exporterName, "version", version.Info(), "config", cfg.Filename, "sets", len(cfg.HostSets))
	logger.Info("Build context", "build_context", version.BuildContext())
}

// addFlags registers the --once flags and the HOST arguments on app.
func (o *onceFlags) addFlags(app *kingpin.Application) {
	o.set = map[string]*bool{}
	flag := func(name, help string) *kingpin.FlagClause {
		f := app.Flag(name, help)
		given := new(bool)
		o.set[name] = given
		f.IsSetByUser(given)
		return f
	}
	flag("once.probe", "Probe of the hosts given as arguments to --once: icmp, tcp:PORT[,PORT...] or ssh; repeatable. Default icmp.").
		PlaceHolder("PROBE").StringsVar(&o.probes)
	flag("once.ssh.user", "SSH user of --once.probe=ssh. Default the current user.").PlaceHolder("USER").StringVar(&o.sshUser)
	flag("once.ssh.port", "SSH port of --once.probe=ssh for hosts without a port of their own.").
		Default(strconv.Itoa(config.DefaultSSHPort)).IntVar(&o.sshPort)
	flag("once.ssh.key", "Private key file of --once.probe=ssh. Default: the ssh-agent when SSH_AUTH_SOCK is set, and the first of ~/.ssh/id_ed25519, id_ecdsa, id_rsa that exists.").
		PlaceHolder("FILE").StringVar(&o.sshKey)
	flag("once.ssh.known-hosts", "known_hosts file of --once.probe=ssh. Default ~/.ssh/known_hosts.").
		PlaceHolder("FILE").StringVar(&o.knownHosts)
	flag("once.ssh.command", "Command --once.probe=ssh runs on every host, in its own session; repeatable.").
		PlaceHolder("CMD").StringsVar(&o.commands)
	flag("once.timeout", "Timeout of each probe of the hosts given as arguments. Default: 2s for ICMP, 10s for TCP and SSH.").
		PlaceHolder("DURATION").DurationVar(&o.timeout)
	flag("once.concurrency", "Most probes of the hosts given as arguments in flight at once. Default: the per-type limits (ICMP 4096, TCP 256, SSH 64).").
		PlaceHolder("N").IntVar(&o.concurrency)
	flag("once.filter", "Print only the probes that succeeded (up, like fping -a) or failed (down, like fping -u); the exit code still counts every probe.").
		PlaceHolder("up|down").EnumVar(&o.filter, "up", "down")
	flag("once.output", "Layout of --once output: rows (one per probe) or grouped (each distinct result or command output once, with its hosts folded into ranges, largest group first, like dshbak -c).").
		Default("rows").EnumVar(&o.output, "rows", "grouped")
	app.Arg("host", "Hosts to probe with --once instead of a config file, in the hosts: syntax: names, addresses, host:port, CIDR blocks, ranges such as web[01-20].").
		StringsVar(&o.hosts)
}
