package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/hostrange"
	"github.com/fleet-exporter/fleet_exporter/probe"
	"github.com/fleet-exporter/fleet_exporter/schedule"
)

// onceResult is one line of --once output. Its JSON field names are part of
// the documented interface (README, "One-shot mode").
type onceResult struct {
	Set             string            `json:"set"`
	Host            string            `json:"host"`
	Probe           string            `json:"probe"`
	Port            int               `json:"port,omitempty"`
	Success         bool              `json:"success"`
	Reason          string            `json:"reason,omitempty"`
	Error           string            `json:"error,omitempty"`
	DurationSeconds float64           `json:"duration_seconds"`
	ICMP            *onceICMP         `json:"icmp,omitempty"`
	SSH             *onceSSH          `json:"ssh,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`

	// commands and runs are the names and command lines the target's SSH
	// probe is configured with, for the grouped output.
	commands, runs []string
}

type onceICMP struct {
	Sent       int     `json:"packets_sent"`
	Received   int     `json:"packets_received"`
	RTTSeconds float64 `json:"rtt_seconds"`
}

type onceSSH struct {
	ConnectSeconds   float64       `json:"connect_seconds"`
	HandshakeSeconds float64       `json:"handshake_seconds"`
	AuthSeconds      float64       `json:"auth_seconds"`
	Commands         []onceCommand `json:"commands,omitempty"`
}

type onceCommand struct {
	Name            string  `json:"name"`
	Run             string  `json:"run,omitempty"`
	Ran             bool    `json:"ran"`
	ExitStatus      int     `json:"exit_status"`
	OutputHash      uint64  `json:"output_hash"`
	OutputBytes     int64   `json:"output_bytes"`
	DurationSeconds float64 `json:"duration_seconds"`
	Reason          string  `json:"reason,omitempty"`
	StderrFirstLine string  `json:"stderr_first_line,omitempty"`

	// output is the kept start of stdout, for the grouped output.
	output []byte
}

// runOnce probes every target once through the same pool and limits as the
// daemon, prints the results and returns 1 if any probe failed.
func runOnce(ctx context.Context, opts *options, cfg *config.Config, targets []*config.Target, stdout, stderr io.Writer, logger *slog.Logger) int {
	var (
		mu      sync.Mutex
		results = make([]probe.Result, 0, len(targets))
		done    atomic.Int64
		failed  atomic.Int64
	)
	if opts.onceCLI.output == "grouped" {
		// Print each distinct output: the SSH probes keep its start.
		for i := range cfg.HostSets {
			if s := cfg.HostSets[i].Probes.SSH; s != nil {
				s.KeepOutputBytes = keptOutputBytes
			}
		}
	}
	oneShot := schedule.NewOneShot(targets)
	// Outputs kept for the grouped output are shared between hosts with
	// the same output hash, so a fleet of equal outputs holds one.
	outputs := map[uint64][]byte{}
	sink := func(r probe.Result) {
		defer oneShot.Observe(r)
		mu.Lock()
		if r.SSH != nil && slices.ContainsFunc(r.SSH.Commands, func(c probe.CommandResult) bool { return c.Output != nil }) {
			ssh := *r.SSH
			ssh.Commands = slices.Clone(ssh.Commands)
			for i := range ssh.Commands {
				c := &ssh.Commands[i]
				if c.Output == nil {
					continue
				}
				if o, ok := outputs[c.Hash]; ok && bytes.Equal(o, c.Output) {
					c.Output = o
				} else {
					outputs[c.Hash] = c.Output
				}
			}
			r.SSH = &ssh
		}
		results = append(results, r)
		mu.Unlock()
		done.Add(1)
		if !r.Success {
			failed.Add(1)
		}
	}
	f, err := newFleet(opts, cfg, targets, logger, prometheus.NewRegistry(), sink)
	if err != nil {
		logger.Error("Cannot start the probe pool", "err", err)
		return 1
	}
	defer f.close()

	// The pool runs as in the daemon, with the same limits; a one-shot
	// submitter takes the scheduler's place.
	stopProgress := startProgress(stderr, len(targets), &done, &failed)
	poolCtx, stopPool := context.WithCancel(ctx)
	poolDone := make(chan error, 1)
	go func() { poolDone <- f.pool.Run(poolCtx) }()
	_ = oneShot.Run(ctx, f.pool.Submit)
	stopPool()
	if err := <-poolDone; err != nil {
		logger.Error("Probe pool failed", "err", err)
	}
	stopProgress()

	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "interrupted")
		return 1
	}
	byKey := make(map[config.Key]*config.Target, len(targets))
	for _, t := range targets {
		byKey[t.Key()] = t
	}
	setOrder := make(map[string]int, len(cfg.HostSets))
	for i, hs := range cfg.HostSets {
		setOrder[hs.Name] = i
	}
	slices.SortFunc(results, func(a, b probe.Result) int { return compareOnce(setOrder, a.Key, b.Key) })
	anyFailed := false
	out := make([]onceResult, 0, len(results))
	for _, r := range results {
		anyFailed = anyFailed || !r.Success
		o := toOnceResult(r, byKey[r.Key])
		if keepOnce(opts.onceCLI.filter, o.Success) {
			out = append(out, o)
		}
	}
	if len(results) < len(targets) {
		anyFailed = true
		fmt.Fprintf(stderr, "%d of %d probes did not finish\n", len(targets)-len(results), len(targets))
	}
	var werr error
	switch {
	case opts.onceCLI.output == "grouped" && opts.onceFormat == "json":
		werr = writeJSON(stdout, groupOnce(out))
	case opts.onceCLI.output == "grouped":
		printGrouped(stdout, groupOnce(out))
	case opts.onceFormat == "json":
		werr = writeJSON(stdout, out)
	default:
		printOnceTable(stdout, out)
	}
	if werr != nil {
		fmt.Fprintf(stderr, "cannot write results: %v\n", werr)
		return 1
	}
	if anyFailed {
		return 1
	}
	return 0
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// keepOnce applies --once.filter to a probe's result.
func keepOnce(filter string, success bool) bool {
	switch filter {
	case "up":
		return success
	case "down":
		return !success
	}
	return true
}

// compareOnce orders results as an operator reads them: sets in config
// order, hosts in natural order (127.0.2.2 before 127.0.2.10, web2 before
// web10), probes as icmp, tcp, ssh, ports by number.
func compareOnce(setOrder map[string]int, a, b config.Key) int {
	return cmp.Or(
		cmp.Compare(setOrder[a.Set], setOrder[b.Set]),
		strings.Compare(a.Set, b.Set),
		hostrange.Compare(a.Host, b.Host),
		cmp.Compare(probeRank(a.Probe), probeRank(b.Probe)),
		cmp.Compare(a.Port, b.Port),
	)
}

func probeRank(p string) int { return slices.Index(config.ProbeTypes(), p) }

func toOnceResult(r probe.Result, t *config.Target) onceResult {
	o := onceResult{
		Set:             r.Key.Set,
		Host:            r.Key.Host,
		Probe:           r.Key.Probe,
		Port:            r.Key.Port,
		Success:         r.Success,
		Reason:          string(r.Reason),
		DurationSeconds: r.Duration.Seconds(),
	}
	if r.Err != nil && !r.Success {
		o.Error = r.Err.Error()
	}
	if t != nil && len(t.Labels) > 0 {
		o.Labels = t.Labels
	}
	if t != nil && t.SSH != nil {
		for _, c := range t.SSH.Commands {
			o.commands = append(o.commands, c.Name)
			o.runs = append(o.runs, c.Run)
		}
	}
	if r.ICMP != nil {
		o.ICMP = &onceICMP{Sent: r.ICMP.Sent, Received: r.ICMP.Received, RTTSeconds: r.ICMP.RTT.Seconds()}
	}
	if r.SSH != nil {
		s := &onceSSH{
			ConnectSeconds:   r.SSH.Connect.Seconds(),
			HandshakeSeconds: r.SSH.Handshake.Seconds(),
			AuthSeconds:      r.SSH.Auth.Seconds(),
		}
		for i, c := range r.SSH.Commands {
			oc := onceCommand{
				Name: c.Name, Ran: c.Ran, ExitStatus: c.ExitStatus, OutputHash: c.Hash,
				OutputBytes: c.Bytes, DurationSeconds: c.Duration.Seconds(), Reason: string(c.Reason),
				StderrFirstLine: c.StderrFirstLine, output: c.Output,
			}
			if t != nil && t.SSH != nil && i < len(t.SSH.Commands) {
				oc.Run = t.SSH.Commands[i].Run
			}
			s.Commands = append(s.Commands, oc)
		}
		o.SSH = s
	}
	return o
}

// probeName is the PROBE column: the probe type, with the port for tcp.
func (r *onceResult) probeName() string {
	if r.Port != 0 {
		return r.Probe + ":" + strconv.Itoa(r.Port)
	}
	return r.Probe
}

// failedCommands describes the commands that failed: name, exit status or
// reason, and the first stderr line.
func (r *onceResult) failedCommands() string {
	if r.SSH == nil {
		return ""
	}
	var parts []string
	for _, c := range r.SSH.Commands {
		if !c.Ran || c.Reason == "" {
			continue
		}
		parts = append(parts, c.Name+": "+commandStatus(c))
	}
	return strings.Join(parts, "; ")
}

// commandStatus words how a command that ran failed.
func commandStatus(c onceCommand) string {
	s := c.Reason
	if c.ExitStatus >= 0 && c.Reason == string(probe.ReasonCommand) {
		s = "exit " + strconv.Itoa(c.ExitStatus)
	}
	if c.StderrFirstLine != "" {
		s += ": " + c.StderrFirstLine
	}
	return s
}

func printOnceTable(w io.Writer, rows []onceResult) {
	t := newTable(w, "SET", "HOST", "PROBE", "RESULT", "LATENCY", "REASON", "DETAIL")
	for _, r := range rows {
		res := "ok"
		if !r.Success {
			res = "FAIL"
		}
		reason := r.Reason
		if reason == "" {
			reason = "-"
		}
		detail := "-"
		if !r.Success {
			if d := r.failedCommands(); d != "" {
				detail = d
			}
		}
		lat := time.Duration(r.DurationSeconds * float64(time.Second))
		if r.ICMP != nil && r.ICMP.Received > 0 {
			lat = time.Duration(r.ICMP.RTTSeconds * float64(time.Second))
		}
		t.row(r.Set, r.Host, r.probeName(), res, lat.Round(time.Microsecond), reason, detail)
	}
	t.flush()
}

// startProgress draws "done/total, failures, rate" on stderr twice a second
// while --once runs, but only when stderr is a terminal. The returned func
// stops it and clears the line.
func startProgress(stderr io.Writer, total int, done, failed *atomic.Int64) func() {
	f, ok := stderr.(*os.File)
	if !ok {
		return func() {}
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return func() {}
	}
	stop := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				fmt.Fprint(f, "\r\033[K")
				return
			case <-tick.C:
				d := done.Load()
				rate := float64(d) / time.Since(start).Seconds()
				fmt.Fprintf(f, "\r\033[K%d/%d probes done, %d failed, %.0f/s", d, total, failed.Load(), rate)
			}
		}
	}()
	return func() {
		close(stop)
		<-finished
	}
}
