package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// common holds the options every scenario shares.
type common struct {
	runs      int
	out       string
	tmp       string
	passLimit time.Duration
	command   string
}

// report prints the section and appends it to the results file.
func (c common) report(stdout io.Writer, s benchenv.Section) error {
	s.LoadEnd = benchenv.LoadAvg()
	s.Command = c.command
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, s.Markdown())
	return s.Append(c.out)
}

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("sshbench", "SSH benchmarks of fleet_exporter (loopback only).")
	app.UsageWriter(stderr)
	app.ErrorWriter(stderr)
	app.HelpFlag.Short('h')

	var c common
	app.Flag("runs", "Measured runs per configuration (medians are reported).").Default("3").IntVar(&c.runs)
	app.Flag("out", "Markdown file the results are appended to; empty for none.").Default("BENCHMARKS.md").StringVar(&c.out)
	app.Flag("tmp", "Directory for generated fleets and configs.").Default(os.TempDir()).StringVar(&c.tmp)
	cpuProfile := app.Flag("cpuprofile", "Write a CPU profile of the whole run (both clients) to this file.").String()
	app.Flag("pass-timeout", "Upper bound of one measured pass.").Default("2m").DurationVar(&c.passLimit)

	var fo freshOptions
	freshCmd := app.Command("fresh", "Scenario 1: fresh connection per probe against fleetsim, ours vs a minimal x/crypto/ssh loop.")
	freshCmd.Flag("fleetsim", "fleetsim binary (go build ./cmd/fleetsim).").Required().StringVar(&fo.fleetsim)
	freshCmd.Flag("hosts", "Fleet sizes; repeatable.").Default("1000", "10000").IntsVar(&fo.hosts)
	freshCmd.Flag("base", "First fleetsim address.").Default("127.30.0.1").StringVar(&fo.base)
	freshCmd.Flag("port", "fleetsim SSH port.").Default("42201").IntVar(&fo.port)
	freshCmd.Flag("concurrency", "Probes in flight, for both clients.").Default("64").IntVar(&fo.concurrency)
	freshCmd.Flag("target.ratio", "Target: our client CPU per probe at most this times the minimal loop's.").Default("1.4").Float64Var(&fo.maxRatio)
	freshCmd.Flag("target.wall", "Target: wall time of one pass over the largest fleet.").Default("12s").DurationVar(&fo.maxWall)

	var so sshdOptions
	sshdCmd := app.Command("sshd", "Scenario 2: real OpenSSH sshd on 200 loopback addresses, ours vs pdsh -R ssh.")
	sshdCmd.Flag("sshd", "sshd binary (absolute path).").Default("/usr/sbin/sshd").StringVar(&so.sshd)
	sshdCmd.Flag("pdsh", "pdsh binary.").Default("/usr/bin/pdsh").StringVar(&so.pdsh)
	sshdCmd.Flag("nft", "nft binary, for the loopback DNAT that stands in for sshd's missing listeners.").Default("/usr/sbin/nft").StringVar(&so.nft)
	sshdCmd.Flag("hosts", "Number of host addresses (127.20.0.1 upwards, at most 254).").Default("200").IntVar(&so.hosts)
	sshdCmd.Flag("port", "sshd port; 0 picks a free one.").Default("0").IntVar(&so.port)
	sshdCmd.Flag("fanout", "pdsh -f, and our concurrency.").Default("32").IntVar(&so.fanout)
	sshdCmd.Flag("user", "Login account on sshd, created (no home, /bin/sh) if missing; a plain shell keeps per-session start-up files out of the measurement.").Default("fleetbench").StringVar(&so.user)
	sshdCmd.Flag("remote-command", "Command both clients run.").Default("echo fleet").StringVar(&so.remote)
	sshdCmd.Flag("target.speedup", "Target: our hosts/s at least this times pdsh's.").Default("4").Float64Var(&so.minSpeedup)
	sshdCmd.Flag("target.cpu-ratio", "Target: our client CPU per host at most pdsh's divided by this.").Default("40").Float64Var(&so.minCPURatio)

	var oo onceOptions
	onceCmd := app.Command("once", "Scenario 4: fleet_exporter --once --once.output=grouped vs pdsh | dshbak -c on real OpenSSH sshd, whole commands.")
	onceCmd.Flag("bin", "fleet_exporter binary (go build .).").Required().StringVar(&oo.bin)
	onceCmd.Flag("sshd", "sshd binary (absolute path).").Default("/usr/sbin/sshd").StringVar(&oo.sshd)
	onceCmd.Flag("pdsh", "pdsh binary.").Default("/usr/bin/pdsh").StringVar(&oo.pdsh)
	onceCmd.Flag("dshbak", "dshbak binary.").Default("/usr/bin/dshbak").StringVar(&oo.dshbak)
	onceCmd.Flag("nft", "nft binary, for the loopback DNAT.").Default("/usr/sbin/nft").StringVar(&oo.nft)
	onceCmd.Flag("hosts", "Number of host addresses (127.20.0.1 upwards, at most 254).").Default("200").IntVar(&oo.hosts)
	onceCmd.Flag("port", "sshd port; 0 picks a free one.").Default("0").IntVar(&oo.port)
	onceCmd.Flag("fanout", "pdsh -f, and --once.concurrency.").Default("32").IntVar(&oo.fanout)
	onceCmd.Flag("user", "Login account on sshd, created (no home, /bin/sh) if missing.").Default("fleetbench").StringVar(&oo.user)
	onceCmd.Flag("remote-command", "Command both run.").Default("echo fleet").StringVar(&oo.remote)

	var ro reuseOptions
	reuseCmd := app.Command("reuse", "Scenario 3: persistent connections, CPU per poll and RSS per connected host.")
	reuseCmd.Flag("fleetsim", "fleetsim binary (go build ./cmd/fleetsim).").Required().StringVar(&ro.fleetsim)
	reuseCmd.Flag("hosts", "Fleet sizes; repeatable.").Default("1000", "5000").IntsVar(&ro.hosts)
	reuseCmd.Flag("base", "First fleetsim address.").Default("127.40.0.1").StringVar(&ro.base)
	reuseCmd.Flag("port", "fleetsim SSH port.").Default("42202").IntVar(&ro.port)
	reuseCmd.Flag("concurrency", "Probes in flight.").Default("64").IntVar(&ro.concurrency)
	reuseCmd.Flag("target.poll-cpu", "Target: client CPU per poll on a live connection.").Default("150us").DurationVar(&ro.maxPoll)
	reuseCmd.Flag("target.rss-per-host", "Target: RSS per connected host, bytes.").Default("65536").Int64Var(&ro.maxRSS)

	var bo bastionOptions
	bastionCmd := app.Command("bastion", "Scenario 7: fleetsim through one OpenSSH sshd bastion (proxy_jump) vs direct, fresh connection per probe.")
	bastionCmd.Flag("fleetsim", "fleetsim binary (go build ./cmd/fleetsim).").Required().StringVar(&bo.fleetsim)
	bastionCmd.Flag("hosts", "Fleet size.").Default("1000").IntVar(&bo.hosts)
	bastionCmd.Flag("base", "First fleetsim address.").Default("127.30.0.1").StringVar(&bo.base)
	bastionCmd.Flag("port", "fleetsim SSH port.").Default("42203").IntVar(&bo.port)
	bastionCmd.Flag("concurrency", "Probes in flight, in every mode.").Default("64").IntVar(&bo.concurrency)
	bastionCmd.Flag("sshd", "sshd binary of the bastion (absolute path).").Default("/usr/sbin/sshd").StringVar(&bo.sshd)
	bastionCmd.Flag("bastion-addr", "Loopback address the bastion listens on (a free port is picked).").Default("127.31.0.1").StringVar(&bo.addr)
	bastionCmd.Flag("max-startups", "The bastion's MaxStartups; the default is OpenSSH's.").Default("10:30:100").StringVar(&bo.maxStartups)
	bastionCmd.Flag("connections", "proxy_jump connections: authenticated connections through the bastion.").Default("2").IntVar(&bo.connections)
	bastionCmd.Flag("reuse", "Also measure reuse_connections through the bastion.").Default("true").BoolVar(&bo.reuse)
	bastionCmd.Flag("pdsh", "pdsh binary, for the ssh -J peer.").Default("/usr/bin/pdsh").StringVar(&bo.pdsh)
	bastionCmd.Flag("peer-hosts", "Hosts the ssh -J peer reaches (the first ones); 0 skips the peer.").Default("100").IntVar(&bo.peerHosts)
	bastionCmd.Flag("peer-fanout", "pdsh -f of the ssh -J peer; repeatable. 32 opens more unauthenticated connections at once than MaxStartups' first number, 8 fewer.").Default("32", "8").IntsVar(&bo.peerFanout)

	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "sshbench: %v\n", err)
		return 2
	}
	if c.runs < 1 {
		fmt.Fprintln(stderr, "sshbench: --runs must be at least 1")
		return 2
	}
	c.command = "go run ./bench/sshbench " + strings.Join(args, " ")
	if nofile, err := benchenv.RaiseNofile(); err != nil {
		fmt.Fprintf(stderr, "sshbench: raise RLIMIT_NOFILE: %v\n", err)
	} else {
		fmt.Fprintf(stdout, "RLIMIT_NOFILE %d\n", nofile)
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "sshbench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "sshbench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case freshCmd.FullCommand():
		fo.common = c
		err = runFresh(ctx, fo, stdout)
	case sshdCmd.FullCommand():
		so.common = c
		err = runSSHD(ctx, so, stdout)
	case onceCmd.FullCommand():
		oo.common = c
		err = runOnceCmp(ctx, oo, stdout)
	case reuseCmd.FullCommand():
		ro.common = c
		err = runReuse(ctx, ro, stdout)
	case bastionCmd.FullCommand():
		bo.common = c
		err = runBastion(ctx, bo, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sshbench %s: %v\n", cmd, err)
		return 1
	}
	return 0
}
