package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
)

// freshOptions configure scenario 1.
type freshOptions struct {
	common
	fleetsim    string
	hosts       []int
	base        string
	port        int
	concurrency int
	// maxRatio and maxWall are the targets: our client CPU per probe at most
	// maxRatio times the minimal loop's; the largest fleet in one pass within
	// maxWall.
	maxRatio float64
	maxWall  time.Duration
}

// freshRow is the medians of one client at one fleet size.
type freshRow struct {
	runs []passResult
}

func (f freshRow) median(get func(passResult) float64) float64 {
	xs := make([]float64, len(f.runs))
	for i, r := range f.runs {
		xs[i] = get(r)
	}
	return benchenv.Median(xs)
}

// runFresh is scenario 1: SSH with a fresh connection per probe against
// fleetsim in a separate process, our pool+prober next to a minimal
// x/crypto/ssh loop, measured in the same run.
func runFresh(ctx context.Context, o freshOptions, stdout io.Writer) error {
	start, machine := time.Now(), benchenv.DescribeMachine()
	var body strings.Builder
	tb := benchenv.NewTable("hosts", "client", "wall s", "hosts/s", "client CPU ms/probe", "fleetsim CPU ms/probe", "failed (last run)")
	checks := benchenv.NewTable("check", "value", "target", "result")
	for _, n := range o.hosts {
		if err := ctx.Err(); err != nil {
			return err
		}
		ours, minimal, err := freshFleet(ctx, o, n, stdout)
		if err != nil {
			return fmt.Errorf("%d hosts: %w", n, err)
		}
		for _, c := range []struct {
			name string
			row  freshRow
		}{{"minimal x/crypto/ssh loop", minimal}, {"fleet_exporter pool+prober", ours}} {
			last := c.row.runs[len(c.row.runs)-1]
			tb.Row(n, c.name,
				fmt.Sprintf("%.2f", c.row.median(func(r passResult) float64 { return r.wall.Seconds() })),
				fmt.Sprintf("%.0f", c.row.median(passResult.hostsPerSec)),
				fmt.Sprintf("%.3f", c.row.median(passResult.cpuPerHost)),
				fmt.Sprintf("%.3f", c.row.median(passResult.serverPerHost)),
				last.failures())
		}
		// The ratio is taken per run (both passes of a run share the
		// machine's load at that moment), then the median of the ratios.
		ratios := make([]float64, len(ours.runs))
		for i := range ours.runs {
			ratios[i] = ours.runs[i].cpuPerHost() / minimal.runs[i].cpuPerHost()
		}
		ratio := benchenv.Median(ratios)
		checks.Row(fmt.Sprintf("%d hosts: client CPU/probe ours ÷ minimal", n), fmt.Sprintf("%.2fx", ratio),
			fmt.Sprintf("≤ %.1fx", o.maxRatio), benchenv.Verdict(ratio <= o.maxRatio))
		if n == o.hosts[len(o.hosts)-1] {
			wall := time.Duration(ours.median(func(r passResult) float64 { return float64(r.wall) }))
			checks.Row(fmt.Sprintf("%d hosts: one pass wall (ours)", n), fmt.Sprintf("%.2f s", wall.Seconds()),
				fmt.Sprintf("≤ %.0f s", o.maxWall.Seconds()), benchenv.Verdict(wall <= o.maxWall))
		}
	}
	fmt.Fprintf(&body, "Medians of %d runs; in each run both clients probe every host once with concurrency %d, "+
		"alternating which goes first. Client CPU is getrusage(RUSAGE_SELF) of the bench process; fleetsim runs in "+
		"its own process tree and its CPU is read from /proc.\n\n", o.runs, o.concurrency)
	body.WriteString(tb.Markdown())
	body.WriteString("\n")
	body.WriteString(checks.Markdown())
	return o.report(stdout, benchenv.Section{
		Title: "Scenario 1: SSH, fresh connection per probe (fleetsim)", Start: start, Machine: machine,
		Body: body.String(),
	})
}

// freshFleet generates and serves a fleet of n hosts and measures o.runs
// runs of both clients against it.
func freshFleet(ctx context.Context, o freshOptions, n int, stdout io.Writer) (ours, minimal freshRow, err error) {
	dir, err := os.MkdirTemp(o.tmp, fmt.Sprintf("fresh-%d-", n))
	if err != nil {
		return ours, minimal, err
	}
	defer os.RemoveAll(dir)
	if err := benchenv.FleetGen(ctx, o.fleetsim, dir, n, o.base, o.port, false); err != nil {
		return ours, minimal, err
	}
	workers := 1
	if n > 5000 {
		workers = 2 // fd limit: one listener per host plus the connections
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
	mc, err := newMinimalClient(t.User, t.PrivateKeyFile, t.KnownHostsFile, o.concurrency)
	if err != nil {
		return ours, minimal, err
	}
	addrs := targetAddrs(targets)
	cmd := t.Commands[0].Run

	// One unmeasured warm-up pass: page in fleetsim's lazily built host
	// keys and server configs so that no measured pass pays for them.
	wctx, cancel := context.WithTimeout(ctx, o.passLimit)
	mc.fresh(wctx, addrs, cmd, fs.CPU)
	cancel()

	for i := range o.runs {
		oursFirst := i%2 == 1
		for _, which := range []bool{oursFirst, !oursFirst} {
			benchenv.Settle()
			pctx, cancel := context.WithTimeout(ctx, o.passLimit)
			var r passResult
			name := "minimal"
			if which {
				name = "ours"
				oc, err := newOurClient(o.concurrency)
				if err != nil {
					cancel()
					return ours, minimal, err
				}
				r = oc.runRound(pctx, targets, fs.CPU)
				oc.close()
				ours.runs = append(ours.runs, r)
			} else {
				r = mc.fresh(pctx, addrs, cmd, fs.CPU)
				minimal.runs = append(minimal.runs, r)
			}
			cancel()
			if err := ctx.Err(); err != nil {
				return ours, minimal, err
			}
			fmt.Fprintf(stdout, "fresh n=%d run=%d %-7s wall=%.2fs hosts/s=%.0f cpu/probe=%.3fms fleetsim/probe=%.3fms ok=%d failed=%s load=%s\n",
				n, i+1, name, r.wall.Seconds(), r.hostsPerSec(), r.cpuPerHost(), r.serverPerHost(), r.ok, r.failures(), benchenv.LoadAvg())
		}
	}
	return ours, minimal, nil
}
