package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/sshdtest"
)

// sshdOptions configure scenario 2.
type sshdOptions struct {
	common
	sshd, pdsh, nft string
	hosts           int
	port            int
	fanout          int
	remote          string
	user            string
	minSpeedup      float64
	minCPURatio     float64
}

// sshdMaxListen is OpenSSH's MAX_LISTEN_SOCKS: sshd binds only the first 16
// ListenAddress lines and silently ignores the rest.
const sshdMaxListen = 16

// natTable is the nftables table the bench creates (and deletes) to send
// the host addresses sshd cannot listen on to one it does listen on.
const natTable = "fleet_sshbench_nat"

// sshdEnv is one sshd on loopback with its keys and host list.
type sshdEnv struct {
	dir        string
	srv        *sshdtest.Server
	port       int
	user       string
	key        string
	knownHosts string
	hostsFile  string
	addrs      []string // host addresses, without port
	nat        bool
	nft        string
}

// runSSHD is scenario 2: ours vs pdsh against one real OpenSSH sshd.
func runSSHD(ctx context.Context, o sshdOptions, stdout io.Writer) error {
	if o.hosts < 1 || o.hosts > 254 {
		return errors.New("--hosts must be between 1 and 254")
	}
	start, machine := time.Now(), benchenv.DescribeMachine()
	env, err := startSSHD(ctx, o)
	if err != nil {
		return err
	}
	defer env.stop()

	targets := env.targets(o.remote)
	var ours, pdsh freshRow
	// Warm-up: one unmeasured pass of each, so page cache and sshd's first
	// re-exec are paid before measuring.
	if _, err := env.pdshPass(ctx, o); err != nil {
		return fmt.Errorf("pdsh warm-up: %w", err)
	}
	for i := range o.runs {
		oursFirst := i%2 == 0
		for _, which := range []bool{oursFirst, !oursFirst} {
			benchenv.Settle()
			pctx, cancel := context.WithTimeout(ctx, o.passLimit)
			var r passResult
			name := "pdsh"
			if which {
				name = "ours"
				oc, err := newOurClient(o.fanout)
				if err != nil {
					cancel()
					return err
				}
				r = oc.runRound(pctx, targets, env.sshdCPU)
				oc.close()
				ours.runs = append(ours.runs, r)
			} else {
				r, err = env.pdshPass(pctx, o)
				if err != nil {
					cancel()
					return err
				}
				pdsh.runs = append(pdsh.runs, r)
			}
			cancel()
			if err := ctx.Err(); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "sshd run=%d %-4s wall=%.2fs hosts/s=%.1f cpu/host=%.3fms sshd/host=%.2fms ok=%d failed=%s load=%s\n",
				i+1, name, r.wall.Seconds(), r.hostsPerSec(), r.cpuPerHost(), r.serverPerHost(), r.ok, r.failures(), benchenv.LoadAvg())
		}
	}

	tb := benchenv.NewTable("client", "wall s", "hosts/s", "client CPU ms/host", "sshd CPU ms/host", "failed (last run)")
	for _, c := range []struct {
		name string
		row  freshRow
	}{{fmt.Sprintf("pdsh -R ssh -f %d", o.fanout), pdsh}, {fmt.Sprintf("fleet_exporter pool+prober (concurrency %d)", o.fanout), ours}} {
		tb.Row(c.name,
			fmt.Sprintf("%.2f", c.row.median(func(r passResult) float64 { return r.wall.Seconds() })),
			fmt.Sprintf("%.1f", c.row.median(passResult.hostsPerSec)),
			fmt.Sprintf("%.3f", c.row.median(passResult.cpuPerHost)),
			fmt.Sprintf("%.2f", c.row.median(passResult.serverPerHost)),
			c.row.runs[len(c.row.runs)-1].failures())
	}
	speed := make([]float64, o.runs)
	cpu := make([]float64, o.runs)
	for i := range o.runs {
		speed[i] = ours.runs[i].hostsPerSec() / pdsh.runs[i].hostsPerSec()
		cpu[i] = pdsh.runs[i].cpuPerHost() / ours.runs[i].cpuPerHost()
	}
	checks := benchenv.NewTable("check", "value", "target", "result")
	sp, cr := benchenv.Median(speed), benchenv.Median(cpu)
	checks.Row("hosts/s ours ÷ pdsh", fmt.Sprintf("%.1fx", sp), fmt.Sprintf("≥ %.0fx", o.minSpeedup), benchenv.Verdict(sp >= o.minSpeedup))
	checks.Row("client CPU/host pdsh ÷ ours", fmt.Sprintf("%.0fx", cr), fmt.Sprintf("≥ %.0fx", o.minCPURatio), benchenv.Verdict(cr >= o.minCPURatio))

	var body strings.Builder
	fmt.Fprintf(&body, "One OpenSSH sshd (`sshd -D -e -f cfg`, key auth, MaxStartups 200:30:400, MaxSessions 100) "+
		"for %d host addresses 127.20.0.1..%d on port %d, command `%s`. sshd binds at most %d ListenAddress lines "+
		"(MAX_LISTEN_SOCKS), so it listens on 127.20.0.1 and an nftables DNAT rule in a table of its own (%s, "+
		"output hook, loopback only, deleted afterwards) maps the other addresses to it; both clients connect to "+
		"the same %d addresses and check host keys against the same known_hosts. pdsh client CPU is "+
		"getrusage(RUSAGE_CHILDREN) (pdsh and its ssh processes); ours is RUSAGE_SELF; sshd CPU includes its reaped "+
		"per-connection processes. Medians of %d runs.\n\n",
		o.hosts, o.hosts, env.port, o.remote, sshdMaxListen, natTable, o.hosts, o.runs)
	body.WriteString(tb.Markdown())
	body.WriteString("\n")
	body.WriteString(checks.Markdown())
	return o.report(stdout, benchenv.Section{
		Title: "Scenario 2: SSH against OpenSSH sshd, fleet_exporter vs pdsh", Start: start, Machine: machine,
		Body: body.String(),
	})
}

// startSSHD starts sshd with sshdtest, writes the client key, known_hosts
// and the host list, and sets up the DNAT; it returns once sshd answers on
// the first and the last address.
func startSSHD(ctx context.Context, o sshdOptions) (*sshdEnv, error) {
	if err := sshdtest.EnsureUser(ctx, o.user, "fleet_exporter benchmark user"); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(o.tmp, "sshd-bench-")
	if err != nil {
		return nil, err
	}
	env := &sshdEnv{dir: dir, user: o.user, nft: o.nft}
	ok := false
	defer func() {
		if !ok {
			env.stop()
		}
	}()
	env.srv, err = sshdtest.Launch(ctx, sshdtest.Options{
		Addr: "127.20.0.1", Port: o.port, SSHD: o.sshd, Dir: dir, User: o.user,
		HostKeyTypes: []string{sshdtest.KeyEd25519},
		// Quiet logs, so that logging does not count as sshd's work, and
		// start-up limits high enough for the fan-out.
		LogLevel: "ERROR", MaxStartups: "200:30:400", MaxSessions: 100,
	})
	if err != nil {
		return nil, err
	}
	env.port = env.srv.Port
	key, err := sshdtest.NewKey(ctx, dir, "id_ed25519", sshdtest.KeyEd25519, "")
	if err != nil {
		return nil, err
	}
	env.key = key.Private
	if err := env.srv.AddAuthorizedKey(key); err != nil {
		return nil, err
	}
	var patterns []string
	var hf bytes.Buffer
	for i := 1; i <= o.hosts; i++ {
		a := fmt.Sprintf("127.20.0.%d", i)
		env.addrs = append(env.addrs, a)
		patterns = append(patterns, fmt.Sprintf("[%s]:%d", a, env.port))
		fmt.Fprintln(&hf, a)
	}
	env.knownHosts = filepath.Join(dir, "known_hosts")
	env.hostsFile = filepath.Join(dir, "hosts")
	if err := env.srv.WriteKnownHosts(env.knownHosts, sshdtest.KnownHostsPlain, patterns); err != nil {
		return nil, err
	}
	if err := os.WriteFile(env.hostsFile, hf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	if o.hosts > 1 {
		if err := env.setupNAT(ctx); err != nil {
			return nil, err
		}
	}
	if err := env.waitReady(ctx); err != nil {
		return nil, err
	}
	ok = true
	return env, nil
}

// setupNAT maps 127.20.0.0/24:port to 127.20.0.1:port for locally generated
// connections, in a table of its own.
func (e *sshdEnv) setupNAT(ctx context.Context) error {
	_ = exec.CommandContext(ctx, e.nft, "delete", "table", "ip", natTable).Run() // stale from an aborted run
	rules := fmt.Sprintf("table ip %s {\n chain out {\n  type nat hook output priority -100; policy accept;\n"+
		"  ip daddr 127.20.0.2-127.20.0.254 tcp dport %d dnat to 127.20.0.1:%d\n }\n}\n", natTable, e.port, e.port)
	cmd := exec.CommandContext(ctx, e.nft, "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, out)
	}
	e.nat = true
	return nil
}

// waitReady dials the last address, which reaches sshd through the DNAT,
// until sshd sends its banner, for at most 10 s. sshdtest has checked the
// first one already.
func (e *sshdEnv) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	a := net.JoinHostPort(e.addrs[len(e.addrs)-1], strconv.Itoa(e.port))
	for {
		err := sshBanner(a)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("sshd not ready on %s: %w", a, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// sshBanner connects to addr and reads the server's version line.
func sshBanner(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-") {
		return fmt.Errorf("unexpected banner %q", line)
	}
	return nil
}

// sshdCPU returns the CPU sshd and its (reaped) session processes used.
func (e *sshdEnv) sshdCPU() time.Duration {
	if e.srv == nil {
		return 0
	}
	d, err := benchenv.TreeCPU(e.srv.PID())
	if err != nil {
		return 0
	}
	return d
}

// stop stops sshd, removes the DNAT table and the directory.
func (e *sshdEnv) stop() {
	if e.srv != nil {
		_ = e.srv.Close()
	}
	if e.nat {
		_ = exec.Command(e.nft, "delete", "table", "ip", natTable).Run()
	}
	_ = os.RemoveAll(e.dir)
}

// targets returns one SSH target per host address, as the exporter would
// build them from a host set.
func (e *sshdEnv) targets(remote string) []*config.Target {
	probe := &config.SSHProbe{
		Port: e.port, User: e.user, PrivateKeyFile: e.key, KnownHostsFile: e.knownHosts,
		Commands: []config.Command{{Name: "cmd", Run: remote}},
	}
	ts := make([]*config.Target, len(e.addrs))
	for i, a := range e.addrs {
		ts[i] = &config.Target{
			Set: "sshd", Host: a, Name: a, Probe: config.ProbeSSH,
			Interval: time.Minute, Timeout: 30 * time.Second, SSH: probe,
		}
	}
	return ts
}

// pdshPass runs pdsh over every address once and measures it.
func (e *sshdEnv) pdshPass(ctx context.Context, o sshdOptions) (passResult, error) {
	return pdshRun{
		bin: o.pdsh, fanout: o.fanout, user: e.user, hostsFile: e.hostsFile, n: len(e.addrs), remote: o.remote,
		sshArgs: []string{
			"-F /dev/null", "-p", strconv.Itoa(e.port), "-i", e.key,
			"-o UserKnownHostsFile=" + e.knownHosts, "-o GlobalKnownHostsFile=/dev/null",
			"-o StrictHostKeyChecking=yes", "-o BatchMode=yes", "-o LogLevel=ERROR",
		},
		server: e.sshdCPU,
	}.pass(ctx)
}

// pdshRun is one pdsh -R ssh invocation over a host list.
type pdshRun struct {
	bin       string
	fanout    int
	user      string
	hostsFile string
	n         int      // hosts in hostsFile
	sshArgs   []string // PDSH_SSH_ARGS_APPEND, joined by spaces
	remote    string
	server    func() time.Duration // server CPU so far
}

// pass runs pdsh once and measures it: client CPU is RUSAGE_CHILDREN
// (pdsh and its ssh processes), a host counts as done when it printed a
// line.
func (p pdshRun) pass(ctx context.Context) (passResult, error) {
	cmd := exec.CommandContext(ctx, p.bin, "-R", "ssh", "-f", strconv.Itoa(p.fanout), "-l", p.user, "-w", "^"+p.hostsFile, p.remote)
	cmd.Env = append(os.Environ(), "PDSH_SSH_ARGS_APPEND="+strings.Join(p.sshArgs, " "))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	s0, c0, t0 := p.server(), benchenv.CPUChildren(), time.Now()
	err := cmd.Run()
	r := passResult{n: p.n, wall: time.Since(t0), cpu: benchenv.CPUChildren() - c0, server: p.server() - s0}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	seen := map[string]bool{}
	for line := range strings.SplitSeq(stdout.String(), "\n") {
		if h, _, ok := strings.Cut(line, ": "); ok {
			seen[h] = true
		}
	}
	r.ok = len(seen)
	r.fail = r.n - r.ok
	if r.fail > 0 {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		// pdsh prefixes the line with the host; the reason is what follows.
		if h, rest, ok := strings.Cut(msg, ": "); ok && listedHost(h, p.hostsFile) {
			msg = rest
		}
		r.reasons = map[string]int{errClass(errors.New(msg)): r.fail}
	}
	if err != nil && r.ok == 0 {
		return r, fmt.Errorf("pdsh: %w: %s", err, stderr.String())
	}
	return r, nil
}

// listedHost reports whether host is a non-empty line of hostsFile.
func listedHost(host, hostsFile string) bool {
	b, err := os.ReadFile(hostsFile)
	if err != nil {
		return false
	}
	return host != "" && slices.Contains(strings.Split(string(b), "\n"), host)
}
