package benchenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Fleet is a running "fleetsim serve" process (and its workers).
type Fleet struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
}

// FleetGen runs "fleetsim gen" (binary bin) for n hosts from base on port
// into dir, with a 60 s interval, a 10 s timeout and the command "check";
// reuse sets reuse_connections in the generated fleet.yml.
func FleetGen(ctx context.Context, bin, dir string, n int, base string, port int, reuse bool) error {
	args := []string{
		"gen", "--n", strconv.Itoa(n), "--base", base, "--port", strconv.Itoa(port),
		"--out", dir, "--interval", "60s", "--timeout", "10s", "--command", "check=check",
	}
	if reuse {
		args = append(args, "--reuse-connections")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fleetsim gen: %w: %s", err, out)
	}
	return nil
}

// FleetServe starts "fleetsim serve" with workers worker processes for the
// fleet FleetGen wrote to dir and waits for its "ready N" line (at most a
// minute). Its log goes to dir/fleetsim.log.
func FleetServe(ctx context.Context, bin, dir string, n int, base string, port, workers int) (*Fleet, error) {
	args := []string{
		"serve", "--n", strconv.Itoa(n), "--base", base, "--port", strconv.Itoa(port),
		"--authorized-key", filepath.Join(dir, "id_ed25519.pub"), "--workers", strconv.Itoa(workers),
		"--log.level", "error",
	}
	cmd := exec.Command(bin, args...)
	logf, err := os.Create(filepath.Join(dir, "fleetsim.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	f := &Fleet{cmd: cmd, dir: dir, done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(f.done)
		sc := bufio.NewScanner(stdout)
		want := fmt.Sprintf("ready %d", n)
		sent := false
		for sc.Scan() {
			if !sent && strings.TrimSpace(sc.Text()) == want {
				ready <- nil
				sent = true
			}
		}
		if !sent {
			ready <- errors.New("fleetsim exited before it was ready; see " + logf.Name())
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err = <-ready:
	case <-time.After(time.Minute):
		err = errors.New("fleetsim not ready within a minute")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		f.Stop()
		return nil, err
	}
	return f, nil
}

// PID is the fleetsim parent's process id.
func (f *Fleet) PID() int { return f.cmd.Process.Pid }

// CPU returns the CPU time fleetsim and its workers have used so far.
func (f *Fleet) CPU() time.Duration {
	d, err := TreeCPU(f.PID())
	if err != nil {
		return 0
	}
	return d
}

// Stop sends SIGTERM to the fleetsim parent (it forwards it to its
// workers), waits up to 10 s, then kills it by PID.
func (f *Fleet) Stop() {
	_ = f.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan struct{})
	go func() {
		<-f.done
		_ = f.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = f.cmd.Process.Kill()
		<-exited
	}
}
