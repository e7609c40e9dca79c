package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"golang.org/x/crypto/ssh"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// fleetFlags registers the flags gen and serve share: they must be given the
// same values to agree on addresses, keys and classes.
func fleetFlags(cmd *kingpin.CmdClause, o *fleetOptions, base *string) {
	cmd.Flag("n", "Number of simulated hosts.").Default("100").IntVar(&o.N)
	cmd.Flag("base", "First host address; must be in 127.0.0.0/8. Addresses ending in .0 or .255 are skipped.").
		Default("127.10.0.1").StringVar(base)
	cmd.Flag("port", "SSH port of every host.").Default("2222").IntVar(&o.Port)
	cmd.Flag("seed", "Seed for host keys, client key, classes and command output.").Default("fleetsim").StringVar(&o.Seed)
	cmd.Flag("drift", "Fraction of hosts whose command output differs from the fleet's.").Default("0").Float64Var(&o.Drift)
	cmd.Flag("refused", "Fraction of hosts with no listener (connection refused).").
		Default("0").Float64Var(&o.Fractions[classRefused])
	cmd.Flag("tarpit", "Fraction of hosts that accept TCP but never send a banner.").
		Default("0").Float64Var(&o.Fractions[classTarpit])
	cmd.Flag("auth-reject", "Fraction of hosts that reject every authentication.").
		Default("0").Float64Var(&o.Fractions[classAuthReject])
	cmd.Flag("hang", "Fraction of hosts whose commands never exit.").
		Default("0").Float64Var(&o.Fractions[classHang])
	cmd.Flag("slow", "Fraction of hosts whose commands take --slow-delay (serve).").
		Default("0").Float64Var(&o.Fractions[classSlow])
}

func parseBase(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("--base: %w", err)
	}
	return a, nil
}

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("fleetsim", "Simulates a fleet of SSH hosts on 127/8 addresses for testing and benchmarking fleet_exporter.")
	app.UsageWriter(stderr)
	app.ErrorWriter(stderr)
	app.HelpFlag.Short('h')
	logCfg := &promslog.Config{Writer: stderr}
	promslogflag.AddFlags(app, logCfg)

	var (
		gopts    genOptions
		genBase  string
		genCmds  []string
		sopts    serveOptions
		srvBase  string
		keyFile  string
		workers  int
		genCmd   = app.Command("gen", "Write known_hosts, a client key pair, fleet.yml and classes.json for the fleet.")
		serveCmd = app.Command("serve", "Serve the simulated fleet until SIGTERM or SIGINT.")
	)
	fleetFlags(genCmd, &gopts.Fleet, &genBase)
	genCmd.Flag("out", "Output directory.").Required().StringVar(&gopts.Out)
	genCmd.Flag("set", "Host set name in fleet.yml.").Default("fleetsim").StringVar(&gopts.SetName)
	genCmd.Flag("user", "SSH user in fleet.yml.").Default("fleet").StringVar(&gopts.User)
	genCmd.Flag("interval", "global.interval in fleet.yml.").Default("30s").DurationVar(&gopts.Interval)
	genCmd.Flag("timeout", "global.timeout in fleet.yml.").Default("10s").DurationVar(&gopts.Timeout)
	genCmd.Flag("concurrency", "global.concurrency in fleet.yml.").Default("256").IntVar(&gopts.Concurrency)
	genCmd.Flag("ssh.concurrency", "global.limits.ssh.concurrency in fleet.yml.").Default("256").IntVar(&gopts.SSHConcurrency)
	genCmd.Flag("ssh.rate", "global.limits.ssh.rate in fleet.yml (new probes per second, 0 = unlimited).").
		Default("0").Float64Var(&gopts.SSHRate)
	genCmd.Flag("ssh.burst", "global.limits.ssh.burst in fleet.yml.").Default("0").IntVar(&gopts.SSHBurst)
	genCmd.Flag("command", "SSH probe command as name=command line; repeatable.").Default("check=check").StringsVar(&genCmds)
	genCmd.Flag("command.timeout", "Timeout of each command in fleet.yml (0 = omitted).").Default("0s").DurationVar(&gopts.CommandTimeout)
	genCmd.Flag("max-output-bytes", "max_output_bytes of the SSH probe.").Default("65536").Int64Var(&gopts.MaxOutputBytes)
	genCmd.Flag("reuse-connections", "reuse_connections of the SSH probe.").BoolVar(&gopts.ReuseConnections)
	genCmd.Flag("device", "Log in to IOS-class devices (serve --device): a password file instead of the key.").BoolVar(&gopts.Device)
	genCmd.Flag("device.password", "Password of the simulated devices.").Default(defaultDevicePassword).StringVar(&gopts.DevicePassword)
	genCmd.Flag("mode", "mode of the SSH probe: exec or shell (empty: left out).").EnumVar(&gopts.Mode, "", "exec", "shell")
	genCmd.Flag("ignore-line", "ignore_lines pattern of every command; repeatable.").StringsVar(&gopts.IgnoreLines)

	fleetFlags(serveCmd, &sopts.Fleet, &srvBase)
	serveCmd.Flag("authorized-key", "Public key file (authorized_keys format) of the only accepted client key.").
		Required().StringVar(&keyFile)
	serveCmd.Flag("delay.banner", "Delay before the server sends its SSH banner.").Default("0s").DurationVar(&sopts.DelayBanner)
	serveCmd.Flag("delay.auth", "Delay before the server answers a public key.").Default("0s").DurationVar(&sopts.DelayAuth)
	serveCmd.Flag("delay.command", "Delay before a command runs.").Default("0s").DurationVar(&sopts.DelayCommand)
	serveCmd.Flag("slow-delay", "How long commands take on --slow hosts.").Default("5s").DurationVar(&sopts.SlowDelay)
	serveCmd.Flag("device", "Serve every host as an IOS-class network device (internal/devicesim): keyboard-interactive password login, exec without exit status, PTY shell with prompt and pager. Drift hosts report another version.").BoolVar(&sopts.Device)
	serveCmd.Flag("device.password", "Password of the simulated devices (auth_reject hosts accept none).").Default(defaultDevicePassword).StringVar(&sopts.DevicePassword)
	serveCmd.Flag("device.user", "User the simulated devices accept.").Default("fleet").StringVar(&sopts.DeviceUser)
	serveCmd.Flag("classes-file", "Write the class of every host as JSON to this file.").StringVar(&sopts.ClassesFile)
	serveCmd.Flag("workers", "Worker processes, each serving about N/workers hosts (for fleets beyond one process's fd limit).").
		Default("1").IntVar(&workers)
	serveCmd.Flag(flagShard, "Shard served by this worker.").Hidden().IntVar(&sopts.Shard)
	serveCmd.Flag(flagShards, "Number of shards; set by the parent for its workers.").Hidden().IntVar(&sopts.Shards)

	// kingpin exits the process after --help; report its code instead so that
	// run stays testable.
	terminated, helped := -1, false
	app.Terminate(func(code int) {
		if terminated < 0 {
			terminated = code
		}
	})
	app.HelpFlag.PreAction(func(*kingpin.ParseContext) error {
		helped = true
		return nil
	})
	cmd, err := app.Parse(args)
	switch {
	case helped:
		return 0
	case errors.Is(err, kingpin.ErrCommandNotSpecified):
		return 2 // usage was printed
	case terminated >= 0:
		return terminated
	case err != nil:
		fmt.Fprintf(stderr, "fleetsim: %v\n", err)
		return 2
	}
	logger := promslog.New(logCfg)

	switch cmd {
	case genCmd.FullCommand():
		if gopts.Fleet.Base, err = parseBase(genBase); err != nil {
			break
		}
		for _, c := range genCmds {
			name, line, ok := strings.Cut(c, "=")
			if !ok || name == "" || line == "" {
				err = fmt.Errorf("--command %q is not name=command", c)
				break
			}
			gopts.Commands = append(gopts.Commands, genCommand{Name: name, Run: line})
		}
		if err == nil {
			err = gen(&gopts)
		}
	case serveCmd.FullCommand():
		err = runServe(args, &sopts, srvBase, keyFile, workers, stdout, stderr, logger)
	}
	if err != nil {
		logger.Error("fleetsim failed", "err", err)
		return 1
	}
	return 0
}

// runServe completes the serve options and either serves in this process or
// starts the workers.
func runServe(args []string, o *serveOptions, base, keyFile string, workers int,
	stdout, stderr io.Writer, logger *slog.Logger,
) error {
	var err error
	if o.Fleet.Base, err = parseBase(base); err != nil {
		return err
	}
	if err := o.Fleet.validate(); err != nil {
		return err
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("read authorized key: %w", err)
	}
	if o.AuthorizedKey, _, _, _, err = ssh.ParseAuthorizedKey(b); err != nil {
		return fmt.Errorf("parse authorized key %s: %w", keyFile, err)
	}
	if lim, err := raiseFDLimit(); err != nil {
		logger.Warn("cannot raise the fd limit", "err", err)
	} else {
		logger.Debug("raised the fd limit", "fd_limit", lim)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.Shards == 0 && workers > 1 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		return serveWorkers(ctx, workerSpec{
			Exe: exe, Args: args, Workers: workers,
			Stdout: stdout, Stderr: stderr, Logger: logger,
		})
	}
	o.Ready = stdout
	o.Logger = logger
	if o.Shards > 0 {
		o.Logger = logger.With("shard", o.Shard)
	}
	return serve(ctx, o)
}
