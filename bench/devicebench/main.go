package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
)

func main() { os.Exit(run(os.Args[1:])) }

type options struct {
	fleetsim, exporter string
	hosts, runs, conc  int
	base               string
	port               int
	tmp                string
	passTimeout        time.Duration
}

func run(args []string) int {
	app := kingpin.New("devicebench", "Shell vs exec mode on simulated network devices (loopback only).")
	var o options
	app.Flag("fleetsim", "fleetsim binary.").Required().StringVar(&o.fleetsim)
	app.Flag("exporter", "fleet_exporter binary.").Required().StringVar(&o.exporter)
	app.Flag("hosts", "Simulated devices.").Default("1000").IntVar(&o.hosts)
	app.Flag("runs", "Measured passes per client (medians are reported).").Default("3").IntVar(&o.runs)
	app.Flag("concurrency", "SSH probes in flight, for every client.").Default("64").IntVar(&o.conc)
	app.Flag("base", "First device address.").Default("127.41.0.1").StringVar(&o.base)
	app.Flag("port", "Device SSH port.").Default("42311").IntVar(&o.port)
	app.Flag("tmp", "Directory for the generated fleets.").Default(os.TempDir()).StringVar(&o.tmp)
	app.Flag("pass-timeout", "Upper bound of one pass.").Default("5m").DurationVar(&o.passTimeout)
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := bench(&o); err != nil {
		fmt.Fprintln(os.Stderr, "devicebench:", err)
		return 1
	}
	return 0
}

// pass is one measured pass.
type pass struct {
	wall, cpu, server time.Duration
	failed            int
}

func bench(o *options) error {
	if _, err := benchenv.RaiseNofile(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(o.tmp, "devicebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	shared := []string{"--n", strconv.Itoa(o.hosts), "--base", o.base, "--port", strconv.Itoa(o.port), "--seed", "devicebench"}
	cfgs := map[string]string{}
	for _, mode := range []string{"exec", "shell"} {
		out := filepath.Join(dir, mode)
		args := append([]string{"gen"}, shared...)
		args = append(args, "--out", out, "--device", "--mode", mode, "--command", "version=show version",
			"--ignore-line", "uptime is", "--concurrency", strconv.Itoa(o.conc), "--ssh.concurrency", strconv.Itoa(o.conc),
			"--timeout", "20s", "--interval", "1m", "--max-output-bytes", "65536")
		if b, err := exec.Command(o.fleetsim, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("fleetsim gen: %v\n%s", err, b)
		}
		cfgs[mode] = filepath.Join(out, "fleet.yml")
	}
	srv := exec.Command(o.fleetsim, append(append([]string{"serve"}, shared...),
		"--authorized-key", filepath.Join(dir, "exec", "id_ed25519.pub"), "--device", "--log.level", "warn")...)
	stdout, err := srv.StdoutPipe()
	if err != nil {
		return err
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		return fmt.Errorf("fleetsim serve did not get ready: %q %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	serverCPU := func() time.Duration {
		d, _ := benchenv.TreeCPU(srv.Process.Pid)
		return d
	}
	addrs, err := deviceAddrs(cfgs["exec"])
	if err != nil {
		return err
	}
	bare, err := newBare(filepath.Join(dir, "exec"), o.port, o.conc)
	if err != nil {
		return err
	}

	clients := []struct {
		name string
		run  func() (pass, error)
	}{
		{"fleet_exporter --once, mode: exec", func() (pass, error) { return o.once(cfgs["exec"], serverCPU) }},
		{"fleet_exporter --once, mode: shell", func() (pass, error) { return o.once(cfgs["shell"], serverCPU) }},
		{"bare x/crypto/ssh loop, exec", func() (pass, error) { return bare.pass(addrs, serverCPU, o.passTimeout) }},
	}
	fmt.Printf("%d simulated IOS-class devices, concurrency %d, %d runs, load %s at start\n\n", o.hosts, o.conc, o.runs, benchenv.LoadAvg())
	fmt.Println("| client | wall per pass (median) | client CPU per command (median) | simulator CPU per command | failed | runs (wall s / client CPU ms per command) |")
	fmt.Println("|---|---|---|---|---|---|")
	// One warm-up pass of each, then the runs interleaved so that load
	// changes hit every client alike.
	for _, c := range clients {
		if _, err := c.run(); err != nil {
			return fmt.Errorf("%s warm-up: %w", c.name, err)
		}
	}
	results := make([][]pass, len(clients))
	for range o.runs {
		for i, c := range clients {
			benchenv.Settle()
			p, err := c.run()
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			results[i] = append(results[i], p)
		}
	}
	n := float64(o.hosts)
	for i, c := range clients {
		var walls, cpus, servers []float64
		var runs []string
		failed := 0
		for _, p := range results[i] {
			walls = append(walls, p.wall.Seconds())
			cpus = append(cpus, ms(p.cpu)/n)
			servers = append(servers, ms(p.server)/n)
			failed = max(failed, p.failed)
			runs = append(runs, fmt.Sprintf("%.2f / %.2f", p.wall.Seconds(), ms(p.cpu)/n))
		}
		fmt.Printf("| %s | %.2f s | %.2f ms | %.2f ms | %d | %s |\n", c.name, benchenv.Median(walls),
			benchenv.Median(cpus), benchenv.Median(servers), failed, strings.Join(runs, ", "))
	}
	fmt.Printf("\nload %s at end\n", benchenv.LoadAvg())
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// once runs one `fleet_exporter --once` pass and measures its wall time
// and CPU.
func (o *options) once(cfg string, serverCPU func() time.Duration) (pass, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.passTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.exporter, "--config.file", cfg, "--once", "--once.format", "json", "--log.level", "error")
	cmd.Stdout = io.Discard
	var stderr strings.Builder
	cmd.Stderr = &stderr
	s0 := serverCPU()
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	var p pass
	p.wall, p.server = wall, serverCPU()-s0
	if cmd.ProcessState == nil {
		return p, err
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if ru != nil {
		p.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		// Some probes failed: count them from the progress line's tail.
		p.failed = -1
	default:
		return p, fmt.Errorf("%v: %s", err, stderr.String())
	}
	return p, nil
}

// deviceAddrs reads the host list gen wrote.
func deviceAddrs(cfg string) ([]string, error) {
	b, err := os.ReadFile(cfg)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, "- "); ok && strings.HasPrefix(v, "127.") {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no hosts in " + cfg)
	}
	return out, nil
}

// bare is the peer: the least an x/crypto/ssh client does to get "show
// version" from each device over exec, with the same known_hosts check.
type bare struct {
	port int
	conc int
	cfg  *ssh.ClientConfig
}

func newBare(dir string, port, conc int) (*bare, error) {
	hk, err := knownhosts.New(filepath.Join(dir, "known_hosts"))
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "password"))
	if err != nil {
		return nil, err
	}
	pw := strings.TrimSpace(string(b))
	return &bare{port: port, conc: conc, cfg: &ssh.ClientConfig{
		User: "fleet",
		Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(func(_, _ string, q []string, _ []bool) ([]string, error) {
			a := make([]string, len(q))
			for i := range a {
				a[i] = pw
			}
			return a, nil
		})},
		HostKeyCallback: hk,
		Timeout:         20 * time.Second,
	}}, nil
}

func (b *bare) one(addr string) error {
	c, err := ssh.Dial("tcp", net.JoinHostPort(addr, strconv.Itoa(b.port)), b.cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	out, err := s.StdoutPipe()
	if err != nil {
		return err
	}
	if err := s.Start("show version"); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, out); err != nil {
		return err
	}
	var missing *ssh.ExitMissingError
	if err := s.Wait(); err != nil && !errors.As(err, &missing) {
		return err
	}
	return nil
}

func (b *bare) pass(addrs []string, serverCPU func() time.Duration, limit time.Duration) (pass, error) {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(limit)
	s0, c0 := serverCPU(), benchenv.CPUSelf()
	start := time.Now()
	for range b.conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(addrs) || time.Now().After(deadline) {
					return
				}
				if b.one(addrs[i]) != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return pass{wall: time.Since(start), cpu: benchenv.CPUSelf() - c0, server: serverCPU() - s0, failed: int(failed.Load())}, nil
}
