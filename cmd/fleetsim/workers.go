package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// Hidden flags that turn a serve invocation into one worker of a sharded
// fleet.
const (
	flagShard  = "worker.shard"
	flagShards = "worker.shards"
)

// workerStopDelay is how long a worker may take to exit after SIGTERM before
// it is killed.
const workerStopDelay = 10 * time.Second

// workerSpec describes the worker processes of a sharded serve.
type workerSpec struct {
	// Exe is the program to run, normally os.Executable().
	Exe string
	// Args are the serve arguments of the parent; each worker gets them plus
	// --worker.shard and --worker.shards.
	Args []string
	// Workers is the number of child processes.
	Workers int
	// Stdout receives "ready N" once every worker is ready, N being the sum of
	// the workers' counts, and any other line the workers print.
	Stdout io.Writer
	// Stderr receives the workers' logs unchanged.
	Stderr io.Writer
	Logger *slog.Logger
}

// serveWorkers re-executes the program once per shard and waits for the
// workers. When ctx ends it sends SIGTERM to every worker and returns nil
// once they all exited cleanly; if a worker fails or exits on its own, the
// others are stopped the same way and the error is returned.
func serveWorkers(ctx context.Context, spec workerSpec) error {
	if spec.Workers < 1 {
		return fmt.Errorf("--workers must be at least 1, got %d", spec.Workers)
	}
	g, gctx := errgroup.WithContext(ctx)

	// mu guards ready, hosts and writes to spec.Stdout.
	var (
		mu    sync.Mutex
		ready int
		hosts int
	)
	for i := range spec.Workers {
		args := append(slices.Clone(spec.Args),
			"--"+flagShard+"="+strconv.Itoa(i), "--"+flagShards+"="+strconv.Itoa(spec.Workers))
		cmd := exec.CommandContext(gctx, spec.Exe, args...)
		cmd.Stderr = spec.Stderr
		cmd.SysProcAttr = workerSysProcAttr()
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = workerStopDelay
		stdout, err := cmd.StdoutPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			err = fmt.Errorf("start worker %d: %w", i, err)
			// Let the running workers stop before reporting.
			g.Go(func() error { return err })
			break
		}
		spec.Logger.Debug("worker started", "shard", i, "pid", cmd.Process.Pid)
		g.Go(func() error {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line := sc.Text()
				mu.Lock()
				if n, ok := parseReady(line); ok {
					ready++
					hosts += n
					if ready == spec.Workers {
						_, _ = fmt.Fprintf(spec.Stdout, "ready %d\n", hosts)
					}
				} else {
					_, _ = fmt.Fprintln(spec.Stdout, line)
				}
				mu.Unlock()
			}
			// Drain so a worker never blocks on a full pipe.
			_, _ = io.Copy(io.Discard, stdout)
			err := cmd.Wait()
			switch {
			case ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)):
				return nil // orderly shutdown
			case gctx.Err() != nil && ctx.Err() == nil:
				return nil // stopped because another worker failed first
			case err != nil:
				return fmt.Errorf("worker %d: %w", i, err)
			default:
				return fmt.Errorf("worker %d exited before shutdown", i)
			}
		})
	}
	return g.Wait()
}

// parseReady recognises a worker's "ready N" line.
func parseReady(line string) (int, bool) {
	s, ok := strings.CutPrefix(line, "ready ")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}
