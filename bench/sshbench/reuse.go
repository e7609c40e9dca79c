package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
)

// reuseOptions configure scenario 3.
type reuseOptions struct {
	common
	fleetsim    string
	hosts       []int
	base        string
	port        int
	concurrency int
	maxPoll     time.Duration
	maxRSS      int64
}

// reuseResult is what one client measured at one fleet size.
type reuseResult struct {
	first   passResult   // the connecting round
	steady  []passResult // rounds on live connections
	rss     int64        // RSS growth from connecting every host, bytes
	opened0 uint64       // connections opened by the first round
	opened  uint64       // connections opened in all
}

func (r reuseResult) pollCPU() time.Duration {
	xs := make([]float64, len(r.steady))
	for i, s := range r.steady {
		xs[i] = float64(s.cpu) / float64(s.n)
	}
	return time.Duration(benchenv.Median(xs))
}

func (r reuseResult) steadyMedian(get func(passResult) float64) float64 {
	xs := make([]float64, len(r.steady))
	for i, s := range r.steady {
		xs[i] = get(s)
	}
	return benchenv.Median(xs)
}

// runReuse is scenario 3: reuse_connections keeps one connection per host;
// every poll opens a new session on it.
func runReuse(ctx context.Context, o reuseOptions, stdout io.Writer) error {
	start, machine := time.Now(), benchenv.DescribeMachine()
	tb := benchenv.NewTable("hosts", "client", "connect round s", "steady poll wall s", "polls/s", "client CPU µs/poll",
		"fleetsim CPU µs/poll", "RSS KiB/host", "connections opened (1st round / all)", "failed")
	checks := benchenv.NewTable("check", "value", "target", "result")
	for _, n := range o.hosts {
		ours, minimal, err := reuseFleet(ctx, o, n, stdout)
		if err != nil {
			return fmt.Errorf("%d hosts: %w", n, err)
		}
		for _, c := range []struct {
			name string
			r    reuseResult
		}{{"minimal x/crypto/ssh loop", minimal}, {"fleet_exporter pool+prober", ours}} {
			fails := 0
			for _, s := range c.r.steady {
				fails += s.fail
			}
			tb.Row(n, c.name,
				fmt.Sprintf("%.2f", c.r.first.wall.Seconds()),
				fmt.Sprintf("%.2f", c.r.steadyMedian(func(p passResult) float64 { return p.wall.Seconds() })),
				fmt.Sprintf("%.0f", c.r.steadyMedian(passResult.hostsPerSec)),
				fmt.Sprintf("%.0f", float64(c.r.pollCPU())/float64(time.Microsecond)),
				fmt.Sprintf("%.0f", c.r.steadyMedian(passResult.serverPerHost)*1000),
				fmt.Sprintf("%.1f", float64(c.r.rss)/float64(n)/1024),
				fmt.Sprintf("%d / %d", c.r.opened0, c.r.opened),
				fmt.Sprintf("%d + %d", c.r.first.fail, fails))
		}
		poll := ours.pollCPU()
		checks.Row(fmt.Sprintf("%d hosts: client CPU per poll (ours)", n), fmt.Sprintf("%.0f µs (%.2fx minimal)",
			float64(poll)/float64(time.Microsecond), float64(poll)/float64(minimal.pollCPU())),
			fmt.Sprintf("≤ %.0f µs", float64(o.maxPoll)/float64(time.Microsecond)), benchenv.Verdict(poll <= o.maxPoll))
		per := ours.rss / int64(n)
		checks.Row(fmt.Sprintf("%d hosts: RSS per connected host (ours)", n), fmt.Sprintf("%.1f KiB (%.2fx minimal)",
			float64(per)/1024, float64(ours.rss)/float64(max(minimal.rss, 1))),
			fmt.Sprintf("≤ %.0f KiB", float64(o.maxRSS)/1024), benchenv.Verdict(per <= o.maxRSS))
		checks.Row(fmt.Sprintf("%d hosts: connections opened (ours)", n), fmt.Sprintf("%d", ours.opened),
			fmt.Sprintf("= %d (one per host)", n), benchenv.Verdict(ours.opened == uint64(n)))
	}
	var body strings.Builder
	fmt.Fprintf(&body, "Each client connects every host once (first round), then polls every host %d more times "+
		"(a new session and one command on the live connection, concurrency %d); CPU per poll is the median over "+
		"those steady rounds of RUSAGE_SELF ÷ hosts. RSS per host is the growth of this process's VmRSS from before "+
		"connecting to after the first round, both read after runtime.GC + debug.FreeOSMemory, ÷ hosts. "+
		"The exporter sends an OpenSSH keepalive before opening the session only when the connection has not "+
		"completed a healthy poll within the target's interval; the minimal loop never does.\n\n", o.runs, o.concurrency)
	body.WriteString(tb.Markdown())
	body.WriteString("\n")
	body.WriteString(checks.Markdown())
	return o.report(stdout, benchenv.Section{
		Title: "Scenario 3: SSH with persistent connections (reuse_connections)", Start: start, Machine: machine,
		Body: body.String(),
	})
}

// reuseFleet serves n hosts and measures the minimal client and ours, one
// after the other, each with its connections closed before the next.
func reuseFleet(ctx context.Context, o reuseOptions, n int, stdout io.Writer) (ours, minimal reuseResult, err error) {
	dir, err := os.MkdirTemp(o.tmp, fmt.Sprintf("reuse-%d-", n))
	if err != nil {
		return ours, minimal, err
	}
	defer os.RemoveAll(dir)
	if err := benchenv.FleetGen(ctx, o.fleetsim, dir, n, o.base, o.port, true); err != nil {
		return ours, minimal, err
	}
	workers := 1
	if n > 5000 {
		workers = 2
	}
	fs, err := benchenv.FleetServe(ctx, o.fleetsim, dir, n, o.base, o.port, workers)
	if err != nil {
		return ours, minimal, err
	}
	defer fs.Stop()
	targets, err := loadTargets(filepath.Join(dir, "fleet.yml"))
	if err != nil {
		return ours, minimal, err
	}
	t := targets[0].SSH
	addrs := targetAddrs(targets)
	cmd := t.Commands[0].Run
	logRound := func(client string, round int, r passResult) {
		fmt.Fprintf(stdout, "reuse n=%d %-7s round=%d wall=%.2fs cpu/poll=%.0fµs fleetsim/poll=%.0fµs ok=%d failed=%s load=%s\n",
			n, client, round, r.wall.Seconds(), r.cpuPerHost()*1000, r.serverPerHost()*1000, r.ok, r.failures(), benchenv.LoadAvg())
	}

	// Minimal: connect all, then sessions on the live connections.
	mc, err := newMinimalClient(t.User, t.PrivateKeyFile, t.KnownHostsFile, o.concurrency)
	if err != nil {
		return ours, minimal, err
	}
	benchenv.Settle()
	rss0, err := benchenv.RSS("self")
	if err != nil {
		return ours, minimal, err
	}
	clients := make([]*ssh.Client, n)
	pass := func(f func(i int) error) passResult {
		pctx, cancel := context.WithTimeout(ctx, o.passLimit)
		defer cancel()
		s0, c0, t0 := fs.CPU(), benchenv.CPUSelf(), time.Now()
		ok, fail, reasons := mc.each(pctx, n, f)
		return passResult{n: n, wall: time.Since(t0), cpu: benchenv.CPUSelf() - c0, server: fs.CPU() - s0, ok: ok, fail: fail, reasons: reasons}
	}
	minimal.first = pass(func(i int) error {
		c, err := mc.dial(addrs[i])
		if err != nil {
			return err
		}
		clients[i] = c
		return runCommand(c, cmd)
	})
	minimal.opened0 = uint64(minimal.first.ok + minimal.first.fail)
	logRound("minimal", 1, minimal.first)
	benchenv.Settle()
	rss1, _ := benchenv.RSS("self")
	minimal.rss = rss1 - rss0
	for round := range o.runs {
		r := pass(func(i int) error {
			if clients[i] == nil {
				return fmt.Errorf("not connected")
			}
			return runCommand(clients[i], cmd)
		})
		logRound("minimal", round+2, r)
		minimal.steady = append(minimal.steady, r)
	}
	minimal.opened = minimal.opened0
	for _, c := range clients {
		if c != nil {
			_ = c.Close()
		}
	}
	clear(clients)
	if err := ctx.Err(); err != nil {
		return ours, minimal, err
	}

	// Ours: the same with the pool and the SSH prober, reuse_connections on.
	oc, err := newOurClient(o.concurrency)
	if err != nil {
		return ours, minimal, err
	}
	defer oc.close()
	benchenv.Settle()
	rss0, err = benchenv.RSS("self")
	if err != nil {
		return ours, minimal, err
	}
	pctx, cancel := context.WithTimeout(ctx, o.passLimit)
	ours.first = oc.runRound(pctx, targets, fs.CPU)
	cancel()
	ours.opened0 = oc.ssh.ConnectionsOpened()
	logRound("ours", 1, ours.first)
	benchenv.Settle()
	rss1, _ = benchenv.RSS("self")
	ours.rss = rss1 - rss0
	for round := range o.runs {
		pctx, cancel := context.WithTimeout(ctx, o.passLimit)
		r := oc.runRound(pctx, targets, fs.CPU)
		cancel()
		logRound("ours", round+2, r)
		ours.steady = append(ours.steady, r)
	}
	ours.opened = oc.ssh.ConnectionsOpened()
	return ours, minimal, ctx.Err()
}
