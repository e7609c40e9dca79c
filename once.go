package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
	"github.com/fleet-exporter/fleet_exporter/schedule"
)

// onceResult is one line of --once output. Its JSON field names are part of
// the documented interface (README, "One-shot mode").
type onceResult struct {
	Set             string            `json:"set"`
	Host            string            `json:"host"`
	Probe           string            `json:"probe"`
	Success         bool              `json:"success"`
	Reason          string            `json:"reason,omitempty"`
	Error           string            `json:"error,omitempty"`
	DurationSeconds float64           `json:"duration_seconds"`
	ICMP            *onceICMP         `json:"icmp,omitempty"`
	SSH             *onceSSH          `json:"ssh,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
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
	Ran             bool    `json:"ran"`
	ExitStatus      int     `json:"exit_status"`
	OutputHash      uint64  `json:"output_hash"`
	OutputBytes     int64   `json:"output_bytes"`
	DurationSeconds float64 `json:"duration_seconds"`
	Reason          string  `json:"reason,omitempty"`
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
	oneShot := schedule.NewOneShot(targets)
	sink := func(r probe.Result) {
		defer oneShot.Observe(r)
		mu.Lock()
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
	slices.SortFunc(results, func(a, b probe.Result) int {
		return strings.Compare(a.Key.Set+"\x00"+a.Key.Host+"\x00"+a.Key.Probe, b.Key.Set+"\x00"+b.Key.Host+"\x00"+b.Key.Probe)
	})
	anyFailed := false
	out := make([]onceResult, 0, len(results))
	for _, r := range results {
		anyFailed = anyFailed || !r.Success
		out = append(out, toOnceResult(r, byKey[r.Key]))
	}
	if len(results) < len(targets) {
		anyFailed = true
		fmt.Fprintf(stderr, "%d of %d probes did not finish\n", len(targets)-len(results), len(targets))
	}
	if opts.onceFormat == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "cannot write results: %v\n", err)
			return 1
		}
	} else {
		printOnceTable(stdout, out)
	}
	if anyFailed {
		return 1
	}
	return 0
}

func toOnceResult(r probe.Result, t *config.Target) onceResult {
	o := onceResult{
		Set:             r.Key.Set,
		Host:            r.Key.Host,
		Probe:           r.Key.Probe,
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
	if r.ICMP != nil {
		o.ICMP = &onceICMP{Sent: r.ICMP.Sent, Received: r.ICMP.Received, RTTSeconds: r.ICMP.RTT.Seconds()}
	}
	if r.SSH != nil {
		s := &onceSSH{
			ConnectSeconds:   r.SSH.Connect.Seconds(),
			HandshakeSeconds: r.SSH.Handshake.Seconds(),
			AuthSeconds:      r.SSH.Auth.Seconds(),
		}
		for _, c := range r.SSH.Commands {
			s.Commands = append(s.Commands, onceCommand{
				Name: c.Name, Ran: c.Ran, ExitStatus: c.ExitStatus, OutputHash: c.Hash,
				OutputBytes: c.Bytes, DurationSeconds: c.Duration.Seconds(), Reason: string(c.Reason),
			})
		}
		o.SSH = s
	}
	return o
}

func printOnceTable(w io.Writer, rows []onceResult) {
	t := newTable(w, "SET", "HOST", "PROBE", "RESULT", "LATENCY", "REASON")
	for _, r := range rows {
		res := "ok"
		if !r.Success {
			res = "FAIL"
		}
		reason := r.Reason
		if reason == "" {
			reason = "-"
		}
		lat := time.Duration(r.DurationSeconds * float64(time.Second))
		if r.ICMP != nil && r.ICMP.Received > 0 {
			lat = time.Duration(r.ICMP.RTTSeconds * float64(time.Second))
		}
		t.row(r.Set, r.Host, r.Probe, res, lat.Round(time.Microsecond), reason)
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
